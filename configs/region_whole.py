"""Region ablation: train and evaluate on the whole spine crop of the records (records/whole/).

    python -m spinejax.main --config=configs/region_whole.py --workdir=runs/default/train/region_whole
    python -m spinejax.main --config=configs/region_whole.py:cpu --workdir=W     # 2-core CPU preset

Measured: see the ablation table (./run.sh ablate, README "Results").
"""

from configs import default


def get_config(arg=None):
    config = default.get_config(arg)
    config.data.region = "whole"
    return config
