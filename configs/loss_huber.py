"""Loss ablation: Huber loss of the normalised age, quadratic within loss.huber_delta_years of the truth.

    python -m spinejax.main --config=configs/loss_huber.py --workdir=runs/loss_huber
    python -m spinejax.main --config=configs/loss_huber.py:cpu --workdir=W     # 2-core CPU preset

Measured with :cpu on the default synthetic cohort: ./run.sh ablate, README "Ablation study".
"""

from configs import default


def get_config(arg=None):
    config = default.get_config(arg)
    config.loss.name = "huber"
    return config
