"""One node of the model as fitted: units, design matrices and their diagnostics, mask,
run-level settings (HRF, high-pass filter, confounds)."""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from bids_app.report import figures
from bids_app.report.figures import FigureBudget
from bids_app.report.markup import esc, key_values, table
from bids_app.report.collect import NodeOutputs, UnitOutputs

#: Distinct higher-level designs drawn per node.
MAX_DESIGNS = 3


def node_header(outputs: NodeOutputs) -> str:
    node, units = outputs.node, outputs.units
    estimators = sorted({u.record.get("Estimator", f"first-level ({u.design_json.get('NoiseModel', '?')})")
                         for u in units})
    rows = [{"unit": u.label, "inputs": u.record["NInputs"],
             "estimator": u.record.get("Estimator", "first-level"),
             "voxels": u.record.get("NVoxels", ""), "contrasts": ", ".join(u.record["Contrasts"]),
             "warnings": len(u.record.get("Warnings", [])), "reused": bool(u.record.get("Reused")),
             # the call that fitted the unit (sharded runs: each shard's own), after BIDS_DIR OUTPUT_DIR
             "fitted by": " ".join(map(str, u.record.get("Command", [])[3:])),
             "finished": u.record.get("Finished", "")[:19].replace("T", " ")}
            for u in units]
    parts = [f'<h2 id="node-{esc(node.name)}">Node {esc(node.name)} ({esc(node.level)} level, '
             f"{esc(node.model.type)})</h2>",
             f"<p>{len(units)} model(s) fitted on {sum(u.record['NInputs'] for u in units)} input(s); "
             f"GroupBy {esc(', '.join(node.group_by) or '(none)')}; estimator {esc(', '.join(estimators))}.</p>",
             table(rows, fold="units of work")]
    if outputs.exclusions:
        parts.append("<h3>Inputs excluded by quality control</h3>" + table(
            [{"file": e["File"], "reasons": "; ".join(e["Reasons"])} for e in outputs.exclusions]))
    return "".join(parts)


def run_settings(unit: UnitOutputs) -> str:
    """How the first run's design was built: timing, HRF, filters, confound policy."""
    info = unit.design_json
    hrf = info.get("HRF") or {}
    high = info.get("HighPass") or {}
    nan = info.get("NanPolicy") or {}
    if high.get("Applied"):
        cutoff = high.get("CutoffHz")
        high_text = (f"{cutoff:g} Hz (period {1 / cutoff:.0f} s), {len(high.get('DriftColumns', []))} "
                     f"cosine drift columns; source: {high.get('Source', '?')}" if cutoff else "applied")
    else:
        high_text = "none"
    filled = nan.get("Filled") or {}
    pairs = {
        "Repetition time": f"{esc(info.get('RepetitionTime', '?'))} s; "
                           f"{esc(info.get('NVols', '?'))} volumes; slice-time reference "
                           f"{esc(info.get('SliceTimeRef', '?'))}",
        "HRF": esc(f"{hrf.get('Model', 'none')} on {', '.join(hrf.get('Variables', [])) or '-'}"
                   + (f"; FIR delays {hrf['FIRDelays']}" if hrf.get("FIRDelays") else "")),
        "Not convolved": esc(", ".join(info.get("NotConvolved", [])) or "-"),
        "High-pass filter": esc(high_text),
        "Low-pass filter": esc(info.get("LowPass") or "none"),
        "Noise model": esc(info.get("NoiseModel", "?")),
        "Smoothing": esc(f"{info['SmoothingFWHM']} mm FWHM" if info.get("SmoothingFWHM") else "none"),
        "Missing confounds": esc(info.get("MissingConfounds", "?")),
        "n/a in confounds": esc(nan.get("Confounds", "?")),
        "n/a in events": esc(nan.get("Events", "?")),
        "Confound gaps filled": esc(", ".join(f"{c}: {n}" for c, n in filled.items()) or "none"),
        "Transformations": esc(", ".join(map(str, info.get("Transformations", []))) or "none"),
        "Mask": esc(info.get("Mask", "?")),
    }
    return f"<h3>Run-level model (first run: {esc(unit.label)})</h3>" + key_values(pairs)


def diagnostics_table(diag: dict) -> str:
    """Rank, condition number, VIFs, dependencies and warnings of one design."""
    vif = diag.get("VIF") or {}
    vif_text = ", ".join(f"{c}: {v:.2f}" if isinstance(v, (int, float)) else f"{c}: {v if v else 'n/a'}"
                         for c, v in vif.items())
    pairs = {
        "Rows x columns": f"{diag.get('NRows')} x {diag.get('NColumns')}",
        "Rank": esc(diag.get("Rank")) + ("" if diag.get("Rank") == diag.get("NColumns") else " (rank-deficient)"),
        "Condition number (unit-norm columns)": esc(_number(diag.get("ConditionNumber"))),
        "Variance inflation factors": esc(vif_text or "-"),
    }
    if diag.get("Dependencies"):
        pairs["Linear dependencies"] = esc("; ".join(diag["Dependencies"]))
    if diag.get("Warnings"):
        pairs["Warnings"] = "<br>".join(esc(w) for w in diag["Warnings"])
    return key_values(pairs)


def _number(value) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) else str(value)


def mask_table(units: list[UnitOutputs]) -> str:
    info = units[0].design_json.get("Mask")
    if not isinstance(info, dict):
        return ""
    voxels = [u.record["NVoxels"] for u in units if "NVoxels" in u.record]
    pairs = {"Rule": esc(info.get("Rule", "?")),
             "Voxels": esc(f"{info.get('NVoxelsMask')} in the mask of {info.get('NVoxelsBox')} in the box; "
                           f"{info.get('NVoxelsCovered')} valid in enough inputs")}
    if info.get("Template"):
        pairs["Template"] = esc(info["Template"])
    if info.get("ExplicitMask"):
        pairs["Explicit mask"] = esc(info["ExplicitMask"])
    if len(voxels) > 1:
        pairs["Across units"] = esc(f"{min(voxels)} to {max(voxels)} voxels fitted")
    if info.get("Warnings"):
        pairs["Warnings"] = "<br>".join(esc(w) for w in info["Warnings"])
    return f"<h3>Mask (first unit: {esc(units[0].label)})</h3>" + key_values(pairs)


def _distinct_designs(units: list[UnitOutputs]) -> list[list[UnitOutputs]]:
    """Units grouped by identical design matrix files, in first-seen order."""
    groups: dict[str, list[UnitOutputs]] = {}
    for unit in units:
        if unit.design_tsv.exists():
            groups.setdefault(hashlib.sha256(unit.design_tsv.read_bytes()).hexdigest(), []).append(unit)
    return list(groups.values())


def design_section(outputs: NodeOutputs, budget: FigureBudget, diagnose) -> tuple[str, list[str]]:
    """Design matrix, correlations and diagnostics: the first run, or each distinct higher-level design.

    ``diagnose(matrix) -> dict`` diagnoses a design matrix (the graph passes
    :func:`bids_app.design.diagnostics.diagnose`): run designs carry no stored
    diagnostics, so the first run's are computed from the matrix written.

    Returns
    -------
    html : str
    warnings : list of str
        Diagnostics warnings of the first run's design, which the run itself
        does not check (higher-level diagnostics are in the run's warnings).
    """
    units = outputs.units
    name = outputs.node.name
    if outputs.node.level == "Run":
        first = units[0]
        if not first.design_tsv.exists():
            return '<p class="note">design matrix file not found</p>', []
        matrix = pd.read_csv(first.design_tsv, sep="\t")
        diag = diagnose(matrix)
        parts = [run_settings(first),
                 f"<h3>Design matrix (first of {len(units)} run(s): {esc(first.label)})</h3>",
                 budget.draw("design", f"design {name} {first.label}",
                             lambda: figures.design_matrix(matrix, first.label)),
                 diagnostics_table(diag), _correlations(matrix, name, first.label, budget)]
        return "".join(parts), [f"node {name} (design of {first.label}): {w}" for w in diag["warnings"]]

    groups = _distinct_designs(units)
    parts = [f"<h3>Design matrices ({len(groups)} distinct among {len(units)} unit(s))</h3>"]
    for i, group in enumerate(groups):
        head = group[0]
        used_by = ", ".join(u.label for u in group)
        if i >= MAX_DESIGNS:
            parts.append(f'<p class="note">Design {i + 1} not drawn (used by {esc(used_by)}): '
                         f"see <code>{esc(head.design_tsv.name)}</code>.</p>")
            continue
        matrix = pd.read_csv(head.design_tsv, sep="\t")
        parts.append(f"<h4>Design {i + 1}: {matrix.shape[0]} inputs x {matrix.shape[1]} columns, "
                     f"used by {len(group)} unit(s)</h4><p class=\"note\">{esc(used_by)}</p>")
        parts.append(budget.draw("design", f"design {name} {head.label}",
                                 lambda m=matrix, h=head: figures.design_matrix(m, h.label, "input map")))
        diag = head.design_json.get("Diagnostics")
        parts.append(diagnostics_table(diag) if diag else '<p class="note">no stored diagnostics</p>')
        if i == 0:
            parts.append(_correlations(matrix, name, head.label, budget))
    parts.append(mask_table(units))
    return "".join(parts), []


def _correlations(matrix: pd.DataFrame, node: str, label: str, budget: FigureBudget) -> str:
    varying = figures.regressors_varying(matrix)
    if len(varying) < 2:
        return ""
    corr = np.abs(matrix[varying].corr().to_numpy())
    np.fill_diagonal(corr, 0)
    a, b = divmod(int(corr.argmax()), len(varying))
    strongest = (f"<p>Largest |correlation| between regressors: {corr[a, b]:.2f} "
                 f"({esc(varying[a])} and {esc(varying[b])}).</p>")
    figure = budget.draw("design", f"correlations {node} {label}",
                         lambda: figures.design_correlation(matrix, label))
    return f"<h4>Correlations between regressors ({esc(label)})</h4>{strongest}{figure}"
