"""Region ablation: train and evaluate on the thoracic spine crop of the records (records/thoracic/).

    python -m spinejax.main --config=configs/region_thoracic.py --workdir=runs/region_thoracic
    python -m spinejax.main --config=configs/region_thoracic.py:cpu --workdir=W     # 2-core CPU preset

Measured with :cpu on the default synthetic cohort (64 test series, uncorrected):
5.28 y test MAE, R2 0.744, r 0.866.
All settings side by side: ./run.sh ablate, README "Ablation study".
"""

from configs import default


def get_config(arg=None):
    config = default.get_config(arg)
    config.data.region = "thoracic"
    return config
