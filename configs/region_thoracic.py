"""Region ablation: train and evaluate on the thoracic spine crop of the records (records/thoracic/).

    python -m spinejax.main --config=configs/region_thoracic.py --workdir=runs/region_thoracic
    python -m spinejax.main --config=configs/region_thoracic.py:cpu --workdir=W     # 2-core CPU preset

Measured with :cpu on the default synthetic cohort: ./run.sh ablate, README "Ablation study".
"""

from configs import default


def get_config(arg=None):
    config = default.get_config(arg)
    config.data.region = "thoracic"
    return config
