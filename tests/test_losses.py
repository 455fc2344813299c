"""Each loss and the output-to-age map against values worked out by hand."""

import math

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from spinejax import losses

HEAD = dict(mean_years=50.0, sd_years=10.0, huber_delta_years=2.0)
OUTPUT = jnp.array([[0.5], [-1.0], [0.1]])  # normalised ages: 55, 40 and 51 years
AGE = jnp.array([50.0, 40.0, 50.0])  # errors 0.5, 0 and 0.1 in normalised units


def _loss(name):
    return np.asarray(losses.per_example_loss(OUTPUT, AGE, losses.AgeHead(loss=name, **HEAD)))


def test_scalar_losses_by_hand():
    np.testing.assert_allclose(_loss("l1"), [0.5, 0.0, 0.1], atol=1e-6)
    np.testing.assert_allclose(_loss("l2"), [0.25, 0.0, 0.01], atol=1e-6)
    # delta = 2 years / sd 10 = 0.2: linear beyond it (0.2 * (0.5 - 0.1) = 0.08), quadratic within (0.005)
    np.testing.assert_allclose(_loss("huber"), [0.08, 0.0, 0.005], atol=1e-6)
    np.testing.assert_allclose(losses.predicted_age(OUTPUT, losses.AgeHead(loss="l1", **HEAD)), [55, 40, 51],
                               atol=1e-5)


def test_softbin_kl_and_expected_age_by_hand():
    head = losses.AgeHead(loss="softbin", mean_years=0, sd_years=1, bin_centers_years=(40.0, 50.0, 60.0),
                          label_sigma_years=10.0)
    # Target for age 50: weights exp(-0.5), 1, exp(-0.5), normalised; prediction uniform thirds.
    e = math.exp(-0.5)
    t = [e / (1 + 2 * e), 1 / (1 + 2 * e), e / (1 + 2 * e)]
    kl = sum(ti * math.log(ti / (1 / 3)) for ti in t)
    got = losses.per_example_loss(jnp.zeros((1, 3)), jnp.array([50.0]), head)
    np.testing.assert_allclose(got, [kl], rtol=1e-5)
    assert kl == pytest.approx(0.0302, abs=1e-4)
    # Logits (0, 0, ln 2): probabilities 1/4, 1/4, 1/2, expected age 10 + 12.5 + 30 = 52.5.
    age = losses.predicted_age(jnp.array([[0.0, 0.0, math.log(2)]]), head)
    np.testing.assert_allclose(age, [52.5], rtol=1e-6)
    # The KL is zero where the prediction is the target itself.
    perfect = jnp.log(jnp.array([t]))
    np.testing.assert_allclose(losses.per_example_loss(perfect, jnp.array([50.0]), head), [0.0], atol=1e-6)


def test_make_head_from_config_and_training_ages():
    config = ml_collections.ConfigDict(dict(name="softbin", huber_delta_years=5.0, age_range_years=(15.0, 95.0),
                                            bin_width_years=2.0, label_sigma_years=2.0))
    head = losses.make_head(config, np.array([30.0, 50.0, 70.0]))
    assert head.outputs == 40 and head.bin_centers_years[0] == 16.0 and head.bin_centers_years[-1] == 94.0
    assert head.mean_years == 50.0 and head.sd_years == pytest.approx(math.sqrt(800 / 3))
    config.name = "l1"
    assert losses.make_head(config, np.array([30.0, 50.0])).outputs == 1
    config.name = "l3"
    with pytest.raises(ValueError, match="unknown loss"):
        losses.make_head(config, np.array([30.0]))
