"""Loss ablation: SFCN's soft-label KL divergence over 2-year age bins; the prediction is the expected bin centre.

    python -m spinejax.main --config=configs/loss_softbin.py --workdir=runs/loss_softbin
    python -m spinejax.main --config=configs/loss_softbin.py:cpu --workdir=W     # 2-core CPU preset

Measured with :cpu on the default synthetic cohort: ./run.sh ablate, README "Ablation study".
"""

from configs import default


def get_config(arg=None):
    config = default.get_config(arg)
    config.loss.name = "softbin"
    return config
