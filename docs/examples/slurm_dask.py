"""A Dask cluster on SLURM for bids-stats (dask-jobqueue), workers running inside the Apptainer image.

Run on a login node (or in a small SLURM job) with ``bids-stats[dask]`` installed, or
inside the image itself (``apptainer exec bids-stats.sif python slurm_dask.py``)::

    python slurm_dask.py /project/bids-stats.sif /data /scratch/out

It prints the scheduler address; pass that to ``bids-stats ... --dask-scheduler ADDRESS``
from the same node. Every path the run reads or writes must be bound (``binds``) and
visible at the same place on every compute node (a shared file system).
"""
from __future__ import annotations

import sys


def slurm_cluster(image: str, binds: list[str], account: str | None = None, queue: str | None = None,
                  walltime: str = "04:00:00", cores: int = 4, memory: str = "16GB"):
    """A SLURMCluster whose jobs each start ``cores`` single-threaded Dask workers in the image.

    Parameters
    ----------
    image : str
        The ``.sif`` file (see docs/hpc.md).
    binds : list of str
        Host folders the workers need: BIDS dataset, derivatives, output and work folders.
    cores, memory : int, str
        Per SLURM job; each of the ``cores`` workers gets ``memory / cores``.
    """
    from dask_jobqueue import SLURMCluster

    bind = " ".join(f"-B {b}" for b in binds)
    return SLURMCluster(
        cores=cores, processes=cores, memory=memory, account=account, queue=queue, walltime=walltime,
        # the worker runs the image's Python, so it has bids-stats and the same library versions as the client
        python=f"apptainer exec --cleanenv {bind} {image} python",
        # one BLAS thread per worker: the workers already fill the job's cores
        job_script_prologue=["export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1",
                             'export TMPDIR="${SLURM_TMPDIR:-${TMPDIR:-/tmp}}"'],
        worker_extra_args=["--nthreads", "1"],
    )


if __name__ == "__main__":
    image, *binds = sys.argv[1:]
    cluster = slurm_cluster(image, binds)
    cluster.adapt(minimum_jobs=1, maximum_jobs=8)
    print(cluster.job_script())
    print(f"scheduler: {cluster.scheduler_address}  (Ctrl-C to stop the cluster)", flush=True)
    try:
        import time
        while True:
            time.sleep(60)
    except KeyboardInterrupt:
        cluster.close()
