"""spinejax.conv computes XLA's 3D convolution, values and gradients, and the model is the same with it."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spinejax import conv, models


def assert_close(actual, expected, what: str) -> None:
    """float32 equality up to summation order: 1e-4 relative, plus 1e-4 of the largest magnitude."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, what
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * float(np.max(np.abs(expected))), err_msg=what)


# [batch, d, h, w, c_in, c_out], kernel: odd sizes, 1/8/16 channels, more images than a kernel-gradient piece.
SHAPES = [((2, 5, 7, 9, 1, 8), (3, 3, 3)), ((3, 4, 6, 5, 8, 16), (3, 3, 3)), ((2, 3, 5, 4, 16, 1), (3, 3, 3)),
          ((1, 1, 3, 3, 8, 8), (3, 3, 3)), ((2, 6, 5, 7, 8, 16), (3, 1, 5))]


@pytest.mark.parametrize("method", ["depth_concat", "onednn"])
@pytest.mark.parametrize("shape,kernel_size", SHAPES)
def test_each_method_equals_xla_values_and_gradients(method, shape, kernel_size):
    b, d, h, w, ci, co = shape
    rng = np.random.default_rng(sum(shape))
    x = jnp.asarray(rng.normal(size=(b, d, h, w, ci)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(*kernel_size, ci, co)), jnp.float32)
    y, pullback = jax.jit(lambda x, k: jax.vjp(conv.FUNCTIONS[method], x, k))(x, kernel)
    y_ref, pullback_ref = jax.vjp(conv.conv3d_xla, x, kernel)
    assert y.dtype == jnp.float32
    assert_close(y, y_ref, "output")
    g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
    for name, grad, grad_ref in zip(("input gradient", "kernel gradient"), pullback(g), pullback_ref(g)):
        assert_close(grad, grad_ref, name)


def test_auto_picks_by_backend_and_dtype_and_unknown_names_fail():
    # ./run.sh setup builds spinejax/native's library, so on CPU 'auto' is oneDNN's convolution for float32.
    assert conv.resolve("auto", "cpu") == "onednn"
    assert conv.resolve("auto", "cpu", jnp.bfloat16) == "depth_concat"
    assert conv.resolve("auto", "gpu") == conv.resolve("auto", "tpu") == "xla"
    assert conv.resolve("xla", "cpu") == "xla"
    with pytest.raises(ValueError, match="unknown convolution"):
        conv.resolve("fft")
    with pytest.raises(ValueError, match="float32 on CPU only"):
        conv.resolve("onednn", "gpu")
    with pytest.raises(TypeError, match="computes in float32"):
        conv.conv3d_onednn(jnp.zeros((1, 3, 3, 3, 2), jnp.bfloat16), jnp.zeros((3, 3, 3, 2, 2), jnp.bfloat16))


def test_onednn_library_is_rebuilt_for_a_changed_source_never_reused(tmp_path, monkeypatch):
    from spinejax.native import library

    monkeypatch.setenv("SPINEJAX_NATIVE_DIR", str(tmp_path))
    first = library.library_path()
    changed = tmp_path / "onednn_conv.cc"
    changed.write_text(library.SOURCE.read_text() + "\n// changed\n")
    monkeypatch.setattr(library, "SOURCE", changed)
    assert library.library_path() != first and library.library_path().parent == tmp_path
    path, compiled = library.build()
    assert compiled and path.is_file() and not list(tmp_path.glob(".*partial"))
    assert library.build() == (path, False)


def test_nn_conv_refuses_what_the_formulation_does_not_compute():
    layer = nn.Conv(4, (3, 3, 3), strides=2, padding="SAME",
                    conv_general_dilated=conv.as_conv_general_dilated("depth_concat"))
    with pytest.raises(NotImplementedError, match="stride-1 SAME"):
        layer.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 4, 2)))


@pytest.mark.parametrize("method", ["depth_concat", "onednn"])
def test_age_cnn_is_the_same_function_with_each_convolution(method):
    make = lambda method: models.AgeCNN(channels=(8, 16), pools=((2, 2, 2), (1, 2, 2)), head_channels=8,
                                        stem_space_to_depth=(2, 2, 2), conv=method)
    rng = np.random.default_rng(0)
    volume = jnp.asarray(rng.normal(size=(3, 8, 20, 12, 1)), jnp.float32)
    fast, reference = make(method), make("xla")
    variables = reference.init(jax.random.PRNGKey(0), volume, train=False)
    fast_variables = fast.init(jax.random.PRNGKey(0), volume, train=False)
    # Same parameter tree (names, shapes) and the same initial values: checkpoints load into either.
    assert jax.tree.structure(fast_variables) == jax.tree.structure(variables)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), fast_variables, variables)
    assert variables["params"]["Conv_0"]["kernel"].shape == (3, 3, 3, 8, 8)

    def loss(model, params):
        out, updates = model.apply({**variables, "params": params}, volume, train=True, mutable=["batch_stats"])
        return jnp.sum(out * jnp.arange(1.0, 4.0)[:, None]), (out, updates["batch_stats"])

    grad_fn = lambda model: jax.jit(jax.value_and_grad(lambda p: loss(model, p), has_aux=True))
    (value, (out, stats)), grads = grad_fn(fast)(variables["params"])
    (value_ref, (out_ref, stats_ref)), grads_ref = grad_fn(reference)(variables["params"])
    assert_close(out, out_ref, "training output")
    assert_close(value, value_ref, "loss")
    jax.tree.map(lambda a, b: assert_close(a, b, "batch statistics"), stats, stats_ref)
    for path, grad in jax.tree_util.tree_leaves_with_path(grads):
        ref = dict(jax.tree_util.tree_leaves_with_path(grads_ref))[path]
        assert_close(grad, ref, f"gradient {jax.tree_util.keystr(path)}")
    infer = lambda model: jax.jit(lambda v: model.apply(v, volume, train=False))(variables)
    assert_close(infer(fast), infer(reference), "inference output")


def test_onednn_under_vmap_and_its_targets_refuse_a_mismatched_buffer():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(3, 2, 4, 5, 6, 8)), jnp.float32)  # a mapped axis in front of the batch
    kernel = jnp.asarray(rng.normal(size=(3, 3, 3, 8, 4)), jnp.float32)
    mapped = jax.vmap(conv.conv3d_onednn, in_axes=(0, None))(x, kernel)
    assert_close(mapped, jax.vmap(conv.conv3d_xla, in_axes=(0, None))(x, kernel), "vmapped output")
    # The FFI target checks the result buffer against the geometry instead of writing past it.
    wrong = jax.ffi.ffi_call("spinejax_onednn_conv3d_forward", jax.ShapeDtypeStruct((2, 4, 5, 6, 3), jnp.float32))
    with pytest.raises(Exception, match="expects x"):
        jax.block_until_ready(wrong(x[0], kernel))
