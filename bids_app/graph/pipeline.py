"""One call from the command line to finished derivatives."""
from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from bids_app.derivatives.atomic import journal, write_json
from bids_app.derivatives.dataset import dataset_links, write_dataset_description, write_provenance
from bids_app.derivatives.naming import camel_keys
from bids_app.errors import NoInputsError
from bids_app.graph.context import Context
from bids_app.graph.executor import execute
from bids_app.graph.folder import check_output_dir, claim_folder, marker, release_folder
from bids_app.graph.history import folder_record, save_call, summary_lock
from bids_app.graph.parallel import open_backend
from bids_app.graph.progress import Progress
from bids_app.io.index import FileIndex
from bids_app.graph.units import Settings
from bids_app.design.diagnostics import diagnose
from bids_app.report.html import write_report
from bids_app.spec import load_model
from bids_app.spec.model import sanitize_label

log = logging.getLogger(__name__)


def run_app(bids_dir, out_dir, model_path, settings: Settings, derivatives=(), argv=None,
            progress: Progress | None = None) -> dict:
    """Validate, index, execute the graph and write dataset-level files.

    Everything that can be checked cheaply (model, dataset, participant
    labels, output folder, run-level designs and data) is checked before the
    first file is written. A failed run removes the files and folders it
    created itself, except those of finished units (each complete, with its
    record: a rerun resumes from them); it never removes a file it did not
    create, so jobs sharing an output folder cannot lose each other's work.

    ``provenance.json`` and ``report.html`` describe the whole folder: every
    finished unit of this and earlier calls (:mod:`bids_app.graph.history`).
    """
    started = datetime.now(timezone.utc)
    model = load_model(model_path)
    # absolute from here on: records and the report must not depend on the working directory
    out_dir = Path(out_dir).absolute()
    check_output_dir(out_dir, bids_dir, derivatives)
    index = FileIndex.build(bids_dir, derivatives, exclude=[out_dir])
    if settings.participant_label:
        known = set(index.files["subject"].dropna()) if "subject" in index.files else set()
        unknown = sorted(set(settings.participant_label) - known)
        if unknown:
            raise NoInputsError(f"participant label(s) not in the dataset: {', '.join('sub-' + u for u in unknown)}")
    argv = list(argv) if argv is not None else sys.argv
    ctx = Context(model, index, out_dir, settings,
                  links=dataset_links(index.bids_dir, index.derivatives, exclude=[out_dir]), command=argv)
    for note in model.notes:
        ctx.log.warn(f"model: {note}")
    for note in index.notes:
        ctx.log.warn(f"inputs: {note}")
    backend = open_backend(settings.n_procs, settings.dask_scheduler)
    with journal() as written:
        try:
            clock = time.perf_counter()
            outputs = execute(ctx, backend, progress, lambda: claim_folder(out_dir, model, settings, written))
            log.info("model graph executed in %.2f s", time.perf_counter() - clock)
            model_bytes = Path(model_path).read_bytes()
            model_copy = out_dir / f"model-{sanitize_label(model.name)}_smdl.json"
            write_json(model_copy, json.loads(model_bytes))
            write_dataset_description(out_dir, index.bids_dir, index.derivatives)
            record = {
                "Command": argv,
                "StartTime": started.isoformat(),
                "EndTime": datetime.now(timezone.utc).isoformat(),
                "AnalysisLevel": settings.analysis_level,
                "Model": {"File": str(Path(model_path).resolve()), "Copy": model_copy.name,
                          "SHA256": hashlib.sha256(model_bytes).hexdigest()},
                "RandomSeed": settings.seed,
                "Settings": camel_keys({k: (str(v) if isinstance(v, Path) else v) for k, v in vars(settings).items()}),
                "Inputs": [{"Path": p, "SHA256": h} for p, h in sorted(ctx.log.input_hashes.items())],
                "Exclusions": ctx.log.exclusions,
                "Warnings": ctx.log.warnings,
                "Units": ctx.log.units,
            }
            with summary_lock(out_dir):
                save_call(out_dir, record)
                record = folder_record(out_dir, record)
                write_provenance(out_dir, record)
                failures = write_report(out_dir, model, record, design_diagnostics).figure_failures
                if failures:
                    # the maps are complete, so a figure is no reason to fail the run; provenance says what is missing
                    record["Warnings"] = record["Warnings"] + [f"report: figure not drawn: {f}" for f in failures]
                    write_provenance(out_dir, record)
        except BaseException:
            written.rollback(keep=[*ctx.log.finished, marker(out_dir)])
            release_folder(out_dir, written, keep=ctx.log.finished)
            if ctx.log.finished:
                log.error("run failed; %d finished unit(s) kept in %s: a rerun resumes from them",
                          len(ctx.log.units), out_dir)
            raise
        finally:
            backend.close()
    return {"outputs": outputs, "record": record}


def design_diagnostics(matrix) -> dict:
    """Diagnostics of a design matrix, for the report (which does not import the design layer)."""
    return diagnose(matrix).to_dict()
