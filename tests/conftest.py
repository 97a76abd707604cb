"""Shared fixtures: paths to the repository's models and to the real data.

One idiom for real data: a test (or a fixture it uses) calls
:func:`real_data` with a folder or a file of ``../shared/data``; when the data
are absent the test is skipped with the reason, and only that test. Nothing
skips a whole module. Data sets read by several test files are loaded once
here (:func:`participants`, the ``pain21_maps`` and ``wager_maps`` fixtures).

``tests/data/registry.json`` lists every file of the data with its sha256 and
its source. ``../shared/data`` is the local mirror; elsewhere a file with a
direct download URL in the registry (or a folder whose files all have one) is
fetched with pooch, its sha256 checked, into a cache (``BIDS_STATS_TEST_DATA_CACHE``)
when ``BIDS_STATS_FETCH_TEST_DATA=1``; ``tests/test_data_registry.py`` exercises
that path on a local server. The app never downloads anything.
"""
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
# BIDS_STATS_DATA points elsewhere (e.g. from a git worktree not beside shared/)
DATA = Path(os.environ.get("BIDS_STATS_DATA", REPO.parent / "shared" / "data"))
REGISTRY = Path(__file__).resolve().parent / "data" / "registry.json"


@functools.lru_cache(maxsize=1)
def registry() -> dict:
    return json.loads(REGISTRY.read_text())


def real_data(name: str) -> Path:
    """Path to a real dataset folder or file (``"haxby2001_sub1"``, ``"pain21/participants.tsv"``)
    in ../shared/data (or the test-data cache), or skip the test with the reason."""
    path = DATA / name
    if path.exists():
        return path
    fetched = _fetch(name)
    if fetched is not None:
        return fetched
    pytest.skip(f"real data {name!r} not found at {path} (see ../shared/data/README.md and "
                "tests/data/registry.json)")


def _fetch(name: str) -> Path | None:
    """A registered file, or a folder whose every registered file has a download URL, fetched
    with pooch (sha256 checked) into the cache, keeping the folder layout; None when that is not
    possible or not allowed (``BIDS_STATS_FETCH_TEST_DATA=1``)."""
    if os.environ.get("BIDS_STATS_FETCH_TEST_DATA") != "1":
        return None
    files, urls = registry()["files"], registry()["urls"]
    names = [name] if name in files else [f for f in files if f.startswith(name.rstrip("/") + "/")]
    if not names or any(n not in urls for n in names):
        return None
    try:
        import pooch
    except ImportError:
        return None
    cache = Path(os.environ.get("BIDS_STATS_TEST_DATA_CACHE", pooch.os_cache("bids-stats-test-data")))
    for n in names:
        pooch.retrieve(urls[n], known_hash=f"sha256:{files[n]}", fname=Path(n).name,
                       path=cache / Path(n).parent, progressbar=False)
    return cache / name


def participants(name: str):
    """A real ``participants.tsv`` (``"wager2008_emoreg"``) as a DataFrame whose
    ``subject`` column holds the ids without ``sub-``; skips when absent."""
    table = pd.read_csv(real_data(f"{name}/participants.tsv"), sep="\t",
                        dtype={"participant_id": str, "subject_id": str})
    ids = table.pop("participant_id" if "participant_id" in table else "subject_id")
    return table.assign(subject=ids.str.removeprefix("sub-"))


@pytest.fixture(scope="session")
def pain21_maps():
    """The 21 pain21 studies' effect and variance maps (float64, (21, n_voxels)) in the
    >= 10-studies coverage mask, and the participants table (study sizes)."""
    root = real_data("pain21")
    mask = np.asarray(nib.load(root / "group_mask_min10studies.nii.gz").dataobj) > 0
    table = pd.read_csv(root / "participants.tsv", sep="\t")
    maps = {stat: np.stack([
        nib.load(root / sub / f"{sub}_task-pain_space-MNI152_contrast-pain_stat-{stat}_statmap.nii.gz")
        .get_fdata()[mask] for sub in table["participant_id"]]) for stat in ("effect", "variance")}
    return maps["effect"], maps["variance"], table


@pytest.fixture(scope="session")
def wager_maps():
    """The 30 wager2008_emoreg effect images, their data stacked (30, x, y, z) float64,
    and the participants table in the same order."""
    root = real_data("wager2008_emoreg")
    files = sorted(root.glob("sub-*/*_stat-effect_statmap.nii.gz"))
    images = tuple(nib.load(f) for f in files)
    table = pd.read_csv(root / "participants.tsv", sep="\t")
    assert table.participant_id.tolist() == [f.parent.name for f in files]
    return images, np.stack([img.get_fdata() for img in images]), table


@dataclass(frozen=True)
class Group:
    """Masked subject maps and what is needed to put them back in space."""

    Y: np.ndarray | None            # (n_subjects, n_voxels) effect maps, mask order
    mask: np.ndarray                # (x, y, z) bool
    affine: np.ndarray              # (4, 4)
    images: tuple                   # the subjects' Nifti1Images (for nilearn)
    participants: pd.DataFrame | None

    def volume(self, values):
        """Masked values back to an (x, y, z) float64 array, 0 outside the mask."""
        out = np.zeros(self.mask.shape)
        out[self.mask] = values
        return out

    def mask_img(self):
        return nib.Nifti1Image(self.mask.astype(np.uint8), self.affine)


@pytest.fixture(scope="session")
def wager_group(wager_maps) -> Group:
    """The 30 wager2008_emoreg maps in a brain mask: voxels finite and non-zero in every
    map, inside nilearn's packaged MNI152 brain mask resampled (nearest) to the data grid."""
    import warnings

    from nilearn.datasets import load_mni152_brain_mask
    from nilearn.image import resample_to_img

    images, data, table = wager_maps
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nilearn's resampling deprecation chatter
        mni = resample_to_img(load_mni152_brain_mask(resolution=2), images[0],
                              interpolation="nearest", copy_header=True, force_resample=True)
    mask = np.all(np.isfinite(data) & (data != 0), axis=0) & (mni.get_fdata() > 0)
    # 3.44 x 3.44 x 4.5 mm voxels: a whole-brain mask holds ~1.8 litres
    assert 1.3 < mask.sum() * abs(np.linalg.det(images[0].affine[:3, :3])) / 1e6 < 2.0
    return Group(data[:, mask], mask, images[0].affine, images, table)


def one_sample_z(group: Group):
    """OLS one-sample t of the group mean, as z (same tail probability), masked."""
    from scipy import stats

    n = group.Y.shape[0]
    t = group.Y.mean(axis=0) / (group.Y.std(axis=0, ddof=1) / np.sqrt(n))
    return np.where(t > 0, stats.norm.isf(stats.t.sf(t, n - 1)),
                    stats.norm.ppf(stats.t.cdf(t, n - 1)))


def simulated_z_map(seed: int = 0):
    """A z map in memory: an ellipsoid mask on a 3 mm grid, smooth unit-variance noise, three
    large blobs (two positive, one negative) and three one-voxel spikes of about 4.

    Returns the :class:`Group` (mask, affine; no subject maps) and the (x, y, z) float64 map."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    shape = (28, 32, 24)
    grid = np.indices(shape).astype(float)
    centre = (np.array(shape) - 1)[:, None, None, None] / 2
    radii = (np.array(shape) / 2 - 1)[:, None, None, None]
    mask = (((grid - centre) / radii) ** 2).sum(0) <= 1
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), 1.2)
    z = noise / noise[mask].std()
    for amplitude, position, width in ((7.0, (9, 10, 12), 2.5), (-6.0, (19, 22, 10), 2.0),
                                       (5.0, (14, 24, 16), 1.5)):
        z += amplitude * np.exp(-(((grid - np.array(position)[:, None, None, None]) / width) ** 2).sum(0) / 2)
    for height, position in ((4.0, (5, 16, 8)), (4.3, (22, 9, 15)), (-4.6, (14, 6, 6))):
        z[position] += height
    affine = np.array([[3.0, 0, 0, -42], [0, 3.0, 0, -66], [0, 0, 3.0, -36], [0, 0, 0, 1]])
    return Group(None, mask, affine, (), None), np.where(mask, z, 0.0)


@pytest.fixture(scope="session")
def wager_zmap(wager_group):
    """The real one-sample z map of the wager2008_emoreg group, (x, y, z), 0 outside the mask."""
    return wager_group, wager_group.volume(one_sample_z(wager_group))


@pytest.fixture(scope="session", params=["simulated", "wager2008_emoreg"])
def zmap(request):
    """A group z map, simulated in memory and real (only the real one needs the data)."""
    if request.param == "simulated":
        return simulated_z_map()
    return request.getfixturevalue("wager_zmap")


def run_node(instructions, x, hrf=None, high_pass_hz=0.0):
    """The Run node of a one-node model: ``X``, a ``HighPassFilterCutoffHz`` option, an optional
    ``Model.HRF`` and pybids-transforms-v1 ``instructions``."""
    from bids_app.spec.model import model_from_dict

    model = {"Type": "glm", "X": x, "Options": {"HighPassFilterCutoffHz": high_pass_hz}}
    if hrf:
        model["HRF"] = hrf
    node = {"Level": "Run", "Name": "run", "GroupBy": ["run", "subject"], "Model": model,
            "Transformations": {"Transformer": "pybids-transforms-v1", "Instructions": instructions}}
    return model_from_dict({"Name": "m", "BIDSModelVersion": "1.0.0", "Nodes": [node]}).nodes[0]
