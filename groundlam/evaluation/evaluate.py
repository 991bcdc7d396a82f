"""``groundlam eval``: every metric of ``groundlam.evaluation.metrics`` for one checkpoint.

    groundlam eval --checkpoint runs/tiny/final --data synthetic --out runs/tiny/eval
    groundlam eval --checkpoint DIR --data SPEC --out DIR --preset quick [--config run.yaml] [k=v]
    groundlam eval ... --processes 1     # the two synthetic renderings one after the other

On a machine with as many cores as renderings, the synthetic benchmark's two renderings are
evaluated side by side, one forked process each (``evaluate_checkpoint(processes=...)``,
``default_processes``); the numbers are those of one after the other.

Dimension keys: N clips, T frames a clip, S model image size, Z latent size, K text-embedding
size, A action size.

Which episodes fit the probes and which are scored (recorded as ``split`` in ``metrics.json``):

- ``--data synthetic``: the probes are fit on the first ``data.eval_episodes`` episodes of the
  run's training seed and scored on as many episodes of another seed (``held_out_synthetic``),
  which the model never saw; always in two renderings of the same trajectories, clean and
  distracted (by the run's ``data.synthetic.distractors``, or by the benchmark's standard ones,
  every distractor at 0.5, when the run switched none on). ``split.trained_on`` says which of the
  two the model was trained on (None when the run trained on other data or without a config).
- any other spec (a ``save_to_disk`` folder or Parquet files): scored on its episodes, fit on the
  run's ``data.train`` when that is another dataset; otherwise the spec's episodes are split in
  halves by row (fit on the first, scored on the second) and ``split.held_out`` says whether the
  scored episodes are training data (``false``: ``data.train`` is the same spec) or unknown
  (``null``: no run config). ``report.md`` prints that warning above the tables.

Where the episodes have actions (and clips take every frame), beside the probes of the motion
latents (``action_probe``): ``pixels_linear``, the raw-pixel floor; ``current_frame_linear``, raw
pixels of frame t alone: a policy that is a function of the state (a scripted expert) gives its
action away before anything moves, and a decoder that sees frame t then needs no latent for that
share (Meta-World, issue 9); ``task_time_linear``, a probe of
the task identity and time step alone (what a scripted expert's actions give away without any
latent), and ``motion_task_time_linear``, of the latent with them: what the latent adds is the
gap between the two (for discrete actions the one-hot task and time columns go in unscaled,
``fit_probe``'s ``indicators``); ``ceiling``, the score of an oracle that is right on every
transition that changes pixels (``metrics.no_change_ceiling``; synthetic distracted renderings
take their no-change transitions from the clean rendering of the same trajectories).

Episodes without ``actions`` (or clips taken at a frame stride above 1, which have none) get no
action probes, and a logged line says why.

Writes ``metrics.json``, ``report.md`` (tables, latent-space plots, focus overlays; drawn by
``groundlam.evaluation.report``) and PNG plots (matplotlib, imported only when plotting) to
``--out``. ``--preset quick`` (``PRESETS``) is what ``groundlam train`` runs on its final model.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from tqdm.auto import tqdm

from groundlam.allocator import keep_freed_memory
from groundlam.config import Config, load_config
from groundlam.data.episodes import ClipDataset, collate_clips, held_out_synthetic, load_episodes
from groundlam.data.sources import is_hub_id
from groundlam.data.synthetic import ACTIONS as SYNTHETIC_ACTIONS
from groundlam.data.synthetic import Distractors
from groundlam.evaluation.metrics import (
    action_probe_scores,
    camera_shift_sensitivity,
    controllability,
    disentanglement_matrix,
    fit_in_parallel,
    focus_precision,
    frame_pair_features,
    is_discrete,
    no_change_ceiling,
    no_change_transitions,
    retrieval_with_chance,
    task_time_features,
)
from groundlam.evaluation.report import plot_latents, write_report
from groundlam.video import resize_video, to_model_input

logger = logging.getLogger(__name__)

__all__ = ["EvalPreset", "PRESETS", "Latents", "extract_latents", "ClipSet", "collect",
           "evaluate_variant", "evaluate_checkpoint", "can_fork", "default_processes", "main"]

# the strength of every distractor in the benchmark's distracted rendering (configs/base.yaml and
# tiny.yaml), used when a run trained on clean episodes: it is scored on both renderings anyway
STANDARD_DISTRACTION = 0.5
# where ``timings_s`` says an evaluation's time went (the test clips' controllability is scored
# on the decoder's predictions of their encoding pass)
STAGES = ("encode fit clips", "encode test clips, controllability", "action probes", "retrieval",
          "disentanglement", "camera shift", "focus maps", "plots")


@dataclass(frozen=True)
class EvalPreset:
    """How much of the evaluation ``evaluate_checkpoint`` runs, and on how many clips."""

    max_clips: int  # clips a set (probe fit, scored) at most
    focus_clips: int  # held-out clips whose focus maps are scored
    shift_clips: int  # held-out clips shifted for the camera-shift ratio; 0 skips it
    mlp_probe: bool  # the MLP action probe beside the linear one
    disentanglement: bool  # the source x target probe matrix
    plots: bool  # latent-space PNGs
    controllability_clips: int | None = None  # held-out clips it is measured on; None: all


PRESETS = {
    # ``groundlam eval``'s default: every metric
    "full": EvalPreset(max_clips=256, focus_clips=8, shift_clips=64, mlp_probe=True,
                       disentanglement=True, plots=True),
    # the trainer's final evaluation: the linear action probes with their references (raw
    # pixels, frame t, task and time step, the ceiling), retrieval and its no-motion control,
    # controllability and the focus maps of one clip. Every metric at 512 clips took 163 s on
    # the quickstart's model (2 cores): half of it encoding, a fifth the task-and-time probes
    "quick": EvalPreset(max_clips=256, focus_clips=1, shift_clips=0, mlp_probe=False,
                        disentanglement=False, plots=False, controllability_clips=64),
}


@dataclass
class Latents:
    motion: np.ndarray  # (N, T-1, Z)
    task: np.ndarray  # (N, K)
    # (N, K) task embedding of the clip's first frame repeated; None when not asked for
    still_task: np.ndarray | None
    labels: list[str]
    frames: np.ndarray | None = None  # uint8 (N, T, S, S, 3): the clips as encoded


def extract_latents(model, clips: ClipDataset, batch_size: int = 32,
                    max_clips: int | None = None, still: bool = True) -> Latents:
    """Encode up to ``max_clips`` clips (the first ones, in order) with a frozen model;
    ``still``: also the task embedding of each clip's first frame repeated (the no-motion
    control), which costs a second encoding."""
    count = len(clips) if max_clips is None else min(len(clips), max_clips)
    return _encode(model, clips, count, batch_size, still)[0]


@torch.no_grad()
def _encode(model, clips: ClipDataset, count: int, batch_size: int = 32, still: bool = True,
            decoded: int = 0) -> tuple[Latents, dict[str, float] | None]:
    """``extract_latents`` of the first ``count`` clips; the first ``decoded`` of them go through
    the whole model instead of the encoder alone, and its decoder's predictions give their
    controllability (``_controllability``'s scores over them, None under 2 clips).

    The latents are the encoder's either way, batched alike, so they do not depend on
    ``decoded``; the encoder ran twice on the scored clips when controllability had its own
    pass (issue 13).
    """
    motion, task, still_task, labels, frames = [], [], [], [], []
    totals: dict[str, float] = {}
    scored_clips = 0
    for start in range(0, count, batch_size):
        batch = collate_clips([clips[i] for i in range(start, min(start + batch_size, count))])
        video = batch["frames"]  # (B, T, H, W, 3)
        scored = min(max(decoded - start, 0), len(video))  # this batch's clips to decode
        if scored:
            x = to_model_input(video).to(model.logit_scale.device)
            output = model(x)
            latents = output.latents
            if scored >= 2:
                scores = _batch_controllability(model, x, output, scored)
                for key, value in scores.items():
                    totals[key] = totals.get(key, 0.0) + value * scored
                scored_clips += scored
        else:
            latents = model.encode(video)
        motion.append(latents.motion.float().cpu().numpy())
        task.append(latents.task.float().cpu().numpy())
        if still:
            repeated = video[:, :1].expand_as(video).contiguous()  # no motion at all
            still_task.append(model.encode(repeated).task.cpu().numpy())
        labels += batch["labels"]
        frames.append(video.numpy())
    latents = Latents(np.concatenate(motion), np.concatenate(task),
                      np.concatenate(still_task) if still else None, labels,
                      np.concatenate(frames))
    controllable = ({key: value / scored_clips for key, value in totals.items()}
                    if scored_clips else None)
    return latents, controllable


@dataclass
class ClipSet:
    """The first ``N`` clips of a ``ClipDataset`` with what the metrics need, one row per clip."""

    latents: Latents  # motion (N, T-1, Z), task (N, K), still_task (N, K), labels
    frames: np.ndarray  # uint8 (N, T, S, S, 3), as the model saw them
    actions: np.ndarray | None  # (N, T-1) int64 or (N, T-1, A) float; None without stride 1
    camera_shift: np.ndarray | None  # float (N, T-1, 2): camera offset change over a transition
    background_shift: np.ndarray | None  # float (N, T-1): background phase change, in periods
    agent_mask: np.ndarray | None  # bool (N, T, S, S), resized like the frames
    steps: np.ndarray | None = None  # int64 (N, T-1): index in its episode of each frame t
    # Genie's Delta-PSNR (``_controllability``) over the first clips, where ``collect`` was asked
    controllability: dict[str, float] | None = None

    def __len__(self) -> int:
        return len(self.frames)


def _resize_masks(masks: np.ndarray, size: int) -> np.ndarray:
    """bool (T, H, W) -> bool (T, size, size), cropped and scaled like ``resize_video``."""
    if masks.shape[-1] == size and masks.shape[-2] == size:
        return masks.astype(bool)
    grey = torch.from_numpy(masks.astype(np.uint8) * 255)[..., None].expand(*masks.shape, 3)
    return resize_video(grey.contiguous(), size)[..., 0].numpy() >= 128


def collect(model, clips: ClipDataset, episodes: datasets.Dataset, max_clips: int | None = None,
            batch_size: int = 32, still: bool = True,
            controllability_clips: int | None = 0) -> ClipSet:
    """Encode the first ``max_clips`` clips and gather their frames and evaluation columns
    (``still``: as ``extract_latents``); ``controllability_clips``: the first that many (None:
    all) also through the decoder, for ``ClipSet.controllability``."""
    count = len(clips) if max_clips is None else min(len(clips), max_clips)
    latents, controllable = _encode(model, clips, count, batch_size, still,
                                    count if controllability_clips is None
                                    else controllability_clips)
    frames = latents.frames
    stride, span = clips.frame_stride, clips.clip_length
    # actions are between consecutive frames: a clip of every n-th frame (n > 1) has none
    wanted = [c for c in ("actions", "camera_offset", "background_phase", "agent_mask")
              if c in episodes.column_names and (c != "actions" or stride == 1)]
    view = episodes.with_format("numpy", columns=wanted)  # no dtype: floats and bools stay
    columns: dict[str, list[np.ndarray]] = {c: [] for c in wanted}
    steps = []
    row_read, episode = None, None
    for row, start in clips.clips[:count]:  # an episode's clips are consecutive: read it once
        if row != row_read:
            row_read, episode = row, view[row]
        frame_ids = np.arange(start, start + (span - 1) * stride + 1, stride)  # (T,)
        steps.append(frame_ids[:-1])
        for name in wanted:
            values = np.asarray(episode[name])
            if name == "actions":
                values = values[start:start + span - 1]  # action t: frame t -> t+1
            elif name == "camera_offset":
                values = np.diff(values[frame_ids].astype(np.float64), axis=0)
            elif name == "background_phase":
                change = np.diff(values[frame_ids].astype(np.float64))
                values = (change + 0.5) % 1.0 - 0.5  # the phase wraps around at 1
            else:
                values = _resize_masks(values[frame_ids], clips.image_size)
            columns[name].append(values)
    stacked = {name: np.stack(values) for name, values in columns.items()}
    return ClipSet(latents, frames, stacked.get("actions"), stacked.get("camera_offset"),
                   stacked.get("background_phase"), stacked.get("agent_mask"),
                   np.stack(steps).astype(np.int64), controllable)


def _clip_frames(clips: ClipDataset, count: int) -> np.ndarray:
    """uint8 (count, T, S, S, 3): the first ``count`` clips' frames, as the model sees them."""
    return np.stack([clips[i]["frames"].numpy() for i in range(count)])


def _encode_motion(model, clips: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """uint8 (N, T, S, S, 3) -> motion latents (N, T-1, Z)."""
    return np.concatenate([model.encode(torch.from_numpy(clips[i:i + batch_size])).motion.numpy()
                           for i in range(0, len(clips), batch_size)])


@torch.no_grad()
def _controllability(model, frames: np.ndarray, batch_size: int = 32) -> dict[str, float] | None:
    """Genie's Delta-PSNR over batches of clips (a latent is lent by another clip of its batch):
    ``_batch_controllability`` averaged over clips, None under 2 clips."""
    totals: dict[str, float] = {}
    counted = 0
    device = model.logit_scale.device
    for i in range(0, len(frames), batch_size):
        batch = frames[i:i + batch_size]
        if len(batch) < 2:
            continue
        x = to_model_input(torch.from_numpy(batch)).to(device)  # (B, T, 3, S, S) in [-1, 1]
        for key, value in _batch_controllability(model, x, model(x)).items():
            totals[key] = totals.get(key, 0.0) + value * len(batch)
        counted += len(batch)
    return {key: value / counted for key, value in totals.items()} if counted else None


def _batch_controllability(model, x: torch.Tensor, output, clips: int | None = None
                           ) -> dict[str, float]:
    """``metrics.controllability`` of one batch ``x`` (B, T, 3, S, S) in [-1, 1] from the
    model's forward ``output`` on it; ``clips``: only the first that many of ``output``'s
    (at least 2; the latents are lent among them).

    The decoder gets what it gets in training: frame t, camera-warped where the model has camera
    slots; a ``flow`` decoder is scored against the optical flow it is trained to predict (with
    the camera's share of the flow added, as in training).
    """
    first = slice(None, clips)
    frames = x[first].float()
    latents = output.latents.motion[first]  # (B, T-1, Z)
    current = x[first, :-1] if output.warped is None else output.warped[first]
    history = None if output.history is None else output.history[first]
    prediction = output.prediction[first]
    targets = None

    def decode(frames_t, motion):
        return model.decoder(frames_t, motion, history)

    if model.config.decoder_target == "flow":
        from groundlam.losses.flow import optical_flow

        targets = optical_flow(frames)
        if output.warped is not None:  # the model adds the camera's flow to the decoder's
            camera_flow = prediction - decode(current, latents)

            def decode(frames_t, motion):
                return model.decoder(frames_t, motion, history) + camera_flow

    return controllability(decode, frames, latents, current=current, targets=targets,
                           inferred=prediction)  # decoded with ``latents``


def _per_transition(values: np.ndarray) -> np.ndarray:
    """(N, T-1, ...) -> (N * (T-1), ...) or (N*(T-1),) for one value a transition."""
    return values.reshape(values.shape[0] * values.shape[1], *values.shape[2:])


def _task_time_probes(fit: ClipSet, test: ClipSet) -> dict[str, Any]:
    """Linear action probes of [task identity, time step] and of [motion latent, task identity,
    time step], fit and scored like the motion probe (``metrics.task_time_features``).

    ``task_labels_seen``: the share of scored transitions whose episode label occurs among the fit
    clips'; task identity says nothing of the others.
    """
    jobs, seen = _task_time_jobs(fit, test)
    return {**fit_in_parallel(jobs), "task_labels_seen": seen}


def _task_time_jobs(fit: ClipSet, test: ClipSet
                    ) -> tuple[dict[str, Callable[[], dict[str, float]]], float]:
    """``_task_time_probes``' two fits as calls for ``fit_in_parallel`` (the [motion, task, time]
    one, the slower, first) and its ``task_labels_seen``."""
    def per_transition(clips: ClipSet) -> tuple[np.ndarray, np.ndarray]:
        labels = np.repeat(np.asarray(clips.latents.labels, dtype=str), clips.steps.shape[1])
        return labels, _per_transition(clips.steps)

    (fit_labels, fit_steps), (test_labels, test_steps) = per_transition(fit), per_transition(test)
    fit_x, test_x = task_time_features(fit_labels, fit_steps, test_labels, test_steps)
    fit_y, test_y = _per_transition(fit.actions), _per_transition(test.actions)
    fit_motion = _per_transition(fit.latents.motion)
    test_motion = _per_transition(test.latents.motion)
    jobs = {
        "motion_task_time_linear": partial(
            action_probe_scores, np.concatenate([fit_motion, fit_x], axis=1), fit_y,
            np.concatenate([test_motion, test_x], axis=1), test_y, "linear",
            indicators=fit_x.shape[1]),
        "task_time_linear": partial(action_probe_scores, fit_x, fit_y, test_x, test_y, "linear",
                                    indicators=fit_x.shape[1])}
    return jobs, float(np.isin(test_labels, fit_labels).mean())


def _disentanglement(fit: ClipSet, test: ClipSet,
                     motion_action: dict[str, float] | None = None) -> dict[str, Any]:
    """The disentanglement matrix of ``metrics.disentanglement_matrix`` at two granularities.

    Per transition: motion latent t, or the clip's task embedding repeated on each transition,
    -> action t, camera shift t, background shift t. Per clip: the clip's motion latents
    concatenated (T-1)*Z, or its task embedding, -> label. ``motion_action``: the linear action
    probe's scores on the same transitions (the motion -> action cell is that probe).
    """
    def transition_sets(clips: ClipSet) -> dict[str, dict[str, np.ndarray]]:
        steps = clips.latents.motion.shape[1]
        targets = {}
        if fit.actions is not None and test.actions is not None:
            targets["action"] = _per_transition(clips.actions)
        for name in ("camera_shift", "background_shift"):
            if getattr(fit, name) is not None and getattr(test, name) is not None:
                targets[name] = _per_transition(getattr(clips, name))
        return {"sources": {"motion": _per_transition(clips.latents.motion),
                            "task": np.repeat(clips.latents.task, steps, axis=0)},
                "targets": targets}

    def clip_sets(clips: ClipSet) -> dict[str, dict[str, np.ndarray]]:
        motion = clips.latents.motion.reshape(len(clips), -1)
        return {"sources": {"motion": motion, "task": clips.latents.task},
                "targets": {"label": np.array(clips.latents.labels)}}

    known = {} if motion_action is None else {("motion", "action"): motion_action}
    per_transition = disentanglement_matrix(transition_sets(fit), transition_sets(test),
                                            known=known)
    per_clip = disentanglement_matrix(clip_sets(fit), clip_sets(test))
    return {key: {**per_transition[key], **per_clip[key]} if key != "cells" else
            {source: {**per_transition["cells"][source], **per_clip["cells"][source]}
             for source in ("motion", "task")}
            for key in ("cells", "score", "chance", "scored")}


def _focus(model, test: ClipSet, out: Path, name: str, focus_clips: int,
           overlays: int = 2) -> dict[str, Any]:
    from groundlam.focus import focus_map

    methods = {"": "all", "rollout_": "rollout"}  # key prefix -> focus_map's layers
    if model.config.pool_after:  # rollout is not defined through pooled tokens
        del methods["rollout_"]
    files: dict[str, list[str]] = {prefix: [] for prefix in methods}
    maps_of, masks_of = defaultdict(list), defaultdict(list)  # "[rollout_]motion|task" -> arrays
    for i in range(min(focus_clips, len(test))):
        for prefix, layers in methods.items():
            maps = focus_map(test.frames[i], model, layers=layers)
            if i < overlays:
                files[prefix] += [maps.save(out / f"{name}_focus_{prefix}{i}{suffix}").name
                                  for suffix in (".png", ".gif")]
            if test.agent_mask is not None:  # motion map t is drawn on frame t+1
                for kind, values, mask in (("motion", maps.motion, test.agent_mask[i, 1:]),
                                           ("task", maps.task, test.agent_mask[i])):
                    maps_of[prefix + kind].append(values)
                    masks_of[prefix + kind].append(mask)
    result: dict[str, Any] = {"overlays": files[""],
                              "rollout_overlays": files.get("rollout_", [])}
    for key, values in maps_of.items():
        result[key] = focus_precision(np.concatenate(values), np.concatenate(masks_of[key]))
    return result


def evaluate_variant(model, fit_clips: ClipDataset, fit_episodes: datasets.Dataset,
                     test_clips: ClipDataset, test_episodes: datasets.Dataset, out: Path,
                     name: str, preset: EvalPreset = PRESETS["full"],
                     progress: tqdm | None = None,
                     action_names: Sequence[str] | None = None,
                     clean_test_clips: ClipDataset | None = None) -> dict[str, Any]:
    """The ``preset``'s metrics of one rendering: probes fit on ``fit_clips``, scored on
    ``test_clips``.

    ``action_names`` name discrete action ids in the plots' legends. ``clean_test_clips``: the
    scored episodes rendered without distractors, cut like ``test_clips`` (the synthetic
    benchmark's clean rendering of the same trajectories): the probe ceiling's no-change
    transitions are read from them, since distractors change every frame whatever the agent
    does; by default from the scored frames themselves.
    """
    timings: dict[str, float] = {}  # seconds a stage took: where an evaluation's time goes
    started = [time.perf_counter(), ""]

    def stage(label: str) -> None:
        started[:] = [time.perf_counter(), label]
        if progress is not None:
            progress.set_postfix_str(f"{name}: {label}")

    def done() -> None:
        timings[started[1]] = round(time.perf_counter() - started[0], 2)
        if progress is not None:
            progress.update(1)

    stage(STAGES[0])
    fit = collect(model, fit_clips, fit_episodes, preset.max_clips, still=False)  # fits probes
    done()
    stage(STAGES[1])
    test = collect(model, test_clips, test_episodes, preset.max_clips,
                   controllability_clips=preset.controllability_clips)
    done()
    results: dict[str, Any] = {"fit_clips": len(fit), "test_clips": len(test)}

    stage(STAGES[2])
    missing = next(((clips, set_) for clips, set_ in ((fit_clips, fit), (test_clips, test))
                    if set_.actions is None), None)
    if missing is not None:
        logger.info("%s: %s, so no action probe", missing[0].name, _no_actions_reason(missing[0]))
    else:
        train_x, test_x = _per_transition(fit.latents.motion), _per_transition(test.latents.motion)
        train_y, test_y = _per_transition(fit.actions), _per_transition(test.actions)
        if clean_test_clips is not None:
            if clean_test_clips.clips[:len(test)] != test_clips.clips[:len(test)]:
                raise ValueError(f"{name}: the clean rendering is cut into other clips than the "
                                 "scored one; they must be the same episodes")
            unchanged = no_change_transitions(_clip_frames(clean_test_clips, len(test)))
        else:
            unchanged = no_change_transitions(test.frames)
        task_time, labels_seen = _task_time_jobs(fit, test)
        # independent single-threaded fits, run side by side, the slowest first (the MLP's
        # early stopping makes it the least predictable; then, on the quickstart's model, 0.9,
        # 0.6, 0.5, 0.2 and 0.1 s), so the two workers finish together: in the order they are
        # reported, one waited on a long fit submitted last (issue 13)
        probes = {}
        if preset.mlp_probe:
            probes["motion_mlp"] = partial(action_probe_scores, train_x, train_y, test_x,
                                           test_y, "mlp")
        probes |= {
            "pixels_linear": partial(action_probe_scores, frame_pair_features(fit.frames),
                                     train_y, frame_pair_features(test.frames), test_y,
                                     "linear"),
            "motion_task_time_linear": task_time["motion_task_time_linear"],
            "current_frame_linear": partial(
                action_probe_scores, frame_pair_features(fit.frames, change=False), train_y,
                frame_pair_features(test.frames, change=False), test_y, "linear"),
            "task_time_linear": task_time["task_time_linear"],
            "motion_linear": partial(action_probe_scores, train_x, train_y, test_x, test_y,
                                     "linear")}
        scores = fit_in_parallel(probes)
        results["action_probe"] = {
            "actions": "discrete" if is_discrete(test_y) else "continuous",
            "motion_linear": scores["motion_linear"],
            "task_time_linear": scores["task_time_linear"],
            "motion_task_time_linear": scores["motion_task_time_linear"],
            "task_labels_seen": labels_seen,
            "pixels_linear": scores["pixels_linear"],
            "current_frame_linear": scores["current_frame_linear"],
            "ceiling": {**no_change_ceiling(test_y, unchanged),
                        "no_change_from": "scored frames" if clean_test_clips is None
                        else "clean rendering"}}
        if preset.mlp_probe:
            results["action_probe"]["motion_mlp"] = scores["motion_mlp"]
    done()

    stage(STAGES[3])
    candidates = sorted(set(test.latents.labels))
    text = model.embed_text(candidates).cpu().numpy()
    results["retrieval"] = retrieval_with_chance(test.latents.task, test.latents.labels, text,
                                                 candidates)
    results["retrieval_no_motion"] = retrieval_with_chance(test.latents.still_task,
                                                           test.latents.labels, text, candidates)
    done()

    stage(STAGES[4])
    if preset.disentanglement:
        results["disentanglement"] = _disentanglement(
            fit, test, results.get("action_probe", {}).get("motion_linear"))
    done()

    stage(STAGES[5])
    if preset.shift_clips:
        shifted = test.frames[:preset.shift_clips]
        shift_actions = test.actions[:preset.shift_clips] if (
            test.actions is not None and is_discrete(_per_transition(test.actions))) else None
        # the unshifted clips' latents are the scored ones: the same clips in the same batches
        results["camera_shift"] = camera_shift_sensitivity(
            lambda clips: _encode_motion(model, clips), shifted, shift_actions,
            latents=test.latents.motion[:preset.shift_clips])
        results["camera_shift"]["reference"] = ("different true actions"
                                                if shift_actions is not None
                                                else "different transitions")
    results["controllability"] = test.controllability  # scored while encoding the test clips
    done()

    stage(STAGES[6])
    if model.config.encoder == "st_transformer":
        try:
            results["focus"] = _focus(model, test, out, name, preset.focus_clips)
        except Exception as error:  # a picture that fails to draw must not lose the numbers
            logger.exception("%s: focus maps failed", name)
            results["focus_error"] = f"{type(error).__name__}: {error}"
    done()

    stage(STAGES[7])
    if preset.plots:
        results["plots"] = plot_latents(test.latents.motion, test.latents.task,
                                        test.latents.labels, test.actions, out, name,
                                        action_names)
    done()
    results["timings_s"] = timings
    return results


def _no_actions_reason(clips: ClipDataset) -> str:
    """Why ``clips`` carry no actions (the ``ClipDataset`` rules)."""
    if clips.actions is None:
        return "the episodes have no 'actions' column"
    if clips.frame_stride != 1:
        return (f"data.frame_stride is {clips.frame_stride} (actions are between consecutive "
                "frames, kept at stride 1 only)")
    return "some clips have no actions"


def _clips(episodes: datasets.Dataset, config: Config, model, name: str) -> ClipDataset:
    length = min(config.data.clip_length, model.config.max_frames)
    return ClipDataset(episodes, length, model.config.image_size, config.data.frame_stride, name)


def _synthetic_episodes(config: Config, model, max_clips: int | None) -> int:
    """How many synthetic episodes give ``max_clips`` clips: each episode is a function of its
    seed and index, so the first ones are the same whatever the count; no more are generated
    than the metrics read (half of the quickstart's 128, at 256 clips)."""
    data = config.data
    if max_clips is None:
        return data.eval_episodes
    span = (min(data.clip_length, model.config.max_frames) - 1) * data.frame_stride + 1
    per_episode = len(range(0, data.synthetic.episode_length - span + 1, span))
    return min(data.eval_episodes, -(-max_clips // max(per_episode, 1)))


def _plan(spec: str, config: Config, config_given: bool, model, probe_fit: str = "train",
          max_clips: int | None = None) -> tuple[dict[str, Any], list[tuple[str, Any, Any]]]:
    """The split description and [(variant, (fit episodes), (test episodes))]; with
    ``max_clips``, synthetic episodes only as many as give that many clips."""
    split, plan = _plan_loaders(spec, config, config_given, model, probe_fit, max_clips)
    return split, [(variant, fit(), test()) for variant, fit, test in plan]


def _plan_loaders(spec: str, config: Config, config_given: bool, model,
                  probe_fit: str = "train", max_clips: int | None = None
                  ) -> tuple[dict[str, Any], list[tuple[str, Callable[[], datasets.Dataset],
                                                        Callable[[], datasets.Dataset]]]]:
    """``_plan`` with each episode set as a call that loads it: synthetic renderings are
    generated where they are evaluated (in a worker of ``_evaluate_side_by_side``, each its
    own), and the clean scored set that the distracted rendering also reads is one call."""
    if probe_fit not in ("train", "half"):
        raise ValueError(f"probe_fit={probe_fit!r}: use 'train' or 'half'")
    data = config.data
    if spec == "synthetic":
        # both renderings whatever the run trained on: a model trained clean is scored on
        # distractors it never saw, with the benchmark's standard ones
        distracted = any(vars(data.synthetic.distractors).values())
        distractors = (data.synthetic.distractors if distracted
                       else Distractors.all(STANDARD_DISTRACTION))
        synthetic = replace(data.synthetic, distractors=distractors)
        episodes = _synthetic_episodes(config, model, max_clips)
        fit_config = replace(synthetic, num_episodes=episodes)
        test_config = held_out_synthetic(synthetic, episodes)
        trained_on = None  # unknown without the run's config; none of these with other data
        if config_given and data.train == "synthetic":
            trained_on = "distracted" if distracted else "clean"
        split = {"fit": f"synthetic seed {fit_config.seed}, episodes 0-{episodes - 1}",
                 "scored": f"synthetic seed {test_config.seed}, {episodes} episodes "
                           "(a seed no run trains on)",
                 "held_out": True, "trained_on": trained_on, "distractors": asdict(distractors),
                 "distractors_from": "run" if distracted else "benchmark standard"}
        plan = [(variant, partial(load_episodes, "synthetic", fit_config, variant),
                 partial(load_episodes, "synthetic", test_config, variant))
                for variant in ("clean", "distracted")]
        return split, plan
    scored = load_episodes(spec, camera=data.camera)
    trained_elsewhere = config_given and data.train not in ("synthetic", spec)
    if trained_elsewhere and probe_fit == "train":
        split = {"fit": f"data.train ({data.train})", "scored": spec, "held_out": True}
        return split, [("eval", partial(load_episodes, data.train, camera=data.camera),
                        lambda: scored)]
    if len(scored) < 2:
        raise ValueError(f"{spec} has {len(scored)} episode(s): splitting it into probe-fit and "
                         "scored halves needs at least 2")
    half = len(scored) // 2
    held_out = True if trained_elsewhere else (
        False if config_given and data.train == spec else None)
    split = {"fit": f"{spec}, episodes 0-{half - 1}",
             "scored": f"{spec}, episodes {half}-{len(scored) - 1}", "held_out": held_out}
    return split, [("eval", partial(scored.select, range(half)),
                    partial(scored.select, range(half, len(scored))))]


@dataclass(frozen=True)
class _Rendering:
    """One rendering to evaluate: its episode sets as the calls that load them."""

    name: str
    fit: Callable[[], datasets.Dataset]
    test: Callable[[], datasets.Dataset]
    # the scored trajectories without distractors (the synthetic distracted rendering reads its
    # no-change transitions from them), or None
    clean_test: Callable[[], datasets.Dataset] | None = None

    def evaluate(self, model, config: Config, progress, loaded: dict | None = None,
                 **common: Any) -> dict[str, Any]:
        """``evaluate_variant`` of this rendering; ``loaded``: episode sets by their loader,
        filled and reused (the clean scored set serves two renderings)."""
        loaded = {} if loaded is None else loaded

        def load(loader: Callable[[], datasets.Dataset]) -> datasets.Dataset:
            if loader not in loaded:
                loaded[loader] = loader()
            return loaded[loader]

        fit, test = load(self.fit), load(self.test)
        clean = None
        if self.clean_test is not None:
            clean = _clips(load(self.clean_test), config, model, "clean scored episodes")
        return evaluate_variant(
            model, _clips(fit, config, model, f"{self.name} fit episodes"), fit,
            _clips(test, config, model, f"{self.name} scored episodes"), test,
            name=self.name, progress=progress, clean_test_clips=clean, **common)


def evaluate_checkpoint(checkpoint: str | Path, data: str, out: str | Path,
                        config_path: str | Path | None = None, overrides: list[str] | None = None,
                        max_clips: int | None = None, focus_clips: int | None = None,
                        progress: bool = True, probe_fit: str = "train",
                        preset: str = "full", processes: int = 1) -> dict[str, Any]:
    """Evaluate a ``save_pretrained`` folder on ``data``; writes metrics.json, report.md, PNGs.

    ``preset``: which metrics and how many clips (``PRESETS``: ``full``, ``quick``);
    ``max_clips`` and ``focus_clips`` override the preset's.

    ``processes``: above 1, the renderings (``data="synthetic"`` has two) are evaluated side by
    side, each in a process forked from this one that runs torch on one thread
    (``_evaluate_side_by_side``; Linux only, elsewhere one after the other). The numbers are the
    same either way. ``groundlam eval`` chooses it where it pays (``default_processes``).

    ``config_path``: the run's config (its ``data`` section says how clips are cut and which
    synthetic episodes and distractors the run used); by default ``config.yaml`` beside the
    checkpoint folder (where ``groundlam train`` writes it), else the defaults.

    Where the probes are fit (not for ``data="synthetic"``, fit on the run's synthetic seed in
    the same rendering): ``probe_fit="train"`` on the run's ``data.train`` episodes where those
    are other than ``data``, else on the first half of ``data``; ``"half"`` always on the first
    half of ``data``, scoring the second (use it when ``data`` is rendered unlike the training
    episodes, e.g. a clean held-out corpus of a model trained on distracted episodes).
    """
    from groundlam.model import GroundLAM

    if preset not in PRESETS:
        raise ValueError(f"preset={preset!r} is not one of {sorted(PRESETS)}")
    chosen = replace(PRESETS[preset], **{key: value for key, value in (
        ("max_clips", max_clips), ("focus_clips", focus_clips)) if value is not None})
    if chosen.max_clips < 2:
        raise ValueError(f"max_clips={chosen.max_clips}: the metrics need at least 2 clips")
    if processes < 1:
        raise ValueError(f"processes={processes}: at least 1")
    checkpoint, out = Path(checkpoint), Path(out)
    if config_path is None and (checkpoint.parent / "config.yaml").is_file():
        config_path = checkpoint.parent / "config.yaml"
    config = load_config(config_path, overrides or [])
    model = GroundLAM.from_pretrained(str(checkpoint))
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    split, plan = _plan_loaders(data, config, config_path is not None, model, probe_fit,
                                chosen.max_clips)
    metrics: dict[str, Any] = {
        "checkpoint": str(checkpoint), "data": data,
        "config": str(config_path) if config_path is not None else None,
        "overrides": list(overrides or []), "preset": preset,
        "model": {"encoder": model.config.encoder, "bottleneck": model.config.bottleneck,
                  "decoder_target": model.config.decoder_target},
        "clip_length": min(config.data.clip_length, model.config.max_frames),
        "split": split, "variants": {}}
    # the synthetic distracted rendering's no-change transitions are those of the clean one
    clean = next((test for variant, _, test in plan if variant == "clean"), None)
    renderings = [_Rendering(variant, fit, test, clean if variant == "distracted" else None)
                  for variant, fit, test in plan]
    common = {"config": config, "out": out, "preset": chosen,
              "action_names": SYNTHETIC_ACTIONS if data == "synthetic" else None}
    bar = tqdm(total=len(plan) * len(STAGES), desc="groundlam eval", disable=not progress)
    try:
        if processes > 1 and len(renderings) > 1 and can_fork():
            metrics["variants"] = _evaluate_side_by_side(model, renderings, common, bar,
                                                         processes)
        else:
            loaded: dict = {}
            for rendering in renderings:
                metrics["variants"][rendering.name] = rendering.evaluate(
                    model, progress=bar, loaded=loaded, **common)
    finally:
        bar.close()
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json_default))
    write_report(metrics, out / "report.md")
    return metrics


def can_fork() -> bool:
    """Whether ``evaluate_checkpoint`` can run renderings in forked processes: on Linux (macOS
    forks unsafely with its system frameworks loaded, Windows not at all)."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def default_processes(data: str) -> int:
    """What ``groundlam eval`` passes as ``processes``: one per rendering (two for
    ``"synthetic"``) where torch has no more threads than that, else 1.

    On 2 cores torch gains ~1.9x from its second thread but the probe fits, which hold the GIL
    for most of their time, gain 1.1-1.2x from a second thread of theirs; one process per
    rendering, each on one core, runs every stage at full speed. With more cores a rendering's
    encoding gains more from torch's threads than the fits from their own process.
    """
    renderings = 2 if data == "synthetic" else 1
    return renderings if can_fork() and 2 <= torch.get_num_threads() <= renderings else 1


class _QueuedProgress:
    """The two calls ``evaluate_variant`` makes on its progress bar, sent from the worker of
    rendering ``name`` to the bar that ``_evaluate_side_by_side`` draws."""

    def __init__(self, queue, name: str) -> None:
        self.queue, self.name = queue, name

    def set_postfix_str(self, text: str) -> None:
        self.queue.put(("set_postfix_str", self.name, text))

    def update(self, count: int = 1) -> None:
        self.queue.put(("update", self.name, count))


def _worker(rendering: _Rendering, model, common: dict[str, Any], queue, scratch: str) -> None:
    """A forked worker of ``_evaluate_side_by_side``: ``rendering.evaluate``, its progress and
    then its result or exception put on ``queue``."""
    # one thread: a forked child cannot use the OpenMP pool its parent may have started (it
    # hangs), and at one thread torch never enters it
    torch.set_num_threads(1)
    # the episodes this worker generates go where the parent removes them: a worker ends
    # without running atexit, which removes them in a process of its own
    tempfile.tempdir = scratch
    try:
        results = rendering.evaluate(model, progress=_QueuedProgress(queue, rendering.name),
                                     **common)
    except BaseException as error:  # sent to the caller, which raises it
        trace = traceback.format_exc()
        try:
            queue.put(("error", rendering.name, (error, trace)))
        except Exception:  # an exception that does not pickle
            queue.put(("error", rendering.name, (RuntimeError(repr(error)), trace)))
        return
    queue.put(("result", rendering.name, results))


def _evaluate_side_by_side(model, renderings: list[_Rendering], common: dict[str, Any],
                           bar: tqdm, processes: int) -> dict[str, dict[str, Any]]:
    """``rendering.evaluate(model, **common)`` of every rendering, ``processes`` at a time, each
    in a process forked from this one on one torch thread; the results by name, in order, the
    stages shown on ``bar``.

    Forked, a worker shares the model with this process without copying or pickling it, loads
    (generates) its rendering's episodes itself, and sends back only its results. A worker's
    exception is raised here (with its traceback as a note); one that dies without a word is a
    ``RuntimeError``; an exception here (Ctrl-C) stops the workers.
    """
    context = multiprocessing.get_context("fork")
    queue = context.SimpleQueue()
    results: dict[str, dict[str, Any]] = {}
    waiting = list(renderings)
    running: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="groundlam-eval-") as scratch:
        try:
            while waiting or running:
                while waiting and len(running) < processes:
                    rendering = waiting.pop(0)
                    running[rendering.name] = context.Process(
                        target=_worker, args=(rendering, model, common, queue, scratch),
                        name=f"groundlam eval {rendering.name}", daemon=True)
                    running[rendering.name].start()
                if not queue.empty():  # a worker's messages are in the pipe before it exits
                    kind, name, value = queue.get()
                    if kind == "result":
                        results[name] = value
                        running.pop(name).join()
                    elif kind == "error":
                        error, trace = value
                        error.add_note(f"raised in the worker of rendering {name}:\n{trace}")
                        raise error
                    else:
                        getattr(bar, kind)(value)
                    continue
                for name, worker in running.items():
                    if worker.exitcode is not None and queue.empty():
                        raise RuntimeError(f"the worker evaluating rendering {name} died "
                                           f"(exit code {worker.exitcode})")
                time.sleep(0.05)
        finally:
            for worker in running.values():
                worker.terminate()
                worker.join()
    return {rendering.name: results[rendering.name] for rendering in renderings}


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# ---------------------------------------------------------------------------------- command


def main(argv: list[str] | None = None) -> int:
    """``groundlam eval``: parse ``argv`` (without the subcommand name), evaluate, print paths."""
    parser = argparse.ArgumentParser(
        prog="groundlam eval", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Held-out metrics of a GroundLAM checkpoint: action probes, task retrieval "
                    "with the no-motion control, disentanglement, camera-shift sensitivity, "
                    "focus precision, controllability, latent-space plots.")
    parser.add_argument("--checkpoint", required=True,
                        help="a save_pretrained folder or a Hub id (org/name)")
    parser.add_argument("--data", required=True,
                        help="'synthetic' (the run's synthetic config, held-out seed), a "
                             "save_to_disk folder, or Parquet files")
    parser.add_argument("--out", required=True, type=Path, help="folder for metrics.json, "
                                                                "report.md and plots")
    parser.add_argument("--config", type=Path, help="the run's config.yaml (default: beside the "
                                                    "checkpoint folder, else the defaults)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full",
                        help="full: every metric; quick: the linear probes, retrieval, "
                             "controllability and one clip's focus maps (what training runs)")
    parser.add_argument("--max-clips", type=int, default=None,
                        help="clips a set (probe fit, scored) at most (default: the preset's, "
                             f"full {PRESETS['full'].max_clips})")
    parser.add_argument("--focus-clips", type=int, default=None,
                        help="held-out clips whose focus maps are scored (default: the "
                             "preset's)")
    parser.add_argument("--probe-fit", choices=("train", "half"), default="train",
                        help="fit the probes on the run's training episodes (train; when --data "
                             "is other episodes) or on the first half of --data (half)")
    parser.add_argument("--processes", type=int, default=None,
                        help="renderings evaluated side by side, one process each on one "
                             "torch thread (default: one per rendering on a machine with no "
                             "more cores than renderings, else 1; Linux only)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*",
                        help="dotted key=value on the config, e.g. data.eval_episodes=64")
    args = parser.parse_args(argv)
    if args.max_clips is not None and args.max_clips < 2:
        parser.error(f"--max-clips {args.max_clips}: the metrics need at least 2 clips")
    if args.processes is not None and args.processes < 1:
        parser.error(f"--processes {args.processes}: at least 1")
    if not (Path(args.checkpoint).is_dir() or is_hub_id(args.checkpoint)):
        parser.error(f"--checkpoint {args.checkpoint}: not a save_pretrained folder, nor a Hub "
                     "id (org/name)")
    keep_freed_memory()  # batched encoding no longer pages its activations in again
    metrics = evaluate_checkpoint(args.checkpoint, args.data, args.out, args.config,
                                  args.overrides, args.max_clips, args.focus_clips,
                                  progress=not args.no_progress, probe_fit=args.probe_fit,
                                  preset=args.preset,
                                  processes=args.processes or default_processes(args.data))
    print(f"wrote {args.out / 'metrics.json'} and {args.out / 'report.md'} "
          f"({', '.join(metrics['variants'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
