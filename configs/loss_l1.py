"""Loss ablation: mean absolute error of the normalised age (the paper's loss; what default.py uses).

    python -m spinejax.main --config=configs/loss_l1.py --workdir=runs/loss_l1
    python -m spinejax.main --config=configs/loss_l1.py:cpu --workdir=W     # 2-core CPU preset

Measured with :cpu on the default synthetic cohort: ./run.sh ablate, README "Ablation study".
"""

from configs import default


def get_config(arg=None):
    config = default.get_config(arg)
    config.loss.name = "l1"
    return config
