"""Processes, devices and global batches: what changes between one CPU, one GPU host and a TPU VM pod.

One process per host. Each process reads its own part of the data and holds a `local_batch` =
global_batch / process_count; `global_batch` stitches the local batches of every process into one array
split over the mesh's 'data' axis (all devices of all hosts).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


def initialize(coordinator: str, num_processes: int, process_id: int) -> None:
    """Joins a multi-process run (no-op for one process). On CPU, collectives go over gloo.

    On TPU VMs and SLURM/GPU clusters jax finds the coordinator itself: pass coordinator='auto'.
    """
    if coordinator == "" and num_processes <= 1:
        return
    if coordinator == "":
        raise ValueError(f"{num_processes} processes need --coordinator=HOST:PORT of process 0 (or 'auto')")
    # Only the CPU backend reads this; it lets CPU-only hosts (and the tests) run real collectives.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if coordinator == "auto":
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)


def data_mesh() -> Mesh:
    """A 1-D mesh named 'data' over every device of every process."""
    return Mesh(np.asarray(jax.devices()), ("data",))


def global_batch(mesh: Mesh, local: dict) -> dict:
    """Process-local numpy batches [local_batch, ...] -> global jax arrays [global_batch, ...] split over 'data'."""
    sharding = NamedSharding(mesh, P("data"))
    return {name: jax.make_array_from_process_local_data(sharding, np.asarray(value))
            for name, value in local.items()}


def gather(x: jax.Array) -> np.ndarray:
    """A global array split over 'data' -> the whole of it as numpy, on every process."""
    if jax.process_count() == 1:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def barrier(name: str) -> None:
    """Waits until every process reaches `name` (no-op for one process): after process 0 changed shared files."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
