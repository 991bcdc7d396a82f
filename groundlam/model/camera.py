"""A separate camera-motion channel: camera slots predict a global warp of frame t.

Dimension keys:
    B  batch (clips)      T  frames         C  channels
    H, W  pixels          D  encoder width  P  warp parameters (2 translation, 6 affine)
    M  frames warped at once (B x (T-1), flattened)

The encoder's camera slots read transition t -> t+1 like the motion slots do; ``CameraWarp``
maps them to a parametric whole-frame warp applied to frame t with ``grid_sample`` (bilinear,
border padding, differentiable) before the decoder sees it. A warp moves every pixel by one
global rule, so it can explain camera shake but not an object moving on its own: that must still
go through the motion latents.

Parameters, per transition, in pixels of the model input:
- ``translation`` (dx, dy): the content moves by (dx, dy): ``out(x) = frame(x - d)``.
- ``affine`` (a, b, c, e, dx, dy): sampling ``out(x) = frame((I + [[a, b], [c, e]]) x - d)`` with x
  in coordinates centred on the frame and scaled to [-1, 1]; with a = b = c = e = 0 it is the
  translation above.
The head is zero-initialised, so an untrained camera warp is the identity.

``match_shift`` is the closed-form alternative for shake (``model.shift_matching``): the
whole-pixel shift of frame t that best aligns it with frame t+1, found by search, no parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from groundlam.model.configuration import GroundLAMConfig

__all__ = ["CameraWarp", "warp_matrix", "warp_frames", "camera_flow", "best_shifts", "shift_frames",
           "match_shift"]

WARP_PARAMETERS = {"translation": 2, "affine": 6}


def warp_matrix(params: torch.Tensor, kind: str, height: int, width: int) -> torch.Tensor:
    """``params`` (M, P) in pixels -> ``affine_grid`` matrices (M, 2, 3) in normalised units."""
    if params.shape[-1] != WARP_PARAMETERS[kind]:
        raise ValueError(f"a {kind} warp takes {WARP_PARAMETERS[kind]} parameters, got "
                         f"{params.shape[-1]}")
    count = params.shape[0]
    linear = torch.eye(2, dtype=params.dtype, device=params.device).expand(count, 2, 2)
    if kind == "affine":
        linear = linear + params[:, :4].reshape(count, 2, 2)
    shift = params[:, -2:]  # (M, 2) content displacement (dx, dy) in pixels
    # a pixel is 2 / size in normalised units; sampling at x - d moves the content by +d
    scale = torch.tensor([2.0 / width, 2.0 / height], dtype=params.dtype, device=params.device)
    return torch.cat([linear, (-shift * scale)[:, :, None]], dim=2)  # (M, 2, 3)


def warp_frames(frames: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Warp ``frames`` (M, C, H, W) by ``theta`` (M, 2, 3); borders are replicated."""
    grid = F.affine_grid(theta, list(frames.shape), align_corners=False)  # (M, H, W, 2)
    return F.grid_sample(frames, grid, mode="bilinear", padding_mode="border",
                         align_corners=False)


def camera_flow(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The forward flow (M, 2, H, W), in pixels, that the warp ``theta`` (M, 2, 3) stands for.

    ``out(x) = frame(g(x))`` means the content at g(x) went to x: a flow of ``x - g(x)``, read at
    x rather than at g(x). Exact for translations, first order for affine warps.
    """
    identity = torch.eye(2, 3, dtype=theta.dtype, device=theta.device).expand_as(theta)
    size = [theta.shape[0], 1, height, width]
    grid = F.affine_grid(theta, size, align_corners=False)
    base = F.affine_grid(identity, size, align_corners=False)
    scale = torch.tensor([width / 2.0, height / 2.0], dtype=theta.dtype, device=theta.device)
    return ((base - grid) * scale).permute(0, 3, 1, 2)  # (M, H, W, 2) -> (M, 2, H, W)


class CameraWarp(nn.Module):
    """Camera-slot features (B, T-1, D) -> warp parameters (B, T-1, P); warps frames t."""

    def __init__(self, config: GroundLAMConfig) -> None:
        super().__init__()
        self.kind = config.camera_warp
        self.norm = nn.LayerNorm(config.dim)
        self.head = nn.Linear(config.dim, WARP_PARAMETERS[self.kind])
        nn.init.zeros_(self.head.weight)  # the identity warp until the camera slots learn one
        nn.init.zeros_(self.head.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(features))  # (B, T-1, P)

    def matrices(self, params: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(B, T-1, P) -> (B*(T-1), 2, 3)."""
        return warp_matrix(params.flatten(0, 1), self.kind, height, width)


# Cauchy scale of the alignment error on standardised frames, so pixels where something moved by
# itself weigh less. On the synthetic benchmark with every distractor at 0.5 (training seed),
# 0.5 found the true shake for 83% of transitions (a scrolling floor texture pulls a small scale
# towards its own motion), 1.0 for 99%, 2.0 for all
SHIFT_ROBUST_SCALE = 2.0
SHIFT_CHUNK = 32  # frames searched at once (``best_shifts``)


def shift_frames(frames: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Move the content of ``frames`` (M, C, H, W) by integer ``shifts`` (M, 2) (dx, dy) pixels.

    ``out(x, y) = frame(x - dx, y - dy)``, borders replicated, like ``warp_frames``.
    """
    if not shifts.numel() or not shifts.any():
        return frames
    count, channels, height, width = frames.shape
    # each output pixel's source, clamped to the frame (the replicated border): one gather,
    # a copy of values, where cropping a padded copy once per distinct shift took 1.5x as long
    rows = (torch.arange(height, device=frames.device) - shifts[:, 1:]).clamp_(0, height - 1)
    columns = (torch.arange(width, device=frames.device) - shifts[:, :1]).clamp_(0, width - 1)
    index = (rows[:, :, None] * width + columns[:, None, :]).flatten(1)  # (M, H*W)
    moved = frames.flatten(2).gather(2, index[:, None].expand(count, channels, -1))
    return moved.view(count, channels, height, width)


@torch.no_grad()
def best_shifts(current: torch.Tensor, following: torch.Tensor, max_shift: int) -> torch.Tensor:
    """The integer shift (M, 2) (dx, dy), |dx|, |dy| <= ``max_shift``, that best aligns each of
    ``current`` (M, C, H, W) with ``following``.

    Frames are standardised per channel first (so a global colour change does not decide the
    shift) and compared with a robust Cauchy error inside the border ``max_shift`` px wide; ties
    go to the smallest shift.
    """
    k = max_shift
    height, width = current.shape[-2:]
    candidates = [(dx, dy) for dy in range(-k, k + 1) for dx in range(-k, k + 1)]
    candidates.sort(key=lambda shift: abs(shift[0]) + abs(shift[1]))  # argmin keeps the first
    best = [torch.zeros(0, dtype=torch.long, device=current.device)]  # (0, 2) for no frames
    # SHIFT_CHUNK frames at a time, so each shift's residuals are still in the cache when they
    # are squared, summed and reduced (all M at once streamed them through memory: 1.7x slower)
    for start in range(0, len(current), SHIFT_CHUNK):
        source = _standardise(current[start:start + SHIFT_CHUNK])
        target = _standardise(following[start:start + SHIFT_CHUNK])
        inner = target[..., k:height - k, k:width - k]  # (m, C, H', W'): what every shift covers
        errors = source.new_empty(len(candidates), len(source))
        for row, (dx, dy) in enumerate(candidates):
            # the source moved by (dx, dy), seen through the inner window: a view, no copy
            moved = source[..., k - dy:height - k - dy, k - dx:width - k - dx]
            residual = (moved - inner).square_().sum(dim=1)  # (m, H', W')
            torch.mean(residual.div_(SHIFT_ROBUST_SCALE**2).log1p_(), dim=(-2, -1),
                       out=errors[row])
        best.append(errors.argmin(dim=0))  # (m,)
    return torch.tensor(candidates, device=current.device)[torch.cat(best)]  # (M, 2)


def _standardise(frames: torch.Tensor) -> torch.Tensor:
    """(m, C, H, W) -> each frame's channels at mean 0 and standard deviation 1 (at least 1e-3).

    The deviation is summed from the centred values: ``Tensor.std`` over the two pixel axes took
    more than a quarter of the whole search.
    """
    frames = frames.float()
    centred = frames - frames.mean(dim=(-2, -1), keepdim=True)
    pixels = frames.shape[-2] * frames.shape[-1]
    variance = centred.square().sum(dim=(-2, -1), keepdim=True) / (pixels - 1)
    return centred.div_(variance.sqrt_().clamp_min_(1e-3))


def match_shift(current: torch.Tensor, following: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Frames t (B, T-1, C, H, W) moved by the whole-pixel shift that best aligns them with
    frames t+1 (``best_shifts``); no gradient flows through the search."""
    flat = current.flatten(0, 1)  # (M, C, H, W)
    shifts = best_shifts(flat, following.flatten(0, 1), max_shift)
    return shift_frames(flat, shifts).unflatten(0, current.shape[:2])
