"""Episodes in, training clips out.

Dimension keys: T frames of a clip, H/W pixels, B clips in a batch.

An episode is one row of a Hugging Face ``datasets.Dataset`` with ``frames`` (uint8 (T, H, W, 3))
and ``label`` (str); see ``data_cards/README.md`` for the whole schema. ``load_episodes`` finds
and checks such a dataset; ``ClipDataset`` cuts its episodes into clips of ``clip_length`` frames
at the model's resolution; ``collate_clips`` batches them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import datasets
import numpy as np
import pyarrow.compute as pc
import torch

from groundlam.data.sources import (
    BadDataError,
    SkipReport,
    open_source,
    probe_video,
    read_frames,
)
from groundlam.data.synthetic import SyntheticConfig
from groundlam.data.video_io import VideoDecodeError
from groundlam.video import resize_video

__all__ = ["REQUIRED_COLUMNS", "load_episodes", "held_out_synthetic", "read_episode",
           "episode_lengths",
           "ClipSampler", "ClipDataset", "collate_clips", "BadDataError", "SkipReport"]

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("frames", "label")


def held_out_synthetic(config: SyntheticConfig, num_episodes: int) -> SyntheticConfig:
    """The synthetic config of held-out episodes: another seed, so no episode is shared."""
    return replace(config, seed=config.seed + 1_000_003, num_episodes=num_episodes)


def load_episodes(spec: str, synthetic: SyntheticConfig | None = None,
                  variant: str = "distracted", *, camera: str | None = None, split: str = "train",
                  strict: bool = False, report: SkipReport | None = None,
                  kind: str | None = None) -> datasets.Dataset | datasets.IterableDataset:
    """Load episodes from ``spec`` and check the schema.

    ``spec``: ``"synthetic"`` (generated from ``synthetic``; ``variant`` "clean" or
    "distracted"), a folder written by ``Dataset.save_to_disk``, Parquet or Arrow files (a path, a
    glob, or a folder), a video folder (videos + ``metadata.csv`` / ``metadata.jsonl``), a LeRobot
    dataset folder (v2.x or v3.0; ``camera`` picks the video key), or a Hub dataset id
    ``org/name`` (streamed: an ``IterableDataset``). See ``groundlam.data.sources``; ``kind``
    skips detecting what the caller has detected already.

    Rows hold ``frames`` uint8 (T, H, W, 3) or encoded ``video`` (decoded on access by
    ``ClipDataset``), and ``label``. Unreadable files and rows are skipped, counted in ``report``
    and logged; with ``strict`` the first one raises ``BadDataError``. A source without a
    ``label`` column, or with neither ``frames`` nor ``video``, is an error naming the column.
    """
    report = report if report is not None else SkipReport(spec)
    dataset = open_source(spec, kind=kind, synthetic=synthetic, variant=variant, camera=camera,
                          split=split, strict=strict, report=report)
    if len(report):
        logger.warning("%s", report.summary())
    columns = dataset.column_names
    if columns is None:  # a stream whose features are unknown until read: checked per row
        return dataset
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if "frames" in missing and "video" in columns:
        missing.remove("frames")
    if missing:
        raise ValueError(f"dataset {spec} has no column {missing[0]!r} (columns: "
                         f"{columns}); every episode needs 'label' and 'frames' (or 'video')")
    return dataset


def read_episode(episodes: datasets.Dataset, index: int, count: int | None = None) -> np.ndarray:
    """The first ``count`` frames (all by default) of episode ``index``: uint8 (T, H, W, 3).

    Works on ``frames`` and on encoded ``video`` rows (decoding only the frames asked for).
    """
    if "frames" in episodes.column_names:
        view = episodes.with_format("numpy", columns=["frames"], dtype=np.uint8)
        return view[index]["frames"][:count]
    row = episodes.select_columns([c for c in ("video", "video_start", "fps")
                                   if c in episodes.column_names])[index]
    return read_frames(row["video"], 0, count, fps=row.get("fps"),
                       video_start=row.get("video_start") or 0.0, name=f"episode {index}")


def episode_lengths(dataset: datasets.Dataset) -> np.ndarray:
    """Frames of every episode, read from the Arrow offsets without decoding any frame."""
    if dataset._indices is None:  # noqa: SLF001 (no public way to ask "is this a view?")
        column = dataset.data.column("frames").combine_chunks()
        storage = getattr(column, "storage", column)  # Array4D is an extension over lists
        return pc.list_value_length(storage).to_numpy(zero_copy_only=False).astype(np.int64)
    return np.array([len(row) for row in dataset["frames"]], dtype=np.int64)


@dataclass(frozen=True)
class ClipSampler:
    """How clips are cut from an episode; every choice is a pure function of (episode, start, seed).

    An episode of ``num_frames`` frames is cut into non-overlapping clips of ``clip_length``
    frames taken every ``stride`` frames, from frame 0. The stride is ``frame_stride``, or, with
    ``target_fps`` and an episode whose fps is known, ``round(fps / target_fps)`` (at least 1).
    Frames are resized to ``image_size`` (``resize_video``: shorter side scaled, centre crop);
    ``crop="random"`` first crops a square of ``crop_scale`` times the shorter side at a place
    drawn from ``seed``, the episode and the clip's start, so the same clip is always the same.
    """

    clip_length: int
    image_size: int
    frame_stride: int = 1  # take every n-th frame (without target_fps or an episode fps)
    target_fps: float | None = None  # resample to this rate where the episode has an fps
    crop: str = "center"  # "center" | "random"
    crop_scale: float = 1.0  # random crop: square side / shorter side, in (0, 1]
    seed: int = 0

    def __post_init__(self) -> None:
        if self.clip_length < 2:
            raise ValueError(f"clip_length={self.clip_length}: a clip needs at least 2 frames")
        if self.frame_stride < 1:
            raise ValueError(f"frame_stride={self.frame_stride}: must be at least 1")
        if self.target_fps is not None and self.target_fps <= 0:
            raise ValueError(f"target_fps={self.target_fps}: must be positive")
        if self.crop not in ("center", "random"):
            raise ValueError(f"crop={self.crop!r} is not 'center' or 'random'")
        if not 0 < self.crop_scale <= 1:
            raise ValueError(f"crop_scale={self.crop_scale}: must be in (0, 1]")

    def stride(self, fps: float | None) -> int:
        if self.target_fps is None or not fps:
            return self.frame_stride
        return max(1, round(fps / self.target_fps))

    def span(self, fps: float | None) -> int:
        """Frames of the episode one clip covers."""
        return (self.clip_length - 1) * self.stride(fps) + 1

    def starts(self, num_frames: int, fps: float | None) -> list[int]:
        span = self.span(fps)
        return list(range(0, num_frames - span + 1, span))

    def transform(self, frames: np.ndarray, episode: int, start: int) -> torch.Tensor:
        """uint8 (T, H, W, 3) -> uint8 (T, S, S, 3) at ``image_size``."""
        video = torch.from_numpy(np.ascontiguousarray(frames))
        if self.crop == "random":
            height, width = video.shape[1:3]
            side = max(1, round(min(height, width) * self.crop_scale))
            rng = np.random.default_rng([self.seed, episode, start])
            top = int(rng.integers(0, height - side + 1))
            left = int(rng.integers(0, width - side + 1))
            video = video[:, top:top + side, left:left + side]
        return resize_video(video, self.image_size)


class _BadEpisode(Exception):
    """An episode found unusable while reading a clip; ``ClipDataset`` skips or raises."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind, self.reason = kind, reason


def _leaf_dtype(feature: Any) -> str | None:
    """The element dtype of a (nested) ``datasets`` feature: Array4D, List(List(...)), Value."""
    while feature is not None:
        if hasattr(feature, "dtype"):
            return str(feature.dtype)
        feature = getattr(feature, "feature", None)
    return None


class ClipDataset(torch.utils.data.Dataset):
    """Clips of ``clip_length`` frames (every ``frame_stride``-th frame), resized to ``image_size``.

    Episodes hold ``frames`` (uint8 (T, H, W, 3)) or encoded ``video`` (bytes or a path, with
    optional ``video_start``, ``num_frames``, ``fps``); both give the same clips. Video rows are
    decoded on access, only the frames of the clip asked for; their lengths come from
    ``num_frames`` or the container's header, never from decoding every frame. ``ClipSampler``
    cuts the clips (by default non-overlapping from frame 0; see its options, which the keyword
    arguments set). Items are dicts with ``frames`` uint8 (T, S, S, 3), ``label``, ``episode``
    (row index), ``start``, ``skipped`` (see below) and, where the episode has ``actions`` and
    the stride is 1, ``actions``: int64 (T-1,) discrete or float32 (T-1, A) continuous.

    Bad data. Found when the dataset is built (an empty label, an episode shorter than one clip,
    a video whose header cannot be read): the episode is left out and recorded in ``report``
    (``skipped`` counts it). Found when a clip is read (a video that does not decode, decodes
    short, or frames of the wrong shape): the episode is marked bad and the item is the next good
    clip in order, *with that clip's own label*, never the bad episode's; the item's ``skipped``
    lists what was passed over, so a trainer can count it across DataLoader workers. With
    ``strict`` every case raises ``BadDataError`` naming the episode (row, file) and the reason.
    """

    max_substitutes = 16  # bad clips in a row passed over before __getitem__ gives up

    def __init__(self, episodes: datasets.Dataset, clip_length: int, image_size: int,
                 frame_stride: int = 1, name: str = "episodes", *, target_fps: float | None = None,
                 crop: str = "center", crop_scale: float = 1.0, seed: int = 0,
                 strict: bool = False, report: SkipReport | None = None) -> None:
        if not isinstance(episodes, datasets.Dataset):
            raise TypeError(f"{name}: ClipDataset needs a map-style datasets.Dataset, got "
                            f"{type(episodes).__name__}; stream an IterableDataset instead")
        self.sampler = ClipSampler(clip_length, image_size, frame_stride, target_fps, crop,
                                   crop_scale, seed)
        self.clip_length, self.image_size, self.frame_stride = clip_length, image_size, frame_stride
        self.name, self.strict = name, strict
        self.report = report if report is not None else SkipReport(name)
        columns = episodes.column_names
        self.episode_ids = episodes["episode_id"] if "episode_id" in columns else None
        if "frames" in columns:
            dtype = _leaf_dtype(episodes.features["frames"])
            if dtype is not None and not (dtype.startswith("uint") or dtype.startswith("int")):
                raise ValueError(f"{name}: 'frames' are {dtype}; expected uint8 (T, H, W, 3)")
            # dtype=uint8 applies to every column it formats: keep it to frames (offsets or float
            # actions would wrap), or datasets hands frames back as int64. Other integer frames
            # are read as they are and range-checked per episode.
            self.frames = episodes.with_format("numpy", columns=["frames"],
                                               dtype=np.uint8 if dtype == "uint8" else None)
            self.videos = None
        elif "video" in columns:
            self.frames = None
            self.videos = episodes.select_columns(
                [c for c in ("video", "video_start") if c in columns])
        else:
            raise ValueError(f"{name}: no column 'frames' or 'video' (columns: {columns})")
        if "label" not in columns:
            raise ValueError(f"{name}: no column 'label' (columns: {columns})")
        self.labels = episodes["label"]
        self.fps = episodes["fps"] if "fps" in columns else [None] * len(episodes)
        self.actions = (episodes.with_format("numpy", columns=["actions"])
                        if "actions" in columns else None)
        self._bad_rows: set[int] = set()
        # column -> (row, its value): the last episode read, since consecutive clips mostly share
        # one (an evaluation reads 256 clips of 64 episodes in order)
        self._last_read: dict[str, tuple[int, np.ndarray]] = {}

        lengths = self._lengths(episodes)
        self.clips = []
        for row, length in enumerate(lengths):
            label = self.labels[row]
            if length is None:
                continue  # unreadable, already recorded
            if not isinstance(label, str) or not label.strip():
                self._skip(row, "label", f"empty label {label!r}")
            elif length < self.sampler.span(self.fps[row]):
                self._skip(row, "short", f"{length} frames, shorter than one clip "
                                         f"({self.sampler.span(self.fps[row])} frames)")
            else:
                self.clips += [(row, start) for start in self.sampler.starts(length, self.fps[row])]
        if len(self.report):
            logger.warning("%s", self.report.summary())
        if not self.clips:
            raise ValueError(f"{name}: no episode has the frames one clip needs "
                             f"({self.sampler.span(None)} at stride {frame_stride})\n"
                             f"{self.report.summary()}")

    @property
    def skipped(self) -> int:
        """How many things ``report`` holds (episodes left out, and bad episodes met so far)."""
        return len(self.report)

    def where(self, row: int) -> str:
        """How messages name an episode: its row, and its episode_id or video file."""
        detail = self.episode_ids[row] if self.episode_ids is not None else None
        if detail is None and self.videos is not None:
            video = self.videos[row]["video"]
            detail = video if isinstance(video, str) else None
        return f"row {row}" + (f" ({detail})" if detail else "")

    def _skip(self, row: int, kind: str, reason: str) -> None:
        if self.strict:
            raise BadDataError(f"{self.name}: {self.where(row)}: {reason}")
        self.report.add(self.where(row), kind, reason)

    def _lengths(self, episodes: datasets.Dataset) -> list[int | None]:
        if self.frames is not None:
            return [int(n) for n in episode_lengths(episodes)]
        if "num_frames" in episodes.column_names:
            return [int(n) if n is not None else None for n in episodes["num_frames"]]
        lengths: list[int | None] = []
        for row in range(len(episodes)):  # read each container's header, decode nothing
            try:
                lengths.append(probe_video(self.videos[row]["video"], name="video")[0])
            except VideoDecodeError as error:
                self._skip(row, "unreadable", str(error))
                lengths.append(None)
        return lengths

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, Any]:
        passed_over: list[str] = []
        for offset in range(min(len(self.clips), self.max_substitutes + 1)):
            row, start = self.clips[(index + offset) % len(self.clips)]
            if row in self._bad_rows:
                continue
            try:
                item = self._clip(row, start)
            except _BadEpisode as bad:
                where = f"{self.where(row)} clip at frame {start}"
                if self.strict:
                    raise BadDataError(f"{self.name}: {where}: {bad.reason}") from None
                self._bad_rows.add(row)
                self.report.add(where, bad.kind, bad.reason)
                logger.warning("%s: skipped %s: %s", self.name, where, bad.reason)
                passed_over.append(f"{where}: {bad.reason}")
                continue
            item["skipped"] = passed_over
            return item
        raise BadDataError(f"{self.name}: clip {index} and the clips after it are all bad\n"
                           f"{self.report.summary()}")

    def _read(self, row: int, start: int, stride: int, span: int) -> np.ndarray:
        """The clip's frames as uint8 (T, H, W, 3), before resizing; ``_BadEpisode`` if unusable."""
        if self.frames is not None:
            frames = self._episode_column(self.frames, "frames", row)
            if frames.ndim != 4 or frames.shape[-1] != 3:
                raise _BadEpisode("shape", f"frames have shape {frames.shape}, expected "
                                           "(T, H, W, 3)")
            frames = frames[start:start + span:stride].copy()  # not a view of the kept episode
        else:
            video = self.videos[row]
            try:
                frames = read_frames(video["video"], start, span, fps=self.fps[row],
                                     video_start=video.get("video_start") or 0.0,
                                     name="video")[::stride]
            except VideoDecodeError as error:
                raise _BadEpisode("unreadable", str(error)) from None
        if frames.dtype != np.uint8:
            if frames.dtype.kind not in "iu" or frames.min() < 0 or frames.max() > 255:
                raise _BadEpisode("shape", f"frames are {frames.dtype} outside 0..255")
            frames = frames.astype(np.uint8)
        if len(frames) < self.clip_length:
            raise _BadEpisode("short", f"{len(frames)} frames from frame {start}, a clip needs "
                                       f"{self.clip_length} (the video ends early)")
        return frames

    def _episode_column(self, view: datasets.Dataset, column: str, row: int) -> np.ndarray:
        """``view[row][column]`` as an array, read once for consecutive clips of one episode."""
        last = self._last_read.get(column)
        if last is None or last[0] != row:
            last = self._last_read[column] = (row, np.asarray(view[row][column]))
        return last[1]

    def _clip(self, row: int, start: int) -> dict[str, Any]:
        fps = self.fps[row]
        stride, span = self.sampler.stride(fps), self.sampler.span(fps)
        frames = self._read(row, start, stride, span)
        item = {"frames": self.sampler.transform(frames, row, start), "label": self.labels[row],
                "episode": row, "start": start}
        if self.actions is not None and stride == 1:
            item["actions"] = clip_actions(self._episode_column(self.actions, "actions", row),
                                           start, span)
        return item


def clip_actions(actions: Any, start: int, span: int) -> torch.Tensor:
    """A clip's actions of an episode's: discrete ids -> int64 (T-1,), continuous vectors ->
    float32 (T-1, A)."""
    actions = np.asarray(actions)[start:start + span - 1]
    if actions.ndim == 1 and np.issubdtype(actions.dtype, np.integer):
        return torch.from_numpy(actions.astype(np.int64))
    if actions.ndim == 2 or (actions.ndim == 1 and actions.dtype == object):
        return torch.from_numpy(np.stack(list(actions)).astype(np.float32))
    raise ValueError(f"actions of dtype {actions.dtype} and shape {actions.shape} are neither "
                     "discrete ids (T-1,) nor continuous vectors (T-1, A)")


def collate_clips(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack clips: ``frames`` uint8 (B, T, H, W, 3), ``labels`` list[str], ``actions`` (B, T-1)
    or (B, T-1, A), ``skipped`` list[str]."""
    batch = {"frames": torch.stack([item["frames"] for item in items]),
             "labels": [item["label"] for item in items],
             "episodes": torch.tensor([item["episode"] for item in items])}
    if all("actions" in item for item in items):
        batch["actions"] = torch.stack([item["actions"] for item in items])
    # bad episodes passed over for these items (see ClipDataset), for the trainer to count
    batch["skipped"] = [entry for item in items for entry in item.get("skipped", ())]
    return batch
