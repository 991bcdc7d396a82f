"""Choose defaults by measurement: arms x seeds x training renderings on the synthetic benchmark.

    python -m evals.defaults_sweep --arms old,new --seeds 0,1,2 --renderings clean,distracted
    python -m evals.defaults_sweep --arms old:clean,mix_vq:clean,old_recon:distracted:0
    python -m evals.defaults_sweep --list                  # the arms and their overrides

Every arm is a list of dotted overrides on ``configs/tiny.yaml`` at the sweep's budget (``BASE``:
300 steps of 16 clips x 4 frames). Each (arm, seed, training rendering) is trained by
``python -m groundlam.train`` in a subprocess, then scored on held-out episodes (a generator seed
no run trains on) in **both** renderings, whichever it was trained on, with probes fit on clips
of the training seed in the rendering being scored:

- ``probe``: a linear probe from one motion latent to the true action (balanced accuracy;
  chance 1/6), beside ``pixels``, the same probe on raw frame pairs (the floor);
- ``ceiling``: the balanced accuracy of an oracle that knows the action wherever frame t+1
  differs from frame t and can only guess elsewhere (blocked moves, grabs change no pixel);
- ``controllability``: Genie's delta-PSNR (dB) of the decoder with the clip's own latents
  against latents lent by another clip;
- ``retrieval``: top-1 of the clip's label among the held-out labels (InfoNCE arms), and
  ``retrieval_still``: the same from clips of the clip's first frame repeated (appearance alone);
- ``motion_focus_lift``: the motion focus maps' share of mass on the agent (``agent_mask``, 32
  held-out clips) over a uniform map's;
- the last logged per-term gradient norms on the shared encoder and the latent spread.

Runs live in ``--runs/<arm>/<rendering>/seed<k>/`` and are skipped when their ``scores.json``
exists, so the sweep is resumable. ``--jobs 1`` (the default) runs one at a time with a thread a
core. ``--jobs 2`` runs two at once with one thread each, which on a 2-core machine trains far
fewer frames per second in all: the arm ``align_900`` trained at about 11 frames/s with one thread
beside another training, and at 101 alone with two threads. Writes
``evals/results/defaults_sweep.json``: every run, and per (arm, training rendering, scored
rendering) the median and each seed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "evals" / "results" / "defaults_sweep.json"
FOCUS_CLIPS = 32  # held-out clips whose motion focus maps are scored against agent_mask

BASE = ("data.clip_length=4", "train.batch_size=16", "train.max_steps=300",
        "train.warmup_steps=25", "data.eval_episodes=64", "train.final_eval=false",
        "train.progress=false", "train.save_every=300", "train.keep_checkpoints=1",
        "train.log_every=25")
NO_DISTRACTORS = tuple(f"data.synthetic.distractors.{name}=0"
                       for name in ("camera_shake", "background", "sprites", "color_jitter"))
# switches whose defaults changed after the first arms ran: every arm spells them out, so an arm
# means the same run whatever configs/tiny.yaml says today
BEFORE_MATCHING = ("model.color_matching=false", "model.shift_matching=0", "loss.infonce_start=0")
# the defaults the quantiser arms start from (the continuous arm "mix_align_nce005_late")
ALIGNED = ("model.patch_mixing=3", "loss.infonce_weight=0.005", "loss.infonce_start=150",
           "model.color_matching=true", "model.shift_matching=2")
# issue 10's look-alike arms: the defaults plus one look-alike of the agent; "only" drops the four
# other distractors; an action head on every episode's true actions; the label in the encoder
LOOKALIKE_ON = "data.synthetic.distractors.lookalikes=1"
LOOKALIKE = (*ALIGNED, "model.motion_dim=128", "loss.infonce_max_ratio=0.3", LOOKALIKE_ON)
LOOKALIKE_ONLY = (*ALIGNED, "model.motion_dim=128", *NO_DISTRACTORS, LOOKALIKE_ON)
ACTION_HEAD = ("loss.action_weight=1.0", "data.action_fraction=1.0", "model.num_actions=6")
CONDITIONED = ("model.label_conditioning=true", "loss.infonce_weight=0")
CLIPS_8 = ("data.clip_length=8", "train.batch_size=8")
STEPS_900 = ("train.max_steps=900", "train.save_every=900")
ARMS: dict[str, tuple[str, ...]] = {
    # the encoder of the landed code: each patch embedded on its own, a 16-d latent
    "old": ("model.patch_mixing=0", "model.motion_dim=16", "loss.infonce_weight=0.1",
            *BEFORE_MATCHING),
    "old_recon": ("model.patch_mixing=0", "model.motion_dim=16", "loss.infonce_weight=0",
                  *BEFORE_MATCHING),
    "mix_z16": ("model.patch_mixing=3", "model.motion_dim=16", "loss.infonce_weight=0.1",
                *BEFORE_MATCHING),
    "mix_z128": ("model.patch_mixing=3", "model.motion_dim=128", "loss.infonce_weight=0.1",
                 *BEFORE_MATCHING),
    "mix_none": ("model.patch_mixing=3", "model.bottleneck=none", "loss.infonce_weight=0.1",
                 *BEFORE_MATCHING),
    "mix_z128_recon": ("model.patch_mixing=3", "model.motion_dim=128",
                       "loss.infonce_weight=0", *BEFORE_MATCHING),
    "mix_z128_focus_recon": ("model.patch_mixing=3", "model.motion_dim=128",
                             "loss.focus_weight=0.5", "loss.infonce_weight=0", *BEFORE_MATCHING),
    "mix_z128_nce005": ("model.patch_mixing=3", "model.motion_dim=128",
                        "loss.infonce_weight=0.005", *BEFORE_MATCHING),
    "mix4cat_recon": ("model.patch_mixing=3", "model.motion_dim=128", "loss.infonce_weight=0",
                      "model.num_motion_slots=4", "model.motion_pooling=concat",
                      *BEFORE_MATCHING),
    "mix_camera_recon": ("model.patch_mixing=3", "model.motion_dim=128", "loss.infonce_weight=0",
                         "model.num_camera_slots=1", *BEFORE_MATCHING),
    "mix_norm_recon": ("model.patch_mixing=3", "model.motion_dim=128", "loss.infonce_weight=0",
                       "model.frame_normalization=true", *BEFORE_MATCHING),
    "mix_norm_nce005": ("model.patch_mixing=3", "model.motion_dim=128",
                        "loss.infonce_weight=0.005", "model.frame_normalization=true",
                        *BEFORE_MATCHING),
    # global colour change explained in closed form before decoding
    "mix_color_recon": ("model.patch_mixing=3", "model.motion_dim=128", "loss.infonce_weight=0",
                        "model.color_matching=true", "model.shift_matching=0",
                        "loss.infonce_start=0"),
    "mix_color_nce005": ("model.patch_mixing=3", "model.motion_dim=128",
                         "loss.infonce_weight=0.005", "model.color_matching=true",
                         "model.shift_matching=0", "loss.infonce_start=0"),
    # InfoNCE joins after 150 steps of reconstruction alone (half the sweep's budget)
    "mix_color_nce005_late": ("model.patch_mixing=3", "model.motion_dim=128",
                              "loss.infonce_weight=0.005", "loss.infonce_start=150",
                              "model.color_matching=true", "model.shift_matching=0"),
    # shake and colour change explained in closed form before decoding (the defaults since)
    "mix_align_recon": ("model.patch_mixing=3", "model.motion_dim=128", "loss.infonce_weight=0",
                        "model.color_matching=true", "model.shift_matching=2"),
    "mix_align_nce005_late": ("model.patch_mixing=3", "model.motion_dim=128",
                              "loss.infonce_weight=0.005", "loss.infonce_start=150",
                              "model.color_matching=true", "model.shift_matching=2"),
    # the continuous latent standardised per channel over the batch, as the quantisers' inputs
    "align_latent_norm": (*ALIGNED, "model.motion_dim=128", "model.latent_norm=true"),
    # reconstruction weighted towards the pixels that change (half the weight)
    "align_change": (*ALIGNED, "model.motion_dim=128", "loss.change_weight=0.5"),
    # the quantised bottlenecks at the defaults above (the VQ codebook has started on encoder
    # outputs since these arms: "mix_vq" ran with random unit codes and slower dead-code checks)
    "align_vq": (*ALIGNED, "model.motion_dim=128", "model.bottleneck=vq", "model.vq_scale=true",
                 "model.quantizer_norm=false"),
    "align_vq_unscaled": (*ALIGNED, "model.motion_dim=128", "model.bottleneck=vq",
                          "model.vq_scale=false", "model.quantizer_norm=false"),
    "align_vq_norm": (*ALIGNED, "model.motion_dim=128", "model.bottleneck=vq",
                      "model.vq_scale=true", "model.quantizer_norm=true"),
    "align_fsq": (*ALIGNED, "model.bottleneck=fsq", "model.quantizer_norm=false"),
    "align_fsq_norm": (*ALIGNED, "model.bottleneck=fsq", "model.quantizer_norm=true"),
    "align_fsq6": (*ALIGNED, "model.bottleneck=fsq", "model.fsq_levels=[8,8,8,5,5,5]",
                   "model.quantizer_norm=false"),
    # the learning rate (configs/tiny.yaml: 1e-3, never measured until these arms)
    "align_lr5e4": (*ALIGNED, "model.motion_dim=128", "train.lr=5e-4"),
    "align_lr3e4": (*ALIGNED, "model.motion_dim=128", "train.lr=3e-4"),
    # the encoder's change channel taken after the same shift search as the decoder's input
    "align_diff_matching": (*ALIGNED, "model.motion_dim=128", "model.difference_matching=true"),
    # the decoder also sees the change into frame t: motion that carries on needs no latent
    "align_dm_history": (*ALIGNED, "model.motion_dim=128", "model.difference_matching=true",
                         "model.decoder_history=true"),
    # the budget: the defaults at 3x the steps (300 steps take about 4 min on 2 idle cores, and
    # the issue allows 15 min a run), alone and with difference matching
    "align_900": (*ALIGNED, "model.motion_dim=128", "train.max_steps=900",
                  "train.save_every=900"),
    "align_dm_900": (*ALIGNED, "model.motion_dim=128", "model.difference_matching=true",
                     "train.max_steps=900", "train.save_every=900"),
    # its control without language: at 900 steps InfoNCE's gradient on the encoder grew to 3-20x
    # reconstruction's
    "align_900_recon": (*ALIGNED, "model.motion_dim=128", "loss.infonce_weight=0",
                        "train.max_steps=900", "train.save_every=900"),
    # InfoNCE's gradient on the encoder capped at reconstruction's (groundlam.losses.balance)
    "align_900_cap1": (*ALIGNED, "model.motion_dim=128", "loss.infonce_max_ratio=1",
                       "train.max_steps=900", "train.save_every=900"),
    # a tighter cap (0.3), at the budget of configs/tiny.yaml (900 x 16 x 4 = 300 x 32 x 6 frames)
    "align_900_cap03": (*ALIGNED, "model.motion_dim=128", "loss.infonce_max_ratio=0.3",
                        "train.max_steps=900", "train.save_every=900"),
    # the same cap at 300 steps, for distracted training (the defaults' ratio there: 0.32-1.28)
    "align_cap03": (*ALIGNED, "model.motion_dim=128", "loss.infonce_max_ratio=0.3"),
    # issue 10's look-alike condition: one actor drawn exactly like the agent beside the four
    # distractors (trained distracted), the defaults against the same run without language
    "lookalike": LOOKALIKE,
    "lookalike_recon": (*LOOKALIKE, "loss.infonce_weight=0"),
    # the same pair at 900 steps (configs/tiny.yaml's frames): does language help with budget?
    "lookalike_900": (*LOOKALIKE, *STEPS_900),
    "lookalike_recon_900": (*LOOKALIKE, "loss.infonce_weight=0", *STEPS_900),
    # what the encoder can read at all there: an action head on every episode's true actions
    "lookalike_actions": (*LOOKALIKE, *ACTION_HEAD),
    # the same at 900 steps: what a supervised encoder reads there at the longest budget run
    "lookalike_actions_900": (*LOOKALIKE, *ACTION_HEAD, *STEPS_900),
    # InfoNCE on the clip's motion latents pooled (model.task_pooling=motion), 3 and 7 transitions
    # (8-frame clips at half the batch: the same frames a step)
    "lookalike_motion_pool": (*LOOKALIKE, "model.task_pooling=motion"),
    "lookalike_motion_pool_c8": (*LOOKALIKE, "model.task_pooling=motion", *CLIPS_8),
    "lookalike_recon_c8": (*LOOKALIKE, "loss.infonce_weight=0", *CLIPS_8),
    # still-frame clips as InfoNCE negatives (loss.static_negatives)
    "lookalike_static": (*LOOKALIKE, "loss.static_negatives=true"),
    # the same with InfoNCE 10x stronger and uncapped: can the label shape the latents at all?
    "lookalike_motion_pool_c8_w05": (*ALIGNED, "model.motion_dim=128", LOOKALIKE_ON,
                                     "model.task_pooling=motion", *CLIPS_8,
                                     "loss.infonce_weight=0.05", "loss.infonce_max_ratio=0"),
    # the label added to the motion slots (model.label_conditioning), scored with the labels
    "lookalike_only_cond_recon": (*LOOKALIKE_ONLY, *CONDITIONED),
    "lookalike_only_cond_actions": (*LOOKALIKE_ONLY, *CONDITIONED, *ACTION_HEAD),
    # the two supervised look-alike arms at 900 steps: is what they read limited by the budget?
    "lookalike_only_actions_900": (*LOOKALIKE_ONLY, "loss.infonce_weight=0", *ACTION_HEAD,
                                   *STEPS_900),
    "lookalike_only_cond_actions_900": (*LOOKALIKE_ONLY, *CONDITIONED, *ACTION_HEAD,
                                        *STEPS_900),
    # the look-alike alone, without the four other distractors: unsupervised, and supervised
    "lookalike_only_recon": (*ALIGNED, "model.motion_dim=128", "loss.infonce_max_ratio=0.3",
                             *NO_DISTRACTORS, LOOKALIKE_ON, "loss.infonce_weight=0"),
    "lookalike_only_actions": (*ALIGNED, "model.motion_dim=128", "loss.infonce_max_ratio=0.3",
                               *NO_DISTRACTORS, LOOKALIKE_ON, *ACTION_HEAD),
    # language-queried focus (model.text_focus): the label's map over the patches, trained by its
    # match loss on detached patches, weights the reconstruction; no other language term. Against
    # the no-language focus control: the task slots' focus weights it, no InfoNCE
    "lookalike_text_focus": (*LOOKALIKE, "model.text_focus=true", "loss.focus_weight=0.5",
                             "loss.infonce_weight=0"),
    "lookalike_slot_focus_recon": (*LOOKALIKE, "loss.focus_weight=0.5", "loss.infonce_weight=0"),
    # the same pair at 900 steps: at 300 the label map's match loss has only begun to fall.
    # The text-focus runs in evals/results/defaults_sweep_text_focus.json predate the focus
    # groups skipping the warm-up (groundlam.engine.skip_warmup_cosine)
    "lookalike_text_focus_900": (*LOOKALIKE, "model.text_focus=true", "loss.focus_weight=0.5",
                                 "loss.infonce_weight=0", *STEPS_900),
    "lookalike_slot_focus_recon_900": (*LOOKALIKE, "loss.focus_weight=0.5",
                                       "loss.infonce_weight=0", *STEPS_900),
    "mix_vq": ("model.patch_mixing=3", "model.motion_dim=128", "loss.infonce_weight=0.005",
               "model.bottleneck=vq", "model.vq_scale=false", "model.quantizer_norm=false",
               "train.vq_restart_every=100",
               *BEFORE_MATCHING),
    "mix_fsq": ("model.patch_mixing=3", "loss.infonce_weight=0.005", "model.bottleneck=fsq",
                "model.quantizer_norm=false", *BEFORE_MATCHING),
}


# ---------------------------------------------------------------------------- one run
def score(folder: Path, max_clips: int = 128) -> dict[str, Any]:
    """Score ``folder/final`` on held-out synthetic episodes, clean and distracted."""
    from dataclasses import replace

    import numpy as np
    import torch

    from groundlam.config import load_config
    from groundlam.data.episodes import ClipDataset, held_out_synthetic, load_episodes
    from groundlam.data.synthetic import Distractors
    from groundlam.evaluation.evaluate import _controllability, collect
    from groundlam.evaluation.metrics import (
        action_probe_scores,
        focus_precision,
        frame_pair_features,
        no_change_ceiling,
        no_change_transitions,
        retrieval,
    )
    from groundlam.focus import focus_map
    from groundlam.model import GroundLAM

    config = load_config(folder / "config.yaml", [])
    model = GroundLAM.from_pretrained(str(folder / "final")).eval()
    data = config.data
    synthetic = data.synthetic
    if not any(vars(synthetic.distractors).values()):  # clean-trained: score distracted too
        synthetic = replace(synthetic, distractors=Distractors(0.5, 0.5, 0.5, 0.5))
    fit_config = replace(synthetic, num_episodes=data.eval_episodes)
    test_config = held_out_synthetic(synthetic, data.eval_episodes)
    results: dict[str, Any] = {}
    for rendering in ("clean", "distracted"):
        sets = []
        for part in (fit_config, test_config):
            episodes = load_episodes("synthetic", part, rendering)
            clips = ClipDataset(episodes, data.clip_length, model.config.image_size)
            sets.append(collect(model, clips, episodes, max_clips))
        test_clips = clips.clips  # (episode row, first frame) of each held-out clip
        fit, test = sets
        if model.config.label_conditioning:  # the latents the label lets the encoder pick
            for clips in (fit, test):
                clips.latents.motion = np.concatenate([
                    model.encode(torch.from_numpy(clips.frames[i:i + 64]),
                                 text=clips.latents.labels[i:i + 64]).motion.numpy()
                    for i in range(0, len(clips.frames), 64)])
        flat = lambda a: a.reshape(a.shape[0] * a.shape[1], *a.shape[2:])  # noqa: E731
        train_y, test_y = flat(fit.actions), flat(test.actions)
        probe = action_probe_scores(flat(fit.latents.motion), train_y, flat(test.latents.motion),
                                    test_y)
        pixels = action_probe_scores(frame_pair_features(fit.frames), train_y,
                                     frame_pair_features(test.frames), test_y)
        if rendering == "clean":  # where no pixel changes (decided on the clean rendering)
            no_change = no_change_transitions(test.frames)
        ceiling = no_change_ceiling(test_y, no_change)
        candidates = sorted(set(test.latents.labels))
        text = model.embed_text(candidates).cpu().numpy()
        # motion map t is drawn on frame t+1: its share of mass on the agent against uniform
        clips = range(min(FOCUS_CLIPS, len(test.frames)))
        maps = np.concatenate([focus_map(test.frames[i], model).motion for i in clips])
        masks = np.concatenate([test.agent_mask[i, 1:] for i in clips])
        results[rendering] = {
            "motion_focus_lift": focus_precision(maps, masks)["lift"],
            **(_label_focus(model, test, clips, test_clips, test_config)
               if model.config.text_focus else {}),
            # from each clip's first frame repeated (collect encodes it): appearance alone
            "retrieval_still_top1": retrieval(test.latents.still_task, test.latents.labels, text,
                                              candidates)["top1"],
            "probe": probe["balanced_accuracy"], "chance": probe["chance"],
            "pixels": pixels["balanced_accuracy"],
            "ceiling": ceiling["balanced_accuracy"],
            "no_change_share": ceiling["no_change_share"],
            "controllability": (_controllability(model, test.frames) or {}).get("delta_psnr"),
            "retrieval_top1": retrieval(test.latents.task, test.latents.labels, text,
                                        candidates)["top1"],
        }
    log = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    results["train"] = {key: value for key, value in log[-1].items()
                        if key.startswith(("encoder_grad_", "latent_spread", "loss", "reconstr",
                                           "infonce"))}
    # median over the logged steps of the gradient ratio (one step is noisy)
    ratios = [entry["encoder_grad_infonce"] / max(entry["encoder_grad_reconstruction"], 1e-12)
              for entry in log if "encoder_grad_infonce" in entry
              and "encoder_grad_reconstruction" in entry]
    if ratios:
        results["train"]["infonce_over_reconstruction_grad"] = statistics.median(ratios)
    return results


def _label_focus(model, test, clips: range, starts: list, world) -> dict[str, float]:
    """Where the language-queried maps (``model.text_focus``) look, every frame under the clip's
    own label, as lifts over a uniform map: on the agent (``agent_mask``), and on the grid cell
    of the object the label names against the cells of the scene's other objects (from the
    simulated state; a cell is exactly one patch at 64 px, shaken by at most a few pixels in
    the distracted rendering)."""
    import numpy as np

    from groundlam.data.synthetic import GRID_CELLS
    from groundlam.evaluation.metrics import focus_precision
    from groundlam.focus import label_focus

    config = model.config
    grid, p = config.image_size // config.patch_size, config.patch_size
    focus = label_focus(model, test.frames[clips.start:clips.stop],
                        test.latents.labels[clips.start:clips.stop]).numpy()  # (B, T, N)
    maps = focus.reshape(*focus.shape[:2], grid, grid).repeat(p, axis=2).repeat(p, axis=3)
    masks = test.agent_mask[clips.start:clips.stop]
    result = {"label_focus_lift": focus_precision(np.concatenate(maps) / (p * p),
                                                  np.concatenate(masks))["lift"]}
    if grid != GRID_CELLS:
        return result
    target, others = object_cell_lifts((focus[clip] for clip in clips),
                                       (starts[clip] for clip in clips), world)
    result.update(label_focus_target_lift=target, label_focus_other_object_lift=others)
    return result


def object_cell_lifts(maps, positions, world) -> tuple[float, float]:
    """Mean lift over a uniform map of label maps on the grid cell of the object the label
    names, and on the cells of the scene's other objects.

    ``maps``: per clip, (T, N) maps over the N = GRID_CELLS ** 2 patches (one cell a patch at
    64 px); ``positions``: per clip, its (episode, first frame) in the simulated ``world``.
    """
    import numpy as np

    from groundlam.data.synthetic import GRID_CELLS, simulate

    on_target, on_others = [], []
    for clip_maps, (row, start) in zip(maps, positions, strict=True):
        state = simulate(int(row), world)
        for t, frame_map in enumerate(clip_maps):
            cells = state.object_cells[start + t]  # (K, 2)
            lifts = frame_map[cells[:, 0] * GRID_CELLS + cells[:, 1]] * frame_map.shape[-1]
            on_target.append(lifts[state.target_object])
            on_others.extend(np.delete(lifts, state.target_object))
    return float(np.mean(on_target)), float(np.mean(on_others))


def scores_name(probe_clips: int) -> str:
    """The file a run's scores go to: ``scores.json`` at the first sweeps' 128 probe clips."""
    return "scores.json" if probe_clips == 128 else f"scores_probe{probe_clips}.json"


def run_one(arm: str, seed: int, rendering: str, runs: Path, probe_clips: int = 128) -> None:
    folder = runs / arm / rendering / f"seed{seed}"
    overrides = [*BASE, *ARMS[arm], f"train.seed={seed}", f"train.output_dir={folder}"]
    if rendering == "clean":
        overrides += NO_DISTRACTORS
    start = time.perf_counter()
    if not (folder / "final" / "model.safetensors").is_file():
        command = [sys.executable, "-m", "groundlam.train", "--config",
                   str(ROOT / "configs" / "tiny.yaml"), *overrides]
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "train.log").open("w") as log:
            subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True)
    trained = time.perf_counter() - start
    scores = score(folder, probe_clips)
    scores.update(arm=arm, seed=seed, rendering=rendering, overrides=overrides,
                  probe_clips=probe_clips, train_s=trained,
                  eval_s=time.perf_counter() - start - trained)
    (folder / scores_name(probe_clips)).write_text(json.dumps(scores, indent=2))


# ---------------------------------------------------------------------------- the sweep
def summarise(scores: list[dict[str, Any]]) -> dict[str, Any]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for entry in scores:
        groups.setdefault(f"{entry['arm']} / trained {entry['rendering']}", []).append(entry)
    summary = {}
    for name, entries in sorted(groups.items()):
        entries.sort(key=lambda e: e["seed"])
        row: dict[str, Any] = {"seeds": [e["seed"] for e in entries]}
        for rendering in ("clean", "distracted"):
            for metric in ("probe", "pixels", "ceiling", "controllability", "retrieval_top1",
                           # newer: may be absent
                           "retrieval_still_top1", "motion_focus_lift", "label_focus_lift",
                           "label_focus_target_lift", "label_focus_other_object_lift"):
                values = [e[rendering].get(metric) for e in entries]
                if any(v is None for v in values):
                    continue
                row[f"{rendering}/{metric}"] = {"median": statistics.median(values),
                                                "seeds": values}
        ratios = [e["train"].get("infonce_over_reconstruction_grad") for e in entries]
        if all(r is not None for r in ratios):
            row["infonce_over_reconstruction_grad"] = {"median": statistics.median(ratios),
                                                       "seeds": ratios}
        summary[name] = row
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", default="old,new")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--renderings", default="clean,distracted")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "defaults_sweep")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None,
                        help=f"default {RESULTS.relative_to(ROOT)}, or defaults_sweep_probeN.json "
                             "beside it for --probe-clips N other than 128")
    parser.add_argument("--probe-clips", type=int, default=128,
                        help="clips each probe is fit on and scored on, at most (the 64 fit "
                             "episodes hold 384 clips of 4 frames); a run already trained is "
                             "only rescored; 128 (the first sweeps) writes scores.json, any "
                             "other N scores_probeN.json, and the summary reads that file")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--one", nargs=3, metavar=("ARM", "SEED", "RENDERING"),
                        help=argparse.SUPPRESS)  # a worker: train and score one run
    args = parser.parse_args(argv)
    if args.list:
        for arm, overrides in ARMS.items():
            print(f"{arm:24s} {' '.join(overrides) or '(defaults)'}")
        return 0
    if args.out is None:
        args.out = (RESULTS if args.probe_clips == 128
                    else RESULTS.with_name(f"defaults_sweep_probe{args.probe_clips}.json"))
    if args.one:
        run_one(args.one[0], int(args.one[1]), args.one[2], args.runs, args.probe_clips)
        return 0
    # an arm may name its training rendering and its seed itself: "old:clean", "old:clean:2"
    arms = [(item.split(":") + ["", ""])[:3] for item in args.arms.split(",")]
    unknown = [arm for arm, _, _ in arms if arm not in ARMS]
    if unknown:
        parser.error(f"unknown arms {unknown}; --list shows them")
    todo = [(arm, seed, rendering) for seed in map(int, args.seeds.split(","))
            for arm, only, seed_only in arms for rendering in (only or args.renderings).split(",")
            if not seed_only or int(seed_only) == seed]
    env = dict(os.environ, WANDB_MODE="disabled", HF_HUB_OFFLINE="1",
               PYTHONPATH=str(ROOT), LOCAL_WORLD_SIZE=str(max(args.jobs, 1)))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    # a thread a job on the cores there are, unless the caller says (e.g. beside other work)
    env["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS") or str(
        max(1, (os.cpu_count() or 1) // max(args.jobs, 1)))
    running: list[tuple[tuple[str, int, str], subprocess.Popen]] = []
    failed = []
    while todo or running:
        while todo and len(running) < args.jobs:
            job = todo.pop(0)
            folder = args.runs / job[0] / job[2] / f"seed{job[1]}"
            if (folder / scores_name(args.probe_clips)).is_file():
                continue
            print(f"[sweep {time.strftime('%H:%M:%S')}] start {job}", flush=True)
            running.append((job, subprocess.Popen(
                [sys.executable, "-m", "evals.defaults_sweep", "--one", job[0], str(job[1]),
                 job[2], "--runs", str(args.runs), "--probe-clips", str(args.probe_clips)],
                cwd=ROOT, env=env)))
        time.sleep(2)
        for item in list(running):
            job, process = item
            if process.poll() is not None:
                running.remove(item)
                status = "done" if process.returncode == 0 else f"FAILED ({process.returncode})"
                if process.returncode:
                    failed.append(job)
                print(f"[sweep {time.strftime('%H:%M:%S')}] {status} {job}", flush=True)
    scores = []
    for path in sorted(args.runs.glob(f"*/*/seed*/{scores_name(args.probe_clips)}")):
        entry = json.loads(path.read_text())
        # what the run was trained with, from its own config.yaml (the arm's overrides are on
        # top of configs/tiny.yaml as it was when the run started)
        config = yaml.safe_load((path.parent / "config.yaml").read_text())
        entry["config"] = {"model": config["model"], "loss": config["loss"]}
        scores.append(entry)
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    result = {"base_overrides": list(BASE), "probe_clips": args.probe_clips,
              "arms": {a: list(o) for a, o in ARMS.items()}, "machine": f"{os.cpu_count()} CPUs",
              "runs": scores, "summary": summarise(scores)}
    if previous.get("notes"):
        result["notes"] = previous["notes"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["summary"], indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
