"""Global colour changes explained in closed form, so the latent actions need not carry them.

Dimension keys:
    M  transitions matched at once (B x (T-1), flattened)      C  channels (3)
    H, W  pixels      Q  pixels of one frame (all of them, or those the fit samples)

Exposure, white balance and colour jitter change every pixel of frame t+1 by one affine colour
map. Left to the decoder, that map is the largest part of the reconstruction error, and the
latent action spends itself on it: on the synthetic benchmark, colour jitter alone took the
distracted probe of a trained model to chance (issue 9). ``match_colors`` fits, per transition,
the affine map (a 3x3 matrix and an offset, 12 numbers) that takes frame t's colours closest to
frame t+1's in robust least squares, and applies it to frame t before the decoder sees it.
Twelve global numbers cannot say where anything moved, so local motion must still go through the
latent.
"""

from __future__ import annotations

import torch

__all__ = ["match_colors", "color_maps"]

RIDGE = 1e-4  # per pixel, keeps the fit defined on a frame of one flat colour
# Pixels where something moved are outliers of a global map: plain least squares bends the map
# towards them (on clean frames it halved the agent's error and recoloured the static rest).
# Iteratively reweighted least squares with Cauchy weights 1 / (1 + (r / SCALE)^2) leaves them out.
ROBUST_SCALE = 0.1  # residual (in [-1, 1] units, about 13 of 255) where a pixel's weight halves
ROBUST_ITERATIONS = 3
FIT_STRIDE = 2  # fit on every FIT_STRIDE-th row and column


def _solve(design: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted ridge least squares, per transition: (M, Q, C+1), (M, Q, C), (M, Q, 1)."""
    weighted = design * weights  # (M, Q, C+1)
    gram = weighted.transpose(1, 2) @ design  # (M, C+1, C+1)
    size = gram.shape[-1]
    ridge = RIDGE * design.shape[1] * torch.eye(size, device=gram.device)
    # the ridge pulls towards the identity map, not towards zero
    identity = torch.eye(size, target.shape[-1], device=gram.device)
    rhs = weighted.transpose(1, 2) @ target + ridge @ identity  # (M, C+1, C)
    return torch.linalg.solve(gram + ridge, rhs)


@torch.no_grad()
def color_maps(current: torch.Tensor, following: torch.Tensor) -> torch.Tensor:
    """Robust affine colour maps (M, C+1, C) taking ``current`` towards ``following``.

    Both (M, C, H, W); row vectors ``[r, g, b, 1] @ map`` give the matched colour.
    """
    if current.shape != following.shape or current.ndim != 4:
        raise ValueError(f"current {tuple(current.shape)} and following "
                         f"{tuple(following.shape)} must both be (M, C, H, W)")
    # every other row and column: a quarter of the pixels fit 12 numbers as well, 4x faster
    source = current[..., ::FIT_STRIDE, ::FIT_STRIDE].flatten(2).transpose(1, 2).float()
    target = following[..., ::FIT_STRIDE, ::FIT_STRIDE].flatten(2).transpose(1, 2).float()
    # source, target: (M, Q, C) with Q the fitted pixels
    design = torch.cat([source, torch.ones_like(source[..., :1])], dim=-1)  # (M, Q, C+1)
    weights = torch.ones_like(source[..., :1])  # (M, Q, 1)
    for _ in range(ROBUST_ITERATIONS):
        maps = _solve(design, target, weights)
        residual = (design @ maps - target).pow(2).sum(-1, keepdim=True)  # (M, Q, 1)
        weights = 1 / (1 + residual / ROBUST_SCALE**2)
    return _solve(design, target, weights)


def match_colors(current: torch.Tensor, following: torch.Tensor) -> torch.Tensor:
    """Frames t (B, T-1, C, H, W) recoloured by the affine map that best predicts frames t+1.

    Values stay in [-1, 1]. The fit has no parameters and passes no gradient; the recolouring
    does, to ``current`` (a camera warp before it still learns).
    """
    batch, steps, channels, height, width = current.shape
    flat_current = current.flatten(0, 1)  # (M, C, H, W)
    # fp32 under bf16 autocast as well: a least-squares fit, and the frame the decoder adds to
    with torch.autocast(current.device.type, enabled=False):
        maps = color_maps(flat_current, following.flatten(0, 1))  # (M, C+1, C)
        pixels = flat_current.flatten(2).transpose(1, 2).to(maps.dtype)  # (M, Q, C)
        matched = pixels @ maps[:, :channels] + maps[:, channels:]  # (M, Q, C)
    matched = matched.clamp(-1, 1).transpose(1, 2).reshape(batch, steps, channels, height, width)
    return matched.to(current.dtype)
