"""A single-file HTML report: what was run, on what, with which warnings, and the maps.

Figures are embedded as base64 PNG and the page has no script or external
link, so the report can be mailed or archived on its own.

Order of the page: summary; warnings and checks (what readers miss);
the model graph; then each node that ran: its units, design matrices with
diagnostics and regressor correlations, mask, and (at the top level, or at
lower levels with few maps) each contrast's z map with its peaks,
thresholded maps and cluster tables.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib

from bids_app.derivatives.atomic import write_text
from bids_app.io.surface import is_surface_file, read_surface
from bids_app.report.contrast_section import contrast_block, region_block, surface_contrast_block
from bids_app.report.figures import FigureBudget
from bids_app.report.maps import summarize_map
from bids_app.report.markup import esc, page
from bids_app.report.model_graph import model_section
from bids_app.report.nodes import design_section, node_header
from bids_app.report.collect import NodeOutputs, collect, read_software
from bids_app.report.summary import alerts_section, summary_section

log = logging.getLogger(__name__)

#: Below the top level, a node's maps are shown only when it has at most this many.
FEW_MAPS = 6
#: Atlas used to label peaks of MNI-space maps (AAL loads in well under a second).
PEAK_ATLAS = "aal"


def maps_shown(nodes: list[NodeOutputs], model) -> list[NodeOutputs]:
    """Nodes whose z maps are drawn: top-level nodes (nothing that ran below them),
    then lower non-Run nodes with at most :data:`FEW_MAPS` maps.

    The order is the drawing priority when the figure budget runs out.
    """
    ran = {n.node.name for n in nodes}
    top, lower = [], []
    for n in nodes:
        if n.node.level == "Run":
            continue
        if not any(e.destination in ran for e in model.outgoing(n.node.name)):
            top.append(n)
        elif sum(len(u.contrasts) for u in n.units) <= FEW_MAPS:
            lower.append(n)
    return top + lower


def _peak_labels(summary, mni: bool):
    if not mni or summary.peaks.empty:
        return None
    from bids_app.inference.atlas import label_coordinates
    from bids_app.io.atlases import load_atlas

    try:
        return label_coordinates(summary.peaks[["x", "y", "z"]].to_numpy(), atlases=(load_atlas(PEAK_ATLAS),))
    except FileNotFoundError as exc:  # atlas data not installed: peaks stay unlabelled
        log.warning("no atlas labels for peaks: %s", exc)
        return None


@dataclass(frozen=True)
class WrittenReport:
    """The report written, and the figures it could not draw (each ``"label: error"``)."""

    path: Path
    figure_failures: list[str]


def write_report(out_dir: Path, model, record: dict, diagnose) -> WrittenReport:
    """Write ``OUTPUT_DIR/report.html`` from the run record and the files on disk.

    Parameters
    ----------
    out_dir : Path
        The output folder (holds ``provenance.json`` and the ``node-*`` folders).
    model : bids_app.spec.model.StatsModel
    record : dict
        The run record of :func:`bids_app.graph.pipeline.run_app`.
    diagnose : callable
        ``diagnose(matrix: DataFrame) -> dict``, the design diagnostics
        (:func:`bids_app.graph.pipeline.design_diagnostics`).

    Returns
    -------
    WrittenReport
        Its path, and the figures that failed: they are shown where they
        would be and listed with the checks; the caller adds them to
        provenance's warnings.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    nodes = collect(out_dir, model, record)
    budget = FigureBudget()
    shown = maps_shown(nodes, model)

    contrast_html: dict[str, list[str]] = {}
    summaries = []
    for outputs in shown:  # priority order: figures are drawn until the budget runs out
        blocks = contrast_html.setdefault(outputs.node.name, [])
        for unit in outputs.units:
            for files in unit.contrasts:
                if is_surface_file(files.z):
                    values, surface = read_surface(files.z, files.entities.get("space"))
                    blocks.append(surface_contrast_block(files, unit.label, values[0], surface, budget))
                    continue
                img = nib.load(files.z)
                summary = summarize_map(img.get_fdata(dtype="float64"), img.affine, mni=files.in_mni,
                                        two_sided=files.sidecar.get("Test") != "F")
                summaries.append((outputs.node.name, files, summary))
                blocks.append(contrast_block(files, unit.label, img, summary, _peak_labels(summary, files.in_mni),
                                             budget, outline=unit.mask if unit.mask.exists() else None))
            blocks += [region_block(files, unit.label) for files in unit.region_tables]

    node_html, design_checks = [], []
    for outputs in nodes:
        blocks = contrast_html.get(outputs.node.name)
        if blocks is not None:
            maps = f"<h3>Contrasts ({len(blocks)} map(s) or region table(s))</h3>" + "".join(blocks)
        elif outputs.node.level == "Run":
            maps = ('<p class="note">Run-level maps are not drawn (there are usually many); '
                    "they, or a region model's tables, are in the node folder.</p>")
        else:
            maps = (f'<p class="note">Maps of this intermediate node are not drawn (more than {FEW_MAPS}); '
                    "they are in the node folder.</p>")
        design, checks = design_section(outputs, budget, diagnose)
        design_checks += checks
        node_html.append(node_header(outputs) + design + maps)

    graph = model_section(model, budget)
    skipped = ""
    if budget.skipped:
        skipped = (f'<h2 id="skipped">Figures not drawn</h2><p>{len(budget.skipped)} figure(s) exceeded the '
                   f"limits {esc(budget.limits)}:</p><ul>"
                   + "".join(f"<li>{esc(s)}</li>" for s in budget.skipped) + "</ul>")
    toc = "".join(f'<li><a href="#node-{esc(n.node.name)}">Node {esc(n.node.name)} ({esc(n.node.level)})</a></li>'
                  for n in nodes)
    if skipped:
        toc += '<li><a href="#skipped">Figures not drawn</a></li>'
    nav = (f'<nav><ul><li><a href="#warnings">Warnings and checks</a></li><li><a href="#model">Model graph</a></li>'
           f"{toc}</ul></nav>")
    own_checks = design_checks + [f"Figure not drawn: {failure}" for failure in budget.failed]
    body = "".join([summary_section(model, record, read_software(out_dir)), nav,
                    alerts_section(record, nodes, summaries, own_checks), graph, *node_html, skipped])
    path = write_text(out_dir / "report.html", page(f"bids-stats report: {model.name}", body))
    log.info("report written in %.2f s: %s", time.perf_counter() - start, budget.cost())
    return WrittenReport(path, list(budget.failed))
