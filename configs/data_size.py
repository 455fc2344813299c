"""Training-data-size ablation: train on a fraction of the training subjects.

    python -m spinejax.main --config=configs/data_size.py:0.25 --workdir=runs/data_size_0.25
    python -m spinejax.main --config=configs/data_size.py:0.25,cpu --workdir=W     # 2-core CPU preset

Subsets are nested: subjects are ranked once by a hash seeded with data.subset_seed, and a fraction keeps
the top of that ranking, so the 10% subjects lie inside the 25% ones. Validation always uses the whole
validation split. Every fraction trains for the same number of steps (num_epochs of the full training set,
data.schedule_on_full_data), so the ablation measures data, not compute.

Measured with :cpu on the default synthetic cohort: ./run.sh ablate, README "Ablation study".
"""

from configs import default


def get_config(arg=None):
    _, values = default.parse_arg(arg)
    if len(values) != 1:
        raise ValueError("give the fraction: --config=configs/data_size.py:0.25 (or :0.25,cpu)")
    config = default.get_config(arg, values_taken=1)
    config.data.fraction = float(values[0])
    config.data.schedule_on_full_data = True
    return config
