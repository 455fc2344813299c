"""Loss ablation: mean squared error of the normalised age.

    python -m spinejax.main --config=configs/loss_l2.py --workdir=runs/loss_l2
    python -m spinejax.main --config=configs/loss_l2.py:cpu --workdir=W     # 2-core CPU preset

Measured with :cpu on the default synthetic cohort (64 test series, uncorrected):
5.24 y test MAE, R2 0.747, r 0.868.
All settings side by side: ./run.sh ablate, README "Ablation study".
"""

from configs import default


def get_config(arg=None):
    config = default.get_config(arg)
    config.loss.name = "l2"
    return config
