"""Which distractor takes the action out of a model's latents? One distractor at a time.

    python -m evals.babyai_distractors --runs RUN... --corpora NAME=FOLDER... [--out JSON]

For each run (a training folder with ``final/``) and each corpus (a ``groundlam datagen`` folder of
one rendering, e.g. BabyAI with only ``--distractors camera_shake=0.5``), the first ``--episodes``
episodes are cut into up to ``--clips`` non-overlapping clips of ``--clip-length`` frames each,
encoded with ``GroundLAM.encode``, and a linear probe from one motion latent to the true action is
fit on the first half of the episodes and scored on the second (``action_probe_scores``:
balanced accuracy for discrete actions, NMSE for continuous ones). Corpora of the same episodes
with different distractors tell which one the latent does not survive (issue 9).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import datasets
import numpy as np

from groundlam import GroundLAM
from groundlam.data.episodes import load_episodes
from groundlam.evaluation.metrics import action_probe_scores


def probe_corpus(model, episodes: datasets.Dataset, max_episodes: int = 128, clips: int = 4,
                 clip_length: int = 4) -> dict[str, float]:
    """The probe's scores on the first ``max_episodes`` of ``episodes`` (``frames``, ``actions``);
    ``model`` needs only ``encode(uint8 (N, T, H, W, 3)).motion`` (N, T-1, Z)."""
    data = episodes.with_format("numpy", columns=["frames", "actions"])
    count = min(max_episodes, len(data))
    if count < 2:
        raise ValueError(f"{len(data)} episode(s): the probe needs at least 2")
    features, targets = [], []
    for row in range(count):
        frames, actions = data[row]["frames"], data[row]["actions"]
        starts = list(range(0, len(frames) - clip_length + 1, clip_length - 1))[:clips]
        video = np.stack([frames[s:s + clip_length] for s in starts]).astype(np.uint8)
        motion = model.encode(video).motion.numpy()  # (n, T-1, Z)
        features.append(motion.reshape(-1, motion.shape[-1]))
        targets.append(np.concatenate([actions[s:s + clip_length - 1] for s in starts]))
    half = count // 2
    return action_probe_scores(np.concatenate(features[:half]), np.concatenate(targets[:half]),
                               np.concatenate(features[half:]), np.concatenate(targets[half:]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, help="training folders with final/")
    parser.add_argument("--corpora", nargs="+", required=True, help="NAME=FOLDER")
    parser.add_argument("--episodes", type=int, default=128)
    parser.add_argument("--clips", type=int, default=4, help="clips an episode at most")
    parser.add_argument("--clip-length", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("evals/results/babyai_distractors.json"))
    args = parser.parse_args(argv)
    corpora = dict(spec.split("=", 1) for spec in args.corpora)
    results = {}
    for run in args.runs:
        model = GroundLAM.from_pretrained(str(Path(run) / "final")).eval()
        results[run] = {}
        for name, folder in corpora.items():
            results[run][name] = probe_corpus(model, load_episodes(folder), args.episodes,
                                              args.clips, args.clip_length)
            print(f"{run} {name}: {results[run][name]}", file=sys.stderr, flush=True)
    record = {"command": "python -m evals.babyai_distractors " + " ".join(argv or sys.argv[1:]),
              "corpora": corpora, "episodes": args.episodes, "clips_per_episode": args.clips,
              "clip_length": args.clip_length, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
