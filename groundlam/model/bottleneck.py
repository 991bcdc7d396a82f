"""Bottlenecks between the inverse-dynamics encoder and the forward-dynamics decoder.

Dimension keys:
    N  latent actions (batch x transitions, flattened)
    D  encoder width         Z  size of one latent action
    K  codebook entries (vq)

Each bottleneck maps ``(..., D) -> (..., Z)`` and returns a ``BottleneckOutput``:
- ``continuous``: a linear map to a small Z. The width is the bottleneck; nothing is quantised.
- ``vq``: nearest entry of a learned codebook by cosine similarity to the projection
  standardised over the batch (``BatchStandardize``), straight-through gradients, a commitment
  loss; dead entries (all of them at first) are restarted on encoder outputs by the trainer
  calling ``restart_dead_codes``; codes reach the decoder scaled to norm sqrt(Z).
- ``fsq``: finite scalar quantisation; each of Z = len(levels) channels is standardised over
  the batch, bounded and rounded to ``levels[i]`` values. No codebook, so nothing can die.
- ``none``: the identity, Z = D. The control for "is the bottleneck required?"
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from groundlam.model.configuration import GroundLAMConfig
from groundlam.model.outputs import TensorFields

__all__ = ["BottleneckOutput", "BatchStandardize", "NoBottleneck", "ContinuousBottleneck",
           "VectorQuantizer", "FSQ", "make_bottleneck"]


@dataclass
class BottleneckOutput(TensorFields):
    latents: torch.Tensor  # (..., Z) what the decoder receives
    indices: torch.Tensor | None = None  # (...) code ids for vq / fsq
    loss: torch.Tensor | None = None  # auxiliary loss (vq commitment + codebook)


class BatchStandardize(nn.BatchNorm1d):
    """Each channel of ``(..., Z)`` standardised over the batch in training (``update=False``:
    without moving the running statistics), by the running statistics in eval and for a batch
    of one; no learned scale or shift.

    In front of a quantiser: at initialisation the encoder's outputs for different clips share
    a large common part and differ by far less than the distance between codes, so every latent
    picks the same code, the decoder sees a constant and learns to ignore it (issue 9: VQ and FSQ
    at chance). Standardised, the differences span the codes from the first step.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels, affine=False)

    def forward(self, z: torch.Tensor, update: bool = True) -> torch.Tensor:
        flat = z.reshape(-1, z.shape[-1])
        if self.training and flat.shape[0] > 1:
            mean, var = (self.running_mean, self.running_var) if update else (None, None)
            flat = F.batch_norm(flat, mean, var, training=True, momentum=self.momentum,
                                eps=self.eps)
        else:
            flat = F.batch_norm(flat, self.running_mean, self.running_var, training=False,
                                eps=self.eps)
        return flat.reshape(z.shape)


class NoBottleneck(nn.Module):
    """The motion features go to the decoder unchanged."""

    def forward(self, x: torch.Tensor) -> BottleneckOutput:
        return BottleneckOutput(x)


class ContinuousBottleneck(nn.Module):
    def __init__(self, dim: int, latent_dim: int, normalize: bool = False) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, latent_dim)
        self.norm = BatchStandardize(latent_dim) if normalize else None

    def forward(self, x: torch.Tensor) -> BottleneckOutput:
        z = self.proj(x)
        return BottleneckOutput(self.norm(z) if self.norm is not None else z)


class VectorQuantizer(nn.Module):
    """Cosine-similarity VQ with straight-through gradients.

    The codebook in use is ``codebook + restart_offset``: a restart writes the buffer, never the
    parameter, so it stays correct when an optimiser (or ZeRO) keeps its own master copy of the
    parameters. ``usage`` is an EMA of how often each entry is chosen, kept for the trainer.
    """

    def __init__(self, dim: int, latent_dim: int, codebook_size: int, beta: float = 0.25,
                 usage_decay: float = 0.9, scale: bool = True, normalize: bool = True) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, latent_dim)
        self.codebook = nn.Parameter(torch.randn(codebook_size, latent_dim))
        self.register_buffer("restart_offset", torch.zeros(codebook_size, latent_dim))
        # zero: every entry counts as dead, so the trainer's first restart puts the whole
        # codebook on encoder outputs (random unit vectors in Z dims all but one go unused)
        self.register_buffer("usage", torch.zeros(codebook_size))
        self.beta, self.usage_decay = beta, usage_decay
        # unit codes in Z dims have channels of size 1/sqrt(Z): scaled by sqrt(Z) they reach the
        # decoder at a continuous latent's size (issue 9: unscaled, 0.46 probe and 4 dB, scaled
        # 0.79 and 14 dB on the clean synthetic benchmark); ``scale=False`` loads older models
        self.scale = math.sqrt(latent_dim) if scale else 1.0
        self.norm = BatchStandardize(latent_dim) if normalize else None

    def directions(self, x: torch.Tensor, update: bool = True) -> torch.Tensor:
        z = self.proj(x)  # (..., Z)
        if self.norm is not None:
            z = self.norm(z, update)
        return F.normalize(z, dim=-1)

    def codes(self) -> torch.Tensor:
        return F.normalize(self.codebook + self.restart_offset, dim=-1)  # (K, Z)

    def forward(self, x: torch.Tensor) -> BottleneckOutput:
        z = self.directions(x)  # (..., Z)
        codes = self.codes()
        indices = (z @ codes.T).argmax(dim=-1)  # (...)
        quantized = codes[indices]  # (..., Z)
        loss = F.mse_loss(quantized, z.detach()) + self.beta * F.mse_loss(z, quantized.detach())
        if self.training:
            with torch.no_grad():
                counts = torch.bincount(indices.flatten(), minlength=codes.shape[0]).float()
                self.usage.mul_(self.usage_decay).add_(counts / counts.sum(),
                                                       alpha=1 - self.usage_decay)
        quantized = z + (quantized - z).detach()  # straight-through
        return BottleneckOutput(quantized * self.scale, indices, loss)

    @torch.no_grad()
    def restart_dead_codes(self, x: torch.Tensor, threshold: float = 0.1) -> int:
        """Move entries used less than ``threshold / K`` of the time onto encoder outputs.

        ``x`` is ``(N, D)`` encoder features from recent batches. Returns how many entries moved.
        Call it from the trainer (on one rank, then broadcast the buffers), not from ``forward``.
        """
        return self.restart_onto(self.restart_directions(x), threshold)

    @torch.no_grad()
    def restart_directions(self, x: torch.Tensor) -> torch.Tensor:
        """The codes a restart can move entries onto: ``x``'s (N, D) unit directions (N, Z),
        through ``proj`` and ``norm`` (module calls, which ZeRO-3 wants every rank to make)."""
        return self.directions(x.reshape(-1, x.shape[-1]), update=False)

    @torch.no_grad()
    def restart_onto(self, z: torch.Tensor, threshold: float = 0.1) -> int:
        """``restart_dead_codes`` onto ``restart_directions`` already computed; returns how many
        entries moved."""
        size = self.codebook.shape[0]
        dead = (self.usage < threshold / size).nonzero().flatten()
        if dead.numel() == 0 or z.numel() == 0:
            return 0
        if z.shape[0] >= dead.numel():  # distinct outputs while there are enough
            picks = torch.randperm(z.shape[0], device=z.device)[:dead.numel()]
        else:
            picks = torch.randint(0, z.shape[0], (dead.numel(),), device=z.device)
        self.restart_offset[dead] = z[picks] - self.codebook[dead]
        self.usage[dead] = 1.0 / size
        return int(dead.numel())


class FSQ(nn.Module):
    """Finite scalar quantisation: bound each channel with tanh, round to its grid."""

    def __init__(self, dim: int, levels: list[int], normalize: bool = True) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, len(levels))
        self.norm = BatchStandardize(len(levels)) if normalize else None
        self.register_buffer("levels", torch.tensor(levels, dtype=torch.float32), persistent=False)
        basis = torch.cumprod(torch.tensor([1, *levels[:-1]]), dim=0)
        self.register_buffer("basis", basis, persistent=False)

    def forward(self, x: torch.Tensor) -> BottleneckOutput:
        z = self.proj(x)  # (..., Z)
        if self.norm is not None:
            z = self.norm(z)
        half = (self.levels - 1) / 2
        # even level counts have no zero on the grid; the half-step offset centres them
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0)
        bounded = torch.tanh(z) * half - offset
        rounded = bounded + (bounded.round() - bounded).detach()  # straight-through round
        indices = ((rounded + offset + half).round().long() * self.basis).sum(dim=-1)
        return BottleneckOutput((rounded + offset) / half, indices)


def make_bottleneck(config: GroundLAMConfig) -> nn.Module:
    if config.bottleneck == "none":
        return NoBottleneck()
    if config.bottleneck == "continuous":
        return ContinuousBottleneck(config.motion_feature_dim, config.motion_dim,
                                    normalize=config.latent_norm)
    if config.bottleneck == "vq":
        return VectorQuantizer(config.motion_feature_dim, config.motion_dim, config.codebook_size,
                               scale=config.vq_scale, normalize=config.quantizer_norm)
    return FSQ(config.motion_feature_dim, config.fsq_levels, normalize=config.quantizer_norm)
