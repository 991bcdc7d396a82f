"""Train the language-queried focus module alone, and say where its map looks.

    python -m evals.text_focus_alone --steps 600 --seeds 0,1 --schedules warmup,no_warmup

``model.text_focus`` learns from its own match loss and reads only pixels, so it can be trained
without the rest of the model. This script does that on the synthetic benchmark (trained on the
distracted rendering with one look-alike actor beside the four distractors at 0.5, as the
look-alike sweep arms), with AdamW as the trainer configures it (betas 0.9 / 0.95, weight decay
0.05 on matrices) at a peak rate of 1e-2 (the trainer's 1e-3 x ``train.text_focus_lr_scale``).
The schedule is the trainer's (25 linear warm-up steps, then cosine to 0.1 over ``--steps``), or
the same cosine without the warm-up. Every ``--every`` steps it scores 32 held-out clips: the
map's lift over a uniform map on the grid cell of the object the label names, and on the cells
of the scene's other objects. Writes ``evals/results/text_focus_alone.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "evals" / "results" / "text_focus_alone.json"
WARMUP, BATCH, CLIPS_SCORED = 25, 16, 32


def lr_ratio(step: int, total: int, warmup: bool) -> float:
    """The trainer's WarmupCosineLR ratio at ``step`` (cos_min_ratio 0.1), with or without its
    linear warm-up."""
    cosine = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    return min(1.0, (step + 1) / WARMUP) * cosine if warmup else cosine


def named_object_lifts(focus, encoder, clips, world, count: int) -> tuple[float, float]:
    """Mean lift of the clip's own-label map on the named object's cell, and on the others'."""
    import torch

    from evals.defaults_sweep import object_cell_lifts
    from groundlam.video import to_model_input

    with torch.no_grad():
        maps = [focus.own_maps(to_model_input(clips[i]["frames"][None]),
                               encoder([clips[i]["label"]]))[0].numpy() for i in range(count)]
    return object_cell_lifts(maps, clips.clips[:count], world)


def run(seed: int, steps: int, warmup: bool, every: int) -> dict:
    import torch

    from groundlam.data.episodes import (
        ClipDataset,
        collate_clips,
        held_out_synthetic,
        load_episodes,
    )
    from groundlam.data.synthetic import Distractors, SyntheticConfig
    from groundlam.losses import focus_match_loss, label_ids
    from groundlam.model.text_focus import TextFocus
    from groundlam.text import load_text_encoder
    from groundlam.video import to_model_input

    torch.manual_seed(seed)
    sampler = random.Random(seed)
    world = SyntheticConfig(num_episodes=1024, episode_length=24, image_size=64, seed=0,
                            distractors=Distractors(0.5, 0.5, 0.5, 0.5, lookalikes=1))
    clips = ClipDataset(load_episodes("synthetic", world, "distracted"), 4, 64)
    test_world = held_out_synthetic(world, 64)
    test = ClipDataset(load_episodes("synthetic", test_world, "distracted"), 4, 64)
    encoder = load_text_encoder("all-MiniLM-L6-v2")
    focus = TextFocus(128, encoder.dim, patch_size=8)
    scale = torch.nn.Parameter(torch.tensor([math.log(1 / 0.07)]))
    matrices = [p for p in focus.parameters() if p.ndim >= 2]
    free = [p for p in focus.parameters() if p.ndim < 2] + [scale]
    optimizer = torch.optim.AdamW([{"params": matrices, "weight_decay": 0.05},
                                   {"params": free, "weight_decay": 0.0}],
                                  lr=1e-2, betas=(0.9, 0.95))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_ratio(step, steps, warmup))
    trace, losses, start = [], [], time.perf_counter()
    for step in range(1, steps + 1):
        batch = collate_clips([clips[i] for i in sampler.sample(range(len(clips)), BATCH)])
        loss = focus_match_loss(focus, to_model_input(batch["frames"]),
                                encoder(batch["labels"]), label_ids(batch["labels"]), scale)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if step % every == 0 or step == steps:
            target, others = named_object_lifts(focus, encoder, test, test_world, CLIPS_SCORED)
            trace.append({"step": step, "loss": sum(losses[-every:]) / len(losses[-every:]),
                          "named_object_lift": target, "other_object_lift": others,
                          "sharpness": focus.log_sharpness.exp().item(),
                          "seconds": time.perf_counter() - start})
            print(f"seed {seed} {'warmup' if warmup else 'no warmup'} {trace[-1]}", flush=True)
    return {"seed": seed, "warmup": warmup, "steps": steps, "trace": trace}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--schedules", default="warmup,no_warmup")
    parser.add_argument("--every", type=int, default=150, help="score every this many steps")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    schedules = args.schedules.split(",")
    if not set(schedules) <= {"warmup", "no_warmup"}:
        parser.error(f"--schedules {args.schedules!r}: use warmup, no_warmup or both")
    runs = [run(int(seed), args.steps, schedule == "warmup", args.every)
            for seed in args.seeds.split(",") for schedule in schedules]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": "2 CPU cores, no GPU", "batch": BATCH,
                                    "clips_scored": CLIPS_SCORED, "runs": runs}, indent=2))
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
