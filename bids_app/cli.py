"""Command line: the BIDS-App entry point and the ``validate``, ``design`` and ``demo`` tools.

Exit codes (also in README.md): 0 success, 1 unexpected error, 2 bad arguments,
3 invalid model, 16 invalid/missing dataset, 17 unknown analysis level,
18 filters selected no files, 19 unreadable or inconsistent input data,
20 design not estimable, 21 unusable output folder.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import tempfile
from pathlib import Path

from bids_app import __version__
from bids_app.errors import BidsStatsError, UsageError
from bids_app.levels import LEVELS as MODEL_LEVELS

LEVELS = tuple(level.lower() for level in MODEL_LEVELS)
EXIT_UNKNOWN_LEVEL = 17
_TOOLS = ("validate", "design", "demo")


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so main() owns every exit code."""

    def error(self, message):
        raise UsageError(f"{self.prog}: {message}")


def app_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="bids-stats", description=(
        "Run a BIDS Stats Model on a BIDS dataset and write BIDS derivatives. "
        f"Tools: bids-stats {{{','.join(_TOOLS)}}} --help."))
    p.add_argument("bids_dir", type=Path, help="BIDS dataset (raw, or a derivatives folder of statistical maps)")
    p.add_argument("output_dir", type=Path, help="where derivatives are written")
    p.add_argument("analysis_level", help="run the graph up to this level: run, session, subject or dataset")
    p.add_argument("--model", type=Path, help="BIDS Stats Model JSON (default: one regressor per trial type, "
                                               "runs -> subject fixed effects -> dataset one-sample t per "
                                               "condition, as pybids' auto_model; written beside the outputs)")
    p.add_argument("--participant-label", nargs="+", metavar="LABEL",
                   help="subjects to include (with or without 'sub-')")
    p.add_argument("--derivatives", nargs="+", type=Path, default=[], metavar="DIR",
                   help="fMRIPrep outputs or folders of existing first-level statistical maps")
    p.add_argument("--space", help="template space of the preprocessed BOLD / maps, e.g. MNI152NLin2009cAsym")
    p.add_argument("--surface-mesh", nargs=2, type=Path, metavar=("LEFT", "RIGHT"),
                   help="GIFTI meshes (.surf.gii, e.g. fsLR midthickness) of surface data, for clusters, TFCE and "
                        "cluster tables; fsaverage5 needs none (nilearn ships it)")
    p.add_argument("--desc-label", help="desc- label of the preprocessed BOLD to use (default: preproc)")
    p.add_argument("--work-dir", type=Path, help="scratch folder for temporary files (default: the system's)")
    p.add_argument("--n-procs", type=_int_at_least(1), default=1,
                   help="local worker processes for independent units (runs, GroupBy groups) and for the "
                        "permutations of a group")
    p.add_argument("--dask-scheduler", metavar="ADDRESS",
                   help="run units on Dask distributed instead: a scheduler address (tcp://host:8786), or local:N "
                        "for a LocalCluster of N worker processes (needs the [dask] extra; see docs/hpc.md)")
    p.add_argument("--seed", type=_int_at_least(0), default=0,
                   help="random seed (permutations); recorded in provenance")
    p.add_argument("--group-estimator", dest="estimator", choices=("ols", "mixed"), default="ols",
                   help="default estimator of Session/Subject/Dataset nodes: ordinary least squares on the "
                        "incoming effects, or mixed effects with their variances; "
                        "Model.Software['bids-stats'].Estimator wins")
    p.add_argument("--run-noise-model", dest="noise_model", type=_noise_model, default="ar1",
                   metavar="{ols,ar1,ar2,...}",
                   help="noise model of Run nodes: none (white noise, plain least squares) or AR(p) "
                        "prewhitening as nilearn's (default ar1)")
    _deprecated(p, "--estimator", "--group-estimator", dest="estimator", choices=("ols", "mixed"))
    _deprecated(p, "--noise-model", "--run-noise-model", dest="noise_model", type=_noise_model)
    p.add_argument("--smoothing", type=_smoothing, metavar="FWHM[:LEVEL]",
                   help="isotropic Gaussian smoothing (mm) of the data entering nodes of LEVEL "
                        "(run: BOLD before run fits, the default; session/subject/dataset: incoming effect maps)")
    p.add_argument("--missing-confounds", choices=("drop", "error"), default="drop",
                   help="a confound absent in one run: drop it there with a warning, or stop")
    p.add_argument("--qc-policy", choices=("exclude", "fail"), default="exclude",
                   help="bad input maps (all-NaN, constant, bad variance): exclude with a warning, or stop")
    inf = p.add_argument_group("inference (Dataset-level nodes; Model.Software['bids-stats'].Inference wins)")
    inf.add_argument("--height-control", choices=("fdr", "bonferroni", "fpr", "none"),
                     help="voxel-level error control of the thresholded maps (default fpr)")
    inf.add_argument("--alpha", type=_probability,
                     help="level, in (0, 1): default 0.001 for fpr, 0.05 for fdr/bonferroni")
    inf.add_argument("--cluster-min-size", type=_int_at_least(0), metavar="K", help="smallest cluster kept, in voxels")
    inf.add_argument("--two-sided", action="store_true", default=None, help="test both signs (deactivations too)")
    inf.add_argument("--n-perm", type=_int_at_least(0), metavar="N",
                     help="permutations for FWE maxT/cluster/TFCE (0 = none)")
    inf.add_argument("--tfce", action="store_true", default=None, help="also TFCE in permutation inference")
    inf.add_argument("--cluster-forming-z", dest="cluster_threshold", type=_positive, metavar="Z",
                     help="z above which voxels form clusters in permutation inference (default 3.1); "
                          "the smallest cluster kept is --cluster-min-size")
    _deprecated(inf, "--cluster-threshold", "--cluster-forming-z", dest="cluster_threshold", type=_positive)
    p.add_argument("--version", action="version", version=f"bids-stats {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress display (on a terminal: bars per node; elsewhere: a line per finished unit)")
    return p


class _DeprecatedAlias(argparse.Action):
    """An old option name: stores like its new name, with a warning on stderr."""

    def __init__(self, option_strings, dest, new_name=None, **kwargs):
        self.new_name = new_name
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"bids-stats: warning: {option_string} is deprecated and will be removed; use {self.new_name}",
              file=sys.stderr)
        setattr(namespace, self.dest, values)


def _deprecated(group, old: str, new: str, **kwargs) -> None:
    group.add_argument(old, action=_DeprecatedAlias, new_name=new, help=f"deprecated alias of {new}",
                       default=argparse.SUPPRESS, **kwargs)


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {low}, got {text!r}")
        return value
    parse.__name__ = f"integer >= {low}"
    return parse


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _probability(text: str) -> float:
    value = _number(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a level between 0 and 1 (e.g. 0.05), got {text!r}")
    return value


def _positive(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _smoothing(text: str) -> tuple[float, str]:
    fwhm, _, level = text.partition(":")
    try:
        value = float(fwhm)
    except ValueError:
        raise argparse.ArgumentTypeError(f"FWHM must be a number of mm, got {fwhm!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"FWHM must be a finite number of mm, got {fwhm!r}")
    level = (level or "run").lower()
    if value <= 0 or level not in LEVELS:
        raise argparse.ArgumentTypeError(f"expected FWHM > 0 and LEVEL in {LEVELS}, got {text!r}")
    return value, level.capitalize()


def _noise_model(text: str) -> str:
    from bids_app.spec.model import ar_order

    try:
        ar_order(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text.strip().lower()


def _run_app(argv: list[str]) -> int:
    args = app_parser().parse_args(argv)
    _logging(args.verbose)
    if args.analysis_level not in LEVELS:
        print(f"bids-stats: unknown analysis level {args.analysis_level!r}; choose one of {', '.join(LEVELS)}",
              file=sys.stderr)
        return EXIT_UNKNOWN_LEVEL
    if args.model is not None and not args.model.is_file():
        raise UsageError(f"model file not found: {args.model}")
    from bids_app.graph.pipeline import run_app
    from bids_app.graph.progress import Progress
    from bids_app.graph.units import Settings

    if args.work_dir:
        # scratch space for library temporaries (nilearn/joblib); outputs never go there
        try:
            args.work_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--work-dir {args.work_dir}: cannot use it as a scratch folder "
                             f"({exc.strerror or exc})") from exc
        tempfile.tempdir = str(args.work_dir)
        os.environ["JOBLIB_TEMP_FOLDER"] = str(args.work_dir)
    labels = [lab.removeprefix("sub-") for lab in args.participant_label] if args.participant_label else None
    settings = Settings(
        participant_label=labels, space=args.space, desc_label=args.desc_label,
        analysis_level=args.analysis_level, work_dir=args.work_dir, n_procs=args.n_procs,
        dask_scheduler=args.dask_scheduler, seed=args.seed,
        estimator=args.estimator, noise_model=args.noise_model,
        smoothing_fwhm=args.smoothing[0] if args.smoothing else None,
        smoothing_level=args.smoothing[1] if args.smoothing else "Run",
        missing_confounds=args.missing_confounds, qc_policy=args.qc_policy,
        surface_mesh=tuple(str(f.absolute()) for f in args.surface_mesh or ()),
        inference={k: getattr(args, k) for k in ("height_control", "alpha", "cluster_min_size", "two_sided",
                                                  "n_perm", "tfce", "cluster_threshold")},
    )
    with tempfile.TemporaryDirectory() as scratch:
        model_path = args.model or _default_model(args, labels, Path(scratch))
        result = run_app(args.bids_dir, args.output_dir, model_path, settings, derivatives=args.derivatives,
                         argv=["bids-stats", *argv], progress=Progress(enabled=not args.quiet))
    if args.model is None:
        print(f"bids-stats: no --model given: ran the default model, written beside the outputs as "
              f"{result['record']['Model']['Copy']}")
    n = sum(len(v) for v in result["outputs"].values())
    print(f"bids-stats: done; {n} map(s) flowed between nodes; outputs in {args.output_dir}")
    return 0


def _default_model(args, labels, folder: Path) -> Path:
    """Build the default model for the dataset (see :mod:`bids_app.graph.default_model`) into ``folder``."""
    import json

    from bids_app.graph.default_model import dataset_default_model, describe

    model = dataset_default_model(args.bids_dir, args.derivatives, labels)
    path = folder / f"model-{model['Name']}_smdl.json"
    path.write_text(json.dumps(model, indent=2))
    print(f"bids-stats: no --model given: using a default model ({describe(model)})")
    return path


def _validate(argv: list[str]) -> int:
    p = _Parser(prog="bids-stats validate", description=(
        "Check a BIDS Stats Model JSON; all problems at once. With --bids-dir, also check it against a dataset "
        "without fitting: print per node the units it would fit and the design columns it would build."))
    p.add_argument("model", type=Path)
    p.add_argument("--bids-dir", type=Path, help="BIDS dataset (or folder of statistical maps) to plan the model on")
    p.add_argument("--derivatives", nargs="+", type=Path, default=[], metavar="DIR")
    p.add_argument("--participant-label", nargs="+", metavar="LABEL")
    p.add_argument("--space")
    p.add_argument("--desc-label")
    p.add_argument("--missing-confounds", choices=("drop", "error"), default="drop")
    p.add_argument("--analysis-level", choices=LEVELS, default="dataset")
    args = p.parse_args(argv)
    from bids_app.spec import read_model

    notes: list[str] = []
    nodes = [node["Name"] for node in read_model(args.model, notes)["Nodes"]]
    print(f"{args.model}: valid ({len(nodes)} node(s): {', '.join(nodes)})")
    for note in notes:
        print(f"warning: {note}")
    if args.bids_dir is None:
        return 0
    from bids_app.graph.executor import plan_dataset
    from bids_app.graph.plan import describe
    from bids_app.graph.units import Settings
    from bids_app.spec import load_model

    labels = [lab.removeprefix("sub-") for lab in args.participant_label] if args.participant_label else None
    settings = Settings(participant_label=labels, space=args.space, desc_label=args.desc_label,
                        analysis_level=args.analysis_level, missing_confounds=args.missing_confounds)
    plans = plan_dataset(load_model(args.model), args.bids_dir, args.derivatives, settings)
    print(f"checked against {args.bids_dir} (nothing fitted, nothing written):")
    for line in describe(plans):
        print(f"  {line}")
    return 0


def _design(argv: list[str]) -> int:
    p = _Parser(prog="bids-stats design",
                description="Events + model -> run-level design matrix TSV (and PNG): the design synthesizer.")
    p.add_argument("--events-tsv", type=Path, required=True)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--tr", type=_positive, required=True, help="repetition time (s)")
    p.add_argument("--nvol", type=_int_at_least(1), required=True, help="number of volumes")
    p.add_argument("--confounds", type=Path, help="fMRIPrep confounds TSV")
    p.add_argument("--physio", type=Path, nargs="+", default=[], metavar="F",
                   help="the run's *_physio.tsv.gz / *_stim.tsv.gz recordings, each with its JSON sidecar beside it")
    p.add_argument("--node", help="Run-level node to use (default: the first)")
    p.add_argument("--output-tsv", type=Path, required=True)
    p.add_argument("--no-png", action="store_true", help="do not write a PNG of the matrix")
    args = p.parse_args(argv)
    from bids_app.graph.synthesize import synthesize

    out = synthesize(args.events_tsv, args.model, args.tr, args.nvol, args.output_tsv,
                     confounds_tsv=args.confounds, node_name=args.node, png=not args.no_png,
                     physio=args.physio)
    print(f"design matrix written to {out}")
    return 0


def _demo(argv: list[str]) -> int:
    p = _Parser(prog="bids-stats demo",
                description="Simulate a small BIDS dataset with a known activation and run models/demo.json on it.")
    p.add_argument("output_dir", type=Path, help="folder for the simulated dataset (bids/) and results (out/)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--subjects", type=int, default=6)
    p.add_argument("-v", "--verbose", action="count", default=0)
    args = p.parse_args(argv)
    _logging(args.verbose)
    from bids_app.demo.run import run_demo

    summary = run_demo(args.output_dir, seed=args.seed, n_subjects=args.subjects)
    for line in summary["lines"]:
        print(line)
    return 0


def _logging(verbose: int) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    tool = {"validate": _validate, "design": _design, "demo": _demo}.get(argv[0] if argv else "")
    try:
        return tool(argv[1:]) if tool else _run_app(argv)
    except BidsStatsError as exc:
        print(f"bids-stats: error: {exc}", file=sys.stderr)
        return exc.exit_code
