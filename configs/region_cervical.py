"""Region ablation: train and evaluate on the cervical spine crop of the records (records/cervical/).

    python -m spinejax.main --config=configs/region_cervical.py --workdir=runs/region_cervical
    python -m spinejax.main --config=configs/region_cervical.py:cpu --workdir=W     # 2-core CPU preset

Measured with :cpu on the default synthetic cohort: ./run.sh ablate, README "Ablation study".
"""

from configs import default


def get_config(arg=None):
    config = default.get_config(arg)
    config.data.region = "cervical"
    return config
