"""Training speed: samples per second and achieved FLOP/s of the compiled train step, and input samples/s.

    python -m spinejax.train_benchmark [--records=runs/default/records] [--peak_gflops=157] [--paper_steps=2]
    python -m spinejax.train_benchmark --peer [--convs=auto,xla] [--rounds=7]     # against PyTorch

Prints one line per measurement:
- the CPU preset (configs/default.py:cpu) on the whole-spine records grid (16 x 192 x 48), its batch;
- the ProgreSpine-sized network (configs/default.py) on the paper's slab (--paper_grid), batch --paper_batch;
- the grain input pipeline (reading, decoding, augmentation, batching) over the records, with 0 and 2 workers,
  and its samples/s as a multiple of the CPU preset step's (--input_only: the input alone)
  (skipped when --records does not exist).
With --peer, the same train step in PyTorch (spinejax.torch_peer; the optional `peer` extra) runs in the same
process, channels_last_3d and default layout, alternating round by round with the JAX step (each JAX
convolution of --convs), and the medians are printed with the JAX/PyTorch ratio. On a GPU the peer runs both
networks in bfloat16 (model.dtype='bfloat16' in JAX, autocast in PyTorch); without torch (or without CUDA
where JAX has a GPU) it times JAX alone and says so.

FLOPs per step come from XLA's cost analysis of the compiled step with XLA's own 3D convolution (the other
formulations also count the products with zero padding they make); achieved FLOP/s is that over the measured
step time, and the fraction of peak is against --peak_gflops (157: a 2-core Zen 3's fp32 peak,
../shared/PERF_NOTES.md; an H100's or H200's dense bf16 peak is about 989,000).
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from spinejax import host_memory

# As training does (spinejax/main.py), before jax is imported: set after the import, the CPU preset's step
# measured about 15% slower. --nokeep_freed_memory measures without it.
if not {"--nokeep_freed_memory", "--keep_freed_memory=false", "--keep_freed_memory=False",
        "--keep_freed_memory=0"} & set(sys.argv):
    host_memory.keep_freed_memory()

import jax  # noqa: E402
import numpy as np
from absl import app, flags
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from spinejax import conv, distributed, input_pipeline, losses, steps, train  # noqa: E402
from spinejax.errors import InputError, one_line_errors  # noqa: E402

CPU_GRID = (16, 192, 48)
# The presets timed come from the checkout's training config (configs/ is not part of the installed package).
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "default.py"
MEAN_YEARS, SD_YEARS = 55.0, 14.0


def define_flags():
    flags.DEFINE_string("config_file", str(DEFAULT_CONFIG), "training config file whose get_config('cpu') "
                        "and get_config() are the CPU preset and the paper-scale network")
    flags.DEFINE_string("records", "runs/default/records", "records folder for the input-pipeline measurement")
    flags.DEFINE_float("peak_gflops", 157.0, "the device's peak GFLOP/s, for the fraction of peak")
    flags.DEFINE_integer("steps", 10, "timed steps of the CPU preset (after 2 warm-up steps); per round with --peer")
    flags.DEFINE_integer("paper_steps", 2, "timed steps of the paper-scale network (0 skips it)")
    flags.DEFINE_integer("paper_batch", 1, "global batch of the paper-scale network")
    flags.DEFINE_list("paper_grid", ["14", "793", "384"], "slices,rows,cols of the paper-scale input")
    flags.DEFINE_string("paper_dtype", "float32", "compute dtype of the paper-scale network without --peer")
    flags.DEFINE_integer("input_batches", 150, "batches read per input-pipeline measurement")
    flags.DEFINE_bool("input_only", False, "time the input pipeline alone (no train step)")
    flags.DEFINE_bool("peer", False, "also time the same step in PyTorch, alternating with JAX")
    flags.DEFINE_list("convs", ["auto", "xla"], "with --peer: JAX convolutions to time (spinejax.conv.METHODS)")
    flags.DEFINE_integer("rounds", 7, "with --peer: alternating rounds (medians are reported)")
    flags.DEFINE_bool("keep_freed_memory", True, "spinejax.host_memory's malloc settings, as training uses (read "
                      "from the command line before jax is imported)")


def load_presets(path: str):
    """(CPU preset, paper-scale config) of a training config file such as configs/default.py."""
    if not Path(path).is_file():
        raise InputError(f"--config_file: no training config file at {path} (configs/default.py of a checkout)")
    spec = importlib.util.spec_from_file_location("spinejax_benchmarked_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config("cpu"), module.get_config()


def _compiled_step(config, grid, batch_size: int):
    """(compiled train step of `config`, a fresh state, a random batch [batch_size, *grid, 1]) on all devices."""
    mesh = distributed.data_mesh()
    head = losses.AgeHead(loss=config.loss.name, mean_years=MEAN_YEARS, sd_years=SD_YEARS)
    state, sharding = train.build_state(config, head, grid, 1000, mesh)
    train_step, _ = steps.jit_steps(mesh, sharding)
    rng = np.random.default_rng(0)
    # float16, as the input pipeline delivers it (the records' precision; the model casts it on the device)
    batch = jax.device_put({"volume": rng.normal(size=(batch_size, *grid, 1)).astype(np.float16),
                            "age": rng.uniform(25, 85, batch_size).astype(np.float32),
                            "weight": np.ones(batch_size, np.float32)}, NamedSharding(mesh, P("data")))
    return train_step.lower(state, batch).compile(), state, batch


def jax_step(config, grid, batch_size: int) -> Callable[[int], float]:
    """run(n) -> seconds per step over n steps of `config`'s train step; two warm-up steps are run."""
    compiled, state, batch = _compiled_step(config, grid, batch_size)
    holder = [state]

    def run(n: int) -> float:
        state = holder[0]
        start = time.perf_counter()
        for _ in range(n):
            state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics)
        holder[0] = state
        return (time.perf_counter() - start) / n

    run(2)
    return run


def model_flops(config, grid, batch_size: int) -> float:
    """FLOPs of one train step: XLA's cost analysis of the step with XLA's 3D convolution (not run), or the count
    from the layers when XLA's is under half of it (on GPU the convolutions are cuDNN calls, which XLA's cost
    analysis does not count; on CPU the two agree within the layers' rough 3x rule)."""
    config = config.copy_and_resolve_references()
    config.model.conv = "xla"
    cost = _compiled_step(config, grid, batch_size)[0].cost_analysis()
    # The compiled step is one device's program (its share of the batch): scale to the whole step.
    counted = float((cost[0] if isinstance(cost, list) else cost).get("flops", float("nan"))) * jax.device_count()
    layers = layer_flops(config.model, grid) * batch_size
    return counted if counted >= 0.5 * layers else layers


def layer_flops(model_config, grid) -> float:
    """Multiply-adds x 2 of one sample's training step, counted from the convolutions: each 3x3x3 and the 1x1x1
    block, forward plus the input and kernel gradients (3x the forward; the pooling, batch norm and the
    optimizer are a few percent and left out)."""
    shape, channels = np.asarray(grid), 1
    if model_config.stem_space_to_depth:
        shape, channels = shape // np.asarray(model_config.stem_space_to_depth), int(
            np.prod(model_config.stem_space_to_depth))
    forward = 0.0
    for width, pool in zip(model_config.channels, model_config.pools):
        forward += 2.0 * 27 * channels * width * np.prod(shape)
        channels, shape = width, shape // np.asarray(pool)
    forward += 2.0 * channels * model_config.head_channels * np.prod(shape)
    return 3.0 * forward


def torch_step(config, grid, batch_size: int, channels_last: bool, bf16: bool) -> Callable[[int], float]:
    """run(n) -> seconds per step of spinejax.torch_peer's step on random inputs (CUDA when JAX is on a GPU)."""
    import torch

    from spinejax import torch_peer

    device = torch.device("cuda" if jax.default_backend() == "gpu" else "cpu")
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(config.seed)
    layout = torch.channels_last_3d if channels_last else torch.contiguous_format
    model = torch_peer.build(config.model).to(device=device, memory_format=layout).train()
    step = torch_peer.make_step(model, config.optimizer, 1000, MEAN_YEARS, SD_YEARS,
                                autocast_dtype=torch.bfloat16 if bf16 else None)
    rng = np.random.default_rng(0)
    # float32, PyTorch's usual input; the JAX step gets float16 as from the pipeline and casts it on the device
    # (one pass over the batch that only the JAX side pays)
    volume = torch.from_numpy(rng.normal(size=(batch_size, 1, *grid)).astype(np.float32))
    volume = volume.to(device).contiguous(memory_format=layout)
    age = torch.from_numpy(rng.uniform(25, 85, batch_size).astype(np.float32)).to(device)
    weight = torch.ones(batch_size, device=device)

    def run(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            loss = step(volume, age, weight)
        loss.item()  # waits for the device
        return (time.perf_counter() - start) / n

    run(2)
    return run


def torch_available() -> str | None:
    """None when the PyTorch peer can run here, else why not."""
    try:
        import torch
    except ImportError:
        return "torch is not installed (pip install .[peer])"
    if jax.default_backend() == "gpu" and not torch.cuda.is_available():
        return f"torch {torch.__version__} has no CUDA here"
    return None


def alternate(runners: dict[str, Callable[[int], float]], rounds: int, steps_per_round: int) -> dict[str, float]:
    """Median seconds per step of each runner over `rounds` rounds, the runners taking turns in each round
    (so a disturbance on a shared machine falls on all of them alike)."""
    times = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            times[name].append(run(steps_per_round))
    return {name: statistics.median(t) for name, t in times.items()}


def compare(title: str, config, grid, batch_size: int, convs, rounds: int, steps_per_round: int,
            peak_gflops: float, device: str) -> float:
    """Times the JAX step (each convolution of `convs`) and the PyTorch peer (both layouts), alternating; prints
    samples/s, GFLOP/s, fraction of peak and the ratios to PyTorch channels_last_3d. Returns the first JAX
    step's samples/s."""
    bf16 = config.model.dtype == "bfloat16"
    flops = model_flops(config, grid, batch_size)
    runners = {}
    for method in convs:
        config.model.conv = method
        runners[f"jax conv={method} ({conv.resolve(method)})"] = jax_step(config, grid, batch_size)
    missing = torch_available()
    if missing is None:
        runners["torch channels_last_3d"] = torch_step(config, grid, batch_size, True, bf16)
        runners["torch default layout"] = torch_step(config, grid, batch_size, False, bf16)
    seconds = alternate(runners, rounds, steps_per_round)
    print(f"{title}, {config.model.dtype}, on {device}: {flops / batch_size / 1e9:.2f} GFLOP per sample (XLA's cost "
          f"analysis, or the layers' count where XLA misses cuDNN's); medians of {rounds} alternating rounds of "
          f"{steps_per_round} steps", flush=True)
    peer = seconds.get("torch channels_last_3d")
    for name, s in seconds.items():
        gflops = flops / s / 1e9
        ratio = f", {peer / s:.2f}x torch channels_last_3d" if peer and not name.startswith("torch channels") else ""
        print(f"  {name}: {batch_size / s:.1f} samples/s, {gflops:.1f} GFLOP/s = {100 * gflops / peak_gflops:.1f}% "
              f"of {peak_gflops:.0f} GFLOP/s peak{ratio}", flush=True)
    if missing:
        print(f"  PyTorch peer not run: {missing}; JAX only", flush=True)
    return batch_size / next(iter(seconds.values()))


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
    seconds = time.perf_counter() - start
    iterator.close()  # its threads or worker processes would run into the next measurement
    return batches * config.batch_size / seconds


def main(argv):
    del argv
    f = flags.FLAGS
    if f.peer:  # JAX must leave GPU memory to PyTorch; read when the backend starts, below
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    device = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
    on_gpu = jax.default_backend() == "gpu"
    cpu, paper = load_presets(f.config_file)
    paper_grid = tuple(int(n) for n in f.paper_grid)
    step_rate = None  # the CPU preset step's samples/s, which the input has to outrun
    if f.peer and not f.input_only:
        dtype = "bfloat16" if on_gpu else "float32"
        cpu.model.dtype = paper.model.dtype = dtype
        step_rate = compare("CPU preset, 16x192x48, batch 16", cpu, CPU_GRID, cpu.batch_size, f.convs, f.rounds,
                            f.steps, f.peak_gflops, device)
        if f.paper_steps > 0 and on_gpu:
            compare(f"ProgreSpine-sized, {'x'.join(f.paper_grid)}, batch {f.paper_batch}", paper, paper_grid,
                    f.paper_batch, ["auto"], f.rounds, f.paper_steps, f.peak_gflops, device)
    elif not f.input_only:
        run = jax_step(cpu, CPU_GRID, cpu.batch_size)
        seconds = run(f.steps)
        step_rate = cpu.batch_size / seconds
        _report("CPU preset, 16x192x48, batch 16", device, cpu.batch_size, model_flops(cpu, CPU_GRID, cpu.batch_size),
                seconds, f.peak_gflops)
        if f.paper_steps > 0:
            paper.model.dtype = f.paper_dtype
            run = jax_step(paper, paper_grid, f.paper_batch)
            _report(f"ProgreSpine-sized, {'x'.join(f.paper_grid)}, batch {f.paper_batch}, {f.paper_dtype}", device,
                    f.paper_batch, model_flops(paper, paper_grid, f.paper_batch), run(f.paper_steps), f.peak_gflops)
    if not Path(f.records).is_dir():
        print(f"input pipeline: skipped, no records at {f.records}", flush=True)
        return
    for workers in (0, 2):
        rate = time_input(f.records, cpu, workers, f.input_batches)
        against = f" = {rate / step_rate:.1f}x the JAX step's {step_rate:.1f}" if step_rate else ""
        print(f"input pipeline (read + decode + augment + batch 16), {workers} workers: {rate:.1f} samples/s{against}",
              flush=True)


def _report(name, device, batch_size, flops, seconds, peak_gflops):
    gflops = flops / seconds / 1e9
    print(f"{name} on {device}: {batch_size / seconds:.2f} samples/s, {flops / batch_size / 1e9:.2f} GFLOP per sample, "
          f"{gflops:.1f} GFLOP/s achieved = {100 * gflops / peak_gflops:.1f}% of {peak_gflops:.0f} GFLOP/s peak",
          flush=True)


if __name__ == "__main__":
    define_flags()
    app.run(one_line_errors(main))
