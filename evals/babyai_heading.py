"""Does a BabyAI latent know the turn, or only where the agent ends up facing?

    python -m evals.babyai_heading \
        --data runs/compare/data_cache/babyai_64px_heldout_64_a3f02943/clean \
        --runs runs/compare/babyai_clean_change/babyai/reconstruction_only/seed{0,1,2}

BabyAI's turns are egocentric ("left", "right") but the ``room`` view is drawn north up: a left
turn from facing north looks like a right turn from facing south. A latent that encodes the
heading the agent ends in is enough for the decoder, and a linear probe cannot read left from
right out of it without the current heading; on a clean corpus its ceiling is then 0.75 (forward,
toggle right; left and right a coin flip). Per run (``--runs``: folders with ``final/`` and
``config.yaml``), with probes fit on the first half of ``--data``'s episodes and scored on the
second (as ``evals/compare.py`` does for BabyAI), linear probes from the motion latent to:

- ``action``: the action (balanced accuracy, as in the comparison table);
- ``heading_after`` / ``heading_before``: the agent's heading at frame t+1 / t (4 classes);
- ``turn_left_or_right``: on turns only, left against right; ``..._given_heading``: the same with
  the latent crossed with the one-hot heading at frame t (one linear probe per heading).

Headings are read from clean frames by exact match with minigrid's agent tile at each of the 4
headings (``agent_headings``); transitions where the agent is not found (in a doorway, or a
distracted rendering) are left out and counted. Writes ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
import torch

ACTION_LEFT, ACTION_RIGHT = 0, 1


def agent_tiles(tile_px: int) -> np.ndarray:
    """minigrid's agent tile on an empty floor at headings 0-3 (right, down, left, up):
    int16 (4, tile_px, tile_px, 3)."""
    from minigrid.core.grid import Grid

    return np.stack([Grid.render_tile(None, agent_dir=d, tile_size=tile_px)
                     for d in range(4)]).astype(np.int16)


def agent_headings(frames: np.ndarray, tile_px: int, tolerance: int = 2) -> np.ndarray:
    """The agent's heading in uint8 frames (..., H, W, 3) drawn ``tile_px`` px a cell: int64 (...),
    0-3 as minigrid's ``agent_dir``, -1 where no cell matches an agent tile."""
    *lead, height, width, _ = frames.shape
    cells = frames.reshape(-1, height // tile_px, tile_px, width // tile_px, tile_px, 3)
    cells = cells.transpose(0, 1, 3, 2, 4, 5).astype(np.int16)  # (M, gy, gx, p, p, 3)
    found = np.full(cells.shape[0], -1, dtype=np.int64)
    for heading, tile in enumerate(agent_tiles(tile_px)):
        match = (np.abs(cells - tile) <= tolerance).all(axis=(-1, -2, -3)).any(axis=(-1, -2))
        found[match] = heading
    return found.reshape(lead)


def _score(fit_x, fit_y, test_x, test_y) -> float | None:
    """Balanced accuracy of the linear action probe; None where there is nothing to tell apart."""
    from groundlam.evaluation.metrics import action_probe_scores

    if len(np.unique(fit_y)) < 2 or len(test_y) == 0:
        return None
    return action_probe_scores(fit_x, fit_y, test_x, test_y)["balanced_accuracy"]


def _rows(columns: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    return {name: values[keep] for name, values in columns.items()}


def _crossed(latents: np.ndarray, headings: np.ndarray) -> np.ndarray:
    """[latent x one-hot heading, one-hot heading]: a linear probe on it is one per heading."""
    onehot = np.eye(4)[headings]
    return np.hstack([(latents[:, None, :] * onehot[:, :, None]).reshape(len(latents), -1),
                      onehot])


def measure(run: Path, data: str, max_clips: int) -> dict:
    from groundlam.config import load_config
    from groundlam.evaluation import evaluate as ev
    from groundlam.model import GroundLAM

    config = load_config(run / "config.yaml", [])
    model = GroundLAM.from_pretrained(str(run / "final")).eval()
    _, plan = ev._plan(data, config, True, model, "half")
    _, fit_episodes, test_episodes = plan[0]
    tile_px = model.config.image_size // 8  # the room view is 8 x 8 cells
    sets = []
    flat = ev._per_transition
    for name, episodes in (("fit", fit_episodes), ("scored", test_episodes)):
        clips = ev.collect(model, ev._clips(episodes, config, model, name), episodes, max_clips)
        headings = agent_headings(clips.frames, tile_px)  # (N, T)
        sets.append({"z": flat(clips.latents.motion), "action": flat(clips.actions),
                     "before": flat(headings[:, :-1]), "after": flat(headings[:, 1:])})
    fit, test = sets
    seen = [(s["before"] >= 0) & (s["after"] >= 0) for s in sets]
    f, t = (_rows(s, keep) for s, keep in zip(sets, seen, strict=True))
    ft, tt = (_rows(s, np.isin(s["action"], (ACTION_LEFT, ACTION_RIGHT))) for s in (f, t))
    return {
        "transitions": {"fit": len(fit["z"]), "scored": len(test["z"])},
        "heading_found_share": {"fit": float(seen[0].mean()), "scored": float(seen[1].mean())},
        "scored_turns": int(len(tt["z"])),
        "probe": {
            "action": _score(f["z"], f["action"], t["z"], t["action"]),
            "heading_after": _score(f["z"], f["after"], t["z"], t["after"]),
            "heading_before": _score(f["z"], f["before"], t["z"], t["before"]),
            "turn_left_or_right": _score(ft["z"], ft["action"], tt["z"], tt["action"]),
            "turn_left_or_right_given_heading": _score(
                _crossed(ft["z"], ft["before"]), ft["action"],
                _crossed(tt["z"], tt["before"]), tt["action"]),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a clean BabyAI room-view corpus")
    parser.add_argument("--runs", nargs="+", type=Path, required=True)
    parser.add_argument("--max-clips", type=int, default=128)
    parser.add_argument("--out", type=Path, default=Path("evals/results/babyai_heading.json"))
    args = parser.parse_args(argv)
    results = {"data": args.data, "max_clips": args.max_clips,
               "machine": f"{platform.system()} {platform.machine()}, torch "
                          f"{torch.__version__}, {torch.get_num_threads()} threads",
               "runs": {}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for run in args.runs:  # written after every run: a failure keeps what was measured
        results["runs"][str(run)] = measure(run, args.data, args.max_clips)
        print(run, json.dumps(results["runs"][str(run)]["probe"]), flush=True)
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
