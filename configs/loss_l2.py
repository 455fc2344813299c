"""Loss ablation: mean squared error of the normalised age.

    python -m spinejax.main --config=configs/loss_l2.py --workdir=runs/loss_l2
    python -m spinejax.main --config=configs/loss_l2.py:cpu --workdir=W     # 2-core CPU preset

Measured with :cpu on the default synthetic cohort: ./run.sh ablate, README "Ablation study".
"""

from configs import default


def get_config(arg=None):
    config = default.get_config(arg)
    config.loss.name = "l2"
    return config
