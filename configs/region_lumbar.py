"""Region ablation: train and evaluate on the lumbar spine crop of the records (records/lumbar/).

    python -m spinejax.main --config=configs/region_lumbar.py --workdir=runs/region_lumbar
    python -m spinejax.main --config=configs/region_lumbar.py:cpu --workdir=W     # 2-core CPU preset

Measured with :cpu on the default synthetic cohort: ./run.sh ablate, README "Ablation study".
"""

from configs import default


def get_config(arg=None):
    config = default.get_config(arg)
    config.data.region = "lumbar"
    return config
