"""Clips from corpora that do not fit in memory: a sharded, resumable, bounded-memory stream.

Dimension keys: T frames of a clip, S the model's image size, B clips in a batch.

``ClipStream`` reads episodes from a ``datasets.IterableDataset`` (a Hub stream, Parquet files
read with ``streaming=True``, or a local ``Dataset`` turned into one) and yields the same clip
dicts as ``ClipDataset``, so ``collate_clips`` batches them. What it holds at any moment is one
window of ``buffer_episodes`` episodes per DataLoader worker, never the corpus.

How the work is split, each epoch:

1. Ranks: ``datasets.distributed.split_dataset_by_node``. When the number of shards is a multiple
   of the world size, each rank reads its own shards ("shards" path); otherwise every rank reads
   every shard and keeps one row in ``world_size`` ("examples" path: exactly-once still holds,
   but every rank pays the reading of the whole corpus, so ``as_episode_stream`` picks a shard
   count that divides the world where it chooses the shards).
2. DataLoader workers: ``datasets`` gives each worker of a rank every ``num_workers``-th shard
   of that rank. Every rank must use the same ``num_workers``.
3. Shuffling, at two levels that need no per-row buffer: the shard order is permuted each epoch
   (``datasets`` ``set_epoch``, seeded here by ``seed`` and the epoch, identically on every rank,
   so the split stays a partition), and the clips of each window of ``buffer_episodes``
   consecutive episodes are shuffled together (seeded by seed, epoch, rank, worker and window).

Resume: a worker's position is the ``datasets`` state at the start of its current window, the
window's number and the clips already yielded from it. Because the window's shuffle is a pure
function of those, a resumed run re-reads at most one window and yields exactly the clips the
interrupted run had not yet yielded. ``datasets``' own shuffle buffer is not used: its contents
are lost on resume. ``StreamingLoader`` collects the positions of every worker from the batches
it hands out, so its ``state_dict`` is exact with ``num_workers > 0`` too.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from datasets.distributed import split_dataset_by_node

from groundlam.data.episodes import clip_actions, collate_clips, load_episodes
from groundlam.data.sources import BadDataError, detect_source, episode_files
from groundlam.data.synthetic import SyntheticConfig
from groundlam.data.video_io import episode_frames
from groundlam.video import resize_video

__all__ = ["ClipStream", "StreamingLoader", "as_episode_stream", "open_episode_stream",
           "parquet_files", "arrow_row_to_episode", "stable_episode_number"]

logger = logging.getLogger(__name__)

POSITION_KEY = "stream_position"  # per-item key with the worker's resume position
_EPOCH_STRIDE = 1_000_003  # datasets' shard-order seed is seed * stride + epoch + 1


def as_episode_stream(episodes: str | datasets.Dataset | datasets.IterableDataset,
                      num_shards: int = 64, world_size: int = 1) -> datasets.IterableDataset:
    """Episodes as a ``datasets.IterableDataset`` with enough shards to split and shuffle.

    ``episodes``: an ``IterableDataset`` (returned as is), a local ``Dataset`` (turned into one
    of ``num_shards`` shards, rounded down to a multiple of ``world_size``, at most one episode
    a shard), or a string naming Parquet files (a file, a glob, or a folder of ``*.parquet``),
    read with ``streaming=True`` and resharded by row group, so nothing is converted or cached.
    """
    if isinstance(episodes, datasets.IterableDataset):
        return episodes
    if isinstance(episodes, datasets.Dataset):
        if len(episodes) == 0:
            raise ValueError("as_episode_stream: the dataset has no episodes")
        shards = min(num_shards, len(episodes))
        if shards >= world_size:
            shards -= shards % world_size  # the "shards" split path: no rank reads another's rows
        return episodes.to_iterable_dataset(num_shards=max(shards, 1))
    if not isinstance(episodes, str):
        raise TypeError(f"as_episode_stream: expected a path, Dataset or IterableDataset, got "
                        f"{type(episodes).__name__}")
    files = parquet_files(episodes)
    if not files:
        raise FileNotFoundError(f"as_episode_stream: no Parquet files at {episodes!r} (a .parquet "
                                "file, a glob, or a folder of them)")
    stream = datasets.load_dataset("parquet", data_files=files, split="train", streaming=True)
    return stream.reshard()  # one shard per row group where the files allow it


def parquet_files(spec: str) -> list[str]:
    """The Parquet episode files ``spec`` names (``episode_files``), or [] for a LeRobot folder,
    whose Parquet files hold frames' rows, not episodes."""
    if Path(spec).is_dir() and (Path(spec) / "meta" / "info.json").is_file():
        return []
    return episode_files(spec, "parquet")


def open_episode_stream(spec: str, synthetic: SyntheticConfig | None = None,
                        world_size: int = 1, *, camera: str | None = None, split: str = "train",
                        strict: bool = False) -> datasets.IterableDataset:
    """``spec`` (any source ``load_episodes`` accepts) as a stream, by its ``detect_source`` kind.

    ``parquet``: the files are read in place (``streaming=True``, sharded by row group: nothing is
    converted or cached). ``hub``: streamed from the Hub by ``load_episodes``. Every other kind
    (``synthetic``, ``save_to_disk``, ``arrow``, ``video_folder``, ``lerobot``) is loaded
    map-style by ``load_episodes`` (video sources hold paths, not frames, so this stays small)
    and turned into shards by ``as_episode_stream``. ``camera``, ``split`` and ``strict`` go to
    ``load_episodes``.
    """
    kind = detect_source(spec)
    if kind == "parquet":
        return as_episode_stream(spec, world_size=world_size)
    episodes = load_episodes(spec, synthetic, camera=camera, split=split, strict=strict,
                             kind=kind)
    return as_episode_stream(episodes, world_size=world_size)


def _nested_to_numpy(column: pa.ChunkedArray | pa.Array, name: str) -> np.ndarray:
    """The single row of a nested-list Arrow column as an ndarray, without a Python-level copy."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if isinstance(array, pa.ExtensionArray):  # datasets' Array2D..Array5D wrap nested lists
        array = array.storage
    shape = []  # the first level is the row itself: its one length is T
    while (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)
           or pa.types.is_fixed_size_list(array.type)):
        low, high = (v.as_py() for v in pc.min_max(pc.list_value_length(array)).values())
        if low != high:
            raise ValueError(f"{name}: ragged nested lists (lengths {low} to {high}), expected "
                             "a regular array")
        shape.append(low or 0)
        array = array.flatten()
    return array.to_numpy(zero_copy_only=False).reshape(shape)


def arrow_row_to_episode(table: pa.Table, name: str = "episode") -> dict[str, Any]:
    """One-row Arrow table -> episode dict: ``frames`` as a uint8 ndarray (T, H, W, 3), ``video``
    as bytes (or ``{"bytes", "path"}``), ``actions`` as an ndarray, other columns as Python."""
    if table.num_rows != 1:
        raise ValueError(f"{name}: expected one row, got {table.num_rows}")
    row: dict[str, Any] = {}
    for column_name in table.column_names:
        column = table.column(column_name)
        if column.null_count:
            row[column_name] = None
        elif column_name == "frames":
            frames = _nested_to_numpy(column, name)
            if frames.dtype != np.uint8:
                if not np.issubdtype(frames.dtype, np.integer) or frames.size and (
                        frames.min() < 0 or frames.max() > 255):
                    raise ValueError(f"{name}: frames must be uint8 (T, H, W, 3), got "
                                     f"{frames.dtype} values")
                frames = frames.astype(np.uint8)
            row[column_name] = frames
        elif column_name == "actions":
            row[column_name] = _nested_to_numpy(column, name)
        else:
            row[column_name] = column[0].as_py()
    return row


def stable_episode_number(episode_id: str) -> int:
    """A non-negative 63-bit integer for ``episode_id``, the same in every process and run."""
    digest = hashlib.blake2b(episode_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class ClipStream(torch.utils.data.IterableDataset):
    """Clips of ``clip_length`` frames (every ``frame_stride``-th frame) resized to ``image_size``,
    streamed from ``episodes`` for one rank of ``world_size``.

    Items are the dicts ``ClipDataset`` yields: ``frames`` uint8 (T, S, S, 3), ``label``,
    ``episode`` (``stable_episode_number`` of ``episode_id``), ``start``, ``actions`` (int64
    (T-1,) discrete or float32 (T-1, A) continuous) where the episode has them and
    ``frame_stride`` is 1; plus ``episode_id`` (the row's, or ``"<name>/r<rank>w<worker>/<n>"``
    where it has none) and ``stream_position`` (what ``StreamingLoader`` needs to resume;
    ``collate_clips`` ignores both). Each episode is cut into non-overlapping clips from its first
    frame; an episode shorter than one clip is skipped and counted (``skipped`` of
    ``state_dict()``).

    ``buffer_episodes``: episodes whose clips are shuffled together (the memory bound: one such
    window per worker). ``shuffle=False`` keeps shard and clip order (for evaluation).
    """

    def __init__(self, episodes: datasets.IterableDataset, clip_length: int, image_size: int,
                 frame_stride: int = 1, *, rank: int = 0, world_size: int = 1, seed: int = 0,
                 shuffle: bool = True, buffer_episodes: int = 16, name: str = "episodes",
                 strict: bool = False) -> None:
        if not isinstance(episodes, datasets.IterableDataset):
            raise TypeError(f"{name}: ClipStream needs a datasets.IterableDataset, got "
                            f"{type(episodes).__name__}; convert with as_episode_stream()")
        if clip_length < 2:
            raise ValueError(f"clip_length={clip_length}: a clip needs at least 2 frames")
        if frame_stride < 1 or buffer_episodes < 1:
            raise ValueError(f"{name}: frame_stride ({frame_stride}) and buffer_episodes "
                             f"({buffer_episodes}) must be >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"{name}: rank {rank} is not in a world of {world_size}")
        columns = episodes.column_names
        if columns is not None and ("label" not in columns or
                                    not {"frames", "video"} & set(columns)):
            raise ValueError(f"{name}: episodes need a 'label' and 'frames' or 'video' column, "
                             f"got {columns}")
        self.clip_length, self.image_size, self.frame_stride = clip_length, image_size, frame_stride
        self.rank, self.world_size, self.seed, self.shuffle = rank, world_size, seed, shuffle
        self.buffer_episodes, self.name, self.strict = buffer_episodes, name, strict
        self.span = (clip_length - 1) * frame_stride + 1
        self.num_shards = episodes.num_shards
        self.split = "shards" if self.num_shards % world_size == 0 else "examples"
        if self.split == "examples" and rank == 0:
            logger.warning("%s: %d shards do not divide among %d ranks: every rank reads every "
                           "shard and keeps 1 row in %d", name, self.num_shards, world_size,
                           world_size)
        self.episodes = split_dataset_by_node(episodes.with_format("arrow"), rank=rank,
                                              world_size=world_size)
        self.epoch = 0
        self._resume: dict[str, Any] | None = None
        self._positions: dict[int, dict[str, Any]] = {}  # live only with num_workers=0
        self.set_epoch(0)

    # -------------------------------------------------------------------- epochs and state
    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch``: a new shard order and new window shuffles (call before iterating)."""
        if self._resume is not None and self._resume["epoch"] == epoch:
            return  # a loaded state continues this very epoch: keep it
        self._resume = None
        self.epoch = epoch
        self.episodes.set_epoch(self.seed * _EPOCH_STRIDE + epoch + 1 if self.shuffle else 0)
        self._positions = {}

    def state_dict(self) -> dict[str, Any]:
        """Where this rank's stream stands, after the last clip it yielded (``num_workers=0``;
        with workers use ``StreamingLoader.state_dict``)."""
        return self._make_state(self._positions, 1)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``: the next iteration yields exactly the clips not yet yielded
        in ``state["epoch"]``. The rank, world size, worker count and every setting that decides
        what a window holds (shards, seed, shuffle, clip span, buffer) must match."""
        for key, mine in self._layout().items():
            if state.get(key) != mine:
                raise ValueError(f"{self.name}: cannot resume a stream saved with {key}="
                                 f"{state.get(key)} in one with {key}={mine}")
        self._resume = None
        self.set_epoch(state["epoch"])
        self._resume = state
        self._positions = {int(w): p for w, p in state["workers"].items()}

    def _layout(self) -> dict[str, Any]:
        return {"rank": self.rank, "world_size": self.world_size, "num_shards": self.num_shards,
                "seed": self.seed, "shuffle": self.shuffle, "clip_length": self.clip_length,
                "frame_stride": self.frame_stride, "buffer_episodes": self.buffer_episodes}

    def _make_state(self, positions: dict[int, dict[str, Any]], num_workers: int
                    ) -> dict[str, Any]:
        return {"epoch": self.epoch, **self._layout(), "num_workers": num_workers,
                "workers": {str(w): p for w, p in sorted(positions.items())},
                "skipped": sum(p["skipped"] for p in positions.values()),
                "episodes": sum(p["episodes"] for p in positions.values())}

    # -------------------------------------------------------------------- iteration
    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (0, 1) if info is None else (info.id, info.num_workers)
        resume, self._resume = self._resume, None  # one resume, then normal epochs
        position = None
        if resume is not None:
            if resume["num_workers"] != num_workers:
                raise ValueError(f"{self.name}: the saved stream ran {resume['num_workers']} "
                                 f"DataLoader workers, this one {num_workers}; use the same "
                                 "data.num_workers to resume mid-epoch")
            position = resume["workers"].get(str(worker))
        yield from self._iter_worker(worker, position)

    def _window_rng(self, worker: int, window: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, self.rank, worker, window])

    def _iter_worker(self, worker: int, position: dict[str, Any] | None
                     ) -> Iterator[dict[str, Any]]:
        episodes = self.episodes
        if position is not None and position["done"]:
            return
        if position is not None:  # re-read the window it stopped in, skip what it yielded
            episodes.load_state_dict(position["rows"])
            start_state, window, skip = position["rows"], position["window"], position["yielded"]
            read, skipped = position["read_before"], position["skipped_before"]
        else:  # a state loaded for an earlier run must not linger into this one
            episodes.load_state_dict(None)
            start_state, window, skip, read, skipped = None, 0, 0, 0, 0
        rows = iter(episodes)
        while True:
            clips: list[tuple[dict[str, Any], int]] = []
            window_rows, window_skipped = 0, 0
            for table in rows:
                episode_id = f"{self.name}/r{self.rank}w{worker}/{read + window_rows}"
                window_rows += 1
                try:
                    episode = self._read_episode(table, episode_id)
                except ValueError as error:  # BadDataError, VideoDecodeError included
                    if self.strict:
                        raise BadDataError(str(error)) from None
                    logger.warning("%s: skipped a bad episode: %s", self.name, error)
                    episode = None
                starts = (range(0, len(episode["frames"]) - self.span + 1, self.span)
                          if episode is not None else range(0))
                window_skipped += not starts
                clips.extend((episode, start) for start in starts)
                if window_rows == self.buffer_episodes:
                    break
            if not window_rows:
                break
            order = (self._window_rng(worker, window).permutation(len(clips)) if self.shuffle
                     else np.arange(len(clips)))
            for yielded, index in enumerate(order[skip:], start=skip + 1):
                episode, start = clips[index]
                item = self._make_item(episode, start)
                item[POSITION_KEY] = self._positions[worker] = {
                    "worker": worker, "rows": start_state, "window": window, "yielded": yielded,
                    "read_before": read, "skipped_before": skipped,
                    "episodes": read + window_rows, "skipped": skipped + window_skipped,
                    "done": False}
                yield item
            read, skipped = read + window_rows, skipped + window_skipped
            window, skip = window + 1, 0
            start_state = episodes.state_dict()  # live now: after the last row of the window
        self._positions[worker] = {"worker": worker, "rows": None, "window": window,
                                   "yielded": 0, "read_before": read, "skipped_before": skipped,
                                   "episodes": read, "skipped": skipped, "done": True}
        if skipped:
            logger.warning("%s (rank %d, worker %d): skipped %d of %d episodes (bad, or shorter "
                           "than one clip of %d frames)", self.name, self.rank, worker, skipped,
                           read, self.span)

    def _read_episode(self, table: Any, episode_id: str) -> dict[str, Any]:
        """Decode and check one row; ``ValueError`` naming the episode and the reason if bad."""
        episode = arrow_row_to_episode(table, f"{self.name} {episode_id}")
        episode_id = str(episode.get("episode_id") or episode_id)
        if not str(episode.get("label") or "").strip():
            raise ValueError(f"{self.name} {episode_id}: empty label")
        frames = episode_frames(episode, name=f"{self.name} {episode_id}")
        if len(frames) and (frames.ndim != 4 or frames.shape[-1] != 3):
            raise ValueError(f"{self.name} {episode_id}: frames must be uint8 "
                             f"(T, H, W, 3), got shape {frames.shape}")
        actions = episode.get("actions")
        if actions is not None and len(actions) != max(len(frames) - 1, 0):
            raise ValueError(f"{self.name} {episode_id}: {len(actions)} actions for "
                             f"{len(frames)} frames; expected one per transition")
        episode.update(frames=frames, episode_id=episode_id)
        return episode

    def _make_item(self, episode: dict[str, Any], start: int) -> dict[str, Any]:
        stop = start + self.span
        frames = torch.from_numpy(np.array(episode["frames"][start:stop:self.frame_stride]))
        item = {"frames": resize_video(frames, self.image_size), "label": episode["label"],
                "episode": stable_episode_number(episode["episode_id"]),
                "episode_id": episode["episode_id"], "start": start}
        actions = episode.get("actions")
        if actions is not None and self.frame_stride == 1:
            item["actions"] = clip_actions(actions, start, self.span)
        return item


class StreamingLoader:
    """Batches of a ``ClipStream`` through a ``DataLoader``, with an exact ``state_dict``.

    Each worker's batches carry its position; the loader keeps the position of the last batch it
    handed out from each worker, so a checkpoint taken between two batches resumes after exactly
    the clips already consumed (prefetched batches are not counted). Batches are
    ``collate_clips`` dicts. The last batch of each worker in an epoch may be short.
    """

    def __init__(self, stream: ClipStream, batch_size: int, num_workers: int = 0,
                 **loader_kwargs: Any) -> None:
        self.stream, self.num_workers = stream, num_workers
        self.loader = torch.utils.data.DataLoader(
            stream, batch_size=batch_size, num_workers=num_workers,
            collate_fn=_collate_with_position, persistent_workers=False, **loader_kwargs)
        self._positions: dict[int, dict[str, Any]] = {}

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch``; a no-op for the epoch a loaded state is about to continue."""
        resuming = self.stream._resume is not None  # noqa: SLF001
        self.stream.set_epoch(epoch)
        if not (resuming and self.stream._resume is not None):  # noqa: SLF001
            self._positions = {}

    def state_dict(self) -> dict[str, Any]:
        return self.stream._make_state(self._positions, max(self.num_workers, 1))  # noqa: SLF001

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state)
        self._positions = {int(w): p for w, p in state["workers"].items()}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        resuming = self.stream._resume is not None  # noqa: SLF001
        iterator = iter(self.loader)  # workers (if any) start here with a copy of the stream
        if resuming and self.num_workers:
            self.stream._resume = None  # noqa: SLF001 (the workers have it)
        for batch in iterator:
            position = batch.pop(POSITION_KEY)
            self._positions[position["worker"]] = position
            yield batch
        # every worker is exhausted: mark them done, so a state saved now resumes to nothing
        for worker in range(max(self.num_workers, 1)):
            done = self._positions.get(worker, {"skipped": 0, "episodes": 0})
            self._positions[worker] = {**done, "worker": worker, "rows": None, "done": True}


def _collate_with_position(items: list[dict[str, Any]]) -> dict[str, Any]:
    batch = collate_clips(items)
    batch["episode_ids"] = [item["episode_id"] for item in items]
    batch[POSITION_KEY] = items[-1][POSITION_KEY]  # a batch comes from one worker
    return batch
