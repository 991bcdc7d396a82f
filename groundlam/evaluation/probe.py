"""Probes of frozen latents: do motion latents carry the true actions, does the task embedding
name the label?

Dimension keys: N clips, T frames a clip, Z latent size, K text-embedding size, U distinct labels.

- Action probe: a linear classifier (standardised logistic regression) from one latent action to
  the true discrete action of that transition, fit on clips of training episodes and scored on
  held-out episodes by balanced accuracy (chance = 1 / number of actions, whatever their
  frequencies).
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

__all__ = ["Latents", "extract_latents", "action_probe", "retrieval", "probe_model",
           "probe_checkpoint"]


@dataclass
class Latents:
    motion: np.ndarray  # (N, T-1, Z)
    task: np.ndarray  # (N, K)
    still_task: np.ndarray  # (N, K) task embedding of the clip's first frame repeated
    labels: list[str]
    actions: np.ndarray | None  # (N, T-1) int64 where the episodes have discrete actions


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
    """Balanced accuracy of a linear probe from features (N, F) to discrete labels (N,)."""
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    probe.fit(train_x, train_y)
    return float(balanced_accuracy_score(test_y, probe.predict(test_x)))


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
    """Action probe (fit on ``train_clips``, scored on ``test_clips``) and label retrieval."""
    train, test = (extract_latents(model, clips, max_clips=max_clips)
                   for clips in (train_clips, test_clips))
    results: dict[str, Any] = {"train_clips": len(train.labels), "test_clips": len(test.labels)}
    if train.actions is not None and test.actions is not None:
        z = train.motion.shape[-1]
        results["action_probe_balanced_accuracy"] = action_probe(
            train.motion.reshape(-1, z), train.actions.reshape(-1),
            test.motion.reshape(-1, z), test.actions.reshape(-1))
        results["action_chance"] = 1.0 / len(np.unique(train.actions))
    candidates = sorted(set(test.labels))
    text = model.embed_text(candidates).cpu().numpy()
    results["retrieval"] = retrieval(test.task, test.labels, text, candidates)
    results["retrieval_no_motion"] = retrieval(test.still_task, test.labels, text, candidates)
    return results


def probe_checkpoint(checkpoint: str | Path, config, focus_path: str | Path | None = None,
                     max_clips: int = 512) -> dict[str, Any]:
    """Probe a saved model on the run's held-out data; clean and distracted for ``synthetic``.

    The probe is fit on clips of training episodes and scored on held-out episodes, which the
    model never saw. With ``focus_path``, also writes the focus maps of the first held-out clip.
    """
    from groundlam.data.episodes import held_out_synthetic, load_episodes
    from groundlam.focus import focus_map
    from groundlam.model import GroundLAM

    model = GroundLAM.from_pretrained(str(checkpoint))
    data = config.data

    def clips(spec: str, synthetic, variant: str) -> ClipDataset:
        episodes = load_episodes(spec, synthetic, variant=variant)
        return ClipDataset(episodes, data.clip_length, model.config.image_size, data.frame_stride)

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
        focus_map(test[0]["frames"], model).save(focus_path)
        results["focus_map"] = str(focus_path)
    return results
