"""A corpus of 201 public BIDS Stats Models: each runs, or is refused for a reason that is right.

``tests/data/model_corpus/models`` holds every distinct model JSON found in
public repositories (the specification's examples, the model zoo, FitLins'
examples, bidspm's demos and tests, pybids' test models and the OpenNeuro
FitLins specs); ``SOURCES.tsv`` gives each file's repository, path and
commit. ``EXPECTED.tsv`` is the reviewed verdict per model: ``plans`` (the
model is planned on a simulated dataset that holds the variables it names:
every node's designs are built and every contrast is computable in some
unit), or ``refused`` at the ``model`` stage (reading the JSON) or the
``plan`` stage (on the dataset), with the reason's category. Each
category's message pattern is below; the review of why each refusal is
right is in ``tests/data/model_corpus/README.md``.

Static checks run on every model. Planning on a dataset costs about a
second a model, so a fixed quarter of the planned models plus every
plan-stage refusal are planned here, and a fixed eighth of the planned
models are fitted through every node, which shows that the plan refuses
what the fit would (all of them with ``BIDS_STATS_FULL_CORPUS=1``). The
simulated datasets are replicated as a study would be (two runs per
subject, two subjects per cell of the participants factors), so a refusal
is the model's, not the simulation's.
"""
import contextlib
import io
import json
import os
import re
from pathlib import Path

import pytest
from bsmschema.models import BIDSStatsModel

from bids_app.cli import main
from bids_app.errors import ModelError
from bids_app.spec import load_model
from bids_sim import dataset_spec, write_dataset

CORPUS = Path(__file__).parent / "data" / "model_corpus"
REASONS = {
    "not-json": r"not valid JSON",
    "transformer-not-implemented": r"Transformer.*(is not allowed|is not implemented)",
    "missing-required-key": r"missing required key",
    "doublegamma-ambiguous": r"'DoubleGamma' does not say which double-gamma HRF",
    "unknown-transformation": r"unknown transformation '\w+' \(did you mean",
    "hrf-variable-not-in-x": r"is not in Model.X.*only X variables can be convolved",
    "empty-name-or-weight": r"empty name|'' is not a number",
    "condition-listed-twice": r"is listed twice",
    "duplicate-contrast-name": r"duplicate contrast name",
    "weights-count": r"expected \d+ weights \(one per ConditionList entry\)",
    "condition-not-in-x": r"is not in Model.X; a condition must be",
    "contrast-needs-two-incoming": r"cannot be computed in any of its \d+ unit.*GroupBy with 'contrast' gives each "
                                   r"group one",
    "template-placeholder-task": r"no BOLD images match Input=\{.*'task_name'",
    "no-residual-dof": r"the design cannot be estimated in \d+ of its \d+ group\(s\)[\s\S]*no residual degrees of freedom",
    "not-estimable": r"the design cannot be estimated in \d+ of its \d+ group\(s\)[\s\S]*is not estimable",
}


def _rows(name: str) -> list[dict]:
    lines = (CORPUS / name).read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:] if line]


EXPECTED = {row["file"]: row for row in _rows("EXPECTED.tsv")}
SOURCES = {row["file"]: row for row in _rows("SOURCES.tsv")}
FACTS = json.loads((CORPUS / "openneuro_datasets.json").read_text())
FILES = sorted(EXPECTED)


def test_corpus_is_complete_and_sourced():
    on_disk = sorted(p.name for p in (CORPUS / "models").glob("*.json"))
    assert on_disk == FILES == sorted(SOURCES)
    assert len(FILES) >= 190
    for row in SOURCES.values():
        assert re.fullmatch(r"[\w.-]+/[\w.-]+", row["repository"]) and re.fullmatch(r"[0-9a-f]{40}", row["commit"])
    accepted = [f for f in FILES if EXPECTED[f]["bsmschema"] == "accepts"]
    planned = [f for f in accepted if EXPECTED[f]["outcome"] == "plans"]
    assert len(accepted) >= 170 and len(planned) >= 150
    assert {row["reason"] for row in EXPECTED.values()} - {"-"} <= set(REASONS)


@pytest.mark.parametrize("name", FILES)
def test_model_is_read_as_reviewed(name):
    path = CORPUS / "models" / name
    expected = EXPECTED[name]
    try:
        BIDSStatsModel.model_validate(json.loads(path.read_text()))
        schema = "accepts"
    except Exception:
        schema = "refuses"
    assert schema == expected["bsmschema"]
    if expected["stage"] == "model":
        with pytest.raises(ModelError) as err:
            load_model(path)
        assert re.search(REASONS[expected["reason"]], str(err.value)), str(err.value)
    else:
        model = load_model(path)
        assert model.nodes
    if schema == "refuses":
        # models the official schema refuses are refused here too, or run with a documented leniency
        assert expected["stage"] == "model" or name in LENIENT


#: bsmschema refuses a scalar Input filter; the specification's own example writes one (see schema.py)
LENIENT = {f for f in FILES if EXPECTED[f]["bsmschema"] == "refuses" and EXPECTED[f]["outcome"] == "plans"}


def _planned_here() -> list[str]:
    full = os.environ.get("BIDS_STATS_FULL_CORPUS") == "1"
    plans = [f for f in FILES if EXPECTED[f]["outcome"] == "plans"]
    at_plan = [f for f in FILES if EXPECTED[f]["stage"] == "plan"]
    return sorted(plans if full else plans[::4]) + at_plan


@pytest.mark.parametrize("name", _planned_here())
def test_model_plans_on_a_matching_dataset(name, tmp_path):
    path = CORPUS / "models" / name
    expected = EXPECTED[name]
    model = json.loads(path.read_text())
    dataset = next((p for p in SOURCES[name]["path"].split("/") if p in FACTS), None)
    spec = dataset_spec(model, FACTS.get(dataset), replicated=True)
    bids, deriv = write_dataset(tmp_path, spec)
    extra = ["--desc-label", spec["desc"]] if spec["desc"] != "preproc" else []
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["validate", str(path), "--bids-dir", str(bids), "--derivatives", str(deriv), *extra])
    if expected["outcome"] == "plans":
        assert code == 0, err.getvalue()
        # every node that ran lists its units; none was planned with zero units
        text = out.getvalue()
        nodes = re.findall(r"node '.*' \((\w+)\): (\d+) unit\(s\)", text)
        assert nodes and all(int(n) > 0 for _, n in nodes), text
    else:
        assert code in (18, 20), err.getvalue()
        assert re.search(REASONS[expected["reason"]], err.getvalue()), err.getvalue()


def _fitted_here() -> list[str]:
    plans = sorted(f for f in FILES if EXPECTED[f]["outcome"] == "plans")
    return plans if os.environ.get("BIDS_STATS_FULL_CORPUS") == "1" else plans[1::8]


@pytest.mark.parametrize("name", _fitted_here())
def test_planned_model_fits_through_every_node(name, tmp_path, capsys):
    """What plans also fits: the plan refuses every design the fit would (an eighth of the planned
    models here, all with ``BIDS_STATS_FULL_CORPUS=1``); every node writes statistic maps."""
    from bids_app.derivatives.naming import sanitize_label

    path = CORPUS / "models" / name
    model = json.loads(path.read_text())
    dataset = next((p for p in SOURCES[name]["path"].split("/") if p in FACTS), None)
    spec = dataset_spec(model, FACTS.get(dataset), replicated=True)
    bids, deriv = write_dataset(tmp_path, spec)
    extra = ["--desc-label", spec["desc"]] if spec["desc"] != "preproc" else []
    out = tmp_path / "out"
    code = main([str(bids), str(out), "dataset", "--model", str(path), "--derivatives", str(deriv), *extra])
    assert code == 0, capsys.readouterr().err
    for node in model["Nodes"]:
        if not node.get("Contrasts") and not node.get("DummyContrasts"):
            continue  # a denoising model: residuals only
        folder = out / f"node-{sanitize_label(node['Name'])}"
        assert any(next(folder.rglob(f"*_stat-{stat}_*statmap.nii.gz"), None) for stat in ("t", "F")), node["Name"]


# ---------------------------------------------------------------- real fits of a representative subset

def _ds003_events(subject, session, task, run):
    import pandas as pd

    from conftest import real_data
    path = real_data("events_only/ds000003") / f"sub-{subject}/func/sub-{subject}_task-{task}_events.tsv"
    return pd.read_csv(path, sep="\t")


#: model -> (events source, volumes): the model zoo's ds003 model on the real ds003 events,
#: the specification's two examples on events simulated from their names
FITTED = {
    "model-zoo__model-001-smdl__48802c03.json": (_ds003_events, 165),
    "stats-models__model-walkthrough-smdl__0d49a315.json": (None, 40),
    "stats-models__model-example-smdl__0ffa944c.json": (None, 40),
}


@pytest.mark.parametrize("name", sorted(FITTED))
def test_corpus_model_fits_through_every_node(name, tmp_path, capsys):
    """Fitted, not only planned: every node writes maps and every Run-level contrast has its maps."""
    events, n_vols = FITTED[name]
    path = CORPUS / "models" / name
    model = json.loads(path.read_text())
    spec = dataset_spec(model)
    if events is not None:
        spec["subjects"] = ["01", "02", "03"]
    bids, deriv = write_dataset(tmp_path, spec, n_vols=n_vols, events=events)
    out = tmp_path / "out"
    code = main([str(bids), str(out), "dataset", "--model", str(path), "--derivatives", str(deriv)])
    assert code == 0, capsys.readouterr().err
    from bids_app.derivatives.naming import sanitize_label
    for node in model["Nodes"]:
        folder = out / f"node-{sanitize_label(node['Name'])}"
        assert list(folder.rglob("*_stat-t_statmap.nii.gz")) or list(folder.rglob("*_stat-F_statmap.nii.gz")), node
    run = model["Nodes"][0]
    names = [c["Name"] for c in run.get("Contrasts", [])] + list((run.get("DummyContrasts") or {}).get("Contrasts", []))
    run_folder = out / f"node-{sanitize_label(run['Name'])}"
    for contrast in names:
        label = sanitize_label(contrast)
        maps = list(run_folder.rglob(f"*_contrast-{label}_stat-effect_statmap.nii.gz"))
        assert len(maps) == len(spec["subjects"]) * len(spec["runs"]), (contrast, maps)
    provenance = json.loads((out / "provenance.json").read_text())
    assert not [w for w in provenance["Warnings"] if "skipped" in w], provenance["Warnings"]
