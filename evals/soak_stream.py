"""Soak check of the streamed training data path: many episodes, some corrupt, one epoch.

    python -m evals.soak_stream                                 # 10,000 episodes, 1% corrupt
    python -m evals.soak_stream --episodes 2000 --out /tmp/soak.json

Writes ``--episodes`` small episodes (8 frames of 16 x 16) as Parquet shards, ``--corrupt`` of
them broken in three ways a stream meets row by row (an empty label, no frames, an episode
shorter than one clip), then reads one epoch through ``ClipStream`` and
``StreamingLoader`` as training does. Reports, as JSON: the resident memory (VmRSS) after the
first batches and at the end, its growth, the episodes the stream read and skipped against the
number corrupted, and the clips and seconds. A bounded stream keeps RSS flat; every corrupt
episode is skipped and counted, no good one is lost.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import datasets
import numpy as np

from groundlam.data.streaming import ClipStream, StreamingLoader, as_episode_stream

FRAMES, SIZE, CLIP = 8, 16, 4


def rss_mb() -> float:
    """This process's resident memory, from /proc (MB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def write_corpus(folder: Path, episodes: int, corrupt: float, shards: int, seed: int = 0
                 ) -> dict[str, int]:
    """Parquet shards of ``episodes`` rows, ``corrupt`` of them broken; returns the counts."""
    rng = np.random.default_rng(seed)
    broken = set(rng.choice(episodes, size=round(episodes * corrupt), replace=False).tolist())
    kinds = {"empty label": 0, "no frames": 0, "too short": 0}
    per_shard = -(-episodes // shards)
    for shard in range(shards):
        rows: dict[str, list] = {"frames": [], "label": [], "episode_id": []}
        for index in range(shard * per_shard, min((shard + 1) * per_shard, episodes)):
            frames = rng.integers(0, 256, (FRAMES, SIZE, SIZE, 3), dtype=np.uint8)
            label = f"task {index % 7}"
            if index in broken:
                kind = list(kinds)[index % 3]
                kinds[kind] += 1
                if kind == "empty label":
                    label = ""
                elif kind == "no frames":
                    frames = frames[:0]
                else:
                    frames = frames[:CLIP - 1]
            rows["frames"].append(frames)
            rows["label"].append(label)
            rows["episode_id"].append(f"episode_{index:06d}")
        features = datasets.Features({
            "frames": datasets.Array4D(shape=(None, SIZE, SIZE, 3), dtype="uint8"),
            "label": datasets.Value("string"), "episode_id": datasets.Value("string")})
        datasets.Dataset.from_dict(rows, features=features).to_parquet(
            str(folder / f"shard-{shard:03d}.parquet"))
    return {"corrupted": len(broken), **kinds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=10_000)
    parser.add_argument("--corrupt", type=float, default=0.01, help="share of corrupt episodes")
    parser.add_argument("--shards", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("evals/results/soak_stream.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        counts = write_corpus(Path(folder), args.episodes, args.corrupt, args.shards)
        written = time.perf_counter() - start
        stream = ClipStream(as_episode_stream(folder), CLIP, SIZE, seed=0, name="soak")
        loader = StreamingLoader(stream, args.batch_size)
        clips, first, start = 0, None, time.perf_counter()
        for batches, batch in enumerate(loader, start=1):
            clips += len(batch["labels"])
            if batches == 20:
                first = rss_mb()
        seconds = time.perf_counter() - start
        state = loader.state_dict()
    last = rss_mb()
    good = args.episodes - counts["corrupted"]
    result = {
        "episodes": args.episodes, "corrupt_share": args.corrupt, **counts,
        "episodes_read": state["episodes"], "episodes_skipped": state["skipped"],
        "clips": clips, "clips_expected": good * (FRAMES // CLIP),
        "rss_mb_after_20_batches": round(first, 1) if first else None,
        "rss_mb_end": round(last, 1),
        "rss_growth_mb": round(last - first, 1) if first else None,
        "write_s": round(written, 1), "stream_s": round(seconds, 1),
        "command": " ".join(["python -m evals.soak_stream",
                             *(sys.argv[1:] if argv is None else argv)]).strip(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
