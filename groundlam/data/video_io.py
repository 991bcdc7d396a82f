"""Encoded video in and out with PyAV, on the CPU: decoding, and ``VideoWriter``, the one encoder.

``datasets``' ``Video()`` feature and torchcodec need a CUDA build here, so groundlam decodes
with PyAV (``av``) itself. Frames are uint8 (T, H, W, 3) RGB throughout. ``av`` is imported by
the functions that read or write video, not with this module: training on synthetic or
Parquet frames never loads FFmpeg, and runs where PyAV is not installed (a GPU machine that
cannot fetch packages: its 33 MB wheel is half of what a device call can carry).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

__all__ = ["VIDEO_CODECS", "VideoDecodeError", "VideoWriter", "check_frames", "decode_video",
           "encode_video", "episode_frames", "probe_video", "read_frames", "write_video"]


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
    import av

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
    import av

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
    buffer = io.BytesIO()
    with VideoWriter(buffer, fps, codec, crf=crf, container="mp4") as video:
        video.write(frames)
    return buffer.getvalue()


# the encoder each container gets by default; all ship with PyAV's wheels
VIDEO_CODECS = {".mp4": "libx264", ".mkv": "libx264", ".mov": "libx264", ".avi": "mpeg4",
                ".webm": "libvpx-vp9"}
_BIT_RATE = 4_000_000  # for codecs without crf: the default (~200 kbit/s) blurs small videos


def check_frames(frames: Any, where: str) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{where}: frames must be uint8 (T, H, W, 3), got {frames.dtype} "
                         f"{frames.shape}")
    if len(frames) == 0:
        raise ValueError(f"{where}: no frames")
    return frames


class VideoWriter:
    """An open video that frames are appended to, so a long video never sits in memory: groundlam's
    one video encoder (files, ``encode_video``'s bytes, focus-map mp4s).

    ``target``: a file path, or a binary file object with ``container`` naming the format
    (``"mp4"``). ``codec``: default from the suffix or container (``VIDEO_CODECS``). H.264 is
    written at constant quality (``crf``, 18 is visually lossless), other codecs at
    ``bit_rate``. Use as a context manager::

        with VideoWriter("out.mp4", fps=10) as video:
            video.write(frames)  # uint8 (T, H, W, 3), any number of calls
    """

    def __init__(self, target: str | Path | BinaryIO, fps: float = 10.0,
                 codec: str | None = None, crf: int = 18, bit_rate: int = _BIT_RATE,
                 container: str | None = None) -> None:
        self.target = target if hasattr(target, "write") else Path(target)
        suffix = f".{container}" if container else getattr(self.target, "suffix", "")
        if not container and not isinstance(self.target, Path):
            raise ValueError("a VideoWriter on a file object needs container=, e.g. 'mp4'")
        self.path = self.target if isinstance(self.target, Path) else f"<{container} buffer>"
        self.container_format = container
        codec = codec or VIDEO_CODECS.get(suffix.lower())
        if codec is None:
            raise ValueError(f"{self.path}: no default codec for {suffix!r}; pass "
                             f"codec= or use one of {sorted(VIDEO_CODECS)}")
        self.fps, self.codec, self.crf, self.bit_rate = fps, codec, crf, bit_rate
        self.frames_written = 0
        self._container: Any = None
        self._stream: Any = None
        self._size: tuple[int, int] | None = None

    def open(self) -> VideoWriter:
        """Create the file (and its folder); ``with`` does this and ``close`` for you."""
        import av

        if isinstance(self.target, Path):
            self.target.parent.mkdir(parents=True, exist_ok=True)
            self._container = av.open(str(self.target), mode="w")
        else:
            self._container = av.open(self.target, mode="w", format=self.container_format)
        return self

    def __enter__(self) -> VideoWriter:
        return self.open()

    def write(self, frames: np.ndarray) -> None:
        """Append uint8 (T, H, W, 3) frames; every call must have the first call's H and W."""
        frames = check_frames(frames, str(self.path))
        if self._container is None:
            raise RuntimeError(f"{self.path}: write() outside a 'with VideoWriter(...)' block")
        if self._stream is None:
            self._open_stream(frames.shape[1], frames.shape[2])
        if frames.shape[1:3] != self._size:
            raise ValueError(f"{self.path}: frames of {frames.shape[1:3]} after frames of "
                             f"{self._size}; a video has one size")
        from av import VideoFrame

        for image in frames:
            packets = self._stream.encode(VideoFrame.from_ndarray(image, format="rgb24"))
            self._container.mux(packets)
        self.frames_written += len(frames)

    def _open_stream(self, height: int, width: int) -> None:
        if height % 2 or width % 2:
            raise ValueError(f"{self.path}: yuv420p video needs an even height and width, got "
                             f"{(height, width)}")
        stream = self._container.add_stream(self.codec, rate=round(self.fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if self.codec == "libx264":
            stream.options = {"crf": str(self.crf)}
        else:
            stream.bit_rate = self.bit_rate
        self._stream, self._size = stream, (height, width)

    def close(self) -> None:
        """Flush the encoder and close the file; a second call does nothing."""
        if self._container is None:
            return
        try:
            if self._stream is not None:
                self._container.mux(self._stream.encode())  # flush the encoder
        finally:
            self._container.close()
            self._container = None

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def write_video(frames: np.ndarray, path: str | Path, fps: float = 10.0,
                codec: str | None = None, **options: Any) -> Path:
    """Write uint8 (T, H, W, 3) ``frames`` to the video file ``path`` (container from the suffix;
    ``codec`` and ``options`` as ``VideoWriter``). Returns ``path``."""
    with VideoWriter(path, fps, codec, **options) as video:
        video.write(frames)
    return Path(path)


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
