"""3D convolutions (stride 1, SAME padding, channels last) written in several equal ways.

XLA:CPU runs a 3D convolution and its two gradients with generic loops, several times slower than oneDNN
(../shared/PERF_NOTES.md, README "Training"). So on CPU the model calls oneDNN's convolution primitives
through spinejax's FFI targets ('onednn': spinejax/native/, built by `python -m spinejax.native.build`), and
without that library it writes each 3D convolution as one 2D convolution over the depth-shifted inputs stacked
on channels ('depth_concat'), which XLA:CPU runs through YNNPACK. Every method is the same arithmetic in
another order: results equal `lax.conv_general_dilated` to float32 rounding (tests/test_conv.py). On GPU/TPU,
cuDNN and XLA:TPU run the 3D convolution itself best, so 'auto' keeps it there.

Every function takes x [batch, d, h, w, c_in] and kernel [kd, kh, kw, c_in, c_out] of one floating dtype
(odd kernel sizes; 'onednn': float32 only) and returns [batch, d, h, w, c_out] of that dtype.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from spinejax.native import library as native

METHODS = ("auto", "xla", "depth_concat", "onednn")


def conv3d_xla(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """XLA's own 3D convolution (the reference)."""
    return lax.conv_general_dilated(x, kernel, (1, 1, 1), "SAME", dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))


def _conv2d_lax(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """[n, h, w, c_in] * [kh, kw, c_in, c_out] -> [n, h, w, c_out], SAME (XLA:CPU runs it through YNNPACK)."""
    return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


# Images per piece of the kernel gradient. XLA:CPU's weight-gradient convolution over a whole batch is slow
# (the CPU preset's first layer, 128 images of 96 x 24 x 24 channels: 160 ms in one piece, 77 ms in pieces of 8,
# 123 ms in pieces of 32), and independent pieces run on both cores.
KERNEL_GRAD_IMAGES = 8


def conv2d_kernel_grad(x: jnp.ndarray, g: jnp.ndarray, kernel_hw: tuple[int, int]) -> jnp.ndarray:
    """Gradient of sum(g * _conv2d_lax(x, k)) w.r.t. k: x [n, h, w, c_in], g [n, h, w, c_out] -> [kh, kw, c_in, c_out].

    Each piece of KERNEL_GRAD_IMAGES images is one convolution with the channels of x as its batch and the
    images as the contracted features (XLA's own formulation); the pieces are summed in float32.
    """
    kh, kw = kernel_hw
    padding = (((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2))
    grad = sum(lax.conv_general_dilated(x[i:i + KERNEL_GRAD_IMAGES], g[i:i + KERNEL_GRAD_IMAGES], (1, 1), padding,
                                        dimension_numbers=("CHWN", "IHWO", "NHWC"), preferred_element_type=jnp.float32)
               for i in range(0, x.shape[0], KERNEL_GRAD_IMAGES))
    return grad.transpose(1, 2, 0, 3)  # [c_in, kh, kw, c_out] -> [kh, kw, c_in, c_out]


@jax.custom_vjp
def conv2d(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """_conv2d_lax with the same input gradient and a faster kernel gradient (conv2d_kernel_grad) on CPU."""
    return _conv2d_lax(x, kernel)


def _conv2d_fwd(x, kernel):
    return _conv2d_lax(x, kernel), (x, kernel)


def _conv2d_bwd(residuals, g):
    x, kernel = residuals
    (dx,) = jax.linear_transpose(lambda x: _conv2d_lax(x, kernel), x)(g)
    return dx, conv2d_kernel_grad(x, g, kernel.shape[:2]).astype(kernel.dtype)


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def _pad_depth(x: jnp.ndarray, kd: int) -> jnp.ndarray:
    """Zero-pads axis 1 by (kd - 1) // 2 before and kd // 2 after (SAME for odd kd)."""
    return jnp.pad(x, ((0, 0), ((kd - 1) // 2, kd // 2)) + ((0, 0),) * (x.ndim - 2))


def conv3d_depth_concat(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """The kd depth-shifted inputs concatenated on channels, then one 2D convolution with kd * c_in inputs.

    Output slice z of the 3D convolution is sum_k conv2d(x[z + k - pad], kernel[k]); stacking the kd shifted
    slices on channels makes that sum the 2D convolution's own channel contraction. Its gradients are 2D
    convolutions too (the input gradient's depth part is a shift-and-add).
    """
    b, d, h, w, c = x.shape
    kd, kh, kw, _, co = kernel.shape
    padded = _pad_depth(x, kd)
    shifted = jnp.concatenate([padded[:, k:k + d] for k in range(kd)], axis=-1)  # [b, d, h, w, kd * c]
    taps = kernel.transpose(1, 2, 0, 3, 4).reshape(kh, kw, kd * c, co)  # channel index k * c + i, as `shifted`
    return conv2d(shifted.reshape(b * d, h, w, kd * c), taps).reshape(b, d, h, w, co)


def _onednn(target: str, shape: tuple[int, ...], *args: jnp.ndarray) -> jnp.ndarray:
    """One of spinejax/native's FFI targets, float32 result of `shape`."""
    native.load()
    # Under vmap, one call per mapped element (the targets take one batch axis).
    return jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(shape, jnp.float32), vmap_method="sequential")(*args)


@jax.custom_vjp
def conv3d_onednn(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """oneDNN's 3D convolution (float32, CPU), with oneDNN's input and kernel gradients as its VJP.

    First-order reverse mode only: a gradient of the gradient (or forward mode) is an error, not a wrong value."""
    if x.dtype != jnp.float32 or kernel.dtype != jnp.float32:
        raise TypeError(f"conv 'onednn' computes in float32, not {x.dtype}/{kernel.dtype}: use 'depth_concat'")
    return _onednn("spinejax_onednn_conv3d_forward", x.shape[:4] + kernel.shape[4:], x, kernel)


def _onednn_fwd(x, kernel):
    return conv3d_onednn(x, kernel), (x, kernel)


def _onednn_bwd(residuals, g):
    x, kernel = residuals
    g = g.astype(jnp.float32)
    return (_onednn("spinejax_onednn_conv3d_backward_data", x.shape, g, kernel),
            _onednn("spinejax_onednn_conv3d_backward_weights", kernel.shape, x, g))


conv3d_onednn.defvjp(_onednn_fwd, _onednn_bwd)


FUNCTIONS: dict[str, Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]] = {
    "xla": conv3d_xla, "depth_concat": conv3d_depth_concat, "onednn": conv3d_onednn}


def resolve(method: str, backend: str | None = None, dtype=jnp.float32) -> str:
    """'auto' -> the best method for `backend` (default: jax.default_backend()) and compute `dtype`; other names
    are checked ('onednn' needs the built library, a CPU and float32).

    'auto' on CPU is 'onednn' for float32 in a single-device process when the library is built, else
    'depth_concat'. (XLA's partitioner cannot split a custom call over devices; it would gather the batch.)
    """
    if method not in METHODS:
        raise ValueError(f"unknown convolution {method!r}; choose one of {METHODS}")
    backend = backend or jax.default_backend()
    if method == "onednn":
        if backend != "cpu" or jnp.dtype(dtype) != jnp.float32:
            raise ValueError(f"conv 'onednn' runs float32 on CPU only, not {jnp.dtype(dtype)} on {backend}")
        if jax.device_count() > 1:  # it would compute the whole batch on every device, silently
            raise ValueError(f"conv 'onednn' runs in a single-device process, not on {jax.device_count()} devices: "
                             "use 'auto' or 'depth_concat'")
        native.load()  # says how to build it when it is not built
        return method
    if method != "auto":
        return method
    if backend != "cpu":
        return "xla"
    if jnp.dtype(dtype) == jnp.float32 and jax.device_count() == 1:
        if native.available():
            return "onednn"
        _warn_once("spinejax.conv: the oneDNN convolution is not built here (python -m spinejax.native.build); "
                   "CPU training uses XLA's, about 2x slower")
    return "depth_concat"


@functools.cache
def _warn_once(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def as_conv_general_dilated(method: str) -> Callable:
    """`method` with lax.conv_general_dilated's signature, for nn.Conv(conv_general_dilated=...).

    nn.Conv keeps its parameters (and names) and calls this with NDHWC inputs and a DHWIO kernel; only
    the case the model uses (unit strides and dilations, SAME, no groups) is accepted.
    """
    function = FUNCTIONS[method]

    def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                             feature_group_count=1, precision=None):
        ndhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NDHWC", "DHWIO", "NDHWC"))
        if (padding != "SAME" or {*window_strides, *lhs_dilation, *rhs_dilation} != {1} or feature_group_count != 1
                or dimension_numbers != ndhwc or precision is not None or any(k % 2 == 0 for k in rhs.shape[:3])):
            raise NotImplementedError("spinejax.conv: only stride-1 SAME NDHWC convolutions with odd kernels")
        return function(lhs, rhs)

    return conv_general_dilated
