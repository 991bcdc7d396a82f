"""Where episodes come from: every source kind ``load_episodes`` accepts, told apart by itself.

Dimension keys: T frames of an episode, H/W pixels, A action dimensions.

Kinds (``detect_source``):

- ``synthetic``: the built-in generator (``groundlam.data.synthetic``).
- ``save_to_disk``: a folder written by ``Dataset.save_to_disk`` (``state.json`` or
  ``dataset_dict.json`` inside).
- ``parquet`` / ``arrow``: files, a glob, or a folder of them.
- ``video_folder``: ``*.mp4`` / ``*.webm`` / ``*.avi`` files plus ``metadata.csv`` or
  ``metadata.jsonl`` with ``file_name``, ``label`` and optionally ``actions``.
- ``lerobot``: a LeRobot dataset folder (``meta/info.json``), codebase version v2.x (one Parquet
  and one mp4 per episode and camera) or v3.0 (episodes concatenated in shared files, located by
  ``meta/episodes``).
- ``hub``: a Hugging Face Hub dataset id ``org/name`` that is not a local path, streamed.

Video sources are not decoded at load time. Their rows hold ``video`` (a file path, or encoded
bytes) and, where known, ``video_start`` (seconds into the file where the episode begins: LeRobot
v3 concatenates episodes), ``num_frames`` and ``fps``. ``read_frames`` decodes the frames a clip
needs, on access.

Bad data (a corrupt or truncated file, an empty label, frames of the wrong shape, an episode too
short for a clip) is skipped and counted in a ``SkipReport`` with the file and the reason, or, in
strict mode, stops with a ``BadDataError`` naming them.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from groundlam.data.synthetic import SyntheticConfig, generate_dataset
from groundlam.data.video_io import VideoDecodeError, probe_video, read_frames

__all__ = ["SOURCE_KINDS", "SOURCES", "VIDEO_EXTENSIONS", "BadDataError", "Skip", "SkipReport",
           "detect_source", "episode_files", "is_hub_id", "open_source", "open_video_folder",
           "open_lerobot", "lerobot_cameras", "probe_video", "read_frames"]

logger = logging.getLogger(__name__)

SOURCE_KINDS = ("synthetic", "save_to_disk", "parquet", "arrow", "video_folder", "lerobot", "hub")
# what PyAV decodes and this project reads as video: video folders, `groundlam focus`
VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mov", ".mkv", ".gif")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hub_id(spec: str) -> bool:
    """Whether ``spec`` names a Hub repository (``org/name``) rather than a local path: it has
    that shape and nothing exists at that path."""
    return bool(_HUB_ID.match(spec)) and not Path(spec).exists()


class BadDataError(ValueError):
    """An episode or file that cannot be used; the message names the source, the place and why."""


@dataclass(frozen=True)
class Skip:
    """One skipped thing: ``where`` is a file, or ``row N (file)``; ``kind`` groups reasons."""

    where: str
    kind: str  # "unreadable", "label", "shape", "short", "missing"
    reason: str


class SkipReport:
    """What a source or a ``ClipDataset`` skipped, and why; ``summary()`` is what gets logged."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.entries: list[Skip] = []

    def add(self, where: str, kind: str, reason: str) -> None:
        self.entries.append(Skip(where, kind, reason))

    def __len__(self) -> int:
        return len(self.entries)

    def counts(self) -> dict[str, int]:
        """Skips by kind, e.g. ``{"short": 3, "unreadable": 1}``."""
        return dict(Counter(entry.kind for entry in self.entries))

    def summary(self, limit: int = 10) -> str:
        if not self.entries:
            return f"{self.name}: nothing skipped"
        counts = ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts().items()))
        lines = [f"{self.name}: skipped {len(self.entries)} ({counts})"]
        lines += [f"  {entry.where}: {entry.reason}" for entry in self.entries[:limit]]
        if len(self.entries) > limit:
            lines.append(f"  ... and {len(self.entries) - limit} more")
        return "\n".join(lines)


def _bad(strict: bool, report: SkipReport, where: str, kind: str, reason: str) -> None:
    """Stop (strict) or record a skip."""
    if strict:
        raise BadDataError(f"{report.name}: {where}: {reason}")
    report.add(where, kind, reason)


# ---------------------------------------------------------------------------------------------
# Detection


def detect_source(spec: str) -> str:
    """The kind of ``spec``, one of ``SOURCE_KINDS``; ``FileNotFoundError`` when it is none."""
    if spec == "synthetic":
        return "synthetic"
    path = Path(spec)
    if path.is_dir():
        if any((path / name).exists() for name in ("state.json", "dataset_dict.json")):
            return "save_to_disk"
        if (path / "meta" / "info.json").is_file():
            return "lerobot"
        if any((path / name).is_file() for name in ("metadata.csv", "metadata.jsonl")):
            return "video_folder"
        if next(path.rglob("*.parquet"), None) is not None:
            return "parquet"
        if next(path.rglob("*.arrow"), None) is not None:
            return "arrow"
    elif path.is_file() and path.suffix in (".parquet", ".arrow"):
        return path.suffix[1:]
    elif any(c in spec for c in "*?["):
        suffixes = {Path(f).suffix for f in glob.glob(spec)}
        if suffixes == {".parquet"} or suffixes == {".arrow"}:
            return suffixes.pop()[1:]
        if suffixes:
            raise FileNotFoundError(f"glob {spec!r} matches {sorted(suffixes)} files; expected "
                                    "only .parquet or only .arrow")
    elif is_hub_id(spec):
        return "hub"
    raise FileNotFoundError(
        f"no episodes at {spec!r}: expected 'synthetic', a folder written by save_to_disk, "
        "Parquet or Arrow files (a path, glob or folder), a video folder with metadata.csv or "
        "metadata.jsonl, a LeRobot dataset folder (meta/info.json), or a Hub id 'org/name'")


def open_source(spec: str, *, kind: str | None = None, synthetic: SyntheticConfig | None = None,
                variant: str = "distracted", camera: str | None = None, split: str = "train",
                strict: bool = False, report: SkipReport | None = None
                ) -> datasets.Dataset | datasets.IterableDataset:
    """Open ``spec`` as rows of the episode schema, by its kind (``detect_source``, or ``kind``
    when the caller has detected it already): the opener ``SOURCES`` registers for that kind.

    ``synthetic`` and ``variant`` ("clean" or "distracted"): what the built-in generator makes.
    ``camera``: the LeRobot video key (default: the first in ``meta/info.json``). ``split``: the
    split of a ``DatasetDict`` folder or a Hub dataset. Unreadable files and rows are skipped into
    ``report`` (``strict``: ``BadDataError``). A Hub id gives a streamed ``IterableDataset``.
    """
    kind = kind or detect_source(spec)
    if kind not in SOURCES:
        raise ValueError(f"{spec!r}: no opener for sources of kind {kind!r} (known: "
                         f"{', '.join(SOURCES)})")
    report = report if report is not None else SkipReport(spec)
    return SOURCES[kind](spec, synthetic=synthetic, variant=variant, camera=camera, split=split,
                         strict=strict, report=report)


def _open_synthetic(spec: str, *, synthetic: SyntheticConfig | None, variant: str,
                    **_: Any) -> datasets.Dataset:
    return generate_dataset(synthetic or SyntheticConfig(), variant=variant)


def _open_save_to_disk(spec: str, *, split: str, **_: Any) -> datasets.Dataset:
    loaded = datasets.load_from_disk(spec)
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise ValueError(f"dataset {spec} has splits {list(loaded)} and no {split!r}")
        loaded = loaded[split]
    return loaded


def _open_hub(spec: str, *, split: str, **_: Any) -> datasets.IterableDataset:
    try:
        return datasets.load_dataset(spec, split=split, streaming=True)
    except Exception as error:  # the Hub's errors name neither the id nor our reading of it
        raise FileNotFoundError(f"{spec!r} is no local path, and opening it as the Hub dataset "
                                f"id {spec!r} (split {split!r}) failed: {error}") from error


def episode_files(spec: str, suffix: str) -> list[str]:
    """The ``.suffix`` files ``spec`` names: a file, a folder (searched recursively) or a glob;
    sorted, so every rank and every run sees one order."""
    path = Path(spec)
    if path.is_dir():
        files = [str(p) for p in path.rglob(f"*.{suffix}")]
    elif path.is_file():
        files = [spec]
    else:
        files = glob.glob(spec)
    return sorted(f for f in files if f.endswith(f".{suffix}"))


def _count_rows(file: str, kind: str) -> int:
    """The rows of ``file``; raises when it is unreadable. Parquet reads only the footer, Arrow
    every batch (memory-mapped: the framing is checked without copying the data)."""
    if kind == "parquet":
        return pq.ParquetFile(file).metadata.num_rows  # a truncated file has no footer
    with pa.memory_map(file) as source:
        try:
            reader = pa.ipc.open_stream(source)
        except pa.ArrowInvalid:
            source.seek(0)
            reader = pa.ipc.open_file(source)
            return sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
        return sum(batch.num_rows for batch in reader)


def _open_files(spec: str, *, kind: str, strict: bool, report: SkipReport,
                **_: Any) -> datasets.Dataset:
    good = []
    for file in episode_files(spec, kind):
        try:
            rows = _count_rows(file, kind)
        except (pa.ArrowException, OSError) as error:
            _bad(strict, report, file, "unreadable", f"unreadable {kind} file ({error})")
            continue
        if rows == 0:  # beside good shards it failed the whole load (DatasetGenerationError)
            _bad(strict, report, file, "empty", f"{kind} file with no rows")
            continue
        good.append(file)
    if not good:
        raise BadDataError(f"{spec}: no readable {kind} file\n{report.summary()}")
    return datasets.load_dataset(kind, data_files=good, split="train")


# ---------------------------------------------------------------------------------------------
# Encoded video: probing and decoding a window


# ---------------------------------------------------------------------------------------------
# Video folders


def _read_metadata(folder: Path) -> tuple[Path, list[dict[str, Any]]]:
    csv_path, jsonl_path = folder / "metadata.csv", folder / "metadata.jsonl"
    if jsonl_path.is_file():
        lines = jsonl_path.read_text().splitlines()
        rows = []
        for number, line in enumerate(lines, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise BadDataError(f"{jsonl_path}:{number}: not JSON ({error})") from None
        return jsonl_path, rows
    with csv_path.open(newline="") as handle:
        return csv_path, list(csv.DictReader(handle))


def _parse_actions(value: Any, where: str) -> np.ndarray | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):  # CSV holds a JSON list: "[0, 2, 1]" or "[[0.1, 0.2], ...]"
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise BadDataError(f"{where}: 'actions' is not a JSON list ({error})") from None
    actions = np.asarray(value)
    if actions.dtype.kind in "iu":
        return actions.astype(np.int64)
    return actions.astype(np.float32)


def open_video_folder(folder: str, *, strict: bool = False,
                      report: SkipReport | None = None) -> datasets.Dataset:
    """Episodes of a video folder: one row per ``metadata`` line, ``video`` = the file's path.

    Each line names a video by ``file_name`` (relative to the folder) and gives its ``label``;
    ``actions`` (a list, or a JSON list in CSV) is optional. Rows get ``episode_id`` (the file
    name), ``num_frames`` and ``fps`` from the video's header. A missing or unreadable video or an
    empty label skips the row into ``report`` (``strict``: ``BadDataError``); a metadata file
    without a ``file_name`` or ``label`` column is an error.
    """
    root = Path(folder)
    report = report if report is not None else SkipReport(folder)
    meta_path, lines = _read_metadata(root)
    if not lines:  # a header alone named its columns, then "has no column 'file_name'"
        raise BadDataError(f"video folder {folder}: {meta_path.name} lists no video (no line "
                           "after the header)")
    columns = set().union(*(line.keys() for line in lines))
    for column in ("file_name", "label"):
        if column not in columns:
            raise ValueError(f"video folder {folder}: {meta_path.name} has no column {column!r} "
                             f"(columns: {sorted(columns)}); every video needs a file_name and "
                             "a label")
    rows: dict[str, list[Any]] = {"video": [], "label": [], "episode_id": [], "num_frames": [],
                                  "fps": [], "actions": []}
    for number, line in enumerate(lines, start=1):
        where = f"{meta_path.name} line {number} ({line.get('file_name')})"
        file = root / str(line.get("file_name") or "")
        label = line.get("label")
        if not isinstance(label, str) or not label.strip():
            _bad(strict, report, where, "label", f"empty label {label!r}")
            continue
        if not line.get("file_name") or not file.is_file():
            _bad(strict, report, where, "missing", f"no video file {file}")
            continue
        if file.suffix.lower() not in VIDEO_EXTENSIONS:
            _bad(strict, report, where, "unreadable",
                 f"{file.suffix} is not a video extension {VIDEO_EXTENSIONS}")
            continue
        try:
            num_frames, fps = probe_video(str(file))
        except VideoDecodeError as error:
            _bad(strict, report, where, "unreadable", str(error))
            continue
        rows["video"].append(str(file.resolve()))
        rows["label"].append(label)
        rows["episode_id"].append(str(line["file_name"]))
        rows["num_frames"].append(num_frames)
        rows["fps"].append(fps)
        rows["actions"].append(_parse_actions(line.get("actions"), where))
    if not rows["video"]:
        raise BadDataError(f"video folder {folder}: no usable video\n{report.summary()}")
    features = {"video": datasets.Value("string"), "label": datasets.Value("string"),
                "episode_id": datasets.Value("string"), "num_frames": datasets.Value("int64"),
                "fps": datasets.Value("float64")}
    present = [a for a in rows["actions"] if a is not None]
    if not present:
        del rows["actions"]
    elif present[0].dtype == np.int64:
        features["actions"] = datasets.List(datasets.Value("int64"))
    else:
        features["actions"] = datasets.Array2D(shape=(None, present[0].shape[-1]),
                                               dtype="float32")
    return datasets.Dataset.from_dict(rows, features=datasets.Features(features))


# ---------------------------------------------------------------------------------------------
# LeRobot


def _lerobot_info(folder: Path) -> dict[str, Any]:
    info_path = folder / "meta" / "info.json"
    try:
        return json.loads(info_path.read_text())
    except json.JSONDecodeError as error:
        raise BadDataError(f"LeRobot dataset {folder}: {info_path} is not JSON ({error})") from None


def lerobot_cameras(folder: str) -> list[str]:
    """The video keys (cameras) of a LeRobot dataset, in ``meta/info.json`` order."""
    info = _lerobot_info(Path(folder))
    return [key for key, feature in info.get("features", {}).items()
            if feature.get("dtype") == "video"]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _episode_actions(table: pa.Table, where: str) -> np.ndarray | None:
    """The ``action`` column as float32 [T-1, A]: the last frame's action leads past the video."""
    if "action" not in table.column_names:
        return None
    actions = np.asarray(table.column("action").to_pylist(), dtype=np.float32)
    if actions.ndim == 1:
        actions = actions[:, None]
    if actions.ndim != 2:
        raise BadDataError(f"{where}: 'action' has shape {actions.shape}, expected (T, A)")
    return actions[:-1]


def _lerobot_v2_episodes(root: Path, info: dict[str, Any], camera: str):
    """(episode_index, label, data file, video file, video_start, length) of a v2.x dataset."""
    tasks = {t["task_index"]: t["task"] for t in _read_jsonl(root / "meta" / "tasks.jsonl")}
    chunks_size = int(info.get("chunks_size", 1000))
    for episode in _read_jsonl(root / "meta" / "episodes.jsonl"):
        index = int(episode["episode_index"])
        chunk = index // chunks_size
        data = root / info["data_path"].format(episode_chunk=chunk, episode_index=index)
        video = root / info["video_path"].format(episode_chunk=chunk, episode_index=index,
                                                 video_key=camera)
        labels = episode.get("tasks") or []
        label = labels[0] if labels else None
        yield index, label, tasks, data, video, 0.0, episode.get("length")


def _lerobot_v3_episodes(root: Path, info: dict[str, Any], camera: str):
    """(episode_index, label, data file, video file, video_start, length) of a v3.0 dataset."""
    tasks_table = pq.read_table(root / "meta" / "tasks.parquet").to_pandas()
    task_names = (tasks_table["task"] if "task" in tasks_table.columns
                  else tasks_table.index.to_series())  # lerobot writes the task as the index
    tasks = dict(zip(tasks_table["task_index"].tolist(), task_names.tolist(), strict=True))
    files = sorted((root / "meta" / "episodes").rglob("*.parquet"))
    if not files:
        raise BadDataError(f"LeRobot dataset {root}: no meta/episodes/**/*.parquet")
    for file in files:
        for episode in pq.read_table(file).to_pylist():
            index = int(episode["episode_index"])
            data = root / info["data_path"].format(chunk_index=episode["data/chunk_index"],
                                                   file_index=episode["data/file_index"])
            key = f"videos/{camera}"
            if f"{key}/chunk_index" not in episode:
                raise BadDataError(f"LeRobot dataset {root}: {file} has no {key}/chunk_index")
            video = root / info["video_path"].format(
                video_key=camera, chunk_index=episode[f"{key}/chunk_index"],
                file_index=episode[f"{key}/file_index"])
            labels = episode.get("tasks") or []
            label = labels[0] if labels else None
            yield (index, label, tasks, data, video, float(episode[f"{key}/from_timestamp"]),
                   episode.get("length"))


def open_lerobot(folder: str, *, camera: str | None = None, strict: bool = False,
                 report: SkipReport | None = None) -> datasets.Dataset:
    """Episodes of a LeRobot dataset folder (codebase v2.x or v3.0), one row per episode.

    ``label``: the episode's task (its first, where it lists several; else the task of its first
    frame). ``actions``: the ``action`` column as float32 [T-1, A]: LeRobot stores an action with
    every frame, the one taken after it, so the last frame's action, which leads past the end
    of the video, is dropped. ``video``: the path of ``camera``'s mp4 (default: the first video key
    in ``meta/info.json``), ``video_start`` the episode's offset in it (v3 files hold many
    episodes), ``num_frames`` and ``fps`` from the metadata. Nothing is decoded here.
    """
    root = Path(folder)
    report = report if report is not None else SkipReport(folder)
    info = _lerobot_info(root)
    missing = [key for key in ("codebase_version", "fps", "data_path", "video_path")
               if key not in info]
    if missing:  # a KeyError 'fps' from deep inside, before
        raise BadDataError(f"LeRobot dataset {folder}: meta/info.json has no "
                           f"{', '.join(map(repr, missing))} (LeRobot v2.x and v3.0 write them)")
    version = str(info.get("codebase_version", ""))
    cameras = lerobot_cameras(folder)
    if not cameras:
        raise ValueError(f"LeRobot dataset {folder}: meta/info.json has no feature of dtype "
                         "'video'; groundlam reads LeRobot frames from mp4 only")
    camera = camera or cameras[0]
    if camera not in cameras:
        raise ValueError(f"LeRobot dataset {folder}: no camera {camera!r}; cameras: {cameras}")
    if version.startswith("v2"):
        episodes = _lerobot_v2_episodes(root, info, camera)
    elif version.startswith("v3"):
        episodes = _lerobot_v3_episodes(root, info, camera)
    else:
        raise ValueError(f"LeRobot dataset {folder}: codebase_version {version!r} is not v2.x or "
                         "v3.0")
    fps = float(info["fps"])
    rows: dict[str, list[Any]] = {"video": [], "video_start": [], "num_frames": [], "fps": [],
                                  "label": [], "episode_id": [], "actions": []}
    tables: dict[Path, pa.Table] = {}  # v3 data files hold many episodes: read each once
    for index, label, tasks, data, video, start, length in episodes:
        where = f"episode {index} ({data.relative_to(root)})"
        if data not in tables:
            try:
                columns = [c for c in ("episode_index", "task_index", "action")
                           if c in pq.read_schema(data).names]
                tables[data] = pq.read_table(data, columns=columns)
            except (pa.ArrowException, OSError) as error:
                _bad(strict, report, where, "unreadable", f"unreadable data file ({error})")
                tables[data] = None
        table = tables[data]
        if table is None:
            continue
        if "episode_index" in table.column_names:
            table = table.filter(pc.equal(table.column("episode_index"), index))
        if table.num_rows == 0:  # in the metadata, with no frame in the data files
            _bad(strict, report, where, "empty", "no data rows")
            continue
        if label is None and "task_index" in table.column_names and table.num_rows:
            label = tasks.get(table.column("task_index")[0].as_py())
        if not isinstance(label, str) or not label.strip():
            _bad(strict, report, where, "label", f"no task (label {label!r})")
            continue
        if not video.is_file():
            _bad(strict, report, where, "missing", f"no video {video.relative_to(root)}")
            continue
        try:
            actions = _episode_actions(table, where)
        except BadDataError as error:
            _bad(strict, report, where, "shape", str(error))
            continue
        rows["video"].append(str(video.resolve()))
        rows["video_start"].append(start)
        rows["num_frames"].append(int(length if length is not None else table.num_rows))
        rows["fps"].append(fps)
        rows["label"].append(label)
        rows["episode_id"].append(f"{root.name}/episode_{index:06d}")
        rows["actions"].append(actions)
    if not rows["video"]:
        raise BadDataError(f"LeRobot dataset {folder}: no usable episode\n{report.summary()}")
    features = {"video": datasets.Value("string"), "video_start": datasets.Value("float64"),
                "num_frames": datasets.Value("int64"), "fps": datasets.Value("float64"),
                "label": datasets.Value("string"), "episode_id": datasets.Value("string")}
    present = [a for a in rows["actions"] if a is not None]
    if present:
        features["actions"] = datasets.Array2D(shape=(None, present[0].shape[1]), dtype="float32")
        width = present[0].shape[1]
        rows["actions"] = [a if a is not None else np.zeros((0, width), np.float32)
                           for a in rows["actions"]]
    else:
        del rows["actions"]
    return datasets.Dataset.from_dict(rows, features=datasets.Features(features))


# kind -> opener(spec, *, synthetic, variant, camera, split, strict, report): a new source kind is
# an opener here and a test in detect_source
SOURCES: dict[str, Callable[..., datasets.Dataset | datasets.IterableDataset]] = {
    "synthetic": _open_synthetic,
    "save_to_disk": _open_save_to_disk,
    "parquet": partial(_open_files, kind="parquet"),
    "arrow": partial(_open_files, kind="arrow"),
    "video_folder": lambda spec, *, strict, report, **_: open_video_folder(
        spec, strict=strict, report=report),
    "lerobot": lambda spec, *, camera, strict, report, **_: open_lerobot(
        spec, camera=camera, strict=strict, report=report),
    "hub": _open_hub,
}
