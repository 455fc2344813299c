"""Region ablation: train and evaluate on the whole spine crop of the records (records/whole/).

    python -m spinejax.main --config=configs/region_whole.py --workdir=runs/region_whole
    python -m spinejax.main --config=configs/region_whole.py:cpu --workdir=W     # 2-core CPU preset

Measured with :cpu on the default synthetic cohort: ./run.sh ablate, README "Ablation study".
"""

from configs import default


def get_config(arg=None):
    config = default.get_config(arg)
    config.data.region = "whole"
    return config
