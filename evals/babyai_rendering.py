"""What a model could read of BabyAI's actions, per rendering: the measurement behind the default
BabyAI corpus of ``evals/compare.py`` (see ``data_cards/babyai.md``).

    python -m evals.babyai_rendering                      # all candidates (~10 CPU-minutes)
    python -m evals.babyai_rendering --only goto_room_64  # one; the others in the file are kept

Per candidate rendering (a level, a ``view`` and an ``image_size``; clean, seed 0) the script
generates episodes 0, 1, ... until ``--transitions`` fit transitions, then more episodes until
half as many scored transitions (episodes never shared between the two sets), and reports:

- ``changed_px``: mean number of pixels (of image_size^2) whose colour changes, per action name,
  over fit and scored transitions; ``no_change_share``: share of transitions changing no pixel
  (overall and per action); ``no_change_ceiling``: the balanced accuracy an oracle reaches when
  every no-change transition must get one prediction (``groundlam.evaluation.metrics``).
- ``probe_16`` / ``probe_32``: balanced accuracy (and chance = 1 / classes in the scored set) of
  the linear action probe (``action_probe_scores``) on raw frame pairs
  (``frame_pair_features(size=16 or 32)``: frame t and the change to t+1, area-downsampled).
- ``frames_per_s``: frames generated / wall time of ``generator.episode(i, distracted=False)``
  (bot planning, re-drawn attempts, rendering, masks; a cold tile cache), one torch thread.
- ``agent_mask_share``: mean share of pixels in ``agent_mask``.

Adds to ``evals/results/babyai_rendering.json`` (``--out``; ``{"runs": {command: {candidate:
result}}}``) and prints a Markdown table. Balanced accuracy on ~150 scored transitions moves by
several points between runs: compare candidates by the gaps, not the third digit.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from groundlam.data.generators.babyai import ACTIONS

# name -> (level, view, image_size, extra config fields)
CANDIDATES = {
    "goto_full_64": ("BabyAI-GoTo-v0", "full", 64, {}),
    "goto_full_88": ("BabyAI-GoTo-v0", "full", 88, {}),
    "goto_full_128": ("BabyAI-GoTo-v0", "full", 128, {}),
    "goto_full_176": ("BabyAI-GoTo-v0", "full", 176, {}),
    "goto_room_32": ("BabyAI-GoTo-v0", "room", 32, {}),
    "goto_room_64": ("BabyAI-GoTo-v0", "room", 64, {}),
    "goto_agent_64": ("BabyAI-GoTo-v0", "agent", 64, {}),
    "putnextlocal_full_64": ("BabyAI-PutNextLocal-v0", "full", 64, {}),
    "gotolocal_full_64": ("BabyAI-GoToLocal-v0", "full", 64, {"min_frames": 2}),
}


def _episodes(generator, start: int, transitions: int) -> tuple[list[dict], int, float]:
    """Clean episodes start, start + 1, ... until ``transitions``; (rows, next index, seconds)."""
    rows, index, began = [], start, time.perf_counter()
    while sum(len(row["actions"]) for row in rows) < transitions:
        rows.append(generator.episode(index, distracted=False))
        index += 1
    return rows, index, time.perf_counter() - began


def _features(rows: list[dict], size: int) -> np.ndarray:
    from groundlam.evaluation.metrics import frame_pair_features

    return np.concatenate([frame_pair_features(row["frames"][None], size) for row in rows])


def measure(name: str, transitions: int, seed: int = 0) -> dict:
    from groundlam.data.generators.babyai import BabyAIConfig, BabyAIGenerator
    from groundlam.evaluation.metrics import balanced_accuracy, fit_probe, no_change_ceiling

    level, view, image_size, extra = CANDIDATES[name]
    config = BabyAIConfig(level=level, view=view, image_size=image_size, seed=seed,
                          num_episodes=10_000, **extra)
    with BabyAIGenerator(config) as generator:
        fit, index, fit_s = _episodes(generator, 0, transitions)
        scored, _, scored_s = _episodes(generator, index, transitions // 2)
        view_cells, tile_px = generator.view_cells, generator.tile_px
    rows = fit + scored
    actions = np.concatenate([row["actions"] for row in rows])
    changed = np.concatenate([(row["frames"][1:] != row["frames"][:-1]).any(-1).sum((1, 2))
                              for row in rows])  # (N,) pixels changed per transition
    frames = sum(len(row["frames"]) for row in rows)
    result = {
        "level": level, "view": view, "image_size": image_size, "seed": seed, **extra,
        "view_cells": view_cells, "tile_px": tile_px,
        "px_per_cell": round(image_size / view_cells, 2),
        "episodes": {"fit": len(fit), "scored": len(scored)},
        "transitions": {"fit": int(sum(len(r["actions"]) for r in fit)),
                        "scored": int(sum(len(r["actions"]) for r in scored))},
        "frames_per_s": round(frames / (fit_s + scored_s), 1),
        "agent_mask_share": round(float(np.mean([row["agent_mask"].mean() for row in rows])), 4),
        "action_share": {}, "changed_px": {}, "no_change_share": {},
    }
    for action, label in enumerate(ACTIONS):
        chosen = actions == action
        if chosen.any():
            result["action_share"][label] = round(float(chosen.mean()), 4)
            result["changed_px"][label] = round(float(changed[chosen].mean()), 1)
            result["no_change_share"][label] = round(float((changed[chosen] == 0).mean()), 4)
    result["changed_px"]["all"] = round(float(changed.mean()), 1)
    result["no_change_share"]["all"] = round(float((changed == 0).mean()), 4)
    # a view that jumps (the room view entering another room) or moves as a whole (the agent view)
    result["over_10pct_changed_share"] = round(float((changed > 0.1 * image_size ** 2).mean()), 4)
    ceiling = no_change_ceiling(actions, changed == 0)
    result["no_change_ceiling"] = round(float(ceiling["balanced_accuracy"]), 4)
    fit_y = np.concatenate([row["actions"] for row in fit])
    scored_y = np.concatenate([row["actions"] for row in scored])
    for size in (16, 32):
        # action_probe_scores' fit and score, spelt out to report each action's recall as well
        predicted = fit_probe(_features(fit, size), fit_y, "linear", seed).predict(
            _features(scored, size))
        result[f"probe_{size}"] = {
            "balanced_accuracy": round(balanced_accuracy(scored_y, predicted), 4),
            "chance": round(1 / len(np.unique(scored_y)), 4),
            "recall": {ACTIONS[c]: round(float(np.mean(predicted[scored_y == c] == c)), 3)
                       for c in np.unique(scored_y)}}
    return result


def table(results: dict) -> str:
    lines = ["| rendering | px/cell | forward | left | right | toggle | no-change | "
             "probe 16 px | probe 32 px | chance | frames/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        px = r["changed_px"]
        lines.append(
            f"| {name} | {r['px_per_cell']} | {px.get('forward', '-')} | {px.get('left', '-')} | "
            f"{px.get('right', '-')} | {px.get('toggle', '-')} | "
            f"{100 * r['no_change_share']['all']:.1f}% | "
            f"{r['probe_16']['balanced_accuracy']:.3f} | {r['probe_32']['balanced_accuracy']:.3f}"
            f" | {r['probe_32']['chance']:.3f} | {r['frames_per_s']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated candidate names (default: all)")
    parser.add_argument("--transitions", type=int, default=300,
                        help="fit transitions per candidate (scored: half as many)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("evals/results/babyai_rendering.json"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    names = args.only.split(",") if args.only else list(CANDIDATES)
    command = (f"python -m evals.babyai_rendering --transitions {args.transitions} "
               f"--seed {args.seed}")
    # {"runs": {command: {candidate: result}}}: candidates measured earlier (with these settings or
    # others) are kept, and the file is written after each candidate, so an interrupted run loses
    # only the one in progress
    report = json.loads(args.out.read_text()) if args.out.is_file() else {"runs": {}}
    runs = report["runs"].setdefault(command, {})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name in names:
        load, began = os.getloadavg()[0], time.perf_counter()
        result = measure(name, args.transitions, args.seed)
        seconds = time.perf_counter() - began
        result["machine"] = (f"{os.cpu_count()} cores, load average {load:.1f} -> "
                             f"{os.getloadavg()[0]:.1f} (shared with other jobs); {seconds:.0f} s")
        runs[name] = result
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"{name}: {seconds:.0f} s", flush=True)
    print(table({name: runs[name] for name in names}))


if __name__ == "__main__":
    main()
