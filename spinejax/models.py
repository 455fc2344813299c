"""The age model: an SFCN-like 3D CNN for thin, tall sagittal slabs.

Stacked blocks of 3x3x3 convolution, batch norm, ReLU and max pooling (the paper's "stacked 3D
convolutions and batch norm"; the authors' ProgreSpine code uses channels 32-64-128-256-256-64 with
pooling (2,2,2) three times then (1,2,2)), a 1x1x1 convolution, global average pooling (or, as an option, a
mean over the spine mask only, or one per row band along the spine), dropout and a dense head: one output
(normalised age) or one logit per age bin (the soft-bin loss).

Two choices make the network fast on CPU without changing what it computes much (../shared/PERF_NOTES.md):
max pooling by reshape (equal in value to nn.max_pool, with a far cheaper gradient in XLA CPU), and an
optional space-to-depth stem that folds 2x2x2 voxel blocks into channels so the first convolution does
not run on a single input channel at full resolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from spinejax import conv


def max_pool(x: jnp.ndarray, window: Sequence[int]) -> jnp.ndarray:
    """Non-overlapping max pooling by reshape.

    x: [batch, d, h, w, channels]; window: (wd, wh, ww) dividing the trailing edge away (floor, like
    nn.max_pool with VALID padding). Returns [batch, d // wd, h // wh, w // ww, channels].
    """
    b, d, h, w, c = x.shape
    wd, wh, ww = window
    x = x[:, : d // wd * wd, : h // wh * wh, : w // ww * ww]
    x = x.reshape(b, d // wd, wd, h // wh, wh, w // ww, ww, c)
    return x.max(axis=(2, 4, 6))


def space_to_depth(x: jnp.ndarray, block: Sequence[int]) -> jnp.ndarray:
    """[batch, d, h, w, c] -> [batch, d/bd, h/bh, w/bw, c*bd*bh*bw]: each block of voxels becomes channels."""
    b, d, h, w, c = x.shape
    bd, bh, bw = block
    x = x[:, : d // bd * bd, : h // bh * bh, : w // bw * bw]
    x = x.reshape(b, d // bd, bd, h // bh, bh, w // bw, bw, c)
    x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)
    return x.reshape(b, d // bd, h // bh, w // bw, bd * bh * bw * c)


class AgeCNN(nn.Module):
    """SFCN-like regressor.

    Attributes:
      channels: output channels of the 3x3x3 blocks; a final 1x1x1 block gives `head_channels`.
      pools: max-pooling window after each 3x3x3 block ((1, 1, 1) for none); same length as channels.
      head_channels: channels of the 1x1x1 block before global pooling.
      outputs: 1 for a scalar head, the number of age bins for the soft-bin head.
      stem_space_to_depth: block folded into channels before the first convolution, or None.
      dropout: rate before the dense head.
      dtype: compute dtype (bfloat16 for mixed precision on GPU/TPU); parameters stay float32.
      conv: how the 3x3x3 convolutions run (spinejax.conv.METHODS; 'auto' picks by backend). Every method
        computes the same function with the same parameters ('Conv_i'/'kernel' [3, 3, 3, c_in, c_out]).
      pooling: what the head reads of the last feature map (POOLINGS; pool_features).
    """

    channels: Sequence[int]
    pools: Sequence[Sequence[int]]
    head_channels: int
    outputs: int = 1
    stem_space_to_depth: Sequence[int] | None = None
    dropout: float = 0.0
    dtype: jnp.dtype = jnp.float32
    bn_momentum: float = 0.9
    conv: str = "auto"
    pooling: str = "mean"

    @nn.compact
    def __call__(self, volume: jnp.ndarray, train: bool, return_features: bool = False):
        """volume: [batch, slices, rows, cols, 1] float (cast to `dtype` first), z-scored in the spine mask, 0 outside.

        Returns [batch, outputs] float32 (normalised age or bin logits). With `return_features`, also the
        last convolutional feature map [batch, d', h', w', head_channels] (the layer Grad-CAM looks at).
        """
        if len(self.channels) != len(self.pools):
            raise ValueError(f"{len(self.channels)} channels but {len(self.pools)} pooling windows")
        x = volume.astype(self.dtype)
        # The spine mask on the feature maps' grids (the records are 0 outside it), for the masked poolings: every
        # reduction of x is applied to it too, so it always has the last feature map's grid.
        inside = (volume != 0).astype(jnp.float32)
        if self.stem_space_to_depth is not None:
            x = space_to_depth(x, self.stem_space_to_depth)
            inside = max_pool(inside, self.stem_space_to_depth)
        norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                                    dtype=self.dtype, axis_name=None)
        conv3d = conv.as_conv_general_dilated(conv.resolve(self.conv, dtype=self.dtype))
        for width, pool in zip(self.channels, self.pools):
            x = nn.Conv(width, (3, 3, 3), padding="SAME", use_bias=False, dtype=self.dtype,
                        conv_general_dilated=conv3d)(x)
            x = nn.relu(norm()(x))
            if tuple(pool) != (1, 1, 1):
                x = max_pool(x, pool)
                inside = max_pool(inside, pool)
        x = nn.Conv(self.head_channels, (1, 1, 1), use_bias=False, dtype=self.dtype)(x)
        # A no-op unless a 'perturbations' collection is passed: then the gradient of the output with respect
        # to it is the gradient with respect to this feature map (Grad-CAM: analysis/gradcam.py).
        features = self.perturb("features", nn.relu(norm()(x)))
        x = pool_features(features, inside, self.pooling)
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        out = nn.Dense(self.outputs, dtype=jnp.float32)(x.astype(jnp.float32))
        return (out, features) if return_features else out


POOLINGS = ("mean", "masked_mean", "masked_rows")


def pool_features(features: jnp.ndarray, inside: jnp.ndarray, pooling: str) -> jnp.ndarray:
    """The head's input from the last feature map.

    features: [batch, d', h', w', c]; inside: [batch, d', h', w', 1] 1 where the feature voxel holds some of the
    spine mask, else 0. pooling: 'mean' over the whole grid (SFCN); 'masked_mean' over the voxels inside;
    'masked_rows' that mean per row (a band across the spine, superior->inferior), flattened, so the head knows
    where along the spine a feature is. Returns float32 [batch, c] or [batch, h' * c].
    """
    features = features.astype(jnp.float32)  # sums in float32 also when the network computes in bfloat16
    if pooling == "mean":
        return features.mean(axis=(1, 2, 3))
    if pooling not in POOLINGS:
        raise ValueError(f"unknown model.pooling {pooling!r}; one of {', '.join(POOLINGS)}")
    if inside.shape[:4] != features.shape[:4]:
        raise ValueError(f"mask grid {inside.shape[:4]} is not the feature map's {features.shape[:4]}")
    if pooling == "masked_mean":
        return (features * inside).sum(axis=(1, 2, 3)) / jnp.maximum(inside.sum(axis=(1, 2, 3)), 1.0)
    per_row = (features * inside).sum(axis=(1, 3)) / jnp.maximum(inside.sum(axis=(1, 3)), 1.0)  # [b, h', c]
    return per_row.reshape(per_row.shape[0], -1)


def build(model_config, outputs: int) -> AgeCNN:
    """AgeCNN from the config's `model` block; `outputs` comes from the loss (1 or the number of bins)."""
    stem = model_config.stem_space_to_depth
    return AgeCNN(
        channels=tuple(model_config.channels),
        pools=tuple(tuple(p) for p in model_config.pools),
        head_channels=model_config.head_channels,
        outputs=outputs,
        stem_space_to_depth=tuple(stem) if stem else None,
        dropout=model_config.dropout,
        dtype=jnp.dtype(model_config.dtype),
        conv=model_config.get("conv", "auto"),  # configs saved before the option existed
        pooling=model_config.get("pooling", "mean"),
    )
