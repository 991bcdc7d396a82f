"""How fast episodes reach the training loop, how flat memory stays, and what training consumes.

    python -m evals.bench_data            # ~6-12 min on 2 shared cores
    python -m evals.bench_data --quick    # smaller corpora and fewer steps, ~3 min
    python -m evals.bench_data --only stream_parquet_shuffled rss_long_stream

Prints one JSON object to stdout (progress goes to stderr): ``measurements`` maps each name to
its result, plus ``loader_over_training`` (the issue asks for >= 10). Every corpus is written to
a temporary folder first (nothing is downloaded, nothing is left behind). A measurement is a
function in ``MEASUREMENTS`` taking the shared ``Context`` and returning a dict: add a row by
adding a function.

What the numbers mean:
- ``frames_per_s``: frames (clips x clip_length) of collated batches coming out of a
  ``DataLoader``, per second of wall clock, timed from the end of the first batch (startup, file
  opening and the first window fill are in ``first_batch_s``) over ``batches_timed`` batches. The
  clip shape is ``configs/base.yaml``'s (clip_length, image_size); episodes have that config's
  synthetic shape (48 frames of 128 x 128), so no resize is needed. Frames are a smooth gradient
  background with a moving square (Parquet compresses them like rendered video, not like noise).
- ``map_parquet_frames``: ``ClipDataset`` over the Parquet files loaded map-style (converted to
  an Arrow cache once, in ``prepare_s``, not timed), shuffled ``DataLoader``.
- ``stream_parquet_shuffled`` / ``stream_parquet_ordered``: ``ClipStream`` over the same files read
  with ``streaming=True``, with shard-order + window shuffle, or without any shuffle;
  ``..._2_workers``: the shuffled stream with 2 DataLoader workers.
- ``stream_parquet_datasets_row_buffer``: for reference, ``datasets``' own per-row
  ``IterableDataset.shuffle(buffer_size=64)`` under an unshuffled ``ClipStream`` (not used by
  groundlam: its buffer is lost on resume).
- ``stream_mp4_video``: the same episodes as H.264 mp4 bytes in a Parquet ``video`` column,
  decoded with PyAV as they stream.
- ``map_video_folder`` / ``stream_video_folder``: the same episodes as one H.264 mp4 file each
  plus ``metadata.csv`` (written by ``groundlam.data.writers.write_video_folder``), through
  ``load_episodes`` + ``ClipDataset`` (map-style: each clip seeks and decodes its own frames;
  ``prepare_s`` reads every header) or ``open_episode_stream`` + ``ClipStream`` (each episode
  decoded once as it streams).
- ``map_lerobot_v3`` / ``stream_lerobot_v3`` / ``map_lerobot_v2``: the same episodes as a
  LeRobot dataset folder (``write_lerobot``): codebase v3.0 (every episode in one data file and
  one mp4, episodes located by timestamp) or v2.1 (one Parquet file and one mp4 per episode), one
  camera, read like the video folder.
- ``generator_synthetic`` / ``generator_babyai`` / ``generator_metaworld``: frames/s of each
  episode generator, clean and distracted, pinned to one core, at the training image size
  (``evals/bench_generators.py``'s ``bench_generators``; its docstring says what is timed);
  ``{"skipped": reason}`` where the optional package is not installed.
- ``rss_long_stream``: streams ``episodes`` rows of 24 frames of 64 x 64 (a 500-episode Parquet
  shard written once and copied, so writing stays cheap; every row is still read and decoded)
  and samples the process's resident memory (``VmRSS``) every ``sample_every_batches`` batches.
  ``growth_after_warmup_mb``: the highest sample after the first 10% of the stream minus the
  sample at that point; the issue asks for < 200 MB.
- ``train_base_consumption``: one training step of ``configs/base.yaml``'s model at batch 1
  (forward, losses, backward, AdamW; ``evals/bench_train.py``'s ``Bench``), fp32 on this CPU;
  ``frames_per_s`` = clip_length / median step time.
- Loader rows run with one torch intra-op thread (``torch.set_num_threads(1)``, what DataLoader
  workers get); the training row with every core.
- ``cpu_share_taken_by_others``: share of the machine's CPU time other processes used during
  the whole run; every rate is low by about that share.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent

SHARDS = 8


def log(message: str) -> None:
    print(f"[bench_data {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def rss_mb() -> float:
    """Resident memory of this process now (``VmRSS``), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def rounded(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}")


# ---------------------------------------------------------------------------- corpora
def smooth_episode(index: int, frames: int, size: int) -> np.ndarray:
    """uint8 (T, S, S, 3): a two-colour gradient with a white square moving across it."""
    rng = np.random.default_rng(index)
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]  # (S, 1, 1)
    low, high = rng.integers(0, 256, (2, 3)).astype(np.float32)
    image = (ramp * high + (1 - ramp) * low).astype(np.uint8)  # (S, 1, 3)
    video = np.broadcast_to(image, (frames, size, size, 3)).copy()
    side, row = size // 8, int(rng.integers(0, size - size // 8))
    for t in range(frames):
        column = (t * 2 + index) % (size - side)
        video[t, row:row + side, column:column + side] = 255
    return video


def write_frames_parquet(path: Path, first: int, count: int, frames: int, size: int) -> None:
    """``count`` episodes in the episode schema (``frames`` as datasets' Array4D) to one file."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    videos = np.stack([smooth_episode(first + i, frames, size) for i in range(count)])
    features = datasets.Features({
        "frames": datasets.Array4D(shape=(None, size, size, 3), dtype="uint8"),
        "label": datasets.Value("string"), "episode_id": datasets.Value("string")})

    def lists(values: pa.Array, length: int, rows: int) -> pa.Array:  # regular nested lists
        return pa.ListArray.from_arrays(pa.array(np.arange(rows + 1, dtype=np.int32) * length),
                                        values)

    nested = pa.array(videos.reshape(-1))
    for length, rows in ((3, count * frames * size * size), (size, count * frames * size),
                         (size, count * frames), (frames, count)):
        nested = lists(nested, length, rows)
    table = pa.table({"frames": nested,
                      "label": [f"task {(first + i) % 7}" for i in range(count)],
                      "episode_id": [f"bench-{first + i:06d}" for i in range(count)]})
    pq.write_table(table.cast(features.arrow_schema), path, row_group_size=8)


def write_video_parquet(path: Path, first: int, count: int, frames: int, size: int) -> None:
    """The same episodes as ``write_frames_parquet``, as mp4 bytes in a ``video`` column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from groundlam.data.video_io import encode_video

    table = pa.table({
        "video": pa.array([encode_video(smooth_episode(first + i, frames, size))
                           for i in range(count)], pa.binary()),
        "label": [f"task {(first + i) % 7}" for i in range(count)],
        "episode_id": [f"bench-{first + i:06d}" for i in range(count)]})
    pq.write_table(table, path, row_group_size=8)


def bench_episodes(count: int, frames: int, size: int) -> Iterable[dict[str, Any]]:
    """The episodes of ``write_frames_parquet`` as dicts, one at a time, for the writers."""
    for index in range(count):
        yield {"frames": smooth_episode(index, frames, size), "label": f"task {index % 7}",
               "episode_id": f"bench-{index:06d}"}


@dataclass
class Context:
    """Shared settings and lazily written corpora (each written once, on first use)."""

    root: Path
    quick: bool
    batch_size: int = 16
    episodes: int = 96
    rss_episodes: int = 10_000
    max_batches: int = 40
    notes: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def base(self) -> Any:
        from groundlam.config import load_config

        return load_config(ROOT / "configs" / "base.yaml")

    @property
    def clip_length(self) -> int:
        return self.base.data.clip_length

    @property
    def image_size(self) -> int:
        return self.base.model.image_size

    def _write(self, name: str, writer: Callable[..., None], frames: int, size: int) -> Path:
        folder = self.root / name
        folder.mkdir()
        start = time.perf_counter()
        per_shard = -(-self.episodes // SHARDS)
        for shard in range(SHARDS):
            first = shard * per_shard
            count = min(per_shard, self.episodes - first)
            if count > 0:
                writer(folder / f"part-{shard:03d}.parquet", first, count, frames, size)
        self.notes[f"{name}_write_s"] = round(time.perf_counter() - start, 1)
        log(f"wrote {name}: {self.episodes} episodes in {self.notes[f'{name}_write_s']} s")
        return folder

    @cached_property
    def frames_parquet(self) -> Path:
        return self._write("frames", write_frames_parquet, self.base.data.synthetic.episode_length,
                           self.base.data.synthetic.image_size)

    @cached_property
    def video_parquet(self) -> Path:
        return self._write("video", write_video_parquet, self.base.data.synthetic.episode_length,
                           self.base.data.synthetic.image_size)

    def _write_folder(self, name: str, writer: Callable[..., Path], **options: Any) -> Path:
        """``writer(episodes, folder, **options)`` of ``groundlam.data.writers``, timed."""
        start = time.perf_counter()
        synthetic = self.base.data.synthetic
        folder = writer(bench_episodes(self.episodes, synthetic.episode_length,
                                       synthetic.image_size), self.root / name, **options)
        self.notes[f"{name}_write_s"] = round(time.perf_counter() - start, 1)
        log(f"wrote {name}: {self.episodes} episodes in {self.notes[f'{name}_write_s']} s")
        return folder

    @cached_property
    def video_folder(self) -> Path:
        from groundlam.data.writers import write_video_folder

        return self._write_folder("video_folder", write_video_folder)

    @cached_property
    def lerobot_v3(self) -> Path:
        from groundlam.data.writers import write_lerobot

        return self._write_folder("lerobot_v3", write_lerobot, version="v3.0")

    @cached_property
    def lerobot_v2(self) -> Path:
        from groundlam.data.writers import write_lerobot

        return self._write_folder("lerobot_v2", write_lerobot, version="v2.1")


# ---------------------------------------------------------------------------- measurements
def timed_batches(batches: Iterable[dict[str, Any]], max_batches: int) -> dict[str, Any]:
    """Frames/s of collated batches, timed from the end of the first one."""
    start = time.perf_counter()
    iterator = iter(batches)
    first = next(iterator)
    after_first = time.perf_counter()
    frames = timed = 0
    for batch in iterator:
        frames += batch["frames"].shape[0] * batch["frames"].shape[1]  # (B, T, H, W, 3)
        timed += 1
        if timed >= max_batches:
            break
    elapsed = time.perf_counter() - after_first
    if not timed:
        raise RuntimeError("the corpus gave one batch only; raise --episodes")
    return {"frames_per_s": rounded(frames / elapsed), "batches_timed": timed,
            "first_batch_s": round(after_first - start, 2),
            "batch_shape": list(first["frames"].shape), "dtype": str(first["frames"].dtype)}


def stream_rate(context: Context, source: Any, shuffle: bool = True, num_workers: int = 0
                ) -> dict[str, Any]:
    from groundlam.data.streaming import ClipStream, StreamingLoader

    stream = ClipStream(source, context.clip_length, context.image_size, shuffle=shuffle,
                        name="bench")
    loader = StreamingLoader(stream, context.batch_size, num_workers=num_workers)
    result = timed_batches(loader, context.max_batches)
    return {**result, "num_workers": num_workers, "shards": stream.num_shards}


def map_rate(context: Context, episodes: Any, prepare_start: float) -> dict[str, Any]:
    """Frames/s of a shuffled ``DataLoader`` over ``ClipDataset(episodes)``; ``prepare_s`` from
    ``prepare_start`` (opening the source) to the clip index being built."""
    from groundlam.data.episodes import ClipDataset, collate_clips

    clips = ClipDataset(episodes, context.clip_length, context.image_size, name="bench")
    prepare = time.perf_counter() - prepare_start
    loader = torch.utils.data.DataLoader(clips, batch_size=context.batch_size, shuffle=True,
                                         collate_fn=collate_clips,
                                         generator=torch.Generator().manual_seed(0))
    return {**timed_batches(loader, context.max_batches), "prepare_s": round(prepare, 2)}


def map_parquet_frames(context: Context) -> dict[str, Any]:
    import datasets

    start = time.perf_counter()
    files = sorted(str(p) for p in context.frames_parquet.glob("*.parquet"))
    episodes = datasets.load_dataset("parquet", data_files=files, split="train",
                                     cache_dir=str(context.root / "hf_cache"))
    return map_rate(context, episodes, start)


def stream_parquet_shuffled(context: Context) -> dict[str, Any]:
    from groundlam.data.streaming import as_episode_stream

    return stream_rate(context, as_episode_stream(str(context.frames_parquet)))


def stream_parquet_ordered(context: Context) -> dict[str, Any]:
    from groundlam.data.streaming import as_episode_stream

    return stream_rate(context, as_episode_stream(str(context.frames_parquet)), shuffle=False)


def stream_parquet_shuffled_2_workers(context: Context) -> dict[str, Any]:
    from groundlam.data.streaming import as_episode_stream

    return stream_rate(context, as_episode_stream(str(context.frames_parquet)), num_workers=2)


def stream_parquet_datasets_row_buffer(context: Context) -> dict[str, Any]:
    from groundlam.data.streaming import as_episode_stream

    source = as_episode_stream(str(context.frames_parquet)).shuffle(seed=0, buffer_size=64)
    return {**stream_rate(context, source, shuffle=False), "buffer_size": 64}


def stream_mp4_video(context: Context) -> dict[str, Any]:
    from groundlam.data.streaming import as_episode_stream

    return stream_rate(context, as_episode_stream(str(context.video_parquet)))


def map_folder(context: Context, folder: Path) -> dict[str, Any]:
    from groundlam.data.episodes import load_episodes

    start = time.perf_counter()
    return map_rate(context, load_episodes(str(folder)), start)


def stream_folder(context: Context, folder: Path) -> dict[str, Any]:
    from groundlam.data.streaming import open_episode_stream

    return stream_rate(context, open_episode_stream(str(folder)))


def map_video_folder(context: Context) -> dict[str, Any]:
    return map_folder(context, context.video_folder)


def stream_video_folder(context: Context) -> dict[str, Any]:
    return stream_folder(context, context.video_folder)


def map_lerobot_v3(context: Context) -> dict[str, Any]:
    return map_folder(context, context.lerobot_v3)


def stream_lerobot_v3(context: Context) -> dict[str, Any]:
    return stream_folder(context, context.lerobot_v3)


def map_lerobot_v2(context: Context) -> dict[str, Any]:
    return map_folder(context, context.lerobot_v2)


def generator_rate(context: Context, source: str) -> dict[str, Any]:
    """``bench_generators`` for one source; the pinning to one core is undone afterwards, so
    the rows after it (the training row uses every core) are not confined."""
    from bench_generators import bench_generators

    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    threads = torch.get_num_threads()
    try:
        report = bench_generators((source,), episodes=2 if context.quick else 6,
                                  image_size=context.image_size)
    finally:
        if affinity is not None:
            os.sched_setaffinity(0, affinity)
        torch.set_num_threads(threads)
    return {**report["sources"][source], "image_size": report["image_size"],
            "distractor_strength": report["distractor_strength"], "core": report["core"],
            "loadavg_start": report["loadavg_start"], "loadavg_end": report["loadavg_end"]}


def generator_synthetic(context: Context) -> dict[str, Any]:
    return generator_rate(context, "synthetic")


def generator_babyai(context: Context) -> dict[str, Any]:
    return generator_rate(context, "babyai")


def generator_metaworld(context: Context) -> dict[str, Any]:
    return generator_rate(context, "metaworld")


def rss_long_stream(context: Context) -> dict[str, Any]:
    from groundlam.data.streaming import ClipStream, StreamingLoader, as_episode_stream

    frames, size, clip, per_file = 24, 64, 8, 500
    folder = context.root / "rss"
    folder.mkdir()
    start = time.perf_counter()
    write_frames_parquet(folder / "part-000.parquet", 0, per_file, frames, size)
    copies = -(-context.rss_episodes // per_file)
    for index in range(1, copies):
        shutil.copyfile(folder / "part-000.parquet", folder / f"part-{index:03d}.parquet")
    write_s = time.perf_counter() - start
    log(f"rss: {copies} files of {per_file} episodes written in {write_s:.0f} s; streaming")

    stream = ClipStream(as_episode_stream(str(folder)), clip, size, name="rss")
    loader = StreamingLoader(stream, batch_size=32)
    before = rss_mb()
    samples, every = [], 20
    start = time.perf_counter()
    for index, batch in enumerate(loader, start=1):
        del batch
        if index % every == 0:
            samples.append({"episodes": loader.state_dict()["episodes"], "rss_mb": round(rss_mb())})
    elapsed = time.perf_counter() - start
    state = loader.state_dict()
    samples.append({"episodes": state["episodes"], "rss_mb": round(rss_mb())})
    warm = next(i for i, s in enumerate(samples) if s["episodes"] >= 0.1 * state["episodes"])
    growth = max(s["rss_mb"] for s in samples[warm:]) - samples[warm]["rss_mb"]
    keep = max(1, -(-len(samples) // 25))  # at most ~25 samples in the output, and the last
    shown = samples[::keep] + ([samples[-1]] if (len(samples) - 1) % keep else [])
    return {"episodes": state["episodes"], "skipped": state["skipped"],
            "frames_per_episode": frames, "image_size": size, "clip_length": clip,
            "files": copies, "write_s": round(write_s, 1), "stream_s": round(elapsed, 1),
            "frames_per_s": rounded(state["episodes"] * frames / elapsed),
            "rss_before_mb": round(before), "rss_at_warmup_end_mb": samples[warm]["rss_mb"],
            "growth_after_warmup_mb": growth, "below_200_mb": growth < 200,
            "sample_every_batches": every, "samples": shown}


def train_base_consumption(context: Context) -> dict[str, Any]:
    from evals.bench_train import Bench, timed_steps

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, os.cpu_count() or 1))  # every core, as the trainer on one rank
    try:
        bench = Bench("base", batch=1)
        optimizer = bench.torch_optimizer()
        warmup, steps = (1, 1) if context.quick else (1, 2)
        times, phases = timed_steps(bench.torch_step(optimizer, bf16=False), warmup, steps)
    finally:
        torch.set_num_threads(threads)
    median = statistics.median(times)
    return {"frames_per_s": rounded(bench.frames_per_step / median), "step_s": [
        rounded(t) for t in times], "batch_size": 1, "clip_length": bench.clip_length,
        "image_size": bench.config.model.image_size, "phase_s": phases,
        "parameters": bench.model.num_parameters(), "precision": "fp32",
        "threads": max(1, os.cpu_count() or 1)}


MEASUREMENTS: list[tuple[str, Callable[[Context], dict[str, Any]]]] = [
    ("map_parquet_frames", map_parquet_frames),
    ("stream_parquet_shuffled", stream_parquet_shuffled),
    ("stream_parquet_ordered", stream_parquet_ordered),
    ("stream_parquet_shuffled_2_workers", stream_parquet_shuffled_2_workers),
    ("stream_parquet_datasets_row_buffer", stream_parquet_datasets_row_buffer),
    ("stream_mp4_video", stream_mp4_video),
    ("map_video_folder", map_video_folder),
    ("stream_video_folder", stream_video_folder),
    ("map_lerobot_v3", map_lerobot_v3),
    ("stream_lerobot_v3", stream_lerobot_v3),
    ("map_lerobot_v2", map_lerobot_v2),
    ("generator_synthetic", generator_synthetic),
    ("generator_babyai", generator_babyai),
    ("generator_metaworld", generator_metaworld),
    ("rss_long_stream", rss_long_stream),
    ("train_base_consumption", train_base_consumption),
]
LOADER_ROWS = ("map_parquet_frames", "stream_parquet_shuffled", "stream_mp4_video",
               "map_video_folder", "stream_video_folder", "map_lerobot_v3", "stream_lerobot_v3",
               "map_lerobot_v2")


# ---------------------------------------------------------------------------- driver
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="24 episodes, 2,000 for the RSS stream, 2 generator episodes, 1 "
                             "timed training step")
    parser.add_argument("--only", nargs="+", choices=[name for name, _ in MEASUREMENTS],
                        help="run these measurements only")
    parser.add_argument("--episodes", type=int, help="episodes of the throughput corpora")
    parser.add_argument("--rss-episodes", type=int, help="episodes of the RSS stream")
    return parser


def main(argv: list[str] | None = None) -> int:
    from evals.bench_train import contention, machine_cpu_seconds, own_cpu_seconds

    args = build_parser().parse_args(argv)
    # the loaders run on one intra-op thread, as in a DataLoader worker: on an oversubscribed
    # machine torch's thread pool makes even the collate's torch.stack ~1000x slower
    torch.set_num_threads(1)
    started, cpu_start, own_start = time.perf_counter(), machine_cpu_seconds(), own_cpu_seconds()
    with tempfile.TemporaryDirectory(prefix="groundlam-bench-data-") as folder:
        context = Context(Path(folder), args.quick)
        if args.quick:
            context.episodes, context.rss_episodes, context.max_batches = 24, 2_000, 12
        context.episodes = args.episodes or context.episodes
        context.rss_episodes = args.rss_episodes or context.rss_episodes
        results: dict[str, Any] = {}
        for name, measure in MEASUREMENTS:
            if args.only and name not in args.only:
                continue
            log(f"{name} ...")
            results[name] = measure(context)
            log(f"{name}: {json.dumps(results[name])[:200]}")
        notes = dict(context.notes)
    consumed = results.get("train_base_consumption", {}).get("frames_per_s")
    ratios = {name: rounded(results[name]["frames_per_s"] / consumed, 3)
              for name in LOADER_ROWS if name in results and consumed}
    print(json.dumps({
        "machine": {"cpus": os.cpu_count(), "torch": torch.__version__,
                    "note": "a shared machine: other processes take CPU during the run"},
        "quick": args.quick,
        "throughput_corpus": {"episodes": context.episodes, "files": SHARDS,
                              "batch_size": context.batch_size, **notes},
        "measurements": results,
        "loader_over_training": ratios,
        "cpu_share_taken_by_others": contention(cpu_start, own_start, started),
        "wall_s": round(time.perf_counter() - started, 1),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
