"""Reconstruction losses of the forward-dynamics decoder.

Dimension keys: B batch, T frames, C channels, H/W pixels, S candidate shifts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["reconstruction_loss", "shift_tolerant_loss"]


def _weighted_mse(error: torch.Tensor, weights: torch.Tensor | None, dims: tuple[int, ...]
                  ) -> torch.Tensor:
    """Mean of ``error`` (squared) over ``dims``, each pixel weighted by ``weights``."""
    if weights is None:
        return error.pow(2).mean(dim=dims)
    return (error.pow(2) * weights).mean(dim=dims)


def shift_tolerant_loss(prediction: torch.Tensor, target: torch.Tensor, tolerance: int,
                        weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over frames of the smallest MSE over whole-frame shifts of up to ``tolerance`` px.

    A prediction that is right but off by a small global shift (camera shake the latent was not
    meant to carry) is not punished. Borders are replicated so a shift adds no black edge.
    ``weights`` (B, T, 1, H, W), if given, weight the pixels of the target.
    """
    # prediction, target: (B, T, C, H, W)
    height, width = prediction.shape[-2:]
    frames = prediction.flatten(0, 1)  # (B*T, C, H, W)
    padded = F.pad(frames, (tolerance,) * 4, mode="replicate")
    pixel_weights = weights.flatten(0, 1) if weights is not None else None
    errors = []
    for dy in range(2 * tolerance + 1):
        for dx in range(2 * tolerance + 1):
            shifted = padded[:, :, dy:dy + height, dx:dx + width]
            errors.append(_weighted_mse(shifted - target.flatten(0, 1), pixel_weights,
                                        (1, 2, 3)))
    return torch.stack(errors).amin(dim=0).mean()  # (S, B*T) -> min over S -> mean


def reconstruction_loss(prediction: torch.Tensor, target: torch.Tensor, mode: str = "residual",
                        shift_tolerance: int = 2, weights: torch.Tensor | None = None
                        ) -> torch.Tensor:
    """MSE between predicted and true next frames, both (B, T-1, C, H, W) in [-1, 1].

    ``pixels`` and ``residual`` differ in how the decoder parameterises its output, not in the
    loss; ``shift_tolerant`` takes the minimum over small whole-frame shifts; ``flow`` is the
    MSE between predicted and target flow, (B, T-1, 2, H, W) in pixels. ``weights``
    (B, T-1, 1, H, W), mean 1 (see ``focus_weights``), weight each pixel's error.
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target "
                         f"{tuple(target.shape)} differ in shape")
    if weights is not None and weights.shape != (*target.shape[:2], 1, *target.shape[3:]):
        raise ValueError(f"weights {tuple(weights.shape)} do not match target "
                         f"{tuple(target.shape)}: expected (B, T-1, 1, H, W)")
    if mode == "shift_tolerant":
        return shift_tolerant_loss(prediction, target, shift_tolerance, weights)
    if weights is None:
        return F.mse_loss(prediction, target)
    return _weighted_mse(prediction - target, weights, tuple(range(prediction.ndim)))
