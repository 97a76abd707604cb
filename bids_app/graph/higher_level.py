"""Session, Subject and Dataset levels: combine incoming effect maps."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from bids_app.design.group import build_group_design
from bids_app.errors import InputDataError
from bids_app.estimation.fixed_effects import FIXED_EFFECTS_DOF_RULE
from bids_app.graph.units import Settings, StatMap
from bids_app.io.maps import read_map
from bids_app.spec.model import Node

log = logging.getLogger(__name__)


def group_maps(maps: list[StatMap], group_by: tuple[str, ...],
               participants: pd.DataFrame | None = None) -> list[tuple[dict, list[StatMap]]]:
    """Split incoming maps by the GroupBy entities, or participants columns (``group``).

    A GroupBy key absent from the data (e.g. ``session`` in a dataset without
    sessions) does not split anything: those maps form one group. A key that
    is no entity of the maps but a participants.tsv column splits by the
    subject's value (the spec's ``["contrast", "group"]``).
    """
    lookup = {}
    if participants is not None and len(participants) and "subject" in participants:
        rows = participants.drop_duplicates("subject").set_index("subject")
        lookup = {k: rows[k].to_dict() for k in group_by
                  if k in rows.columns and not any(k in m.entities for m in maps)}
    groups: dict[tuple, list[StatMap]] = {}
    for m in maps:
        key = tuple((k, lookup[k].get(m.entities.get("subject")) if k in lookup else m.entities.get(k))
                    for k in group_by)
        groups.setdefault(key, []).append(m)
    return [({k: v for k, v in key if v is not None and not pd.isna(v)}, members) for key, members in sorted(
        groups.items(), key=lambda kv: tuple(str(v) for _, v in kv[0]))]


def tag_group(group: dict, members: list[StatMap]) -> list[StatMap]:
    """Members of a group split by participants columns, with a ``desc`` entity naming the split.

    Output names hold BIDS entities only, so two groups that differ by a
    participants value (``group-patient`` / ``group-control`` is no entity)
    would write the same files; ``desc-groupPatient`` keeps them apart.
    """
    from dataclasses import replace

    from bids_app.derivatives.naming import sanitize_label

    split = {k: v for k, v in group.items() if all(k not in m.entities for m in members)}
    if not split:
        return members
    desc = sanitize_label(" ".join(f"{k} {v}" for k, v in split.items()))
    return [replace(m, entities={**m.entities, "desc": desc}) for m in members]


def common_entities(maps: list[StatMap]) -> dict:
    """Entities with the same value in every map of a group."""
    first = maps[0].entities
    return {k: v for k, v in first.items()
            if v is not None and all(m.entities.get(k) == v for m in maps[1:])}


def input_table(maps: list[StatMap], participants: pd.DataFrame) -> pd.DataFrame:
    """One row per incoming map: its entities joined with participants.tsv on ``subject``.

    Raises
    ------
    InputDataError
        A subject of these maps has several rows in participants.tsv (the
        join would duplicate its maps' rows, and the values may conflict).
    """
    rows = pd.DataFrame([m.entities for m in maps])
    if "subject" in rows and len(participants):
        listed = participants["subject"]
        repeated = sorted(set(listed[listed.duplicated()]) & set(rows["subject"]))
        if repeated:
            raise InputDataError("participants.tsv lists " + ", ".join(f"sub-{s}" for s in repeated)
                                 + " more than once; keep one row per participant_id")
        extra = participants.drop(columns=[c for c in participants if c in rows and c != "subject"])
        rows = rows.merge(extra, on="subject", how="left")
    return rows


def load_maps(maps: list[StatMap]):
    """Effects and variances (or None) of each map, with each map's grid and stored shape.

    Volumes give (x, y, z) arrays and affines; surface maps (GIFTI pairs,
    CIFTI) give (n_units,) vectors and their :class:`~bids_app.io.surface.Surface`.
    """
    effects, variances, grids, shapes = [], [], [], []
    for m in maps:
        space = m.entities.get("space")
        values, grid, shape = read_map(m.effect, space)
        effects.append(values)
        grids.append(grid)
        shapes.append(shape)
        variances.append(read_map(m.variance, space)[0] if m.variance else None)
    return effects, variances, grids, shapes


def design_for(node: Node, table: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Design matrix of a group, built the same way for ``glm`` and ``meta`` nodes.

    A ``meta`` node's design (any ``X`` or ``Formula``, e.g. two run subsets
    contrasted within each subject) is fitted by inverse-variance weighted
    least squares; the sidecar states its degrees-of-freedom rule.
    """
    design = build_group_design(node, table)
    if node.model.type != "meta":
        return design.matrix, design.info
    return design.matrix, {**design.info, "type": "meta", "DegreesOfFreedom": FIXED_EFFECTS_DOF_RULE}


def make_estimator(node: Node, settings: Settings, dofs):
    """The estimation engine a node asks for (Model.Software wins over the CLI)."""
    from bids_app.estimation.fixed_effects import FixedEffectsEstimator
    from bids_app.estimation.mixed import MixedEffectsEstimator
    from bids_app.estimation.ols import OLSEstimator

    if node.model.type == "meta":
        return FixedEffectsEstimator(dofs=dofs), "fixed-effects"
    name = str(node.model.ours.get("Estimator", settings.estimator)).lower()
    if name == "ols":
        return OLSEstimator(), "ols"
    if name == "mixed":
        method = str(node.model.ours.get("Method", "reml")).lower()
        return MixedEffectsEstimator(method=method), f"mixed-{method}"
    raise InputDataError(f"node {node.name!r}: unknown estimator {name!r} (use 'ols' or 'mixed')")

