"""The age model's train step in PyTorch: a peer to time the JAX step against (train_benchmark --peer).

The same network as spinejax.models.AgeCNN (space-to-depth stem in the same channel order, 3x3x3 conv +
batch norm + ReLU blocks with max pooling, a 1x1x1 block, global average pooling, dropout, dense head) and
the same step as spinejax.steps.train_step for the L1 head: weighted L1 on the normalised age, global-norm
clipping, AdamW with warm-up and cosine decay and no decay on vectors. It leaves out what costs nothing
here (the finite check, the metrics). Only this module and the benchmark import torch, an optional extra
(`pip install .[peer]`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class AgeCNN(nn.Module):
    """spinejax.models.AgeCNN in torch; takes [batch, 1, d, h, w] (NCDHW) volumes, returns [batch, outputs]."""

    def __init__(self, channels: Sequence[int], pools: Sequence[Sequence[int]], head_channels: int,
                 stem_space_to_depth: Sequence[int] | None, dropout: float, outputs: int = 1,
                 bn_momentum: float = 0.9):
        super().__init__()
        self.stem = tuple(stem_space_to_depth) if stem_space_to_depth else None
        width = math.prod(self.stem) if self.stem else 1
        layers = []
        momentum = 1.0 - bn_momentum  # torch's momentum weighs the new batch, flax's the running value
        for out, pool in zip(channels, pools):
            layers += [nn.Conv3d(width, out, 3, padding=1, bias=False), nn.BatchNorm3d(out, momentum=momentum),
                       nn.ReLU(inplace=True)]
            if tuple(pool) != (1, 1, 1):
                layers.append(nn.MaxPool3d(tuple(pool)))
            width = out
        layers += [nn.Conv3d(width, head_channels, 1, bias=False), nn.BatchNorm3d(head_channels, momentum=momentum),
                   nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(head_channels, outputs)

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        x = volume
        if self.stem:  # [b, 1, d, h, w] -> [b, bd*bh*bw, d/bd, h/bh, w/bw], channels ordered (bd, bh, bw) as in JAX
            b, _, d, h, w = x.shape
            bd, bh, bw = self.stem
            x = x[:, :, : d // bd * bd, : h // bh * bh, : w // bw * bw]
            x = x.reshape(b, d // bd, bd, h // bh, bh, w // bw, bw).permute(0, 2, 4, 6, 1, 3, 5)
            x = x.reshape(b, bd * bh * bw, d // bd, h // bh, w // bw)
            x = x.contiguous(memory_format=volume_format(volume))
        x = self.features(x)
        return self.dense(self.dropout(x.mean(dim=(2, 3, 4))))


def volume_format(volume: torch.Tensor) -> torch.memory_format:
    """The memory format `volume` is in (channels_last_3d or contiguous), kept through the stem."""
    channels_last = volume.is_contiguous(memory_format=torch.channels_last_3d) and not volume.is_contiguous()
    return torch.channels_last_3d if channels_last else torch.contiguous_format


def build(model_config) -> AgeCNN:
    """The torch AgeCNN of configs/default.py's `model` block (scalar head; SFCN's mean pooling only)."""
    if model_config.get("pooling", "mean") != "mean":
        raise ValueError(f"the PyTorch peer has SFCN's mean pooling only, not model.pooling="
                         f"{model_config.pooling!r}: time it with --config.model.pooling=mean")
    return AgeCNN(model_config.channels, model_config.pools, model_config.head_channels,
                  model_config.stem_space_to_depth or None, model_config.dropout)


def make_step(model: AgeCNN, optimizer_config, total_steps: int, mean_years: float, sd_years: float,
              autocast_dtype: torch.dtype | None = None):
    """f(volume [b, 1, d, h, w], age [b] years, weight [b]) -> loss tensor: one AdamW step, as spinejax.steps.

    autocast_dtype: bfloat16 runs the network in mixed precision (as model.dtype='bfloat16' in JAX).
    """
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    c = optimizer_config
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": c.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=c.learning_rate,
                                  betas=(c.b1, c.b2), eps=1e-8)
    warmup = min(c.warmup_steps, max(total_steps - 1, 0))
    decay_steps = max(total_steps, warmup + 1) - warmup
    count = 0
    device_type = next(model.parameters()).device.type

    def learning_rate(step: int) -> float:  # optax.warmup_cosine_decay_schedule(0, lr, warmup, total)
        if step < warmup:
            return c.learning_rate * step / warmup
        return 0.5 * c.learning_rate * (1 + math.cos(math.pi * min(step - warmup, decay_steps) / decay_steps))

    def step(volume: torch.Tensor, age: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        nonlocal count
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(count)
        count += 1
        with torch.autocast(device_type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            output = model(volume)
        error = output.float()[:, 0] - (age - mean_years) / sd_years
        loss = (error.abs() * weight).sum() / weight.sum().clamp(min=1.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip_norm)
        optimizer.step()
        return loss.detach()

    return step
