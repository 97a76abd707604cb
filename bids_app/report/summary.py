"""The top of the report: what was run, and everything a reader should not miss.

The run's own warnings and QC exclusions come first, then checks the report
makes on the outputs: negative effects (deactivations, or a contrast written
the wrong way round), supra-threshold voxels outside the brain, design
columns dropped from runs, masks that were not applied.
"""
from __future__ import annotations

from datetime import datetime

from bids_app.report.maps import DISPLAY_P, MapSummary
from bids_app.report.markup import bullet_list, esc, key_values, table
from bids_app.report.collect import ContrastFiles, NodeOutputs

_SOFTWARE_SHOWN = ("bids-stats", "python", "nilearn", "numpy", "scipy", "nibabel", "pandas", "pybids")


def summary_section(model, record: dict, software: dict) -> str:
    """Title, description and the run's identity: command, times, versions, inputs, model hash."""
    start, end = record["StartTime"], record["EndTime"]
    try:
        duration = f" ({(datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds():.1f} s)"
    except (TypeError, ValueError):
        duration = ""
    versions = ", ".join(f"{k} {software[k]}" for k in _SOFTWARE_SHOWN if k in software)
    others = {k: v for k, v in software.items() if k not in _SOFTWARE_SHOWN}
    n_reused = sum(bool(u.get("Reused")) for u in record["Units"])
    pairs = {
        "Command": f"<code>{esc(' '.join(map(str, record['Command'])))}</code>",
        "Started / ended": f"{esc(start)} / {esc(end)}{esc(duration)}",
        "Analysis level": esc(record.get("AnalysisLevel", "")),
        "Model": f"{esc(record['Model'].get('File', ''))}<br>SHA256 <code>{esc(record['Model']['SHA256'])}</code>",
        "Inputs": f"{len(record['Inputs'])} files (each with its SHA256 in provenance.json)",
        "Units of work": f"{len(record['Units'])} fitted" + (f", {n_reused} of them by an earlier call"
                                                             if n_reused else ""),
        "Random seed": esc(record.get("RandomSeed", "")),
        "Software": esc(versions) + (f"<details><summary>all</summary>"
                                     f"{key_values({k: esc(v) for k, v in others.items()})}</details>"
                                     if others else ""),
    }
    if len(record.get("Calls", [])) > 1:
        calls = [{"command": " ".join(map(str, c["Command"][3:])), "started": c["StartTime"][:19].replace("T", " "),
                  "ended": c["EndTime"][:19].replace("T", " "), "units fitted": c["UnitsFitted"],
                  "units reused": c["UnitsReused"]} for c in record["Calls"]]
        pairs["Calls"] = (f"{len(calls)} calls into this folder (e.g. shards); this page and provenance.json "
                          f"describe every unit they finished{table(calls, fold='calls')}")
    if record.get("Settings"):
        pairs["Settings"] = (f"<details><summary>{len(record['Settings'])} options</summary>"
                             f"{key_values({k: esc(v) for k, v in record['Settings'].items()})}</details>")
    description = f"<p>{esc(model.description)}</p>" if model.description else ""
    return (f'<h1 id="summary">bids-stats report: {esc(model.name)}</h1>{description}'
            f"{key_values(pairs)}")


def alerts_section(record: dict, nodes: list[NodeOutputs],
                   maps: list[tuple[str, ContrastFiles, MapSummary]], design_checks: list[str]) -> str:
    """Warnings, QC exclusions and the report's own checks, before any figure.

    Parameters
    ----------
    record : dict
        The run record.
    nodes : list of NodeOutputs
    maps : list of (node name, ContrastFiles, MapSummary)
        The z maps the report shows.
    design_checks : list of str
        Checks the report made itself: design diagnostics, figures it could not draw.
    """
    parts = ['<h2 id="warnings">Warnings and checks</h2>']
    warnings = list(dict.fromkeys(record["Warnings"]))
    if warnings:
        parts.append(f"<h3>{len(warnings)} warning(s) raised during the run</h3>")
        parts.append(bullet_list(warnings))
    if record["Exclusions"]:
        parts.append(f"<h3>{len(record['Exclusions'])} input(s) excluded by quality control</h3>")
        parts.append(table([{"node": e["Node"], "file": e["File"], "reasons": "; ".join(e["Reasons"])}
                            for e in record["Exclusions"]], fold="excluded inputs"))
    checks = _map_checks(maps) + _mask_checks(nodes) + list(design_checks)
    dropped = _dropped_columns(nodes)
    if checks:
        parts.append("<h3>Checks of the outputs</h3>" + bullet_list(checks))
    if dropped:
        parts.append("<h3>Design columns dropped from runs</h3>"
                     + table(dropped, fold="dropped columns"))
    if not (warnings or record["Exclusions"] or checks or dropped):
        parts.append('<p class="ok">No warning, no excluded input, and the checks below found nothing unusual.</p>')
    parts.append(f'<p class="note">Checks of the outputs: negative effects and voxels outside the MNI152 '
                 f'brain are counted at |z| &gt; the display threshold (p &lt; {DISPLAY_P} one-sided, '
                 "uncorrected) in the z maps shown below.</p>")
    return "".join(parts)


def _map_checks(maps) -> list[str]:
    out = []
    for node, files, summary in maps:
        where = f"node {node}, contrast {files.name}"
        if summary.two_sided and summary.n_negative:
            low = summary.peaks[summary.peaks.sign < 0].iloc[0]
            one_sided = [d.path.name for d in files.thresholded if d.sidecar.get("TwoSided") is False]
            out.append(f"{where}: {summary.n_negative} voxel(s) with z < -{summary.threshold:.2f} "
                       f"(minimum z = {low.value:.2f} at x={low.x:.0f}, y={low.y:.0f}, z={low.z:.0f} mm): "
                       "effects opposite to the contrast (deactivation, or weights the other way round); "
                       "shown in blue in the maps"
                       + ("; the one-sided thresholded map does not test them (see --two-sided)" if one_sided else ""))
        if summary.outside_brain and summary.outside_brain["flagged"]:
            out.append(f"{where}: {summary.outside_brain['message']}")
    return out


def _mask_checks(nodes: list[NodeOutputs]) -> list[str]:
    out = []
    for node in nodes:
        for unit in node.units:
            mask = unit.design_json.get("Mask")
            if isinstance(mask, dict):
                out += [f"node {node.node.name} ({unit.label}): mask: {w}" for w in mask.get("Warnings", [])]
    return list(dict.fromkeys(out))


def _dropped_columns(nodes: list[NodeOutputs]) -> list[dict]:
    """One row per dropped X entry and reason, with the runs it was dropped from."""
    rows: dict[tuple, list[str]] = {}
    for node in nodes:
        for unit in node.units:
            for item in unit.design_json.get("Dropped", []):
                key = (node.node.name, item.get("Entry"), item.get("Kind"), item.get("Reason", ""))
                rows.setdefault(key, []).append(unit.label)
    return [{"node": k[0], "entry": k[1], "kind": k[2], "reason": k[3], "runs": len(v), "where": ", ".join(v)}
            for k, v in rows.items()]
