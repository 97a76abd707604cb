"""Figures of the report as embedded PNG ``<img>`` tags (matplotlib Agg, nilearn).

Every figure goes through a :class:`FigureBudget`, which caps how many of
each kind are drawn (the report must stay small and quick to write) and
records what it skipped so the report can say so.
"""
from __future__ import annotations

import base64
import io
import logging
from collections.abc import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bids_app.report.markup import esc  # noqa: E402

log = logging.getLogger(__name__)

#: Figures per kind: 1 graph + 9 design + 20 map figures = at most 30.
LIMITS = {"graph": 1, "design": 9, "map": 20}
_DPI = 80


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
        self.skipped: list[str] = []

    def draw(self, kind: str, label: str, make: Callable[[], str]) -> str:
        """The ``<img>`` that ``make`` returns, or a note when over budget or when drawing fails.

        A figure that cannot be drawn must not lose the finished analysis, so
        its error is shown in the report instead of raised.
        """
        if self.drawn[kind] >= self.limits[kind]:
            self.skipped.append(label)
            return f'<p class="note">Figure skipped (limit of {self.limits[kind]} {kind} figures): {esc(label)}</p>'
        self.drawn[kind] += 1
        try:
            return make()
        except Exception as exc:  # noqa: BLE001 - see docstring
            log.warning("report figure %r failed: %s", label, exc)
            plt.close("all")
            return f'<p class="alert bad">Figure could not be drawn ({esc(label)}): {esc(exc)}</p>'


def png(fig, alt: str) -> str:
    """Close ``fig`` and return it as an embedded PNG image tag."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def design_matrix(matrix: pd.DataFrame, title: str, rows: str = "scan number") -> str:
    """nilearn's design-matrix plot (columns rescaled to unit maximum).

    ``rows`` labels the vertical axis: scans at the Run level, input maps
    above it (then one integer tick per map, up to 30 maps).
    """
    from matplotlib.ticker import MaxNLocator
    from nilearn.plotting import plot_design_matrix

    fig, ax = plt.subplots(figsize=(min(2.5 + 0.35 * matrix.shape[1], 14), 4.5))
    plot_design_matrix(matrix, axes=ax)
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
    from nilearn.plotting import plot_matrix

    columns = regressors_varying(matrix)
    n = len(columns)
    fig, ax = plt.subplots(figsize=(min(3 + 0.4 * n, 12), min(2.5 + 0.4 * n, 11)))
    plot_matrix(matrix[columns].corr().to_numpy(), labels=columns, vmin=-1, vmax=1, cmap="RdBu_r",
                axes=ax, colorbar=True)
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
        Glass brain (needs an MNI space) rather than slices.
    signed : bool
        Both signs in a diverging colour map (z maps: negative effects in
        blue, never hidden), or positive values only (-log10 p maps).
    cut_coords : tuple of 3 float, optional
        Slice position (mm) of the ortho view.
    outline : image or path, optional
        Mask drawn as a contour on the slices (native space has no template:
        the analysis mask shows the brain's extent).
    """
    from nilearn.plotting import plot_glass_brain, plot_stat_map

    data = np.nan_to_num(img.get_fdata(dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    clean = nib.Nifti1Image(data, img.affine)
    fig = plt.figure(figsize=(10, 3.2))
    common = dict(threshold=threshold, title=title, figure=fig, colorbar=True, symmetric_cbar=signed,
                  vmax=max(float(np.abs(data).max()), threshold + 1e-3), cmap="cold_hot" if signed else "hot")
    if not signed:
        common["vmin"] = 0.0
    if glass:
        plot_glass_brain(clean, plot_abs=False, display_mode="ortho", **common)
    else:
        display = plot_stat_map(clean, bg_img=None, display_mode="ortho", draw_cross=False,
                                cut_coords=cut_coords, black_bg=False, **common)
        if outline is not None:
            display.add_contours(outline, levels=[0.5], colors="0.45", linewidths=1)
    return png(fig, title)


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
    fig, ax = plt.subplots(figsize=(2.9 * len(columns) + 1, 1.3 * height + 0.8))
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
    fig, axes = plt.subplots(1, 4, subplot_kw={"projection": "3d"}, figsize=(12, 3.2))
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
