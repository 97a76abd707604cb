"""Plan the whole graph before any fit: every node's units, design columns and contrasts.

Run-level designs are built from the data (cheap); higher-level groups are
formed from the entities of the maps that would flow, with participants
columns joined, and their designs built the same way the fit builds them.
Nothing is read from an image and nothing is written.

The plan is where a name that matches nothing stops the run: an ``X``
entry, ``HRF`` variable or contrast condition that matches nothing in every
unit of its node, or a ``GroupBy`` entry that is neither an entity, a
participants column nor ``contrast``, is a :class:`DesignError` naming the
node, the entry, what does exist and the fix. Absent in some units only is
a warning (written beside those units' outputs).

It is also where a higher-level design that cannot be estimated stops the
run (no residual degrees of freedom, a redundant intercept, a contrast that
is not estimable): the fit would refuse the same design, but only after the
nodes before it had run. A group's maps at fit time are the planned ones
less those quality control excludes, and fewer rows never make a design
estimable, so the plan refuses only what the fit would refuse.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

from bids_app.design.columns import is_glob
from bids_app.design.contrasts import plan_contrasts
from bids_app.design.diagnostics import diagnose
from bids_app.errors import DesignError, did_you_mean
from bids_app.graph import groups
from bids_app.graph.units import StatMap
from bids_app.io.entities import ENTITY_KEYS
from bids_app.spec.model import Node

_MAX_SHOWN = 15
_PLANNED = Path("<planned>")


@dataclass
class UnitOutline:
    """One unit as the whole-graph plan outlines it (no data read): its entities, design columns and
    output contrast names."""

    entities: dict
    columns: list[str]
    contrasts: list[str]
    n_inputs: int = 1
    warnings: list[str] = field(default_factory=list)


@dataclass
class NodePlan:
    node: Node
    units: list[UnitOutline] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        """Design columns over all units, in first-seen order."""
        return list(dict.fromkeys(c for u in self.units for c in u.columns))


def _shown(names) -> str:
    names = list(names)
    text = ", ".join(map(str, names[:_MAX_SHOWN]))
    return (text + f", ... ({len(names)} in all)") if len(names) > _MAX_SHOWN else (text or "none")


def _events_text(inventories: list[dict]) -> str:
    levels: dict[str, set | str] = {}
    for inv in inventories:
        for col, vals in inv.get("events", {}).items():
            if vals == "numeric" or levels.get(col) == "numeric":
                levels[col] = "numeric"
            else:
                levels.setdefault(col, set()).update(vals)
    parts = [f"{c} ({'numeric' if v == 'numeric' else _shown(sorted(v))})" for c, v in levels.items()]
    return "; ".join(parts) or "none"


def _run_inventory(node: Node, designs) -> str:
    invs = [d.inventory for d in designs]
    confounds = list(dict.fromkeys(c for inv in invs for c in inv.get("confounds", [])))
    entities = sorted({k for inv in invs for k in inv.get("entities", {})})
    variables = list(dict.fromkeys(c for d in designs for c in d.info.columns))
    return (f"events columns (levels): {_events_text(invs)}; confound columns: {_shown(confounds)}; "
            f"entities: {_shown(entities)}; design columns built: {_shown(variables)}")


def _matches(entry: str, names) -> bool:
    return any(fnmatch.fnmatchcase(n, entry) for n in names) if is_glob(entry) else entry in names


def _check_run_names(node: Node, designs) -> None:
    """X entries and HRF variables that match nothing in any run are errors."""
    n = len(designs)
    dropped_everywhere = None
    for design in designs:
        dropped = {d["entry"] for d in design.info.dropped}
        dropped_everywhere = dropped if dropped_everywhere is None else dropped_everywhere & dropped
    gone = dropped_everywhere or set()
    # a confound pattern may rightly match nothing (``motion_outlier*`` when no volume is an outlier)
    kinds = {d["entry"]: d["kind"] for design in designs for d in design.info.dropped}
    problems = [f"Model.X entry {e!r}" for e in node.model.x
                if str(e) in gone and not (is_glob(str(e)) and kinds.get(str(e)) == "confound")]

    if node.model.hrf is not None:
        convolved = {c for d in designs for c in (d.info.hrf or {}).get("variables", [])}
        problems += [f"Model.HRF.Variables entry {v!r}" for v in node.model.hrf.variables
                     if not _matches(v, convolved)]
    if problems:
        raise DesignError(
            f"node {node.name!r}: {', '.join(problems)} match(es) nothing in any of the {n} run(s), so "
            f"nothing would be estimated for it. What exists: {_run_inventory(node, designs)}. Fix: name an "
            "events column, one of its levels as '<column>.<value>' (e.g. 'trial_type.face') or a bare "
            "trial_type value, a confound column, or a column a Transformation makes; or remove the entry")


def _contrast_names(node: Node) -> list[tuple[str, tuple]]:
    specs = [(c, (c,)) for c in node.dummy_contrasts or ()]
    return specs + [(c.name, c.conditions) for c in node.contrasts]


def _check_conditions(node: Node, plans: list[UnitOutline], found: dict[str, int], what_exists: str) -> None:
    """Every contrast must be computable in at least one unit."""
    missing = [(name, conds) for name, conds in _contrast_names(node) if not found.get(name)]
    if not missing:
        return
    lines = [f"contrast {name!r} (conditions {', '.join(map(repr, conds))})" for name, conds in missing]
    columns = list(dict.fromkeys(c for u in plans for c in u.columns))
    raise DesignError(
        f"node {node.name!r}: {'; '.join(lines)} cannot be computed in any of its {len(plans)} unit(s): "
        f"a condition names no design column. Design columns: {_shown(columns)}. {what_exists}Fix: name "
        "design columns (X entries, their '<column>.<value>' levels), or, above the Run level, the "
        "incoming contrast of a group (GroupBy with 'contrast' gives each group one)")


def _group_key_source(key: str, maps: list[StatMap], participants) -> str | None:
    if any(key in m.entities for m in maps):
        return "entity"
    if participants is not None and key in participants.columns:
        return "participants"
    if key in ENTITY_KEYS.values() or key == "contrast":
        return "absent entity"
    return None


def check_group_by(node: Node, maps: list[StatMap], participants) -> None:
    """A GroupBy entry must be an entity, a participants column or ``contrast``.

    A known BIDS entity absent from the data (``run`` on single-run data,
    ``session`` without sessions) groups nothing apart, as the specification
    allows; any other name is a typo that would pool everything silently.
    """
    entities = sorted({k for m in maps for k in m.entities})
    columns = [c for c in (participants.columns if participants is not None else []) if c != "subject"]
    for key in node.group_by:
        if _group_key_source(key, maps, participants) is None:
            raise DesignError(
                f"node {node.name!r}: GroupBy entry {key!r} matches nothing{did_you_mean(key, [*entities, *columns])}"
                f": the incoming maps' entities are {_shown(entities)}; participants columns: "
                f"{_shown(columns)}. Fix: use one of those (or 'contrast'), or remove it; an unknown "
                "name would put every input in one group")


def _run_node(node: Node, units: list) -> tuple[NodePlan, list[StatMap]]:
    plan, flows, found = NodePlan(node), [], {}
    designs = [checked.design for checked in units]
    _check_run_names(node, designs)
    for run, design in ((checked.run, checked.design) for checked in units):
        columns = list(design.matrix.columns)
        contrasts, warnings = plan_contrasts(node, columns, design.info.x_columns or columns,
                                             incoming=None)
        for c in contrasts:
            found[c.spec] = found.get(c.spec, 0) + 1
        plan.units.append(UnitOutline(dict(run.entities), columns, [c.name for c in contrasts], 1, warnings))
        flows += [StatMap({**run.entities, "contrast": c.name}, _PLANNED, _PLANNED, None, node.name)
                  for c in contrasts if c.flows]
    _check_conditions(node, plan.units, found, f"Runs: {_run_inventory(node, designs)}. ")
    return plan, flows


def _group_node(node: Node, incoming: list[StatMap], participants) -> tuple[NodePlan, list[StatMap]]:
    check_group_by(node, incoming, participants)
    plan, flows, found = NodePlan(node), [], {}
    names_in = sorted({str(m.entities.get("contrast")) for m in incoming})
    # groups often share one design (X = [1] over each subject's runs): diagnosed once
    problems_of: dict[tuple, list[str]] = {}
    unestimable = []
    for group, members in groups.group_maps(incoming, node.group_by, participants):
        members = groups.tag_group(group, members)
        entities = groups.common_entities(members)
        contrast_names = sorted({m.entities.get("contrast") for m in members})
        single = contrast_names[0] if len(contrast_names) == 1 else None
        table = groups.input_table(members, participants)
        X, info = groups.design_for(node, table)
        columns = list(X.columns)
        contrasts, warnings = plan_contrasts(node, columns, info.get("x") or columns, single)
        for c in contrasts:
            found[c.spec] = found.get(c.spec, 0) + 1
        plan.units.append(UnitOutline(entities, columns, [c.name for c in contrasts], len(members),
                                   [*warnings, *info.get("warnings", [])]))
        flows += [StatMap({**entities, "contrast": c.name}, _PLANNED, _PLANNED, None, node.name)
                  for c in contrasts if c.flows]
        key = (tuple(columns), X.shape, X.to_numpy(dtype=float).tobytes(),
               tuple((c.name, c.weights.tobytes()) for c in contrasts))
        if key not in problems_of:
            problems_of[key] = diagnose(X, [(c.name, c.weights) for c in contrasts],
                                        require_residual_dof=node.model.type != "meta").problems
        if problems_of[key]:
            unestimable.append((group, len(members), problems_of[key]))
    cols = [c for c in (participants.columns if participants is not None else []) if c != "subject"]
    _check_conditions(node, plan.units, found,
                      f"Incoming contrasts: {_shown(names_in)}; participants columns: {_shown(cols)}. ")
    if unestimable:
        raise DesignError(_unestimable(node, unestimable, len(plan.units)))
    return plan, flows


def _unestimable(node: Node, failed: list[tuple[dict, int, list[str]]], n_groups: int) -> str:
    """The error for groups whose design the fit would refuse: each problem, its groups, the fix."""
    by_problem: dict[str, list[str]] = {}
    for group, n, problems in failed:
        for problem in problems:
            by_problem.setdefault(problem, []).append(groups.group_label(group))
    text = (f"node {node.name!r}: the design cannot be estimated in {len(failed)} of its {n_groups} group(s) "
            "(stopped before fitting anything):" + "".join(f"\n  - {problem}, in group(s) {_shown(labels)}"
                                                            for problem, labels in by_problem.items()))
    if node.model.type != "meta" and any(n == 1 for _, n, _ in failed):
        if node.level == "Dataset":
            text += ("\nFix: a group with a single incoming map (one participant) gives a \"glm\" node no "
                     "residual to estimate a variance from: select more participants (--participant-label), "
                     "or run up to the subject level only (analysis level 'subject')")
        else:
            text += ("\nFix: a group with a single incoming map (a subject with one run, for instance) gives a "
                     "\"glm\" node no residual to estimate a variance from. For fixed effects across runs use "
                     "\"Type\": \"meta\" (a single map then passes on with its own variance); or send those "
                     "maps past this node with Edges, or leave those subjects out (--participant-label)")
    return text


def plan_graph(ctx, nodes: list[Node], planned: dict) -> dict[str, NodePlan]:
    """Plan every node of ``nodes`` (parents first) without fitting.

    Parameters
    ----------
    ctx : Context
    nodes : list of Node
        The nodes to run, parents before children.
    planned : dict
        The root node's units: :class:`~bids_app.graph.units.CheckedRun` of a
        Run root, or the existing :class:`StatMap` inputs of a higher root.

    Returns
    -------
    dict
        Node name -> :class:`NodePlan`.

    Raises
    ------
    DesignError
        A name matching nothing (see the module docstring), or a design
        that cannot be built.
    """
    from bids_app.graph.executor import edge_inputs

    participants = ctx.index.participants if ctx.index is not None else None
    root = ctx.model.root.name
    plans: dict[str, NodePlan] = {}
    flows: dict[str, list[StatMap]] = {}
    for node in nodes:
        if node.level == "Run":
            if node.name not in planned:
                continue  # the executor reports a non-root Run node
            plans[node.name], flows[node.name] = _run_node(node, planned[node.name])
            continue
        incoming = planned[node.name] if node.name == root else edge_inputs(ctx, node, flows)
        plans[node.name], flows[node.name] = _group_node(node, incoming, participants)
    return plans


def _compress(columns: list[str]) -> list[str]:
    """``drift_1 ... drift_7`` as one entry, so a listing shows the model's own columns."""
    drifts = [c for c in columns if c.startswith("drift_")]
    rest = [c for c in columns if not c.startswith("drift_")]
    return rest + ([f"{drifts[0]}..{drifts[-1]} ({len(drifts)} cosine drifts)"] if len(drifts) > 1 else drifts)


def describe(plans: dict[str, NodePlan]) -> list[str]:
    """Lines saying, per node, how many units it would fit and the design columns it would build."""
    lines = []
    for name, plan in plans.items():
        node = plan.node
        n_in = sum(u.n_inputs for u in plan.units)
        unit = "run(s)" if node.level == "Run" else f"group(s) of {n_in} incoming map(s)"
        lines.append(f"node {name!r} ({node.level}): {len(plan.units)} unit(s) to fit: {len(plan.units)} {unit}")
        lines.append(f"  design columns: {', '.join(_compress(plan.columns))}")
        contrasts = list(dict.fromkeys(c for u in plan.units for c in u.contrasts))
        lines.append(f"  contrasts: {_shown(contrasts)}")
        notes = list(dict.fromkeys(w for u in plan.units for w in u.warnings))
        for note in notes[:_MAX_SHOWN]:
            lines.append(f"  warning: {note}")
    return lines
