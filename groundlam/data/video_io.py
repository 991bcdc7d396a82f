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

__all__ = ["VideoDecodeError", "decode_video", "encode_video", "episode_frames", "probe_video",
           "read_frames"]


class VideoDecodeError(ValueError):
    """An encoded video that PyAV cannot decode (corrupt, truncated, or no video stream)."""


def decode_video(source: bytes | str | Path, max_frames: int | None = None,
                 name: str | None = None) -> np.ndarray:
    """Decode ``source`` (encoded bytes or a file path) to uint8 (T, H, W, 3) RGB frames.

    Raises ``VideoDecodeError`` naming ``name`` (or the path) when nothing can be decoded.
    """
    return read_frames(source, 0, max_frames, name=name)


def _video_source(video: Any) -> bytes | str:
    if isinstance(video, dict):  # {"bytes": ..., "path": ...}, as datasets stores files
        video = video.get("bytes") or video.get("path")
    if video is None:
        raise VideoDecodeError("no video (neither bytes nor path)")
    return io.BytesIO(video) if isinstance(video, (bytes, bytearray)) else str(video)


def probe_video(video: Any, name: str | None = None) -> tuple[int, float | None]:
    """``(num_frames, fps)`` of an encoded video, from its header, without decoding frames.

    Where the container does not store a frame count (webm), the video packets are counted
    (demuxed, not decoded). ``fps`` is None when the stream has no rate.
    """
    what = name or (str(video) if isinstance(video, (str, Path)) else "video bytes")
    try:
        with av.open(_video_source(video), mode="r") as container:
            if not container.streams.video:
                raise VideoDecodeError(f"{what}: no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            frames = stream.frames or sum(1 for p in container.demux(stream) if p.size)
    except (av.error.FFmpegError, OSError) as error:
        raise VideoDecodeError(f"{what}: cannot read the video ({error})") from error
    if not frames:
        raise VideoDecodeError(f"{what}: no frames")
    return int(frames), float(rate) if rate else None


def read_frames(video: Any, first: int = 0, count: int | None = None, *,
                fps: float | None = None, video_start: float = 0.0,
                name: str | None = None) -> np.ndarray:
    """Frames ``first .. first + count - 1`` of an encoded-video episode: uint8 (T, H, W, 3).

    ``video``: a path, bytes, or ``{"bytes", "path"}``. The episode starts ``video_start``
    seconds into the file (LeRobot v3 concatenates episodes). With ``fps`` the decoder seeks to
    the first frame and places frames by their timestamps; without, it counts frames from the
    start. Returns fewer than ``count`` frames when the video ends (or breaks) early: the caller
    decides whether that is an error. Raises ``VideoDecodeError`` when nothing decodes.
    """
    what = name or (str(video) if isinstance(video, (str, Path)) else "video bytes")
    wanted = float("inf") if count is None else count
    frames: list[np.ndarray] = []
    try:
        with av.open(_video_source(video), mode="r") as container:
            if not container.streams.video:
                raise VideoDecodeError(f"{what}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            timed = fps is not None and stream.time_base is not None
            if timed and (video_start > 0 or first > 0):
                target = video_start + (first - 0.5) / fps
                container.seek(max(0, int(target / stream.time_base)), stream=stream,
                               backward=True)
            for index, frame in enumerate(container.decode(stream)):
                if timed and frame.time is not None:
                    index = round((frame.time - video_start) * fps)
                if index < first:
                    continue
                if index >= first + wanted:
                    break
                frames.append(frame.to_ndarray(format="rgb24"))
    except (av.error.FFmpegError, OSError) as error:
        if not frames:
            raise VideoDecodeError(f"{what}: cannot decode ({error})") from error
        # a truncated file decodes up to the damage; the caller sees the short count
    if not frames:
        raise VideoDecodeError(f"{what}: no frames at {first} (from {video_start:.3f} s)")
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
    """An episode's frames as uint8 (T, H, W, 3), from ``frames`` or encoded ``video``.

    A ``video`` row (bytes, a path, or ``{"bytes", "path"}``) decodes from ``video_start``
    seconds, ``num_frames`` frames where the row has them (a LeRobot v3 mp4 holds many episodes).
    """
    if row.get("frames") is not None:
        return np.asarray(row["frames"], dtype=np.uint8)
    if row.get("video") is None:
        raise ValueError(f"{name}: has neither 'frames' nor 'video'")
    return read_frames(row["video"], 0, row.get("num_frames"), fps=row.get("fps"),
                       video_start=row.get("video_start") or 0.0, name=name)
