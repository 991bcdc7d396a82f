"""Generator throughput: frames/s of each episode generator, clean and distracted, on one core.

    python -m evals.bench_generators                      # all installed sources, 64 px
    python -m evals.bench_generators --sources babyai --episodes 20 --image-size 128

Prints one JSON object to stdout. The process is pinned to one CPU core (and torch to one thread)
before anything is measured, so the numbers are per core; a corpus is generated in parallel by
running several ``groundlam datagen`` processes with different ``--seed`` values.

What each number means, per source and variant:
- ``frames_per_s``: frames of the generated episodes / wall time of ``generator.episode(i,
  distracted)`` over ``episodes`` episodes, after an untimed pass over the same episodes (which
  builds the environments: minigrid's level, each Meta-World task's MuJoCo model and renderer,
  and fills minigrid's tile cache). It includes simulation,
  the expert, rendering, the masks and, for ``distracted``, every distractor switched on at
  ``--strength`` (Meta-World also its camera-pose jitter inside MuJoCo).
- ``episodes``, ``frames``: what was timed. ``seconds``: the wall time.
- ``loadavg``: the 1-minute load average before and after: on a shared machine the rates are low
  by roughly the share of the core other processes took.
Sources whose optional package is not installed are reported as ``{"skipped": reason}``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

REQUIRES = {"synthetic": None, "babyai": "minigrid", "metaworld": "metaworld"}
ENVIRONMENT_OPTIONS = {
    "synthetic": {"episode_length": 32},
    "babyai": {"level": "BabyAI-GoTo-v0", "min_frames": 16, "max_frames": 64},
    "metaworld": {"tasks": "drawer-open-v3,push-v3,button-press-v3", "episode_length": 32},
}


def pin_to_one_core() -> int | None:
    """Run this process on one CPU core (the first allowed); returns it, None where unsupported."""
    import torch

    torch.set_num_threads(1)
    if not hasattr(os, "sched_setaffinity"):
        return None
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return core


def bench_source(source: str, episodes: int, image_size: int, strength: float,
                 seed: int = 0) -> dict:
    """frames/s of one source's generator, clean and distracted."""
    from groundlam.datagen import build_generator

    distractors = f"all={strength}"
    generator = build_generator(source, episodes, seed, image_size, distractors,
                                ENVIRONMENT_OPTIONS[source])
    result = {}
    try:
        # Warm-up: every episode once, untimed, so the environments (one per Meta-World task) and
        # caches are built before the clock starts.
        for index in range(episodes):
            generator.episode(index, distracted=False)
        for variant in ("clean", "distracted"):
            distracted = variant == "distracted"
            start, frames = time.perf_counter(), 0
            for index in range(episodes):
                frames += len(generator.episode(index, distracted)["frames"])
            seconds = time.perf_counter() - start
            result[variant] = {"frames_per_s": round(frames / seconds, 1), "episodes": episodes,
                               "frames": frames, "seconds": round(seconds, 2)}
    finally:
        generator.close()
    return result


def bench_generators(sources: tuple[str, ...] = tuple(REQUIRES), episodes: int = 6,
                     image_size: int = 64, strength: float = 0.5) -> dict:
    """frames/s of every source's generator on one pinned core; the JSON this script prints."""
    core = pin_to_one_core()
    report = {"image_size": image_size, "distractor_strength": strength, "core": core,
              "loadavg_start": os.getloadavg()[0], "sources": {}}
    for source in sources:
        package = REQUIRES[source]
        if package and importlib.util.find_spec(package) is None:
            report["sources"][source] = {"skipped": f"{package} is not installed"}
            continue
        print(f"bench {source} ...", file=sys.stderr)
        report["sources"][source] = {"options": ENVIRONMENT_OPTIONS[source],
                                     **bench_source(source, episodes, image_size, strength)}
    report["loadavg_end"] = os.getloadavg()[0]
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", default=",".join(REQUIRES),
                        help="comma-separated: synthetic, babyai, metaworld")
    parser.add_argument("--episodes", type=int, default=6, help="timed episodes per variant")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--strength", type=float, default=0.5,
                        help="strength of every distractor in the distracted runs")
    args = parser.parse_args(argv)
    sources = tuple(s for s in args.sources.split(",") if s)
    unknown = [s for s in sources if s not in REQUIRES]
    if unknown:
        parser.error(f"unknown source {unknown[0]!r}; known: {', '.join(REQUIRES)}")
    print(json.dumps(bench_generators(sources, args.episodes, args.image_size, args.strength),
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
