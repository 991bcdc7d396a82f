"""Episodes out: write numpy episodes as a video folder or a LeRobot dataset folder.

Dimension keys: T frames of an episode, H/W pixels, A action dimensions.

The inverse of the readers in ``groundlam.data.sources``: what ``write_video_folder`` and
``write_lerobot`` write, ``load_episodes`` reads back (frames within codec tolerance, labels and
actions exactly). Useful to export episodes (generated ones, say) to tools that read mp4 files or
LeRobot datasets, and to build small corpora of every format for tests and benchmarks.

An episode here is a mapping with ``frames`` (uint8 (T, H, W, 3); H and W even for H.264),
``label`` (str) and optionally ``actions`` (one per transition, (T-1,) or (T-1, A), as in the
episode schema of ``data_cards/README.md``) and ``episode_id``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from groundlam.data.video_io import VIDEO_CODECS, VideoWriter, check_frames, write_video

# the video encoder lives in groundlam.data.video_io; exported here too, beside its users
__all__ = ["VIDEO_CODECS", "VideoWriter", "write_video", "write_video_folder", "write_lerobot"]


def _transition_actions(episode: Mapping[str, Any], num_frames: int, where: str
                        ) -> np.ndarray | None:
    actions = episode.get("actions")
    if actions is None:
        return None
    actions = np.asarray(actions)
    if len(actions) != num_frames - 1:
        raise ValueError(f"{where}: {len(actions)} actions for {num_frames} frames; expected one "
                         "per transition (T-1)")
    return actions


def write_video_folder(episodes: Iterable[Mapping[str, Any]], path: str | Path, *,
                       fps: float = 10.0, suffix: str = ".mp4", metadata: str = "csv",
                       codec: str | None = None) -> Path:
    """Write ``episodes`` as a video folder: one video per episode plus ``metadata.csv`` (or
    ``metadata.jsonl`` with ``metadata="jsonl"``) with ``file_name``, ``label`` and, where
    episodes have them, ``actions`` (a JSON list in CSV).

    A video is named by the episode's ``file_name`` if it has one (its suffix picks the
    container and, unless ``codec`` is given, the codec), else ``<episode_id><suffix>``, else
    ``episode_<index:06d><suffix>``. Episodes are written one at a time, so ``episodes`` may be
    a generator. Returns the folder.
    """
    if metadata not in ("csv", "jsonl"):
        raise ValueError(f"metadata={metadata!r}: expected 'csv' or 'jsonl'")
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    lines, names = [], set()
    for index, episode in enumerate(episodes):
        name = str(episode.get("file_name") or
                   f"{episode.get('episode_id') or f'episode_{index:06d}'}{suffix}")
        where = f"write_video_folder {root}: episode {index} ({name})"
        if name in names:
            raise ValueError(f"{where}: a second video named {name!r}")
        names.add(name)
        frames = check_frames(episode["frames"], where)
        label = episode.get("label")
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"{where}: empty label {label!r}")
        actions = _transition_actions(episode, len(frames), where)
        write_video(frames, root / name, fps, codec)
        line: dict[str, Any] = {"file_name": name, "label": label}
        if actions is not None:
            line["actions"] = actions.tolist()
        lines.append(line)
    if not lines:
        raise ValueError(f"write_video_folder {root}: no episodes")
    if metadata == "jsonl":
        (root / "metadata.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    else:
        table = pd.DataFrame([{**line, "actions": json.dumps(line["actions"])} if "actions" in line
                              else line for line in lines])
        table.to_csv(root / "metadata.csv", index=False)
    return root


# ---------------------------------------------------------------------------------------------
# LeRobot


_V2_PATHS = {"data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
             "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/"
                           "episode_{episode_index:06d}.mp4"}
_V3_PATHS = {"data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
             "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"}


def _lerobot_actions(episode: Mapping[str, Any], num_frames: int, where: str
                     ) -> np.ndarray | None:
    """Per-frame float32 (T, A): LeRobot stores the action taken after each frame, so the
    episode schema's (T-1) transitions get a zero action after the last frame."""
    actions = _transition_actions(episode, num_frames, where)
    if actions is None:
        return None
    actions = actions.astype(np.float32).reshape(num_frames - 1, -1)  # (T-1, A)
    return np.concatenate([actions, np.zeros((1, actions.shape[1]), np.float32)])  # (T, A)


def _frame_table(episode_index: int, task_index: int, first_index: int, num_frames: int,
                 fps: float, actions: np.ndarray | None) -> pa.Table:
    columns: dict[str, Any] = {}
    if actions is not None:
        columns["action"] = pa.array(list(actions), pa.list_(pa.float32()))
    columns |= {"timestamp": pa.array(np.arange(num_frames) / fps, pa.float32()),
                "frame_index": pa.array(np.arange(num_frames), pa.int64()),
                "episode_index": pa.array([episode_index] * num_frames, pa.int64()),
                "index": pa.array(first_index + np.arange(num_frames), pa.int64()),
                "task_index": pa.array([task_index] * num_frames, pa.int64())}
    return pa.table(columns)


def write_lerobot(episodes: Iterable[Mapping[str, Any]], path: str | Path, *,
                  version: str = "v3.0", fps: float = 10.0,
                  camera: str = "observation.images.main", episodes_per_file: int = 1000,
                  chunks_size: int = 1000, robot_type: str = "unknown") -> Path:
    """Write ``episodes`` as a LeRobot dataset folder of codebase ``version`` "v2.1" or "v3.0".

    ``frames`` become the mp4 video of ``camera``; an episode's ``views`` (a mapping from more
    camera keys to uint8 (T, H, W, 3)) become further cameras, the same keys in every episode.
    ``label`` becomes the episode's task. ``actions`` ((T-1,) or (T-1, A), one per transition)
    become LeRobot's per-frame float32 ``action`` (T, A), with a zero action after the last frame
    (which ``open_lerobot`` drops again). v2.1 writes one Parquet file and one mp4 per episode and
    camera; v3.0 concatenates ``episodes_per_file`` episodes per data file and per mp4, located
    by ``meta/episodes``. Videos are encoded as episodes arrive (``episodes`` may be a
    generator), but the frame tables of one v3.0 file are held until it is written. Only what
    ``open_lerobot`` reads is written: no ``meta/stats.json`` and no image features.
    """
    if version not in ("v2.1", "v3.0"):
        raise ValueError(f"version={version!r}: write_lerobot writes 'v2.1' or 'v3.0'")
    if episodes_per_file < 1 or chunks_size < 1:
        raise ValueError(f"episodes_per_file ({episodes_per_file}) and chunks_size "
                         f"({chunks_size}) must be >= 1")
    root = Path(path)
    if (root / "meta" / "info.json").exists():
        raise FileExistsError(f"write_lerobot: {root} already holds a LeRobot dataset")
    (root / "meta").mkdir(parents=True, exist_ok=True)
    tasks: dict[str, int] = {}
    cameras: list[str] | None = None
    frame_shape: tuple[int, ...] | None = None
    action_width: int | None = None
    records: list[dict[str, Any]] = []  # one per episode: meta/episodes
    pending: list[pa.Table] = []  # v3.0: frame tables of the data file being filled
    writers: dict[str, VideoWriter] = {}  # v3.0: the open mp4 of each camera
    total_frames = 0

    def close_v3_file(file_number: int) -> None:
        chunk, file_index = divmod(file_number, chunks_size)
        data = root / _V3_PATHS["data_path"].format(chunk_index=chunk, file_index=file_index)
        data.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables(pending), data)
        pending.clear()
        for writer in writers.values():
            writer.close()
        writers.clear()

    try:
        for index, episode in enumerate(episodes):
            where = f"write_lerobot {root}: episode {index}"
            frames = check_frames(episode["frames"], where)
            views = {camera: frames, **{key: check_frames(view, f"{where} camera {key}")
                                        for key, view in (episode.get("views") or {}).items()}}
            if cameras is None:
                cameras, frame_shape = list(views), frames.shape[1:]
            if list(views) != cameras:
                raise ValueError(f"{where}: cameras {list(views)}, the first episode had "
                                 f"{cameras}")
            for key, view in views.items():
                if view.shape[1:] != frame_shape or len(view) != len(frames):
                    raise ValueError(f"{where}: camera {key} has frames {view.shape}; expected "
                                     f"({len(frames)}, *{frame_shape})")
            label = episode.get("label")
            if not isinstance(label, str) or not label.strip():
                raise ValueError(f"{where}: empty label {label!r}")
            actions = _lerobot_actions(episode, len(frames), where)
            width = None if actions is None else actions.shape[1]
            if index and width != action_width:
                raise ValueError(f"{where}: actions of width {width}, the first episode had "
                                 f"{action_width}")
            action_width = width
            task = tasks.setdefault(label, len(tasks))
            table = _frame_table(index, task, total_frames, len(frames), fps, actions)
            record = {"episode_index": index, "tasks": [label], "length": len(frames)}
            if version == "v2.1":
                chunk = index // chunks_size
                data = root / _V2_PATHS["data_path"].format(episode_chunk=chunk,
                                                            episode_index=index)
                data.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(table, data)
                for key, view in views.items():
                    write_video(view, root / _V2_PATHS["video_path"].format(
                        episode_chunk=chunk, episode_index=index, video_key=key), fps)
            else:
                file_number, in_file = divmod(index, episodes_per_file)
                if in_file == 0 and index:
                    close_v3_file(file_number - 1)
                chunk, file_index = divmod(file_number, chunks_size)
                location = {"chunk_index": chunk, "file_index": file_index}
                record |= {"data/chunk_index": chunk, "data/file_index": file_index,
                           "dataset_from_index": total_frames,
                           "dataset_to_index": total_frames + len(frames)}
                for key, view in views.items():
                    if key not in writers:
                        writers[key] = VideoWriter(root / _V3_PATHS["video_path"].format(
                            video_key=key, **location), fps).open()
                    start = writers[key].frames_written
                    writers[key].write(view)
                    record |= {f"videos/{key}/chunk_index": chunk,
                               f"videos/{key}/file_index": file_index,
                               f"videos/{key}/from_timestamp": start / fps,
                               f"videos/{key}/to_timestamp": (start + len(view)) / fps}
                pending.append(table)
            records.append(record)
            total_frames += len(frames)
        if not records:
            raise ValueError(f"write_lerobot {root}: no episodes")
        if version == "v3.0":
            close_v3_file((len(records) - 1) // episodes_per_file)
    finally:
        for writer in writers.values():  # an error mid-file: close what is open
            writer.close()

    _write_lerobot_meta(root, version, fps, robot_type, chunks_size, cameras, frame_shape,
                        action_width, tasks, records, total_frames)
    return root


def _write_lerobot_meta(root: Path, version: str, fps: float, robot_type: str, chunks_size: int,
                        cameras: Sequence[str], frame_shape: tuple[int, ...],
                        action_width: int | None, tasks: dict[str, int],
                        records: list[dict[str, Any]], total_frames: int) -> None:
    video = {"dtype": "video", "shape": list(frame_shape),
             "names": ["height", "width", "channels"],
             "info": {"video.fps": float(fps), "video.codec": "h264",
                      "video.pix_fmt": "yuv420p"}}
    scalar = {"dtype": "int64", "shape": [1], "names": None}
    features: dict[str, Any] = {key: video for key in cameras}
    if action_width is not None:
        features["action"] = {"dtype": "float32", "shape": [action_width],
                              "names": [f"action_{i}" for i in range(action_width)]}
    features |= {"timestamp": {"dtype": "float32", "shape": [1], "names": None},
                 "frame_index": scalar, "episode_index": scalar, "index": scalar,
                 "task_index": scalar}
    num_episodes = len(records)
    info = {"codebase_version": version, "robot_type": robot_type, "fps": fps,
            "chunks_size": chunks_size, "total_episodes": num_episodes,
            "total_frames": total_frames, "total_tasks": len(tasks),
            "splits": {"train": f"0:{num_episodes}"},
            **(_V2_PATHS if version == "v2.1" else _V3_PATHS), "features": features}
    meta = root / "meta"
    (meta / "info.json").write_text(json.dumps(info, indent=2))
    if version == "v2.1":
        (meta / "tasks.jsonl").write_text("".join(
            json.dumps({"task_index": i, "task": task}) + "\n" for task, i in tasks.items()))
        (meta / "episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        return
    # lerobot v3 keeps the task string as the index of meta/tasks.parquet
    pd.DataFrame({"task_index": list(tasks.values())}, index=list(tasks)).to_parquet(
        meta / "tasks.parquet")
    episodes_file = meta / "episodes" / "chunk-000" / "file-000.parquet"
    episodes_file.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(records), episodes_file)
