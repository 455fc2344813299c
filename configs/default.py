"""Base training config: the ProgreSpine-sized SFCN on the whole spine, L1 loss, eligible subjects only.

    python -m spinejax.main --config=configs/default.py --workdir=runs/full_default
    python -m spinejax.main --config=configs/default.py:cpu --workdir=W     # the 2-core CPU preset

Every other config in this folder starts from this one and changes one thing (the ablations). The
argument after ':' is a comma list: `cpu` picks the CPU preset (a smaller, faster network and a shorter
schedule: what ./run.sh trains); data_size.py also takes the fraction (`configs/data_size.py:0.25,cpu`).
Override any value on the command line: `--config.optimizer.learning_rate=1e-3`.

Measured (:cpu, default synthetic cohort of 600 people, 2-core Xeon): 61 s of training with oneDNN's
convolutions (README "Training", Speed); accuracy in README "Results".
"""

import ml_collections


def parse_arg(arg: str | None) -> tuple[str, list[str]]:
    """'cpu' -> ('cpu', []); '0.25,cpu' -> ('cpu', ['0.25']): the preset and the remaining values."""
    parts = [p.strip() for p in (arg or "").split(",") if p.strip()]
    preset = "cpu" if "cpu" in parts else "full"
    return preset, [p for p in parts if p != "cpu"]


def get_config(arg: str | None = None, *, values_taken: int = 0) -> ml_collections.ConfigDict:
    """The config of `arg` ('', 'cpu'); `values_taken`: how many other tokens the calling config file reads
    itself (data_size.py: the fraction). Any other token is an error, never silently the full network."""
    preset, values = parse_arg(arg)
    if len(values) != values_taken:
        takes = f"; this config file also takes {values_taken} value(s)" if values_taken else ""
        raise ValueError(f"unknown config argument(s) {', '.join(values) or '(none given)'} in {arg!r}: the preset "
                         f"is 'cpu' or nothing (the full network){takes}")
    config = ml_collections.ConfigDict()
    config.preset = preset
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    config.data.records_dir = ""  # required: data_prep.build_records' output folder
    config.data.region = "whole"  # whole, cervical, thoracic or lumbar (a region of the records)
    config.data.plan_hash = ""  # '' accepts the records' plan; set it to pin one
    # data_prep.eligibility's table (ELIGIBILITY_DIR/eligibility.csv). With eligible_only (which needs it), train
    # and validation keep only the normal spines (the paper's training cohort); evaluation and the analysis
    # still see everyone. eligible_only=False trains on every record.
    config.data.eligibility_csv = ""
    config.data.eligible_only = True
    config.data.fraction = 1.0  # share of training subjects (nested subsets: data_size.py)
    config.data.subset_seed = 0  # picks the nested subsets; independent of `seed`
    config.data.schedule_on_full_data = False  # True: epochs count in full-training-set steps (data_size.py)
    config.data.worker_count = 2  # grain worker processes (0: read in the training process)
    config.data.worker_buffer_size = 2

    config.augment = ml_collections.ConfigDict()
    config.augment.enabled = True
    config.augment.flip_left_right = True
    config.augment.intensity_scale = 0.1  # gain drawn in 1 +- this
    config.augment.intensity_shift = 0.1  # offset drawn in +- this (z-score units)
    config.augment.gamma_log_range = 0.2  # gamma = exp(U(-this, this))
    config.augment.bias_field = 0.05  # sd of the quadratic coefficients of the log gain
    config.augment.noise_sd = 0.05  # Gaussian noise sd drawn in U(0, this)
    config.augment.shift_voxels = 2  # whole-voxel shifts along rows and columns

    # ProgreSpine's widths and pooling (2,2,2) x3 then (1,2,2), then a 1x1x1 block of 64.
    config.model = ml_collections.ConfigDict()
    config.model.channels = (32, 64, 128, 256, 256)
    config.model.pools = ((2, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2), (1, 1, 1))
    config.model.head_channels = 64
    config.model.stem_space_to_depth = ()  # e.g. (2, 2, 2): fold voxel blocks into channels first
    config.model.dropout = 0.5
    # What the head reads of the last feature map: 'mean' over the grid (SFCN), 'masked_mean' over the spine mask,
    # 'masked_rows' that mean per row band, flattened (spinejax.models.pool_features)
    config.model.pooling = "mean"
    config.model.dtype = "float32"  # 'bfloat16': mixed precision (parameters stay float32)
    # How the 3x3x3 convolutions run; every choice computes the same function with the same parameters.
    # 'auto': 'onednn' on CPU (float32, one device, library built), else 'depth_concat' on CPU, 'xla' elsewhere.
    # 'onednn': oneDNN's convolution primitives as XLA FFI targets (spinejax/native/). 'xla': XLA's 3D
    # convolution (what cuDNN and TPUs run best). 'depth_concat': the depth shifts stacked on channels and one 2D
    # convolution, which XLA:CPU runs faster than its 3D one (spinejax/conv.py, README "Training", Speed).
    config.model.conv = "auto"

    config.loss = ml_collections.ConfigDict()
    config.loss.name = "l1"  # l1, l2, huber, softbin
    config.loss.huber_delta_years = 5.0
    config.loss.age_range_years = (15.0, 95.0)  # soft-bin head: bins cover this range
    config.loss.bin_width_years = 2.0
    config.loss.label_sigma_years = 2.0  # soft-bin target: Gaussian of this sd around the age

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.learning_rate = 1e-3
    config.optimizer.warmup_steps = 200
    config.optimizer.weight_decay = 1e-4
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.999
    config.optimizer.grad_clip_norm = 1.0

    config.batch_size = 32  # global, over all devices of all hosts
    config.num_epochs = 50
    config.num_train_steps = -1  # > 0 overrides num_epochs
    config.log_every = 50
    config.eval_every = 500
    config.checkpoint_every = 500
    config.keep_checkpoints = 2

    if preset == "cpu":
        config.data.worker_count = 0
        config.model.channels = (16, 32, 64, 64)
        config.model.pools = ((2, 2, 2), (2, 2, 2), (1, 2, 2), (1, 1, 1))
        config.model.head_channels = 32
        config.model.stem_space_to_depth = (2, 2, 2)
        config.model.dropout = 0.2
        config.optimizer.learning_rate = 3e-3
        config.optimizer.warmup_steps = 50
        config.batch_size = 16
        config.num_epochs = 12
        config.log_every = 10
        config.eval_every = 100
        config.checkpoint_every = 100
    return config
