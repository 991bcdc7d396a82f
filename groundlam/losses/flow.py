"""Optical-flow targets for ``decoder_target: flow``: OpenCV's Farneback flow of the true frames.

Dimension keys: B batch, T frames, C channels, H/W pixels.

The flow is computed per batch, on the CPU, inside the loss: each transition's two frames are
turned into 8-bit grey images and passed to ``cv2.calcOpticalFlowFarneback``. It is not
differentiable and needs none: it is a target. Cost, measured on a shared, loaded 2-core machine:
about 1.3 ms per 64x64 pair, so a batch of 32 clips of 6 frames (160 pairs) adds about 0.2 s to
a step; precompute the flow into the episodes if that matters at your scale.

OpenCV is an optional dependency (``pip install groundlam[flow]``), imported on first use.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["optical_flow", "FARNEBACK"]

# pyramid scale, levels, window, iterations, polynomial size and sigma, flags: for the small
# frames (32-128 px) a latent action model sees, so fewer levels and a smaller window than the
# OpenCV sample's (0.5, 3, 15, 3, 5, 1.2, 0)
FARNEBACK = dict(pyr_scale=0.5, levels=2, winsize=9, iterations=3, poly_n=5, poly_sigma=1.1,
                 flags=0)


def _cv2():
    try:
        import cv2
    except ImportError as error:
        raise ImportError("model.decoder_target='flow' computes its targets with OpenCV, which "
                          "is not installed: pip install 'groundlam[flow]' (or "
                          "opencv-python-headless)") from error
    return cv2


def optical_flow(frames: torch.Tensor) -> torch.Tensor:
    """Dense forward flow of each transition: ``frames`` float (B, T, C, H, W) in [-1, 1] ->
    float32 (B, T-1, 2, H, W), the (x, y) displacement in pixels of each pixel of frame t to
    frame t+1, on ``frames``' device."""
    if frames.ndim != 5 or frames.shape[2] != 3:
        raise ValueError(f"optical_flow takes frames (B, T, 3, H, W), got {tuple(frames.shape)}")
    cv2 = _cv2()
    rgb = ((frames.detach().float().clamp(-1, 1) + 1) * 127.5).cpu()
    grey = (0.299 * rgb[:, :, 0] + 0.587 * rgb[:, :, 1] + 0.114 * rgb[:, :, 2])  # (B, T, H, W)
    grey = grey.round().to(torch.uint8).numpy()
    batch, steps = grey.shape[0], grey.shape[1] - 1
    flow = np.empty((batch, steps, *grey.shape[2:], 2), dtype=np.float32)  # (B, T-1, H, W, 2)
    for b in range(batch):
        for t in range(steps):
            flow[b, t] = cv2.calcOpticalFlowFarneback(grey[b, t], grey[b, t + 1], None,
                                                      **FARNEBACK)
    return torch.from_numpy(flow).permute(0, 1, 4, 2, 3).to(frames.device)
