"""One contrast's results: z map of both signs, peaks, thresholded and permutation maps, cluster tables;
or, for region (ROI) models, the table of regions."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd

from bids_app.report import figures
from bids_app.report.figures import FigureBudget
from bids_app.report.maps import DISPLAY_P, MapSummary
from bids_app.report.markup import esc, key_values, table
from bids_app.report.model_graph import weights_text
from bids_app.report.collect import ContrastFiles, DerivedMap, RegionTableFiles

#: Cluster-table rows shown; the rest stay in the file.
_CLUSTER_ROWS = 30
#: Family-wise error level at which permutation -log10 p maps are drawn.
FWE_ALPHA = 0.05
_METHODS = {"fpr": "uncorrected", "fdr": "FDR", "bonferroni": "Bonferroni (FWE)", "none": "fixed threshold"}
_PEAK_HEADERS = {"value": "peak z", "x": "x (mm)", "y": "y (mm)", "z": "z (mm)"}


def peak_table(summary: MapSummary, labels: pd.DataFrame | None, z_name: str) -> str:
    """Peaks of both signs as a table; ``data-map`` names the z map they come from."""
    peaks = summary.peaks
    if peaks.empty:
        return '<p class="note">The map has no finite non-zero voxel.</p>'
    frame = pd.DataFrame({
        "sign": np.where(peaks.sign > 0, "positive", "negative"),
        "peak z": [f"{v:.3f}" for v in peaks.value],
        **{_PEAK_HEADERS[c]: [f"{v:.1f}" for v in peaks[c]] for c in ("x", "y", "z")},
        "voxel (i, j, k)": [f"{i}, {j}, {k}" for i, j, k in peaks[["i", "j", "k"]].itertuples(index=False)],
    })
    if labels is not None:
        for column in labels.columns:
            frame[f"{column} label"] = labels[column].to_numpy()
    return table(frame, css_class="peaks", attrs={"data-map": z_name})


def contrast_block(files: ContrastFiles, unit_label: str, img: nib.Nifti1Image, summary: MapSummary,
                   labels: pd.DataFrame | None, budget: FigureBudget, outline=None) -> str:
    """HTML of one contrast of one unit.

    Parameters
    ----------
    files : ContrastFiles
    unit_label : str
        Entities of the unit, for titles.
    img : nibabel image
        The z map.
    summary : MapSummary
    labels : DataFrame or None
        Atlas label of each peak (rows as ``summary.peaks``), MNI maps only.
    budget : FigureBudget
    outline : path, optional
        Mask outlined on native-space slices (the unit's analysis mask).
    """
    side = files.sidecar
    title = f"{files.name} ({unit_label})"
    facts = {"Test": esc(side.get("Test", "?")), "Degrees of freedom": esc(side.get("DegreesOfFreedom", "?")),
             "Estimator": esc(side.get("Estimator", "?"))}
    if side.get("ConditionList"):
        facts["Weights"] = esc(weights_text(side["ConditionList"], side.get("Weights", [])))
    thr = summary.threshold
    cut = None
    if not summary.peaks.empty:
        strongest = summary.peaks.loc[summary.peaks.value.abs().idxmax()]
        cut = (strongest.x, strongest.y, strongest.z)
    figure = budget.draw("map", f"z map {title}", lambda: figures.stat_map(
        img, thr, f"z {title}  |z| > {thr:.2f}", glass=files.in_mni, cut_coords=cut, outline=outline))
    f_note = ("" if summary.two_sided else " The z map of an F test comes from its p value: only positive "
              "values mean an effect, so only positive peaks are listed.")
    counts = (f"<p>{summary.n_voxels} voxels analysed; {summary.n_positive} with z &gt; {thr:.2f} and "
              f"{summary.n_negative} with z &lt; -{thr:.2f} (display threshold: p &lt; {DISPLAY_P} one-sided, "
              f"uncorrected; not a corrected inference). Positive effects in red, negative in blue.{f_note}</p>")
    parts = [f'<div class="contrast"><h4>{esc(title)}</h4>', key_values(facts), figure, counts,
             "<h5>Peaks (local maxima at least 8 mm apart, from the z map)</h5>",
             peak_table(summary, labels, files.z.name)]
    if summary.outside_brain is not None:
        klass = "alert bad" if summary.outside_brain["flagged"] else "note"
        stat = "|z|" if summary.two_sided else "z"
        parts.append(f'<p class="{klass}">{esc(summary.outside_brain["message"])} ({stat} &gt; {thr:.2f}).</p>')
    z = img.get_fdata(dtype=np.float64)  # cached by nibabel: the map is read once
    for derived in files.thresholded:
        parts.append(_thresholded(derived, z, summary, files.in_mni, budget, outline))
    for derived in files.fwe:
        parts.append(_fwe(derived, files.in_mni, budget, outline))
    for path in files.clusters:
        parts.append(_clusters(path))
    if not (files.thresholded or files.fwe or files.clusters):
        parts.append('<p class="note">No thresholded map or cluster table was written for this contrast.</p>')
    parts.append("</div>")
    return "".join(parts)


def region_block(files: RegionTableFiles, unit_label: str) -> str:
    """HTML of one contrast of a region model: its facts and the region table (uncorrected p)."""
    side = files.sidecar
    frame = pd.read_csv(files.path, sep="\t", dtype={"region": str}, keep_default_na=False, na_values=["n/a"])
    facts = {"Test": esc(side.get("Test", "?")), "Degrees of freedom": esc(side.get("DegreesOfFreedom", "?")),
             "Estimator": esc(side.get("Estimator", "?")), "Aggregate": esc(side.get("Aggregate", "?")),
             "Label images": esc(", ".join(map(str, side.get("Mask", []))) or "?")}
    if side.get("ConditionList"):
        facts["Weights"] = esc(weights_text(side["ConditionList"], side.get("Weights", [])))
    shown = [c for c in frame.columns if c.split("_")[0] in ("region", "effect", "t", "F", "z", "p")]
    return (f'<div class="contrast"><h4>{esc(files.name)} ({esc(unit_label)})</h4>{key_values(facts)}'
            f"<h5>Regions <code>{esc(files.path.name)}</code> (p uncorrected; n/a: region not fitted)</h5>"
            f'{table(frame[shown], css_class="regions", attrs={"data-file": files.path.name}, fold="regions")}</div>')


def threshold_rule(meta: dict) -> str:
    """A thresholded map's rule in words, from its sidecar (empty when the sidecar does not say)."""
    method = meta.get("Method")
    if method is None:
        return ""
    z = meta.get("ZThreshold")
    two_sided = bool(meta.get("TwoSided"))
    rule = (f"{_METHODS.get(method, method)}, alpha {meta.get('Alpha', '?')}, "
            f"{'two' if two_sided else 'one'}-sided")
    if isinstance(z, (int, float)):
        rule += f": {'|z|' if two_sided else 'z'} &ge; {z:.3f}" if np.isfinite(z) else ": no voxel qualifies"
    size = meta.get("ClusterMinSizeVoxels")
    if size:
        rule += f"; clusters of at least {size} voxels"
    return rule


def _scalars(meta: dict) -> str:
    """Every scalar field of a sidecar, folded away (lists and dicts are in the files)."""
    facts = {k: esc(v) for k, v in meta.items() if isinstance(v, (str, int, float, bool)) or v is None}
    return f"<details><summary>sidecar fields</summary>{key_values(facts)}</details>" if facts else ""


def _thresholded(derived: DerivedMap, z: np.ndarray, summary: MapSummary, mni: bool, budget: FigureBudget,
                 outline) -> str:
    """A thresholded z map: its rule, surviving voxels, and a figure unless the z map's figure shows the same."""
    img = nib.load(derived.path)
    data = np.asarray(img.dataobj, dtype=np.float64)
    kept = np.isfinite(data) & (data != 0)
    meta = derived.sidecar
    parts = [f"<h5>Thresholded map <code>{esc(derived.path.name)}</code></h5>",
             f"<p>{threshold_rule(meta) or 'rule not recorded'}. {int(kept.sum())} voxels survive "
             f"({int((data > 0).sum())} positive, {int((data < 0).sum())} negative).</p>"]
    two_sided = meta.get("TwoSided")
    if two_sided is False and summary.two_sided and summary.n_negative:
        parts.append(f'<p class="alert">One-sided threshold: the {summary.n_negative} voxels with '
                     f"z &lt; -{summary.threshold:.2f} in the z map are not tested here (see --two-sided).</p>")
    parts.append(_scalars(meta))
    shown_above = (z > summary.threshold) | (two_sided is not False) & (z < -summary.threshold)
    if kept.any() and np.array_equal(kept, shown_above):
        parts.append(f'<p class="note">Same voxels as the z map figure above at |z| &gt; {summary.threshold:.2f}'
                     f'{"" if two_sided is not False else " (its positive part)"}: not drawn again.</p>')
    elif kept.any():
        smallest = float(np.abs(data[kept]).min())
        parts.append(budget.draw("map", f"thresholded {derived.path.name}", lambda: figures.stat_map(
            img, smallest * (1 - 1e-6), f"{derived.path.name.split('_stat-')[0]} thresholded", glass=mni,
            outline=outline)))
    return "".join(parts)


def _fwe(derived: DerivedMap, mni: bool, budget: FigureBudget, outline) -> str:
    """A permutation -log10 p map: voxels with FWE-corrected p < 0.05."""
    img = nib.load(derived.path)
    data = np.asarray(img.dataobj, dtype=np.float64)
    cut = -np.log10(FWE_ALPHA)
    significant = int(np.count_nonzero(np.isfinite(data) & (data > cut)))
    best = float(np.nanmax(data)) if np.isfinite(data).any() else float("nan")
    parts = [f"<h5>Permutation inference <code>{esc(derived.path.name)}</code></h5>",
             f"<p>{esc(derived.sidecar.get('Correction', ''))} family-wise corrected: {significant} voxels with "
             f"p<sub>FWE</sub> &lt; {FWE_ALPHA} (smallest p<sub>FWE</sub> = {10 ** -best:.3g}).</p>",
             _scalars(derived.sidecar)]
    if significant:
        parts.append(budget.draw("map", f"FWE {derived.path.name}", lambda: figures.stat_map(
            img, cut, f"{derived.path.name.split('_stat-')[0]} -log10 pFWE > {cut:.2f}", glass=mni, signed=False,
            outline=outline)))
    return "".join(parts)


def _clusters(path) -> str:
    frame = pd.read_csv(path, sep="\t")
    shown = table(frame.head(_CLUSTER_ROWS), css_class="clusters", attrs={"data-file": path.name})
    more = (f'<p class="note">{len(frame) - _CLUSTER_ROWS} more rows in <code>{esc(path.name)}</code>.</p>'
            if len(frame) > _CLUSTER_ROWS else "")
    return f"<h5>Cluster table <code>{esc(path.name)}</code> ({len(frame)} rows)</h5>{shown}{more}"
