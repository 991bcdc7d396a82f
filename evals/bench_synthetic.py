"""Benchmark the synthetic generator on one CPU core and measure the dataset's biases.

Prints JSON: frames/s of ``generate_episode`` (simulation and rendering) at 64x64, clean and with
every distractor at strength 1.0, against the 5,000 frames/s requirement; and the statistics the
data card quotes (action frequencies, task mix, distinct labels, how often the expert finishes).

    python evals/bench_synthetic.py [--episodes 400] [--stats-episodes 2000]
"""

from __future__ import annotations

import os

# One core: thread pools must be capped before numpy / torch are imported.
for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from groundlam.data.synthetic import (  # noqa: E402
    ACTIONS,
    Distractors,
    SyntheticConfig,
    all_labels,
    generate_episode,
    simulate,
)

REQUIRED_FRAMES_PER_SECOND = 5_000


def frames_per_second(config: SyntheticConfig, distracted: bool, repeats: int) -> list[float]:
    """Frames/s of generating episodes 0 .. num_episodes - 1, once per repeat."""
    generate_episode(0, config, distracted)  # warm the shape-mask caches
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for index in range(config.num_episodes):
            generate_episode(index, config, distracted)
        elapsed = time.perf_counter() - start
        rates.append(config.num_episodes * config.episode_length / elapsed)
    return rates


def dataset_statistics(config: SyntheticConfig) -> dict:
    """Action, task and label statistics of the first ``num_episodes`` episodes."""
    trajectories = [simulate(index, config) for index in range(config.num_episodes)]
    actions = np.concatenate([trajectory.actions for trajectory in trajectories])
    counts = np.bincount(actions, minlength=len(ACTIONS))
    done = [trajectory.done_frame for trajectory in trajectories if trajectory.done_frame >= 0]
    tasks = Counter(trajectory.task for trajectory in trajectories)
    first_64 = {trajectory.label for trajectory in trajectories[:64]}
    return {
        "episodes": config.num_episodes,
        "action_frequencies": {
            name: round(float(count) / len(actions), 4)
            for name, count in zip(ACTIONS, counts, strict=True)
        },
        "task_frequencies": {
            task: round(count / config.num_episodes, 4) for task, count in sorted(tasks.items())
        },
        "objects_per_scene": dict(
            sorted(Counter(int(t.object_cells.shape[1]) for t in trajectories).items())
        ),
        "task_done_rate": round(len(done) / config.num_episodes, 4),
        "median_done_frame": float(np.median(done)) if done else None,
        # After the task is done the agent acts at random: these actions carry no label signal.
        "share_of_actions_after_done": round(
            sum(len(t.actions) - t.done_frame for t in trajectories if t.done_frame >= 0)
            / len(actions),
            4,
        ),
        "distinct_labels": len({trajectory.label for trajectory in trajectories}),
        "distinct_labels_first_64": len(first_64),
        "possible_labels": len(all_labels()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=400, help="episodes per timing run")
    parser.add_argument("--repeats", type=int, default=3, help="timing runs; best is reported")
    parser.add_argument("--stats-episodes", type=int, default=2000)
    args = parser.parse_args()

    torch.set_num_threads(1)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    clean_config = SyntheticConfig(num_episodes=args.episodes, image_size=64, episode_length=24)
    distracted_config = dataclasses.replace(clean_config, distractors=Distractors.all(1.0))
    clean = frames_per_second(clean_config, distracted=False, repeats=args.repeats)
    distracted = frames_per_second(distracted_config, distracted=True, repeats=args.repeats)
    result = {
        "image_size": 64,
        "episode_length": 24,
        "threads": 1,
        # Best of the repeats: other processes on a shared machine only ever slow a run down.
        "clean_frames_per_second": round(max(clean)),
        "distracted_frames_per_second": round(max(distracted)),
        "clean_frames_per_second_median": round(statistics.median(clean)),
        "distracted_frames_per_second_median": round(statistics.median(distracted)),
        "required_frames_per_second": REQUIRED_FRAMES_PER_SECOND,
        "meets_requirement": min(max(clean), max(distracted)) >= REQUIRED_FRAMES_PER_SECOND,
        "statistics": dataset_statistics(SyntheticConfig(num_episodes=args.stats_episodes)),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
