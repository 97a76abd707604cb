"""The model as written: nodes, edges with their filters, contrasts and weights."""
from __future__ import annotations

import numpy as np

from bids_app.report import figures
from bids_app.report.figures import FigureBudget
from bids_app.report.markup import esc, table
from bids_app.spec.model import StatsModel


def weights_text(conditions, weights) -> str:
    """``"+1 face, -1 house"``; one such line per row of an F contrast."""
    rows = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    return " / ".join(", ".join(f"{w:+g} {c}" for c, w in zip(conditions, row) if w != 0) for row in rows)


def contrast_rows(model: StatsModel) -> list[dict]:
    """Every contrast the model asks for, DummyContrasts included."""
    rows = []
    for node in model.nodes:
        for c in node.contrasts:
            rows.append({"node": node.name, "contrast": c.name, "test": c.test,
                         "weights": weights_text(c.conditions, c.weights)})
        if node.has_dummy_contrasts:
            listed = "every column of X" if node.dummy_all_columns else ", ".join(map(str, node.dummy_contrasts))
            rows.append({"node": node.name, "contrast": "DummyContrasts", "test": node.dummy_test,
                         "weights": f"+1 on each of: {listed}"})
    return rows


def _filter_text(filt: dict) -> str:
    return "; ".join(f"{k} in {list(v)}" for k, v in filt.items())


def _depths(model: StatsModel) -> dict[str, int]:
    depth: dict[str, int] = {}
    for node in model.topological_order():
        depth[node.name] = max((depth[e.source] + 1 for e in model.incoming(node.name)), default=0)
    return depth


def model_section(model: StatsModel, budget: FigureBudget) -> str:
    """Input filter, drawn graph, node/edge/contrast tables."""
    nodes = [{"node": n.name, "level": n.level, "GroupBy": ", ".join(n.group_by) or "(none)",
              "type": n.model.type, "X": ", ".join(map(str, n.model.x)),
              "formula": n.model.formula or "",
              "HRF": f"{n.model.hrf.model} on {', '.join(n.model.hrf.variables)}" if n.model.hrf else "",
              "transformations": ", ".join(i.get("Name", "?") for i in (n.transformations or {}).get(
                  "Instructions", [])),
              "options": n.model.options or ""}
             for n in model.nodes]
    edges = [{"source": e.source, "destination": e.destination, "filter": _filter_text(e.filter) or "(none)"}
             for e in model.edges]
    labels = {n.name: f"{n.name}\n{n.level} · {n.model.type}\nGroupBy: {', '.join(n.group_by) or '-'}"
              for n in model.nodes}
    graph = budget.draw("graph", "model graph", lambda: figures.model_graph(
        _depths(model), [(e.source, e.destination, _filter_text(e.filter)) for e in model.edges], labels))
    edge_html = ""
    if edges:
        implicit = "" if model.raw.get("Edges") else \
            '<p class="note">The model has no Edges: nodes are chained in file order.</p>'
        edge_html = f"<h3>Edges</h3>{implicit}{table(edges)}"
    input_filter = _filter_text(model.input) or "(none)"
    return (f'<h2 id="model">Model graph</h2><p>Input: <code>{esc(input_filter)}</code></p>{graph}'
            f"<h3>Nodes</h3>{table(nodes)}{edge_html}<h3>Contrasts</h3>{table(contrast_rows(model))}")
