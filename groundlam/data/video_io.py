"""Encoded video in and out with PyAV, on the CPU.

``datasets``' ``Video()`` feature and torchcodec need a CUDA build here, so groundlam decodes
with PyAV (``av``) itself. Frames are uint8 (T, H, W, 3) RGB throughout.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import av
import numpy as np

__all__ = ["VideoDecodeError", "decode_video", "encode_video", "episode_frames"]


class VideoDecodeError(ValueError):
    """An encoded video that PyAV cannot decode (corrupt, truncated, or no video stream)."""


def decode_video(source: bytes | str | Path, max_frames: int | None = None,
                 name: str | None = None) -> np.ndarray:
    """Decode ``source`` (encoded bytes or a file path) to uint8 (T, H, W, 3) RGB frames.

    Raises ``VideoDecodeError`` naming ``name`` (or the path) when nothing can be decoded.
    """
    what = name or (str(source) if isinstance(source, (str, Path)) else "video bytes")
    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else str(source)
    frames = []
    try:
        with av.open(handle, mode="r") as container:
            if not container.streams.video:
                raise VideoDecodeError(f"{what}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except (av.error.FFmpegError, OSError) as error:
        if not frames:
            raise VideoDecodeError(f"{what}: cannot decode ({error})") from error
        # a truncated file decodes up to the damage; keep those frames
    if not frames:
        raise VideoDecodeError(f"{what}: no frames decoded")
    return np.stack(frames)


def encode_video(frames: np.ndarray, fps: float = 10.0, codec: str = "libx264",
                 crf: int = 18) -> bytes:
    """Encode uint8 (T, H, W, 3) frames to mp4 bytes (H.264, yuv420p; H and W must be even)."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"H.264 needs an even height and width, got {frames.shape[1:3]}")
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=round(fps))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def episode_frames(row: dict[str, Any], name: str = "episode") -> np.ndarray:
    """An episode's frames as uint8 (T, H, W, 3), from ``frames`` or encoded ``video`` bytes."""
    if row.get("frames") is not None:
        return np.asarray(row["frames"], dtype=np.uint8)
    video = row.get("video")
    if isinstance(video, dict):  # {"bytes": ..., "path": ...}, as datasets stores files
        video = video.get("bytes") or video.get("path")
    if video is None:
        raise ValueError(f"{name}: has neither 'frames' nor 'video'")
    return decode_video(video, name=name)
