"""Video tensors in and out of groundlam: validation, resizing and normalisation.

Dimension keys:
    B  batch (clips)
    T  frames of a clip
    H  height, W width (pixels)
    C  colour channels (3)

Videos enter the library as uint8 ``(T, H, W, 3)`` or ``(B, T, H, W, 3)`` arrays (numpy or torch),
the layout decoders and ``datasets`` produce. Inside the model they are float ``(B, T, C, H, W)``
in [-1, 1].
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

__all__ = ["as_video_batch", "resize_video", "to_model_input", "from_model_output"]


def as_video_batch(video: np.ndarray | torch.Tensor, max_frames: int | None = None) -> torch.Tensor:
    """Check a user's video and return it as a uint8 tensor ``(B, T, H, W, 3)``.

    Raises ValueError naming the expected shape and dtype on anything else.
    """
    expected = "uint8 (T, H, W, 3) or (B, T, H, W, 3)"
    if isinstance(video, np.ndarray):
        video = torch.from_numpy(np.ascontiguousarray(video))
    if not isinstance(video, torch.Tensor):
        raise ValueError(f"video must be a numpy array or torch tensor of {expected}, "
                         f"got {type(video).__name__}")
    if video.dtype != torch.uint8:
        raise ValueError(f"video must be {expected}, got dtype {video.dtype} "
                         "(convert float frames in [0, 1] with (x * 255).round().to(torch.uint8))")
    if video.ndim == 4:
        video = video.unsqueeze(0)
    if video.ndim != 5 or video.shape[-1] != 3:
        raise ValueError(f"video must be {expected}, got shape {tuple(video.shape)}")
    if video.shape[0] == 0:
        raise ValueError(f"video is a batch of no clips (shape {tuple(video.shape)}); give at "
                         "least one")
    if video.shape[2] == 0 or video.shape[3] == 0:
        raise ValueError(f"video frames have no pixels (H x W = {video.shape[2]} x "
                         f"{video.shape[3]} in shape {tuple(video.shape)})")
    num_frames = video.shape[1]
    if num_frames < 2:
        raise ValueError(f"video needs at least 2 frames (one transition), got T={num_frames} "
                         f"in shape {tuple(video.shape)}")
    if max_frames is not None and num_frames > max_frames:
        raise ValueError(f"video has T={num_frames} frames but this model takes at most "
                         f"{max_frames} (config.max_frames); split it into clips")
    return video


def resize_video(video: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 ``(..., H, W, 3)`` frames to ``(..., size, size, 3)``.

    The shorter side is scaled to ``size`` (bilinear, antialiased), then the centre is cropped to a
    square, so the aspect ratio is kept and nothing is stretched.
    """
    height, width = video.shape[-3], video.shape[-2]
    if height == size and width == size:
        return video
    lead = video.shape[:-3]
    frames = rearrange(video.reshape(-1, height, width, 3), "n h w c -> n c h w").float()
    scale = size / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    frames = F.interpolate(frames, size=(new_h, new_w), mode="bilinear", antialias=True,
                           align_corners=False)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    frames = frames[:, :, top:top + size, left:left + size]
    frames = rearrange(frames.round().clamp(0, 255).to(torch.uint8), "n c h w -> n h w c")
    return frames.reshape(*lead, size, size, 3)


def to_model_input(video: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, T, H, W, 3)`` -> float ``(B, T, 3, H, W)`` in [-1, 1]."""
    return rearrange(video, "b t h w c -> b t c h w").float().div(127.5).sub(1.0)


def from_model_output(frames: torch.Tensor) -> torch.Tensor:
    """float ``(..., 3, H, W)`` in [-1, 1] -> uint8 ``(..., H, W, 3)``."""
    frames = frames.detach().float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)
    return frames.movedim(-3, -1)
