"""Training speed: samples per second and achieved FLOP/s of the compiled train step, and input samples/s.

    python -m spinejax.train_benchmark [--records=runs/default/records] [--peak_gflops=157] [--paper_steps=2]

Prints one line per measurement:
- the CPU preset (configs/default.py:cpu) on the whole-spine records grid (16 x 192 x 48), its batch;
- the ProgreSpine-sized network (configs/default.py) on the paper's slab (14 x 793 x 384), batch 1 on CPU;
- the grain input pipeline (decode + augmentation + batching) over the records, with 0 and 2 workers.
FLOPs per step come from XLA's cost analysis of the compiled step; achieved FLOP/s is that over the measured
step time, and the fraction of peak is against --peak_gflops (157: this 2-core Zen 3 machine's fp32 peak,
../shared/PERF_NOTES.md; an H100's dense bf16 peak is about 989,000).
"""

from __future__ import annotations

import time

import jax
import numpy as np
from absl import app, flags
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from configs import default
from spinejax import distributed, input_pipeline, losses, steps, train


def define_flags():
    flags.DEFINE_string("records", "runs/default/records", "records folder for the input-pipeline measurement")
    flags.DEFINE_float("peak_gflops", 157.0, "the device's peak GFLOP/s, for the fraction of peak")
    flags.DEFINE_integer("steps", 10, "timed steps of the CPU preset (after 2 warm-up steps)")
    flags.DEFINE_integer("paper_steps", 2, "timed steps of the paper-scale network (0 skips it)")
    flags.DEFINE_integer("paper_batch", 1, "global batch of the paper-scale network")
    flags.DEFINE_string("paper_dtype", "float32", "compute dtype of the paper-scale network (bfloat16 on GPU/TPU)")
    flags.DEFINE_integer("input_batches", 30, "batches read per input-pipeline measurement")


def time_train_step(config, grid, batch_size: int, timed_steps: int) -> dict:
    """Compiles the train step of `config` for [batch_size, *grid, 1] inputs, runs it; returns FLOPs and rates."""
    mesh = distributed.data_mesh()
    head = losses.AgeHead(loss=config.loss.name, mean_years=55.0, sd_years=14.0)
    state, sharding = train.build_state(config, head, grid, 1000, mesh)
    train_step, _ = steps.jit_steps(mesh, sharding)
    rng = np.random.default_rng(0)
    batch = jax.device_put({"volume": rng.normal(size=(batch_size, *grid, 1)).astype(np.float32),
                            "age": rng.uniform(25, 85, batch_size).astype(np.float32),
                            "weight": np.ones(batch_size, np.float32)}, NamedSharding(mesh, P("data")))
    compiled = train_step.lower(state, batch).compile()
    cost = compiled.cost_analysis()
    flops = float((cost[0] if isinstance(cost, list) else cost).get("flops", float("nan")))
    for _ in range(2):
        state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(timed_steps):
        state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    seconds = (time.perf_counter() - start) / timed_steps
    return {"gflop_per_sample": flops / batch_size / 1e9, "step_s": seconds,
            "samples_per_s": batch_size / seconds, "gflops": flops / seconds / 1e9}


def time_input(records, config, worker_count: int, batches: int) -> float:
    """Training batches per second of the grain pipeline alone, in samples/s."""
    selection = input_pipeline.select(records, "whole", "train")
    loader = input_pipeline.train_loader(selection, local_batch=config.batch_size, seed=0,
                                         augment_config=config.augment, worker_count=worker_count,
                                         worker_buffer_size=2)
    iterator = iter(loader)
    next(iterator)  # start-up (worker processes) is not throughput
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * config.batch_size / (time.perf_counter() - start)


def main(argv):
    del argv
    f = flags.FLAGS
    device = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
    cpu = default.get_config("cpu")
    result = time_train_step(cpu, (16, 192, 48), cpu.batch_size, f.steps)
    _report("CPU preset, 16x192x48, batch 16", device, result, f.peak_gflops)
    if f.paper_steps > 0:
        paper = default.get_config()
        paper.model.dtype = f.paper_dtype
        result = time_train_step(paper, (14, 793, 384), f.paper_batch, f.paper_steps)
        _report(f"ProgreSpine-sized, 14x793x384, batch {f.paper_batch}, {f.paper_dtype}", device, result,
                f.peak_gflops)
    for workers in (0, 2):
        rate = time_input(f.records, cpu, workers, f.input_batches)
        print(f"input pipeline (decode + augment + batch 16), {workers} workers: {rate:.1f} samples/s", flush=True)


def _report(name, device, result, peak_gflops):
    print(f"{name} on {device}: {result['samples_per_s']:.2f} samples/s, {result['gflop_per_sample']:.2f} GFLOP "
          f"per sample, {result['gflops']:.1f} GFLOP/s achieved = {100 * result['gflops'] / peak_gflops:.1f}% of "
          f"{peak_gflops:.0f} GFLOP/s peak", flush=True)


if __name__ == "__main__":
    define_flags()
    app.run(main)
