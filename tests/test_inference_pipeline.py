"""Inference through the CLI: thresholded maps, cluster tables, permutation maps, settings precedence."""
import json
from contextlib import contextmanager

import nibabel as nb
import numpy as np
import pandas as pd
import pytest

from bids_app.cli import main
from conftest import MODELS, real_data


@pytest.fixture(scope="module")
def wager_fdr(tmp_path_factory):
    data = real_data("wager2008_emoreg")
    out = tmp_path_factory.mktemp("inf") / "out"
    args = [str(data), str(out), "dataset", "--model", str(MODELS / "one_sample_existing_maps.json"),
            "--height-control", "fdr", "--alpha", "0.05", "--two-sided", "--n-perm", "100", "--seed", "7"]
    assert main(args) == 0
    return data, out, args


def test_thresholded_map_equals_nilearn(wager_fdr):
    from nilearn.glm import threshold_stats_img

    _, out, _ = wager_fdr
    node = out / "node-group"
    z_img = nb.load(next(node.glob("*reappNegVsLookNeg_stat-z_statmap.nii.gz")))
    mask_img = nb.load(next(node.glob("*_mask.nii.gz")))
    z = np.nan_to_num(z_img.get_fdata())
    ref, ref_thr = threshold_stats_img(nb.Nifti1Image(z, z_img.affine), mask_img=mask_img, alpha=0.05,
                                       height_control="fdr", two_sided=True, cluster_threshold=0)
    ours = nb.load(next(node.glob("*reappNegVsLookNeg_stat-z_desc-fdr_statmap.nii.gz"))).get_fdata()
    meta = json.loads(next(node.glob("*reappNegVsLookNeg_stat-z_desc-fdr_statmap.json")).read_text())
    # ours thresholds the float64 z; the reference reads the float32 map written to disk
    assert meta["ZThreshold"] == pytest.approx(ref_thr, rel=1e-6)
    mask = mask_img.get_fdata() > 0
    np.testing.assert_array_equal(np.nan_to_num(ours)[mask] != 0, ref.get_fdata()[mask] != 0)
    assert (np.nan_to_num(ours) != 0).sum() > 100
    table = pd.read_csv(next(node.glob("*reappNegVsLookNeg_desc-fdr_clusters.tsv")), sep="\t")
    peaks = table[table["peak"] == 0]
    assert peaks["cluster_size_voxels"].sum() == (np.nan_to_num(ours) != 0).sum()
    assert peaks["peak_stat"].abs().max() == pytest.approx(np.abs(np.nan_to_num(ours)).max(), rel=1e-6)
    assert table["aal"].notna().all()


def test_permutation_maps_are_recorded_and_deterministic(wager_fdr, tmp_path):
    data, out, args = wager_fdr
    node = out / "node-group"
    logp_path = next(node.glob("*reappNegVsLookNeg_stat-logp_desc-maxT_statmap.nii.gz"))
    logp = nb.load(logp_path).get_fdata()
    finite = logp[np.isfinite(logp)]
    assert finite.min() >= 0 and finite.max() <= np.log10(101) + 1e-9
    assert finite.max() == pytest.approx(np.log10(101))  # the strongest voxels beat every permutation
    meta = json.loads(logp_path.with_name(logp_path.name.replace(".nii.gz", ".json")).read_text())
    assert meta["n_perm"] == 100 and meta["seed"] == 7 and meta["scheme"] == "sign-flip"
    assert list(node.glob("*stat-logp_desc-clusterSize_statmap.nii.gz"))
    again = tmp_path / "again"
    args2 = [a if a != str(out) else str(again) for a in args]
    assert main(args2) == 0
    assert (again / logp_path.relative_to(out)).read_bytes() == logp_path.read_bytes()


def test_model_inference_settings_win_over_cli(tmp_path):
    data = real_data("wager2008_emoreg")
    model = json.loads((MODELS / "one_sample_existing_maps.json").read_text())
    model["Nodes"][0]["Model"]["Software"] = {"bids-stats": {"Inference": {"HeightControl": "bonferroni",
                                                                           "Alpha": 0.05}}}
    path = tmp_path / "m.json"
    path.write_text(json.dumps(model))
    out = tmp_path / "out"
    assert main([str(data), str(out), "dataset", "--model", str(path), "--height-control", "fdr"]) == 0
    node = out / "node-group"
    assert not list(node.glob("*desc-fdr*"))
    meta = json.loads(next(node.glob("*stat-z_desc-bonferroni_statmap.json")).read_text())
    mask = nb.load(next(node.glob("*_mask.nii.gz"))).get_fdata() > 0
    from scipy.stats import norm

    assert meta["ZThreshold"] == pytest.approx(norm.isf(0.05 / mask.sum()), rel=1e-9)


def test_permutation_maps_identical_for_any_n_procs(tmp_path, monkeypatch):
    import bids_app.graph.inference_step as inference_step

    maps_used = []

    @contextmanager
    def recorded(n_procs):
        with block_map(n_procs) as map_blocks:
            maps_used.append(map_blocks)
            yield map_blocks

    block_map = inference_step.block_map
    monkeypatch.setattr(inference_step, "block_map", recorded)
    data = real_data("wager2008_emoreg")
    written = {}
    for n_procs in (1, 2):
        out = tmp_path / f"out{n_procs}"
        assert main([str(data), str(out), "dataset", "--model", str(MODELS / "covariate_existing_maps.json"),
                     "--n-perm", "150", "--seed", "3", "--n-procs", str(n_procs)]) == 0
        written[n_procs] = {p.name: p.read_bytes() for p in (out / "node-group").glob("*_stat-logp_*")}
    assert len(written[1]) >= 6  # maxT, cluster size and mass of both contrasts (maps and sidecars)
    assert written[1] == written[2]
    # one group per contrast, run in this process: --n-procs 2 put its permutation blocks on a process pool
    assert len(maps_used) == 4 and maps_used[:2] == [map, map] and map not in maps_used[2:]
