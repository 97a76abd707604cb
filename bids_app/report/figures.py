"""Figures of the report as embedded PNG ``<img>`` tags (matplotlib, no pyplot).

Every figure goes through a :class:`FigureBudget`, which caps how many of
each kind are drawn (the report must stay small and quick to write) and
records what it skipped so the report can say so.

Figures cost a bounded amount whatever the data: each is a few images of
2-D arrays at the map's own resolution (maximum-intensity projections or
slices, never a resampled volume) and one contour, drawn on a bare
:class:`matplotlib.figure.Figure`. nilearn's plotting module would cost ~3 s
to import and ~1 s per glass brain (hundreds of outline patches), more than
the statistics of a group run.
"""
from __future__ import annotations

import base64
import io
import logging
import time
from collections.abc import Callable

import nibabel as nib
import numpy as np
import pandas as pd

from bids_app.report.markup import esc

log = logging.getLogger(__name__)

#: Figures per kind: 1 graph + 9 design + 20 map figures = at most 30.
LIMITS = {"graph": 1, "design": 9, "map": 20}
_DPI = 80
#: Font size of axis labels (design column names), points.
_LABEL_PT = 8
#: Views of the ortho / glass-brain figures: (title, world axis projected away, horizontal axis, vertical axis).
_VIEWS = (("sagittal", 0, 1, 2), ("coronal", 1, 0, 2), ("axial", 2, 0, 1))


class FigureBudget:
    """Draws figures until each kind's limit, then records what it skipped.

    Parameters
    ----------
    limits : dict of str to int
        Figures allowed per kind.
    """

    def __init__(self, limits: dict[str, int] | None = None):
        self.limits = dict(LIMITS if limits is None else limits)
        self.drawn = {kind: 0 for kind in self.limits}
        self.seconds = {kind: 0.0 for kind in self.limits}
        self.skipped: list[str] = []
        #: ``"label: error"`` of each figure that could not be drawn
        self.failed: list[str] = []

    def draw(self, kind: str, label: str, make: Callable[[], str]) -> str:
        """The ``<img>`` that ``make`` returns, or a note when over budget or when drawing fails.

        A figure that cannot be drawn must not lose the finished analysis, so
        its error is shown in the report instead of raised.
        """
        if self.drawn[kind] >= self.limits[kind]:
            self.skipped.append(label)
            return f'<p class="note">Figure skipped (limit of {self.limits[kind]} {kind} figures): {esc(label)}</p>'
        self.drawn[kind] += 1
        start = time.perf_counter()
        try:
            return make()
        except Exception as exc:  # noqa: BLE001 - see docstring
            log.warning("report figure %r failed: %s", label, exc)
            self.failed.append(f"{label}: {exc}")
            return f'<p class="alert bad">Figure could not be drawn ({esc(label)}): {esc(exc)}</p>'
        finally:
            self.seconds[kind] += time.perf_counter() - start

    def cost(self) -> str:
        """What the figures cost, e.g. ``"3 figures in 0.41 s (map 1: 0.22 s, design 1: 0.1 s...)"``."""
        parts = ", ".join(f"{kind} {self.drawn[kind]}: {self.seconds[kind]:.2f} s" for kind in self.limits
                          if self.drawn[kind])
        return f"{sum(self.drawn.values())} figure(s) in {sum(self.seconds.values()):.2f} s ({parts})"


def new_figure(width: float, height: float):
    """A matplotlib Figure with the Agg canvas, outside pyplot (no global state to close)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def png(fig, alt: str) -> str:
    """``fig`` as an embedded PNG image tag.

    Margins are set by each figure: ``bbox_inches="tight"`` would draw every
    figure twice (~40 % of its cost).
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def design_matrix(matrix: pd.DataFrame, title: str, rows: str = "scan number") -> str:
    """The design matrix as nilearn draws it: columns scaled to unit norm, names on top.

    ``rows`` labels the vertical axis: scans at the Run level, input maps
    above it (then one integer tick per map, up to 30 maps).
    """
    from matplotlib.ticker import MaxNLocator

    names = [str(c) for c in matrix.columns]
    X = matrix.to_numpy(dtype=np.float64)
    X = X / np.maximum(1.0e-12, np.sqrt(np.sum(X ** 2, axis=0)))
    width = min(2.5 + 0.35 * matrix.shape[1], 14)
    labels = _text_inches(max(map(len, names), default=1)) * 0.87   # rotated 60 degrees
    fig = new_figure(width + 0.5 * labels, 3.4 + labels)
    fig.subplots_adjust(left=0.9 / (width + 0.5 * labels), right=1 - 0.5 * labels / (width + 0.5 * labels),
                        bottom=0.2 / (3.4 + labels), top=3.1 / (3.4 + labels))
    ax = fig.add_subplot()
    ax.imshow(X, interpolation="nearest", aspect="auto", cmap="gray")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=60, ha="left", fontsize=_LABEL_PT)
    ax.xaxis.tick_top()
    ax.set_ylabel(rows)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(len(matrix), 30)))
    ax.set_title(title, fontsize=9)
    return png(fig, f"design matrix {title}")


def regressors_varying(matrix: pd.DataFrame) -> list[str]:
    """Columns nilearn's correlation plot keeps: not constant, not drift terms."""
    return [c for c in matrix.columns if not str(c).startswith("drift") and matrix[c].nunique() > 1]


def design_correlation(matrix: pd.DataFrame, title: str) -> str:
    """Pearson correlations between the varying, non-drift regressors, on a fixed -1..1 scale.

    nilearn's own ``plot_design_matrix_correlation`` scales colours to the
    largest off-diagonal value, which makes weak correlations look strong.
    """
    columns = regressors_varying(matrix)
    n = len(columns)
    labels = _text_inches(max((len(str(c)) for c in columns), default=1))
    side = min(2 + 0.4 * n, 10)
    fig = new_figure(side + labels + 1.2, side + labels + 0.4)
    fig.subplots_adjust(left=(labels + 0.1) / (side + labels + 1.2), right=(labels + 0.1 + side) / (side + labels + 1.2),
                        bottom=(labels + 0.1) / (side + labels + 0.4), top=(labels + 0.1 + side) / (side + labels + 0.4))
    ax = fig.add_subplot()
    image = ax.imshow(matrix[columns].corr().to_numpy(), vmin=-1, vmax=1, cmap="RdBu_r", interpolation="nearest")
    ax.set_xticks(range(n))
    ax.set_xticklabels([str(c) for c in columns], rotation=90, fontsize=_LABEL_PT)
    ax.set_yticks(range(n))
    ax.set_yticklabels([str(c) for c in columns], fontsize=_LABEL_PT)
    fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
    ax.set_title(title, fontsize=9)
    return png(fig, f"regressor correlations {title}")


def stat_map(img: nib.Nifti1Image, threshold: float, title: str, *, glass: bool, signed: bool = True,
             cut_coords=None, outline=None) -> str:
    """A statistic map above a threshold: glass brain (MNI) or ortho slices.

    Parameters
    ----------
    img : nibabel image
        The map; voxels outside the analysed mask (NaN) are drawn as 0.
    threshold : float
        Values with magnitude below this are not drawn.
    title : str
    glass : bool
        Glass brain: maximum-intensity projections inside the outline of
        the MNI152 brain (needs an MNI space), rather than slices.
    signed : bool
        Both signs in a diverging colour map (z maps: negative effects in
        blue, never hidden), or positive values only (-log10 p maps).
    cut_coords : tuple of 3 float, optional
        Slice position (mm) of the ortho view.
    outline : image or path, optional
        Mask drawn as a contour on the slices (native space has no template:
        the analysis mask shows the brain's extent); ignored on another grid.
    """
    from matplotlib import colors

    canonical = nib.as_closest_canonical(img)   # axes reordered/flipped to RAS, no resampling
    data = np.nan_to_num(np.asanyarray(canonical.dataobj, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    vmax = max(float(np.abs(data).max()), threshold + 1e-3)
    if signed:
        cmap = colors.LinearSegmentedColormap.from_list(
            "cold_hot", ["#00ffff", "#0000ff", "#1a1a40", "#401a1a", "#ff0000", "#ffff00"])
        norm = colors.Normalize(-vmax, vmax)
    else:
        cmap, norm = "hot", colors.Normalize(0.0, vmax)
    extent = _world_extent(canonical)

    fig = new_figure(10, 3.2)
    fig.subplots_adjust(left=0.01, right=0.95, bottom=0.02, top=0.88)
    axes = fig.subplots(1, 3, gridspec_kw={"wspace": 0.02})
    if glass:
        pictures = [_projection(data, axis, signed) for _, axis, _, _ in _VIEWS]
        contours = _template_outline(canonical)
    else:
        cut = _cut_voxel(canonical, data, threshold, cut_coords)
        pictures = [np.take(data, cut[axis], axis=axis) for _, axis, _, _ in _VIEWS]
        contours = _outline_slices(outline, canonical, cut)
    for ax, (name, axis, horizontal, vertical), picture, contour in zip(axes, _VIEWS, pictures, contours):
        shown = np.ma.masked_less(np.abs(picture), threshold)
        box = (*extent[horizontal], *extent[vertical])
        ax.imshow(np.ma.array(picture, mask=shown.mask).T, origin="lower", extent=box, cmap=cmap, norm=norm,
                  interpolation="nearest")
        # matplotlib draws no contour on a slice one voxel thick (single-slice acquisitions)
        if contour is not None and min(contour[0].shape) > 1:
            ax.contour(contour[0].T, levels=[0.5], colors="0.45", linewidths=1, origin="lower",
                       extent=(*contour[1][horizontal], *contour[1][vertical]))
        ax.set_xlim(*extent[horizontal])
        ax.set_ylim(*extent[vertical])
        ax.set_aspect("equal")
        ax.set_axis_off()
        if name != "sagittal":
            ax.text(0.02, 0.02, "L", transform=ax.transAxes, fontsize=8)
            ax.text(0.95, 0.02, "R", transform=ax.transAxes, fontsize=8)
    from matplotlib.cm import ScalarMappable

    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=list(axes), fraction=0.02, pad=0.01)
    fig.suptitle(title, fontsize=9)
    return png(fig, title)


def _text_inches(n_chars: int) -> float:
    """Approximate length of a label of ``n_chars`` characters at :data:`_LABEL_PT`, inches."""
    return 0.6 * _LABEL_PT / 72 * n_chars


def _world_extent(img) -> list[tuple[float, float]]:
    """(min, max) mm of each axis of a canonical (RAS) image, voxel edges included."""
    zooms = np.abs(np.diag(img.affine)[:3])
    first = img.affine[:3, 3]
    return [(first[i] - zooms[i] / 2, first[i] + (img.shape[i] - 0.5) * zooms[i]) for i in range(3)]


def _projection(data, axis: int, signed: bool) -> np.ndarray:
    """Maximum-intensity projection; signed, the value of larger magnitude of max and min."""
    high = data.max(axis=axis)
    if not signed:
        return high
    low = data.min(axis=axis)
    return np.where(high >= -low, high, low)


def _template_outline(img):
    """Projections of the MNI152 brain mask for the glass brain, with their extent (same for each view)."""
    from bids_app.io.images import template_image

    template = template_image()
    mask = np.asanyarray(template.dataobj) != 0
    extent = _world_extent(template)
    return [(mask.any(axis=axis).astype(np.float64), extent) for _, axis, _, _ in _VIEWS]


def _cut_voxel(img, data, threshold, cut_coords) -> tuple[int, int, int]:
    """Voxel of the slices: ``cut_coords`` (mm), else the strongest voxel, else the centre."""
    if cut_coords is not None:
        ijk = nib.affines.apply_affine(np.linalg.inv(img.affine), np.asarray(cut_coords, dtype=np.float64))
    elif np.abs(data).max() >= threshold > 0:
        ijk = np.unravel_index(np.argmax(np.abs(data)), data.shape)
    else:
        ijk = (np.array(data.shape) - 1) / 2
    return tuple(int(np.clip(round(float(v)), 0, n - 1)) for v, n in zip(ijk, data.shape))


def _outline_slices(outline, img, cut):
    """Slices of the outline mask through ``cut`` when it is on the map's grid, else no contours."""
    if outline is None:
        return [None] * 3
    mask_img = nib.as_closest_canonical(nib.load(outline) if not hasattr(outline, "dataobj") else outline)
    if mask_img.shape[:3] != img.shape[:3] or not np.allclose(mask_img.affine, img.affine):
        return [None] * 3
    mask = (np.asanyarray(mask_img.dataobj) != 0).astype(np.float64)
    extent = _world_extent(img)
    return [(np.take(mask, cut[axis], axis=axis), extent) for _, axis, _, _ in _VIEWS]


def model_graph(levels: dict[str, int], edges: list[tuple[str, str, str]], labels: dict[str, str]) -> str:
    """The model's nodes as boxes, one column per depth, with labelled arrows.

    Parameters
    ----------
    levels : dict of str to int
        Node name -> column (depth from the first node).
    edges : list of (source, destination, label)
    labels : dict of str to str
        Node name -> text drawn in its box.
    """
    columns: dict[int, list[str]] = {}
    for name, depth in levels.items():
        columns.setdefault(depth, []).append(name)
    height = max(len(v) for v in columns.values())
    pos = {name: (depth * 3.2, (height - 1) / 2 - row * 1.4)
           for depth, names in columns.items() for row, name in enumerate(names)}
    fig = new_figure(2.9 * len(columns) + 1, 1.3 * height + 0.8)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.99)
    ax = fig.add_subplot()
    for source, dest, text in edges:
        (x0, y0), (x1, y1) = pos[source], pos[dest]
        ax.annotate("", xy=(x1 - 1.05, y1), xytext=(x0 + 1.05, y0),
                    arrowprops=dict(arrowstyle="-|>", color="#345", lw=1.4))
        if text:
            ax.text((x0 + x1) / 2, (y0 + y1) / 2 + 0.18, text, ha="center", va="bottom", fontsize=7, color="#733")
    for name, (x, y) in pos.items():
        ax.text(x, y, labels[name], ha="center", va="center", fontsize=8, wrap=True,
                bbox=dict(boxstyle="round,pad=0.4", fc="#eef2f8", ec="#345"))
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    ax.set_xlim(min(xs) - 1.5, max(xs) + 1.5)
    ax.set_ylim(min(ys) - 0.9, max(ys) + 0.9)
    ax.axis("off")
    return png(fig, "model graph")


def surface_map(values: np.ndarray, surface, meshes: dict, threshold: float, title: str) -> str:
    """A surface statistic map on the inflated mesh: lateral and medial views of both hemispheres.

    Parameters
    ----------
    values : ndarray, (n_units,)
        The map over the surface's units (NaN where not analysed, drawn as 0).
    surface : bids_app.io.surface.Surface
    meshes : dict of str to Mesh
        Inflated meshes by hemisphere.
    threshold : float
        Values with magnitude below this are not drawn.
    """
    from nilearn.plotting import plot_surf_stat_map

    values = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    vmax = max(float(np.abs(values).max(initial=0.0)), threshold + 1e-3)
    fig = new_figure(12, 3.2)
    axes = fig.subplots(1, 4, subplot_kw={"projection": "3d"})
    panels = [(hemi, columns, vertices, view) for hemi, columns, vertices in surface.parts()
              for view in ("lateral", "medial")]
    for ax, (hemi, columns, vertices, view) in zip(axes, panels):
        mesh = meshes[hemi]
        full = np.zeros(len(mesh.coordinates))
        full[slice(None) if vertices is None else vertices] = values[columns]
        plot_surf_stat_map((mesh.coordinates, mesh.faces), full, hemi="left" if hemi == "L" else "right",
                           view=view, threshold=threshold, vmax=vmax, cmap="cold_hot", colorbar=False,
                           axes=ax, figure=fig)
        ax.set_title(f"{hemi} {view}", fontsize=8)
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    return png(fig, title)
