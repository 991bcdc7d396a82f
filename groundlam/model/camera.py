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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from groundlam.model.configuration import GroundLAMConfig

__all__ = ["CameraWarp", "warp_matrix", "warp_frames", "camera_flow"]

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
