"""Figures of the report as embedded PNG ``<img>`` tags, drawn with Pillow.

Every figure goes through a :class:`FigureBudget`, which caps how many of
each kind are drawn (the report must stay small and quick to write) and
records what it skipped so the report can say so.

Figures cost a bounded amount whatever the data: each is a few images of
2-D arrays (maximum-intensity projections or slices, never a resampled
volume; design matrices) put on the pixel grid with their outlines and
labels. Pillow draws one in ~0.03 s; matplotlib took ~0.15 s per figure and
~0.4 s to import, nilearn's plotting ~3 s to import and ~1 s per glass
brain, more than the statistics of a group run. Only surface maps (3-D
meshes) use matplotlib, through nilearn.
"""
from __future__ import annotations

import base64
import importlib.util
import io
import logging
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from bids_app.report.markup import esc

log = logging.getLogger(__name__)

#: Figures per kind: 1 graph + 9 design + 20 map figures = at most 30.
LIMITS = {"graph": 1, "design": 9, "map": 20}
_DPI = 80
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
    """The design matrix as nilearn draws it: columns scaled to unit norm, grey scale, names on top.

    ``rows`` labels the vertical axis: scans at the Run level, input maps
    above it (then integer ticks, at most 30).
    """
    from PIL import Image, ImageDraw

    names = [str(c) for c in matrix.columns]
    X = matrix.to_numpy(dtype=np.float64)
    X = X / np.maximum(1.0e-12, np.sqrt(np.sum(X ** 2, axis=0)))
    width = int(np.clip(28 * len(names), 120, 1000))
    height = 250
    label_font, title_font = _font(_LABEL_PX), _font(_TITLE_PX)
    labels = [_text_image(name, label_font, 60) for name in names]
    above = max((im.height for im in labels), default=0) + 4
    left, right = 3 * _LABEL_PX + 30, max((im.width for im in labels), default=0)
    top = _TITLE_PX + 2 * _MARGIN + above
    canvas = Image.new("RGB", (left + width + right, top + height + _MARGIN), "white")
    draw = ImageDraw.Draw(canvas)
    span = np.ptp(X) if X.size else 0.0
    grey = np.zeros_like(X) if not span > 0 else (X - X.min()) / span
    image = Image.fromarray(np.round(grey * 255).astype(np.uint8)).resize((width, height), Image.NEAREST)
    canvas.paste(image, (left, top))
    draw.rectangle((left - 1, top - 1, left + width, top + height), outline="black")
    column = width / max(len(names), 1)
    for k, label in enumerate(labels):
        x = round(left + (k + 0.5) * column)
        draw.line((x, top - 1, x, top - 4), fill="black")
        canvas.paste(label, (x, top - 4 - label.height), label)
    n_rows = len(matrix)
    for i in _integer_ticks(n_rows, min(n_rows, 30) if rows != "scan number" else 6):
        y = round(top + (i + 0.5) * height / max(n_rows, 1))
        draw.line((left - 4, y, left - 1, y), fill="black")
        draw.text((left - 6, y), str(i), fill="black", font=label_font, anchor="rm")
    axis_label = _text_image(rows, label_font, 90)
    canvas.paste(axis_label, (_MARGIN, top + (height - axis_label.height) // 2), axis_label)
    draw.text((left + width // 2, _MARGIN), title, fill="black", font=title_font, anchor="mt")
    return _png(canvas, f"design matrix {title}")


def regressors_varying(matrix: pd.DataFrame) -> list[str]:
    """Columns nilearn's correlation plot keeps: not constant, not drift terms."""
    return [c for c in matrix.columns if not str(c).startswith("drift") and matrix[c].nunique() > 1]


def design_correlation(matrix: pd.DataFrame, title: str) -> str:
    """Pearson correlations between the varying, non-drift regressors, on a fixed -1..1 scale.

    nilearn's own ``plot_design_matrix_correlation`` scales colours to the
    largest off-diagonal value, which makes weak correlations look strong.
    """
    from PIL import Image, ImageDraw

    columns = regressors_varying(matrix)
    n = len(columns)
    corr = matrix[columns].corr().to_numpy()
    cell = max(4, round(min(160 + 32 * n, 800) / max(n, 1)))
    side = cell * n
    label_font, title_font = _font(_LABEL_PX), _font(_TITLE_PX)
    below = [_text_image(str(c), label_font, 90) for c in columns]
    beside = [_text_image(str(c), label_font) for c in columns]
    left = max((im.width for im in beside), default=0) + 8
    top = _TITLE_PX + 2 * _MARGIN
    canvas = Image.new("RGB", (left + side + _BAR_PX + 2 * _MARGIN,
                               top + side + max((im.height for im in below), default=0) + 8), "white")
    draw = ImageDraw.Draw(canvas)
    index = np.clip(np.round((np.nan_to_num(corr) + 1) / 2 * 255), 0, 255).astype(np.uint8)
    rgb = _RDBU_R[index]
    rgb[np.isnan(corr)] = 255
    canvas.paste(Image.fromarray(rgb).resize((side, side), Image.NEAREST), (left, top))
    for k in range(n):
        centre = round((k + 0.5) * cell)
        canvas.paste(below[k], (left + centre - below[k].width // 2, top + side + 4), below[k])
        canvas.paste(beside[k], (left - 4 - beside[k].width, top + centre - beside[k].height // 2), beside[k])
    _colour_bar(draw, canvas, _RDBU_R, -1.0, 1.0, (left + side + _MARGIN, top), label_font, max(side, 40))
    draw.text((left + side // 2, _MARGIN), title, fill="black", font=title_font, anchor="mt")
    return _png(canvas, f"regressor correlations {title}")


def _integer_ticks(n: int, most: int) -> list[int]:
    """Ticks ``0, step, 2 step...`` below ``n``, at most ``most``, the step 1, 2 or 5 times a power of ten."""
    step = next(m * 10 ** e for e in range(12) for m in (1, 2, 5) if -(-n // (m * 10 ** e)) <= max(most, 1))
    return list(range(0, n, step))


def _text_image(text: str, font, angle: float = 0):
    """``text`` in black on a transparent image, turned ``angle`` degrees anticlockwise."""
    from PIL import Image, ImageDraw

    box = [int(np.floor(v)) if k < 2 else int(np.ceil(v)) for k, v in enumerate(font.getbbox(text or " "))]
    image = Image.new("RGBA", (box[2] - box[0] + 2, box[3] - box[1] + 2), (255, 255, 255, 0))
    ImageDraw.Draw(image).text((1 - box[0], 1 - box[1]), text, fill="black", font=font)
    return image.rotate(angle, expand=True, resample=Image.BICUBIC) if angle else image


def _png(canvas, alt: str) -> str:
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def stat_map(img: nib.Nifti1Image, threshold: float, title: str, *, glass: bool, signed: bool = True,
             cut_coords=None, outline=None) -> str:
    """A statistic map above a threshold: glass brain (MNI) or ortho slices.

    Drawn with Pillow on the pixel grid, not with matplotlib: the report
    draws one such figure per map, and matplotlib's axes, contours and
    colour bar cost ~0.15 s each (and its import ~0.4 s).

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
    from PIL import Image, ImageDraw

    canonical = nib.as_closest_canonical(img)   # axes reordered/flipped to RAS, no resampling
    data = np.nan_to_num(np.asanyarray(canonical.dataobj, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    vmax = max(float(np.abs(data).max()), threshold + 1e-3)
    low = -vmax if signed else 0.0
    lut = _COLD_HOT if signed else _HOT
    extent = _world_extent(canonical)
    if glass:
        pictures = [_projection(data, axis, signed) for _, axis, _, _ in _VIEWS]
        contours = _template_outline(canonical)
    else:
        cut = _cut_voxel(canonical, data, threshold, cut_coords)
        pictures = [np.take(data, cut[axis], axis=axis) for _, axis, _, _ in _VIEWS]
        contours = _outline_slices(outline, canonical, cut)

    sizes = [(np.ptp(extent[h]), np.ptp(extent[v])) for _, _, h, v in _VIEWS]
    scale = min(min(_PANEL[0] / w, _PANEL[1] / h) for w, h in sizes)   # pixels per mm, the same in every view
    pixels = [(max(1, round(w * scale)), max(1, round(h * scale))) for w, h in sizes]
    width, height = _FIGURE
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    small, text = _font(_SMALL_PX), _font(_TITLE_PX)
    x = (width - sum(w for w, _ in pixels) - 4 * _MARGIN - _BAR_PX) // 2
    top = _TITLE_PX + 2 * _MARGIN
    for (name, _, h, v), picture, contour, (w_px, h_px) in zip(_VIEWS, pictures, contours, pixels):
        values = _sample(picture, extent[h], extent[v], extent[h], extent[v], w_px, h_px)
        index = np.clip(np.round((values - low) / (vmax - low) * 255), 0, 255).astype(np.uint8)
        rgb = lut[index]
        rgb[np.abs(values) < threshold] = 255
        if contour is not None:
            inside = _sample(contour[0], contour[1][h], contour[1][v], extent[h], extent[v], w_px, h_px) > 0.5
            rgb[_edges(inside)] = _OUTLINE
        y = top + (_PANEL[1] - h_px) // 2
        canvas.paste(Image.fromarray(rgb), (x, y))
        if name != "sagittal":
            draw.text((x + 2, y + h_px - _SMALL_PX - 2), "L", fill="black", font=small)
            draw.text((x + w_px - _SMALL_PX, y + h_px - _SMALL_PX - 2), "R", fill="black", font=small)
        x += w_px + _MARGIN
    _colour_bar(draw, canvas, lut, low, vmax, (x + _MARGIN, top), small, _PANEL[1])
    draw.text((width // 2, _MARGIN), title, fill="black", font=text, anchor="mt")
    return _png(canvas, title)


#: Figure size (pixels) of :func:`stat_map`, and of each of its three views (at most).
_FIGURE = (800, 256)
_PANEL = (225, 215)
_MARGIN = 6
_TITLE_PX, _SMALL_PX, _LABEL_PX = 12, 10, 9
_BAR_PX = 60   # colour bar and its labels
_OUTLINE = (115, 115, 115)


def _lut(colours, positions) -> np.ndarray:
    """A (256, 3) uint8 colour table, linear between ``colours`` (RGB 0..1) at ``positions`` (0..1)."""
    colours = np.asarray(colours, dtype=np.float64)
    grid = np.linspace(0.0, 1.0, 256)
    return np.round(np.column_stack([np.interp(grid, positions, colours[:, k]) for k in range(3)]) * 255
                    ).astype(np.uint8)


#: nilearn's "cold_hot" (both signs) and matplotlib's "hot" (positive values), as colour tables.
_COLD_HOT = _lut([(0, 1, 1), (0, 0, 1), (0.1, 0.1, 0.25), (0.25, 0.1, 0.1), (1, 0, 0), (1, 1, 0)],
                 np.linspace(0, 1, 6))
#: matplotlib's "RdBu_r" (ColorBrewer RdBu, reversed): correlations from -1 (blue) to 1 (red).
_RDBU_R = _lut([tuple(int(h[i:i + 2], 16) / 255 for i in (0, 2, 4)) for h in (
    "053061", "2166ac", "4393c3", "92c5de", "d1e5f0", "f7f7f7", "fddbc7", "f4a582", "d6604d", "b2182b", "67001f")],
    np.linspace(0, 1, 11))
_HOT = np.column_stack([np.round(np.interp(np.linspace(0, 1, 256), x, y) * 255).astype(np.uint8) for x, y in (
    ((0, 0.365079, 1), (0.0416, 1, 1)), ((0, 0.365079, 0.746032, 1), (0, 0, 1, 1)), ((0, 0.746032, 1), (0, 0, 1)))])


def _sample(picture, extent_h, extent_v, box_h, box_v, width, height) -> np.ndarray:
    """``picture`` (h, v), covering ``extent_h`` x ``extent_v`` mm, at the centres of a (height, width)
    pixel grid over ``box_h`` x ``box_v`` (top row: largest v); 0 outside the picture."""
    h = box_h[0] + (np.arange(width) + 0.5) * np.ptp(box_h) / width
    v = box_v[1] - (np.arange(height) + 0.5) * np.ptp(box_v) / height
    i = np.floor((h - extent_h[0]) / np.ptp(extent_h) * picture.shape[0]).astype(np.int64)
    j = np.floor((v - extent_v[0]) / np.ptp(extent_v) * picture.shape[1]).astype(np.int64)
    ok = (i >= 0) & (i < picture.shape[0]), (j >= 0) & (j < picture.shape[1])
    out = picture[np.clip(i, 0, picture.shape[0] - 1)[None, :], np.clip(j, 0, picture.shape[1] - 1)[:, None]]
    return np.where(ok[1][:, None] & ok[0][None, :], out, 0.0)


def _edges(inside: np.ndarray) -> np.ndarray:
    """Pixels of a mask that touch a pixel outside it (4-neighbours): its outline."""
    padded = np.pad(inside, 1)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return inside & ~interior


def _colour_bar(draw, canvas, lut, low, high, corner, font, height) -> None:
    """A vertical colour bar of ``lut`` from ``low`` (bottom) to ``high``, ``height`` pixels, five labelled ticks."""
    from PIL import Image

    x, y = corner
    bar = np.repeat(lut[::-1][:, None, :], 12, axis=1)
    canvas.paste(Image.fromarray(bar).resize((12, height)), (x, y))
    draw.rectangle((x, y, x + 11, y + height - 1), outline="black")
    for value in np.linspace(low, high, 5):
        row = y + round((high - value) / (high - low) * (height - 1))
        draw.line((x + 12, row, x + 15, row), fill="black")
        draw.text((x + 17, row), f"{value:.3g}", fill="black", font=font, anchor="lm")


def _font(pixels: int):
    """DejaVu Sans (matplotlib's font files, read without importing matplotlib), else Pillow's own."""
    from PIL import ImageFont

    spec = importlib.util.find_spec("matplotlib")
    if spec is not None and spec.submodule_search_locations:
        path = Path(spec.submodule_search_locations[0]) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if path.exists():
            return ImageFont.truetype(str(path), pixels)
    return ImageFont.load_default(pixels)


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
    from PIL import Image, ImageDraw

    columns: dict[int, list[str]] = {}
    for name, depth in levels.items():
        columns.setdefault(depth, []).append(name)
    height = max(len(v) for v in columns.values())
    font, small = _font(_LABEL_PX + 1), _font(_LABEL_PX)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    boxes = {name: probe.multiline_textbbox((0, 0), labels[name], font=font, align="center") for name in levels}
    box_w = int(max(b[2] - b[0] for b in boxes.values())) + 16
    box_h = int(max(b[3] - b[1] for b in boxes.values())) + 12
    gap = max([90] + [int(probe.textlength(text, font=small)) + 24 for _, _, text in edges if text])
    step_x, step_y = box_w + gap, box_h + 40
    pos = {name: (20 + depth * step_x + box_w // 2, 20 + round(((height - 1) / 2 - (len(names) - 1) / 2 + row) * step_y)
                  + box_h // 2)
           for depth, names in columns.items() for row, name in enumerate(names)}
    canvas = Image.new("RGB", (40 + (len(columns) - 1) * step_x + box_w, 40 + (height - 1) * step_y + box_h), "white")
    draw = ImageDraw.Draw(canvas)
    for source, dest, text in edges:
        (x0, y0), (x1, y1) = pos[source], pos[dest]
        start, end = np.array([x0 + box_w / 2, y0]), np.array([x1 - box_w / 2, y1])
        direction = (end - start) / max(np.linalg.norm(end - start), 1e-9)
        normal = np.array([-direction[1], direction[0]])
        tip = end - 2 * direction
        draw.line((*start, *(tip - 8 * direction)), fill="#334455", width=2)
        draw.polygon([tuple(tip), tuple(tip - 10 * direction + 4 * normal), tuple(tip - 10 * direction - 4 * normal)],
                     fill="#334455")
        if text:
            draw.text(((x0 + x1) / 2, (y0 + y1) / 2 - 4), text, fill="#773333", font=small, anchor="md")
    for name, (x, y) in pos.items():
        draw.rounded_rectangle((x - box_w // 2, y - box_h // 2, x + box_w // 2, y + box_h // 2), radius=6,
                               fill="#eef2f8", outline="#334455")
        draw.multiline_text((x, y), labels[name], fill="black", font=font, anchor="mm", align="center")
    return _png(canvas, "model graph")


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
