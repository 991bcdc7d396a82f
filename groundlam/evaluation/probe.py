"""Probes of frozen latents: do motion latents carry the true actions, does the task embedding
name the label?

Dimension keys: N clips, T frames a clip, Z latent size, K text-embedding size, U distinct labels,
A action size (continuous actions).

- Action probe: a linear probe from one latent action to the true action of that transition,
  fit on clips of training episodes and scored on held-out episodes
  (``groundlam.evaluation.metrics.action_probe_scores``). Discrete actions (int ids): a
  standardised logistic regression scored by balanced accuracy (chance = 1 / number of actions,
  whatever their frequencies). Continuous actions (float (T-1, A) per clip, e.g. Meta-World): a
  standardised ridge regression scored by the MSE normalised by the test actions' variance
  (``nmse``: 0 = exact, 1 = no better than their mean) and R^2. Episodes without ``actions``
  (or clips taken at a frame stride above 1, which have none) get no action probe, and a
  logged line says so.
- Retrieval: rank the distinct labels of the held-out episodes by cosine similarity to each
  clip's task embedding; top-1 and top-5 accuracy against the clip's own label.
- No-motion control: the same retrieval on clips made of one frame repeated. A score well above
  chance there means the task embedding reads the scene's appearance, not what moved.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from groundlam.data.episodes import ClipDataset, collate_clips

logger = logging.getLogger(__name__)

__all__ = ["Latents", "extract_latents", "action_probe", "per_transition", "action_scores",
           "retrieval", "probe_model", "probe_checkpoint"]


@dataclass
class Latents:
    motion: np.ndarray  # (N, T-1, Z)
    task: np.ndarray  # (N, K)
    still_task: np.ndarray  # (N, K) task embedding of the clip's first frame repeated
    labels: list[str]
    # (N, T-1) int64 discrete or (N, T-1, A) float32 continuous; None where the clips have none
    actions: np.ndarray | None


@torch.no_grad()
def extract_latents(model, clips: ClipDataset, batch_size: int = 64,
                    max_clips: int | None = None) -> Latents:
    """Encode up to ``max_clips`` clips (the first ones, in order) with a frozen model."""
    count = len(clips) if max_clips is None else min(len(clips), max_clips)
    motion, task, still, labels, actions = [], [], [], [], []
    starts = range(0, count, batch_size)
    for start in starts:
        batch = collate_clips([clips[i] for i in range(start, min(start + batch_size, count))])
        frames = batch["frames"]  # (B, T, H, W, 3)
        latents = model.encode(frames)
        motion.append(latents.motion.cpu().numpy())
        task.append(latents.task.cpu().numpy())
        repeated = frames[:, :1].expand_as(frames).contiguous()  # no motion at all
        still.append(model.encode(repeated).task.cpu().numpy())
        labels += batch["labels"]
        if "actions" in batch:
            actions.append(batch["actions"].numpy())
    return Latents(np.concatenate(motion), np.concatenate(task), np.concatenate(still), labels,
                   np.concatenate(actions) if len(actions) == len(starts) else None)


def action_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                 test_y: np.ndarray, seed: int = 0) -> float:
    """Balanced accuracy of a linear probe from features (N, F) to discrete labels (N,).

    Discrete actions only; ``probe_model`` scores both kinds with ``action_probe_scores``.
    """
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    probe.fit(train_x, train_y)
    return float(balanced_accuracy_score(test_y, probe.predict(test_x)))


def per_transition(actions: np.ndarray) -> np.ndarray:
    """One row per transition: (N, T-1) -> (N*(T-1),) ids; (N, T-1, A) -> (N*(T-1), A) floats.

    Rows are clip-major, like ``motion.reshape(-1, Z)`` of motion latents (N, T-1, Z).
    """
    return actions.reshape(-1) if actions.ndim == 2 else actions.reshape(-1, actions.shape[-1])


def _no_actions_reason(clips: ClipDataset) -> str | None:
    """Why clips carry no actions (the ``ClipDataset`` rules), or None if they do."""
    if clips.actions is None:
        return "the episodes have no 'actions' column"
    if clips.frame_stride != 1:
        return (f"data.frame_stride is {clips.frame_stride} (actions are between consecutive "
                "frames, kept at stride 1 only)")
    return None


def action_scores(train: Latents, test: Latents) -> dict[str, float]:
    """The probe's scores from motion latents to true actions, under ``probe.json``'s keys.

    Discrete: ``action_probe_balanced_accuracy`` and ``action_chance`` (1 / actions in the test
    set). Continuous: ``action_probe_nmse`` and ``action_probe_r2``.
    """
    # imported here: metrics imports ``retrieval`` from this module
    from groundlam.evaluation.metrics import action_probe_scores, is_discrete

    if train.actions is None or test.actions is None:
        raise ValueError("action_scores needs latents with actions on both sides")
    z = train.motion.shape[-1]
    train_y, test_y = per_transition(train.actions), per_transition(test.actions)
    scores = action_probe_scores(train.motion.reshape(-1, z), train_y,
                                 test.motion.reshape(-1, z), test_y)
    if is_discrete(test_y):
        return {"action_probe_balanced_accuracy": scores["balanced_accuracy"],
                "action_chance": scores["chance"]}
    return {"action_probe_nmse": scores["nmse"], "action_probe_r2": scores["r2"]}


def retrieval(task: np.ndarray, labels: list[str], text_embeddings: np.ndarray,
              candidates: list[str]) -> dict[str, float]:
    """Top-1 / top-5 accuracy of ranking ``candidates`` (U, K embeddings) for each clip."""
    index = {label: i for i, label in enumerate(candidates)}
    truth = np.array([index[label] for label in labels])
    ranking = np.argsort(-(task @ text_embeddings.T), axis=1)  # (N, U)
    hits = ranking == truth[:, None]
    return {"top1": float(hits[:, :1].any(1).mean()), "top5": float(hits[:, :5].any(1).mean()),
            "chance_top1": 1.0 / len(candidates), "num_labels": len(candidates)}


def probe_model(model, train_clips: ClipDataset, test_clips: ClipDataset,
                max_clips: int = 512) -> dict[str, Any]:
    """Action probe (fit on ``train_clips``, scored on ``test_clips``) and label retrieval.

    The action probe's keys are those of ``action_scores``; clips without actions have none
    (logged).
    """
    train, test = (extract_latents(model, clips, max_clips=max_clips)
                   for clips in (train_clips, test_clips))
    results: dict[str, Any] = {"train_clips": len(train.labels), "test_clips": len(test.labels)}
    if train.actions is not None and test.actions is not None:
        results.update(action_scores(train, test))
    else:
        for clips, latents in ((train_clips, train), (test_clips, test)):
            if latents.actions is None:
                reason = _no_actions_reason(clips) or "some clips have no actions"
                logger.info("%s: %s, so no action probe", clips.name, reason)
                break
    candidates = sorted(set(test.labels))
    text = model.embed_text(candidates).cpu().numpy()
    results["retrieval"] = retrieval(test.task, test.labels, text, candidates)
    results["retrieval_no_motion"] = retrieval(test.still_task, test.labels, text, candidates)
    return results


def probe_checkpoint(checkpoint: str | Path, config, focus_path: str | Path | None = None,
                     max_clips: int = 512) -> dict[str, Any]:
    """Probe a saved model on the run's held-out data; clean and distracted for ``synthetic``.

    The probe is fit on clips of training episodes and scored on held-out episodes, which the
    model never saw. With ``focus_path``, also writes the focus maps of the first held-out clip;
    if that fails, the error is logged and kept under ``focus_map_error``.
    """
    from groundlam.data.episodes import held_out_synthetic, load_episodes
    from groundlam.focus import focus_map
    from groundlam.model import GroundLAM

    model = GroundLAM.from_pretrained(str(checkpoint))
    data = config.data

    def clips(spec: str, synthetic, variant: str) -> ClipDataset:
        episodes = load_episodes(spec, synthetic, variant=variant)
        return ClipDataset(episodes, data.clip_length, model.config.image_size, data.frame_stride,
                           name=spec)

    results: dict[str, Any] = {"checkpoint": str(checkpoint)}
    if data.train == "synthetic" and data.eval == "synthetic":
        # the first episodes of the training seed (the model saw them; the probe fits on them)
        probe_train = replace(data.synthetic, num_episodes=data.eval_episodes)
        held_out = held_out_synthetic(data.synthetic, data.eval_episodes)
        # "distracted" renders the run's distractors; a run without any is probed clean only
        distracted = any(vars(data.synthetic.distractors).values())
        for variant in ("clean", "distracted") if distracted else ("clean",):
            test = clips("synthetic", held_out, variant)
            results[variant] = probe_model(model, clips("synthetic", probe_train, variant), test,
                                           max_clips)
    else:
        test = clips(data.eval, None, "distracted")
        results["eval"] = probe_model(model, clips(data.train, None, "distracted"), test,
                                      max_clips)
        # scored on data.eval; only episodes the model never trained on make that held out
        results["eval"]["held_out"] = data.eval != data.train
        if data.eval == data.train:
            logger.warning("data.eval is data.train (%s): the probe numbers are on training "
                           "episodes, not held out", data.train)
    if focus_path is not None and model.config.encoder == "st_transformer":
        try:
            focus_map(test[0]["frames"], model).save(focus_path)
            results["focus_map"] = str(focus_path)
        except Exception as error:  # a picture that fails to draw must not lose the numbers
            logger.exception("focus map %s failed", focus_path)
            results["focus_map_error"] = f"{type(error).__name__}: {error}"
    return results
