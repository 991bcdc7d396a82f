"""Episodes in, training clips out.

Dimension keys: T frames of a clip, H/W pixels, B clips in a batch.

An episode is one row of a Hugging Face ``datasets.Dataset`` with ``frames`` (uint8 (T, H, W, 3))
and ``label`` (str); see ``data_cards/README.md`` for the whole schema. ``load_episodes`` finds
and checks such a dataset; ``ClipDataset`` cuts its episodes into clips of ``clip_length`` frames
at the model's resolution; ``collate_clips`` batches them.
"""

from __future__ import annotations

import glob
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow.compute as pc
import torch

from groundlam.data.synthetic import SyntheticConfig, generate_dataset
from groundlam.video import resize_video

__all__ = ["REQUIRED_COLUMNS", "load_episodes", "held_out_synthetic", "episode_lengths",
           "ClipDataset", "collate_clips"]

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("frames", "label")


def held_out_synthetic(config: SyntheticConfig, num_episodes: int) -> SyntheticConfig:
    """The synthetic config of held-out episodes: another seed, so no episode is shared."""
    return replace(config, seed=config.seed + 1_000_003, num_episodes=num_episodes)


def _open(spec: str, synthetic: SyntheticConfig | None, variant: str) -> datasets.Dataset:
    if spec == "synthetic":
        return generate_dataset(synthetic or SyntheticConfig(), variant=variant)
    path = Path(spec)
    if path.is_dir() and any((path / f).exists() for f in ("state.json", "dataset_dict.json")):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if "train" not in loaded:
                raise ValueError(f"dataset {spec} has splits {list(loaded)} and no 'train'")
            loaded = loaded["train"]
        return loaded
    if any(c in spec for c in "*?["):
        files = sorted(glob.glob(spec))
    elif path.is_dir():
        files = sorted(str(p) for p in path.rglob("*.parquet"))
    else:
        files = [spec] if path.is_file() else []
    if not files:
        raise FileNotFoundError(f"no episodes at {spec!r}: expected 'synthetic', a folder written "
                                "by save_to_disk, or Parquet files (a path, glob or folder)")
    return datasets.load_dataset("parquet", data_files=files, split="train")


def load_episodes(spec: str, synthetic: SyntheticConfig | None = None,
                  variant: str = "distracted") -> datasets.Dataset:
    """Load episodes from ``spec`` and check the schema.

    ``spec``: ``"synthetic"`` (generated from ``synthetic``; ``variant`` "clean" or
    "distracted"), a folder written by ``Dataset.save_to_disk``, or Parquet files (a path, a glob,
    or a folder of ``*.parquet``).
    """
    dataset = _open(spec, synthetic, variant)
    missing = [c for c in REQUIRED_COLUMNS if c not in dataset.column_names]
    if missing:
        raise ValueError(f"dataset {spec} has no column {missing[0]!r} (columns: "
                         f"{dataset.column_names}); every episode needs 'frames' and 'label'")
    return dataset


def episode_lengths(dataset: datasets.Dataset) -> np.ndarray:
    """Frames of every episode, read from the Arrow offsets without decoding any frame."""
    if dataset._indices is None:  # noqa: SLF001 (no public way to ask "is this a view?")
        column = dataset.data.column("frames").combine_chunks()
        storage = getattr(column, "storage", column)  # Array4D is an extension over lists
        return pc.list_value_length(storage).to_numpy(zero_copy_only=False).astype(np.int64)
    return np.array([len(row) for row in dataset["frames"]], dtype=np.int64)


class ClipDataset(torch.utils.data.Dataset):
    """Clips of ``clip_length`` frames (every ``frame_stride``-th frame), resized to ``image_size``.

    Each episode is cut into non-overlapping clips from its first frame; an episode shorter than
    one clip is skipped and counted in ``skipped``. Items are dicts with ``frames`` uint8
    (T, S, S, 3), ``label``, ``episode`` (row index), ``start`` and, where the episode has discrete
    ``actions`` and ``frame_stride`` is 1, ``actions`` int64 (T-1,).
    """

    def __init__(self, episodes: datasets.Dataset, clip_length: int, image_size: int,
                 frame_stride: int = 1, name: str = "episodes") -> None:
        if clip_length < 2:
            raise ValueError(f"clip_length={clip_length}: a clip needs at least 2 frames")
        self.clip_length, self.image_size, self.frame_stride = clip_length, image_size, frame_stride
        # dtype=uint8 applies to every column it formats: keep it to frames (offsets or float
        # actions would wrap), or datasets hands frames back as int64
        self.frames = episodes.with_format("numpy", columns=["frames"], dtype=np.uint8)
        self.labels = episodes["label"]
        self.actions = (episodes.with_format("numpy", columns=["actions"])
                        if "actions" in episodes.column_names and frame_stride == 1 else None)
        span = (clip_length - 1) * frame_stride + 1
        lengths = episode_lengths(episodes)
        self.skipped = int((lengths < span).sum())
        if self.skipped:
            logger.warning("%s: skipped %d of %d episodes shorter than one clip (%d frames)",
                           name, self.skipped, len(lengths), span)
        self.clips = [(row, start) for row, length in enumerate(lengths)
                      for start in range(0, int(length) - span + 1, span)]
        if not self.clips:
            raise ValueError(f"{name}: no episode has the {span} frames one clip needs")

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row, start = self.clips[index]
        stop = start + (self.clip_length - 1) * self.frame_stride + 1
        frames = self.frames[row]["frames"][start:stop:self.frame_stride]
        frames = torch.from_numpy(np.ascontiguousarray(frames))
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"episode {row}: frames must be uint8 (T, H, W, 3), got "
                             f"{frames.dtype} {tuple(frames.shape)}")
        item = {"frames": resize_video(frames, self.image_size), "label": self.labels[row],
                "episode": row, "start": start}
        if self.actions is not None:
            actions = np.asarray(self.actions[row]["actions"])
            if actions.ndim == 1:  # discrete; continuous actions are for the data issue's probes
                item["actions"] = torch.as_tensor(actions[start:stop - 1], dtype=torch.int64)
        return item


def collate_clips(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack clips: ``frames`` uint8 (B, T, H, W, 3), ``labels`` list[str], ``actions`` (B, T-1)."""
    batch = {"frames": torch.stack([item["frames"] for item in items]),
             "labels": [item["label"] for item in items],
             "episodes": torch.tensor([item["episode"] for item in items])}
    if all("actions" in item for item in items):
        batch["actions"] = torch.stack([item["actions"] for item in items])
    return batch
