"""The worker pool both data_prep batch stages use: a map over independent jobs, with a progress bar.

Each job's function is expected to cache its own result on disk and to return it from there when called
again (so a killed run, started again, redoes only unfinished jobs); this module only maps, in order.
Workers are spawned processes (never forked: JAX and BLAS threads do not survive a fork).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence

from tqdm import tqdm


def map_jobs(function: Callable, jobs: Sequence, workers: int | None = None, desc: str = "series",
             progress: bool = True, chunksize: int = 1) -> Iterator:
    """Yields function(job) for each job, in job order. workers: processes (None or 0: all cores)."""
    workers = workers or os.cpu_count() or 1
    bar = tqdm(total=len(jobs), desc=desc, unit=desc, disable=not progress, file=sys.stdout,
               mininterval=0.5 if sys.stdout.isatty() else 15.0)  # a log file gets a line every 15 s
    try:
        if workers == 1 or len(jobs) <= 1:
            for job in jobs:
                yield function(job)
                bar.update()
        else:
            # An executor, not multiprocessing.Pool: a worker killed (out of memory) raises BrokenProcessPool
            # here instead of leaving the run waiting forever.
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
                for result in pool.map(function, jobs, chunksize=chunksize):
                    yield result
                    bar.update()
    finally:
        bar.close()
