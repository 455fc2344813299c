"""Region ablation: train and evaluate on the lumbar spine crop of the records (records/lumbar/).

    python -m spinejax.main --config=configs/region_lumbar.py --workdir=runs/default/train/region_lumbar
    python -m spinejax.main --config=configs/region_lumbar.py:cpu --workdir=W     # 2-core CPU preset

Measured: see the ablation table (./run.sh ablate, README "Results").
"""

from configs import default


def get_config(arg=None):
    config = default.get_config(arg)
    config.data.region = "lumbar"
    return config
