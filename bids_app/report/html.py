"""A single-file HTML report: what was run, on what, with which warnings, and the maps.

Figures are embedded as base64 PNG so the report can be mailed or archived
on its own.
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from bids_app.derivatives.atomic import write_text  # noqa: E402
from bids_app.derivatives.naming import output_dir  # noqa: E402

_MAX_MAP_FIGURES = 24

_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
h1{border-bottom:2px solid #345}h2{margin-top:2em;color:#345}table{border-collapse:collapse;font-size:.9em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}.warn{background:#fff4e0;padding:.5em 1em}
img{max-width:100%}code{background:#f3f3f3;padding:0 3px}"""


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _design_figure(tsv: Path) -> str:
    from nilearn.plotting import plot_design_matrix

    matrix = pd.read_csv(tsv, sep="\t")
    fig, ax = plt.subplots(figsize=(min(2 + 0.35 * matrix.shape[1], 14), 5))
    plot_design_matrix(matrix, axes=ax)
    return _png(fig)


def _zmap_figure(path: Path, title: str) -> str:
    from nilearn.plotting import plot_stat_map

    fig = plt.figure(figsize=(10, 3))
    plot_stat_map(str(path), threshold=3.1, title=title, figure=fig, display_mode="ortho", colorbar=True,
                  draw_cross=False)
    return _png(fig)


def _table(rows: list[dict]) -> str:
    if not rows:
        return "<p>none</p>"
    return pd.DataFrame(rows).to_html(index=False, escape=True, border=0)


def write_report(out_dir: Path, model, record: dict) -> Path:
    """Write ``OUTPUT_DIR/report.html`` from the run record and the maps on disk."""
    out_dir = Path(out_dir)
    esc = html.escape
    parts = [f"<h1>bids-stats report: {esc(model.name)}</h1>",
             f"<p>{esc(model.description)}</p>",
             "<table>",
             f"<tr><th>Command</th><td><code>{esc(' '.join(map(str, record['Command'])))}</code></td></tr>",
             f"<tr><th>Started / ended</th><td>{esc(record['StartTime'])} / {esc(record['EndTime'])}</td></tr>",
             f"<tr><th>Analysis level</th><td>{esc(record['AnalysisLevel'])}</td></tr>",
             f"<tr><th>Model SHA256</th><td><code>{esc(record['Model']['SHA256'])}</code></td></tr>",
             f"<tr><th>Inputs</th><td>{len(record['Inputs'])} files (hashes in provenance.json)</td></tr>",
             "</table>"]
    if record["Warnings"] or record["Exclusions"]:
        parts.append('<h2>Warnings</h2><div class="warn"><ul>')
        parts += [f"<li>{esc(w)}</li>" for w in dict.fromkeys(record["Warnings"])]
        parts.append("</ul></div>")
    n_maps = 0
    for node in model.nodes:
        units = [u for u in record["Units"] if u["node"] == node.name]
        if not units:
            continue
        parts.append(f"<h2>Node {esc(node.name)} ({esc(node.level)}, {esc(node.model.type)})</h2>")
        parts.append(f"<p>{len(units)} model(s) fitted; GroupBy {esc(str(list(node.group_by)))}.</p>")
        parts.append(_table([{"entities": json.dumps(u["entities"]), "inputs": u["n_inputs"],
                              "estimator": u.get("estimator", "first-level"),
                              "contrasts": ", ".join(u["contrasts"]), "reused": u.get("reused", False)}
                             for u in units]))
        design = Path(units[0]["design"])
        if design.exists():
            parts.append(f"<h3>Design matrix ({esc(design.name)})</h3>{_design_figure(design)}")
        if node.level == "Run":
            continue
        for z in sorted(output_dir(out_dir, node.name, {}).rglob("*_stat-z_statmap.nii.gz")):
            if n_maps >= _MAX_MAP_FIGURES:
                break
            parts.append(_zmap_figure(z, z.name.replace("_statmap.nii.gz", "")))
            n_maps += 1
    doc = f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>bids-stats report</title>" \
          f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>"
    return write_text(out_dir / "report.html", doc)
