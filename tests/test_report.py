"""The HTML report on real outputs: sections, warnings, embedded figures, and
numbers that must equal what the written maps and designs say."""
import base64
import json
import re
import shutil
from html import escape
from html.parser import HTMLParser

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nibabel.affines import apply_affine
from scipy import ndimage, stats

from bids_app.cli import main
from bids_app.graph.pipeline import design_diagnostics
from bids_app.report import figures
from bids_app.report.html import write_report
from bids_app.report.maps import find_peaks
from bids_app.spec import load_model
from conftest import MODELS, real_data
from test_cli import _wager_copy

DISPLAY_Z = stats.norm.isf(0.001)
N_SUBJECTS = 8


class _Page(HTMLParser):
    """Tables (attributes and cell texts), headings, images and links of a page."""

    def __init__(self, text):
        super().__init__()
        self.tables, self.headings, self.images, self.links, self.scripts = [], [], [], [], 0
        self._cell = self._heading = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.tables.append({"attrs": attrs, "rows": []})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = ""
        elif re.fullmatch(r"h\d", tag):
            self._heading = (tag, attrs.get("id"), "")
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag == "a":
            self.links.append(attrs.get("href", ""))
        elif tag in ("script", "link", "iframe"):
            self.scripts += 1

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1]["rows"][-1].append(self._cell.strip())
            self._cell = None
        elif self._heading and tag == self._heading[0]:
            self.headings.append(self._heading)
            self._heading = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._heading:
            self._heading = (*self._heading[:2], self._heading[2] + data)

    def table(self, **attrs):
        found = [t for t in self.tables if all(t["attrs"].get(k) == v for k, v in attrs.items())]
        assert len(found) == 1, f"expected one table with {attrs}, found {len(found)}"
        header, *rows = found[0]["rows"]
        return pd.DataFrame(rows, columns=header)


def _load(path):
    img = nib.load(path)
    return img.get_fdata(dtype=np.float64), img.affine


@pytest.fixture(scope="module")
def wager(tmp_path_factory):
    """CLI on 8 real wager maps; one map broken (QC exclusion), a near-duplicate
    covariate (collinearity warnings) and a reversed contrast (negative effects)."""
    base = tmp_path_factory.mktemp("report")
    bids = _wager_copy(base, n=N_SUBJECTS)
    broken = next((bids / f"sub-{N_SUBJECTS:02d}").glob("*_stat-effect_statmap.nii.gz"))
    img = nib.load(broken)
    nib.save(nib.Nifti1Image(np.full(img.shape, np.nan, dtype=np.float32), img.affine), broken)
    participants = pd.read_csv(bids / "participants.tsv", sep="\t")
    participants["success_rescored"] = 2 * participants["Y_Reappraisal_Success"] + 0.05 * participants["X_RVLPFC"]
    participants.to_csv(bids / "participants.tsv", sep="\t", index=False)
    model = {
        "Name": "report_test", "BIDSModelVersion": "1.0.0",
        "Description": "Mean, two near-collinear covariates, and the mean reversed.",
        "Input": {"task": ["emoreg"]},
        "Nodes": [{
            "Level": "Dataset", "Name": "group", "GroupBy": ["contrast"],
            "Model": {"Type": "glm", "X": [1, "Y_Reappraisal_Success", "success_rescored"]},
            "DummyContrasts": {"Contrasts": ["intercept", "Y_Reappraisal_Success"], "Test": "t"},
            "Contrasts": [{"Name": "reversed", "ConditionList": ["intercept"], "Weights": [-1], "Test": "t"}],
        }],
    }
    model_path = base / "model.json"
    model_path.write_text(json.dumps(model))
    out = base / "out"
    assert main([str(bids), str(out), "dataset", "--model", str(model_path)]) == 0
    record = json.loads((out / "provenance.json").read_text())
    text = (out / "report.html").read_text()
    return out, record, text, _Page(text), load_model(model_path)


def _z_maps(out):
    return sorted((out / "node-group").glob("*_stat-z_statmap.nii.gz"))


def _sidecar(path):
    return json.loads(path.with_name(path.name.split(".")[0] + ".json").read_text())


def test_sections_contrasts_and_provenance(wager):
    out, record, text, page, _ = wager
    ids = {h[1] for h in page.headings}
    assert {"summary", "warnings", "model", "node-group"} <= ids
    titles = " | ".join(h[2] for h in page.headings)
    for unit in record["Units"]:
        for name in unit["Contrasts"]:
            assert f"{name} (" in titles, name
    assert record["Model"]["SHA256"] in text
    software = json.loads((out / "provenance.json").read_text())["Software"]
    assert f"nilearn {software['nilearn']}" in text
    assert f"{len(record['Inputs'])} files" in text
    # the model's contrasts table lists the written weights
    assert "<td>group</td><td>reversed</td><td>t</td><td>-1 intercept</td>" in text


def test_warnings_and_exclusions_come_first(wager):
    out, record, text, page, _ = wager
    assert record["Exclusions"], "the broken map should have been excluded"
    assert any("variance inflation" in w for w in record["Warnings"])
    first_figure = text.index("<img")
    for warning in record["Warnings"]:
        position = text.find(escape(warning))
        assert 0 < position < first_figure, warning
    for exclusion in record["Exclusions"]:
        assert escape(exclusion["File"]) in text[:first_figure]


def test_negative_effects_are_flagged(wager):
    out, record, text, page, _ = wager
    alerts = text[text.index('id="warnings"'):text.index('id="model"')]
    flagged = 0
    for path in _z_maps(out):
        z, _ = _load(path)
        contrast = _sidecar(path)["Contrast"]
        n_negative = int(np.sum(z < -DISPLAY_Z))
        mentioned = f"contrast {escape(contrast)}: {n_negative} voxel(s) with z &lt; -" in alerts
        assert mentioned == (n_negative > 0), contrast
        if n_negative:
            assert f"minimum z = {np.nanmin(z):.2f}" in alerts
            flagged += 1
            # a one-sided thresholded map beside it cannot show them: the report says so
            one_sided = [p for p in path.parent.glob(path.name.replace("_statmap", "_desc-*_statmap"))
                         if _sidecar(p).get("TwoSided") is False]
            assert (f"the {n_negative} voxels with z &lt; -{DISPLAY_Z:.2f} in the z map are not tested here"
                    in text) == bool(one_sided)
    assert flagged >= 1  # the reversed mean has strong negative effects


def test_figures_are_embedded_pngs(wager):
    out, record, text, page, _ = wager
    assert page.scripts == 0
    assert not [link for link in page.links if not link.startswith("#")]
    assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images)
    for src in page.images:
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    n_maps = sum(len(u["Contrasts"]) for u in record["Units"])
    alts = re.findall(r'<img alt="([^"]*)"', text)
    assert [a.split()[0] for a in alts[:3]] == ["model", "design", "regressor"]
    assert sum(a.startswith("z ") for a in alts) == n_maps
    # thresholded maps are drawn unless they hold exactly the voxels of the z map figure
    thresholded = [p for p in (out / "node-group").glob("*_desc-*_statmap.nii.gz") if np.any(_load(p)[0] != 0)]
    n_drawn = sum(a.endswith("thresholded") for a in alts)
    assert n_drawn + text.count("not drawn again") == len(thresholded)
    assert len(alts) == 3 + n_maps + n_drawn


def test_peak_tables_equal_the_z_maps(wager):
    out, record, text, page, _ = wager
    for path in _z_maps(out):
        z, affine = _load(path)
        peaks = page.table(**{"class": "peaks", "data-map": path.name})
        values = peaks["peak z"].astype(float).to_numpy()
        mm = peaks[["x (mm)", "y (mm)", "z (mm)"]].astype(float).to_numpy()
        ijk = np.array([[int(v) for v in s.split(",")] for s in peaks["voxel (i, j, k)"]])
        positive = peaks["sign"].to_numpy() == "positive"
        top, bottom = np.nanargmax(z), np.nanargmin(z)
        assert values[positive][0] == pytest.approx(np.nanmax(z), abs=5e-4)
        assert values[~positive][0] == pytest.approx(np.nanmin(z), abs=5e-4)
        np.testing.assert_allclose(mm[positive][0], apply_affine(affine, np.unravel_index(top, z.shape)), atol=0.05)
        np.testing.assert_allclose(mm[~positive][0], apply_affine(affine, np.unravel_index(bottom, z.shape)),
                                   atol=0.05)
        # every row is the map's value at its voxel, whose centre is the row's coordinate
        np.testing.assert_allclose(values, z[tuple(ijk.T)], atol=5e-4)
        np.testing.assert_allclose(mm, apply_affine(affine, ijk), atol=0.05)
        # the supra-threshold counts stated under the figure
        n_pos, n_neg = int(np.sum(z > DISPLAY_Z)), int(np.sum(z < -DISPLAY_Z))
        assert f"{int(np.isfinite(z).sum())} voxels analysed; {n_pos} with z &gt; {DISPLAY_Z:.2f} and " \
               f"{n_neg} with z &lt; -{DISPLAY_Z:.2f}" in text


def test_design_diagnostics_equal_the_design(wager):
    out, record, text, page, _ = wager
    design = pd.read_csv(out / record["Units"][0]["Design"], sep="\t")
    X = design.to_numpy(dtype=float)
    X = X / np.linalg.norm(X, axis=0)
    s = np.linalg.svd(X, compute_uv=False)
    assert f"{s[0] / s[-1]:.3g}" in text
    varying = [c for c in design.columns if design[c].nunique() > 1]
    r = np.abs(design[varying].corr().to_numpy())
    np.fill_diagonal(r, 0)
    assert f"Largest |correlation| between regressors: {r.max():.2f}" in text


def test_find_peaks_are_separated_local_maxima(wager):
    out = wager[0]
    z, affine = _load(_z_maps(out)[0])
    peaks = find_peaks(z, affine, n_peaks=8, min_distance_mm=12.0)
    for sign in (1, -1):
        side = peaks[peaks.sign == sign]
        assert len(side) == 8
        signed = np.where(np.isfinite(z), sign * z, -np.inf)
        local_max = ndimage.maximum_filter(signed, size=3, mode="constant", cval=-np.inf)
        for row in side.itertuples():
            assert signed[row.i, row.j, row.k] == local_max[row.i, row.j, row.k] > 0
        assert list(side.value * sign) == sorted(side.value * sign, reverse=True)
        xyz = side[["x", "y", "z"]].to_numpy()
        distances = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)
        assert distances[np.triu_indices(len(xyz), 1)].min() >= 12.0
        # a stronger local maximum left out must lie within 12 mm of a kept, stronger peak
        candidates = np.argwhere((signed == local_max) & (signed >= sign * side.value.iloc[-1]))
        for voxel in candidates:
            near = np.linalg.norm(xyz - apply_affine(affine, voxel), axis=1)
            assert near.min() < 12.0 or tuple(voxel) in set(map(tuple, side[["i", "j", "k"]].to_numpy()))


def test_inference_outputs_are_shown(wager):
    """Every thresholded map and cluster table the pipeline wrote is reported with its own numbers."""
    out, record, text, page, _ = wager
    written = sorted((out / "node-group").glob("*_stat-z_desc-*_statmap.nii.gz"))
    assert written, "the pipeline writes thresholded maps at the Dataset level"
    for path in written:
        data = _load(path)[0]
        assert path.name in text
        assert f"{int(np.count_nonzero(np.nan_to_num(data)))} voxels survive ({int((data > 0).sum())} positive, " \
               f"{int((data < 0).sum())} negative)" in text
    for path in sorted((out / "node-group").glob("*_clusters.tsv")):
        expected = pd.read_csv(path, sep="\t")
        assert f"{path.name}</code> ({len(expected)} rows)" in text
        if len(expected):
            shown = page.table(**{"class": "clusters", "data-file": path.name})
            np.testing.assert_allclose(shown["peak_stat"].astype(float), expected["peak_stat"][:len(shown)],
                                       rtol=1e-4)


def test_files_found_by_entities_in_any_order(wager, tmp_path, monkeypatch):
    """A two-sided map named desc-before-stat and a permutation -log10 p map are found and described."""
    out, record, _, _, model = wager
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    record = json.loads(json.dumps(record).replace(str(out), str(copy)))
    z_path = _z_maps(copy)[0]
    # report only this contrast, and draw only maps, to keep the test quick
    contrast = _sidecar(z_path)["Contrast"]
    record["Units"] = [{**u, "Contrasts": [contrast]} for u in record["Units"]]
    monkeypatch.setattr(figures, "LIMITS", {"graph": 0, "design": 0, "map": 10})
    z, affine = _load(z_path)
    stem = z_path.name.replace("_stat-z_statmap.nii.gz", "")
    strict = np.where(np.abs(z) > 4.0, z, 0.0)
    two_sided = z_path.with_name(f"{stem}_desc-strict_stat-z_statmap.nii.gz")
    nib.save(nib.Nifti1Image(strict.astype(np.float32), affine), two_sided)
    two_sided.with_name(two_sided.name.replace(".nii.gz", ".json")).write_text(
        json.dumps({"Method": "none", "Alpha": 0.05, "TwoSided": True, "ZThreshold": 4.0}))
    # any -log10 p map will do: two-sided p inflated 100-fold stands in for a permutation FWE map
    p_fwe = np.minimum(1.0, 200 * stats.norm.sf(np.abs(z)))
    logp = np.where(np.isfinite(z), -np.log10(p_fwe), np.nan)
    fwe = z_path.with_name(f"{stem}_stat-logp_desc-maxT_statmap.nii.gz")
    nib.save(nib.Nifti1Image(logp.astype(np.float32), affine), fwe)
    fwe.with_name(fwe.name.replace(".nii.gz", ".json")).write_text(json.dumps({"Correction": "maxT"}))
    text = write_report(copy, model, record, design_diagnostics).path.read_text()
    assert f"fixed threshold, alpha 0.05, two-sided: |z| &ge; 4.000. {int(np.count_nonzero(strict))} voxels survive " \
           f"({int((strict > 0).sum())} positive, {int((strict < 0).sum())} negative)" in text
    assert any(a.startswith(f"{stem}_desc-strict") for a in re.findall(r'<img alt="([^"]*)"', text))
    n_fwe = int(np.sum(np.nan_to_num(logp) > -np.log10(0.05)))
    assert n_fwe > 0
    assert f"maxT family-wise corrected: {n_fwe} voxels with p<sub>FWE</sub> &lt; 0.05 " \
           f"(smallest p<sub>FWE</sub> = {10 ** -float(np.nanmax(logp)):.3g})" in text


def test_figure_budget_says_what_it_skipped(wager, tmp_path, monkeypatch):
    out, record, _, _, model = wager
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    monkeypatch.setattr(figures, "LIMITS", {"graph": 1, "design": 1, "map": 1})
    text = write_report(copy, model, record, design_diagnostics).path.read_text()
    page = _Page(text)
    n_maps = len(_z_maps(copy))
    assert len(page.images) == 3  # graph, design, first map
    assert text.count("Figure skipped (limit of 1 map figures)") == n_maps - 1
    assert "skipped" in {h[1] for h in page.headings}


@pytest.fixture(scope="module")
def haxby(tmp_path_factory):
    """Three real Haxby runs (6x10x10 voxels) through run and subject levels."""
    src = real_data("haxby2001_sub1")
    bids = tmp_path_factory.mktemp("haxby") / "bids"
    for path in src.rglob("*"):
        if path.is_file() and "acq-1slice" not in path.name and (
                "run-" not in path.name or re.search(r"run-0[1-3]_", path.name)):
            target = bids / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
    out = bids.parent / "out"
    assert main([str(bids), str(out), "subject", "--model", str(MODELS / "haxby_run_subject.json")]) == 0
    record = json.loads((out / "provenance.json").read_text())
    return out, record, (out / "report.html").read_text()


def test_run_level_design_settings(haxby):
    out, record, text = haxby
    run = next(u for u in record["Units"] if u["Node"] == "run")
    info = json.loads(open(out / run["Design"].replace(".tsv", ".json")).read())
    assert "Run-level model (first run:" in text
    cutoff = info["HighPass"]["CutoffHz"]
    assert f"{cutoff:g} Hz (period {1 / cutoff:.0f} s), {len(info['HighPass']['DriftColumns'])} cosine drift" in text
    assert f"{info['HRF']['Model']} on {', '.join(info['HRF']['Variables'])}" in text
    assert escape(info["NanPolicy"]["Confounds"]) in text
    assert f"{info['NVols']} volumes" in text
    design = pd.read_csv(out / run["Design"], sep="\t")
    varying = [c for c in design.columns if not c.startswith("drift") and design[c].nunique() > 1]
    r = np.abs(design[varying].corr().to_numpy())
    np.fill_diagonal(r, 0)
    a, b = np.unravel_index(r.argmax(), r.shape)
    assert f"{r.max():.2f} ({escape(varying[a])} and {escape(varying[b])})" in text
    page = _Page(text)
    assert any(a.startswith("regressor correlations") for a in re.findall(r'<img alt="([^"]*)"', text))
    # subject maps (native space) are drawn, one per contrast, with their peaks
    subject_maps = sorted((out / "node-subject").rglob("*_stat-z_statmap.nii.gz"))
    assert len(subject_maps) == 2
    for path in subject_maps:
        z, _ = _load(path)
        peaks = page.table(**{"class": "peaks", "data-map": path.name})
        assert float(peaks["peak z"][0]) == pytest.approx(np.nanmax(z), abs=5e-4)
    assert "Run-level maps are not drawn" in text
