"""One contrast's results: z map of both signs, peaks, thresholded maps, cluster tables."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd

from bids_app.report import figures
from bids_app.report.figures import FigureBudget
from bids_app.report.maps import DISPLAY_P, MapSummary
from bids_app.report.markup import esc, key_values, table
from bids_app.report.model_graph import weights_text
from bids_app.report.outputs import ContrastFiles

#: Cluster-table rows shown before folding the rest away.
_CLUSTER_ROWS = 30
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
    figure = budget.draw("map", f"z map {title}", lambda: figures.z_map(
        img, thr, f"z {title}  |z| > {thr:.2f}", glass=files.in_mni, cut_coords=cut, outline=outline))
    f_note = (" The z map of an F test comes from its p value: only positive values mean an effect."
              if side.get("Test") == "F" else "")
    counts = (f"<p>{summary.n_voxels} voxels analysed; {summary.n_positive} with z &gt; {thr:.2f} and "
              f"{summary.n_negative} with z &lt; -{thr:.2f} (display threshold: p &lt; {DISPLAY_P} one-sided, "
              f"uncorrected; not a corrected inference). Positive effects in red, negative in blue.{f_note}</p>")
    parts = [f'<div class="contrast"><h4>{esc(title)}</h4>', key_values(facts), figure, counts,
             "<h5>Peaks (local maxima at least 8 mm apart, from the z map)</h5>",
             peak_table(summary, labels, files.z.name)]
    if summary.outside_brain is not None:
        parts.append(f'<p class="{"alert bad" if summary.outside_brain["flagged"] else "note"}">'
                     f'{esc(summary.outside_brain["message"])} (|z| &gt; {thr:.2f}).</p>')
    for path in files.thresholded:
        parts.append(_thresholded(path, files.in_mni, budget, outline))
    for path in files.clusters:
        parts.append(_clusters(path))
    if not files.thresholded and not files.clusters:
        parts.append('<p class="note">No thresholded map or cluster table was written for this contrast.</p>')
    parts.append("</div>")
    return "".join(parts)


def _thresholded(path, mni: bool, budget: FigureBudget, outline) -> str:
    img = nib.load(path)
    data = np.asarray(img.dataobj, dtype=np.float64)
    kept = np.isfinite(data) & (data != 0)
    sidecar = path.with_name(path.name.split(".")[0] + ".json")
    meta = json.loads(sidecar.read_text()) if sidecar.exists() else {}
    # scalars describe the thresholding; lists (inputs, weights) are in the z map's sidecar
    facts = {k: esc(v) for k, v in meta.items() if isinstance(v, (str, int, float, bool)) or v is None}
    head = (f"<h5>Thresholded map <code>{esc(path.name)}</code></h5><p>{int(kept.sum())} voxels survive "
            f"({int((data > 0).sum())} positive, {int((data < 0).sum())} negative).</p>")
    if not kept.any():
        return head + key_values(facts)
    smallest = float(np.abs(data[kept]).min())
    figure = budget.draw("map", f"thresholded {path.name}", lambda: figures.z_map(
        img, smallest * (1 - 1e-6), f"{path.name.split('_stat-')[0]} thresholded", glass=mni,
        outline=outline))
    return head + key_values(facts) + figure


def _clusters(path) -> str:
    frame = pd.read_csv(path, sep="\t")
    shown = table(frame.head(_CLUSTER_ROWS), css_class="clusters")
    more = (f'<p class="note">{len(frame) - _CLUSTER_ROWS} more rows in <code>{esc(path.name)}</code>.</p>'
            if len(frame) > _CLUSTER_ROWS else "")
    return f"<h5>Cluster table <code>{esc(path.name)}</code> ({len(frame)} rows)</h5>{shown}{more}"
