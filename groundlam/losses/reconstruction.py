"""Reconstruction losses of the forward-dynamics decoder.

Dimension keys: B batch, T frames, C channels, H/W pixels, S candidate shifts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["reconstruction_loss", "shift_tolerant_loss"]


def shift_tolerant_loss(prediction: torch.Tensor, target: torch.Tensor, tolerance: int
                        ) -> torch.Tensor:
    """Mean over frames of the smallest MSE over whole-frame shifts of up to ``tolerance`` px.

    A prediction that is right but off by a small global shift (camera shake the latent was not
    meant to carry) is not punished. Borders are replicated so a shift adds no black edge.
    """
    # prediction, target: (B, T, C, H, W)
    height, width = prediction.shape[-2:]
    frames = prediction.flatten(0, 1)  # (B*T, C, H, W)
    padded = F.pad(frames, (tolerance,) * 4, mode="replicate")
    errors = []
    for dy in range(2 * tolerance + 1):
        for dx in range(2 * tolerance + 1):
            shifted = padded[:, :, dy:dy + height, dx:dx + width]
            errors.append((shifted - target.flatten(0, 1)).pow(2).mean(dim=(1, 2, 3)))
    return torch.stack(errors).amin(dim=0).mean()  # (S, B*T) -> min over S -> mean


def reconstruction_loss(prediction: torch.Tensor, target: torch.Tensor, mode: str = "residual",
                        shift_tolerance: int = 2) -> torch.Tensor:
    """MSE between predicted and true next frames, both (B, T-1, C, H, W) in [-1, 1].

    ``pixels`` and ``residual`` differ in how the decoder parameterises its output, not in the
    loss; ``shift_tolerant`` takes the minimum over small whole-frame shifts.
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target "
                         f"{tuple(target.shape)} differ in shape")
    if mode == "shift_tolerant":
        return shift_tolerant_loss(prediction, target, shift_tolerance)
    return F.mse_loss(prediction, target)
