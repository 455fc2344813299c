"""Age losses and the map from the network's output to an age in years.

Scalar heads predict a normalised age z = (age - mean) / sd, with mean and sd of the training ages, so
every scalar loss sees targets of unit scale: l1 and l2 are |z - z*| and (z - z*)^2, huber uses a delta
given in years. The soft-bin head (SFCN, Peng et al. 2021) predicts one logit per age bin; its target
is a Gaussian of width `label_sigma_years` around the true age, discretised over the bins, and its loss
is the KL divergence from that target to the predicted distribution; the predicted age is the
expected bin centre.

Every function is pure: `output` [batch, outputs] float32, `age` [batch] float32 years, returns
[batch] float32 per-example losses (the caller weights and averages).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

NAMES = ("l1", "l2", "huber", "softbin")


@dataclasses.dataclass(frozen=True)
class AgeHead:
    """How outputs map to years. `mean_years`/`sd_years`: training ages; `bin_centers_years`: soft-bin."""

    loss: str
    mean_years: float
    sd_years: float
    huber_delta_years: float = 5.0
    bin_centers_years: tuple[float, ...] = ()
    label_sigma_years: float = 2.0

    @property
    def outputs(self) -> int:
        return len(self.bin_centers_years) if self.loss == "softbin" else 1


def make_head(loss_config, train_ages: np.ndarray) -> AgeHead:
    """AgeHead from the config's `loss` block and the training set's ages (years)."""
    if loss_config.name not in NAMES:
        raise ValueError(f"unknown loss {loss_config.name!r}; choose one of {NAMES}")
    low, high = loss_config.age_range_years
    width = loss_config.bin_width_years
    centers = tuple(float(c) for c in np.arange(low + width / 2, high, width))
    return AgeHead(loss=loss_config.name, mean_years=float(np.mean(train_ages)),
                   sd_years=float(max(np.std(train_ages), 1.0)),
                   huber_delta_years=float(loss_config.huber_delta_years),
                   bin_centers_years=centers if loss_config.name == "softbin" else (),
                   label_sigma_years=float(loss_config.label_sigma_years))


def soft_labels(age: jnp.ndarray, centers: jnp.ndarray, sigma: float) -> jnp.ndarray:
    """[batch] years -> [batch, bins] probabilities: a Gaussian around each age, normalised over the bins."""
    logits = -0.5 * ((age[:, None] - centers[None, :]) / sigma) ** 2
    return jax.nn.softmax(logits, axis=-1)


def predicted_age(output: jnp.ndarray, head: AgeHead) -> jnp.ndarray:
    """[batch, outputs] -> [batch] predicted age, years."""
    if head.loss == "softbin":
        return jax.nn.softmax(output, axis=-1) @ jnp.asarray(head.bin_centers_years, output.dtype)
    return head.mean_years + head.sd_years * output[:, 0]


def per_example_loss(output: jnp.ndarray, age: jnp.ndarray, head: AgeHead) -> jnp.ndarray:
    """[batch, outputs], [batch] years -> [batch] loss of each example under `head.loss`."""
    if head.loss == "softbin":
        target = soft_labels(age, jnp.asarray(head.bin_centers_years, jnp.float32), head.label_sigma_years)
        log_p = jax.nn.log_softmax(output, axis=-1)
        # KL(target || p); xlogy makes 0 * log 0 = 0 for bins the target does not reach.
        return jnp.sum(jax.scipy.special.xlogy(target, target) - target * log_p, axis=-1)
    error = output[:, 0] - (age - head.mean_years) / head.sd_years
    if head.loss == "l1":
        return jnp.abs(error)
    if head.loss == "l2":
        return error ** 2
    delta = head.huber_delta_years / head.sd_years
    return jnp.where(jnp.abs(error) <= delta, 0.5 * error ** 2, delta * (jnp.abs(error) - 0.5 * delta))
