"""Metrics of a latent action model, each a function on arrays with a known answer.

Dimension keys: N samples (clips or transitions), F features, A action size (continuous actions),
T frames of a clip, Z latent size, H/W pixels, M maps, U distinct labels.

Every probe is fit on one set (clips of training episodes) and scored on another (held-out
episodes); the caller decides which is which, and ``groundlam.evaluation.evaluate`` never scores
on the set a probe was fit on.

- ``action_probe_scores``: a probe from features to true actions. Discrete actions are scored by
  balanced accuracy (the mean recall over the actions present in the test set, so a probe that
  always says BabyAI's "forward" scores 1 / number of actions, not 65%); continuous actions by
  the MSE normalised by the test actions' variance (``nmse``: 0 = exact, 1.0 = no better than
  predicting their mean) and R^2 (averaged over action dimensions). ``probe="linear"`` is a
  standardised logistic / ridge regression (as in LAOM), ``probe="mlp"`` a one-hidden-layer MLP
  (as in LAPO).
- ``frame_pair_features``: downsampled frame t and the change to t+1, raw pixels; a linear probe
  on them is the observation -> action floor the motion latents should beat.
- ``no_change_transitions`` and ``no_change_ceiling``: transitions whose frame t+1 equals frame t
  (a blocked move, a grab with nothing to grab) look the same whatever the action; the ceiling is
  the score of an oracle that is right on every other transition, the most a probe of what
  changed can reach.
- ``task_time_features``: one-hot task identity and time step of each transition; a probe on them
  alone is what the task and the time step predict of the actions without any latent (a scripted
  expert's actions follow from both), the baseline a motion latent must add to.
- ``retrieval`` and ``retrieval_with_chance``: task
  embedding -> label, top-1 / top-5 over the distinct labels; applied to clips of one repeated
  frame it is the no-motion control.
- ``disentanglement_matrix``: probes from {motion latents, task embedding} to {actions, label,
  camera shift, background shift}; discrete targets score balanced accuracy (on the test
  samples of classes the probe was fit on), continuous targets R^2 (1 = fully predicted, 0 or
  below = not at all).
- ``camera_shift_sensitivity``: how far latents move when the whole clip is shifted by 1-4 px,
  relative to how far apart the latents of two different actions are.
- ``focus_precision``: the share of each focus map's mass on the ``agent_mask`` pixels, beside
  the share those pixels have of the frame (what a uniform map scores).
- ``controllability`` (as in Genie): PSNR of the next frame predicted with the inferred latent
  minus PSNR with the latent of another clip.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse import csr_matrix
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import r2_score, recall_score
from sklearn.model_selection import KFold
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

__all__ = ["PROBES", "balanced_accuracy", "is_discrete", "fit_probe", "fit_in_parallel",
           "action_probe_scores",
           "frame_pair_features", "no_change_transitions", "no_change_ceiling",
           "task_time_features", "retrieval", "retrieval_with_chance", "DISENTANGLEMENT_SCORES",
           "disentanglement_matrix", "shift_clips", "camera_shift_sensitivity",
           "focus_precision", "psnr", "controllability"]

PROBES = ("linear", "mlp")
RIDGE_ALPHAS = tuple(10.0 ** k for k in range(-1, 6))  # the linear regression probe's choices


def _check_pairs(x: np.ndarray, y: np.ndarray, name: str) -> None:
    if x.ndim != 2:
        raise ValueError(f"{name}: features must be (N, F), got shape {x.shape}")
    if len(x) != len(y):
        raise ValueError(f"{name}: {len(x)} feature rows but {len(y)} targets")
    if len(x) == 0:
        raise ValueError(f"{name}: no samples")


def is_discrete(targets: np.ndarray) -> bool:
    """Integer (or bool, or string) targets of shape (N,) are classes; floats are continuous."""
    targets = np.asarray(targets)
    return targets.ndim == 1 and targets.dtype.kind in "biuUSO"


def balanced_accuracy(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Mean over the classes present in ``truth`` (N,) of the share of them ``predicted`` (N,).

    Chance is 1 / number of classes whatever their frequencies; predicting a class that is not in
    ``truth`` only costs the recall of the classes it was predicted for (scikit-learn's macro
    recall over ``truth``'s classes, which is its balanced accuracy without the warning about
    predicted classes the truth lacks).
    """
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    if truth.shape != predicted.shape or truth.ndim != 1 or len(truth) == 0:
        raise ValueError(f"balanced_accuracy needs two equal (N,) arrays, N > 0, got "
                         f"{truth.shape} and {predicted.shape}")
    return float(recall_score(truth, predicted, labels=np.unique(truth), average="macro",
                              zero_division=0))


def fit_probe(x: np.ndarray, y: np.ndarray, probe: str = "linear", seed: int = 0,
              indicators: int = 0):
    """Fit a standardised probe from features ``x`` (N, F) to ``y`` (N,) classes or (N[, A]) floats.

    ``indicators``: the last that many columns of ``x`` are 0/1 indicators (one-hot task and
    time step); a logistic probe takes them unscaled. Standardised, an indicator set on one fit
    row becomes a feature of size ~sqrt(N) that the fixed penalty barely restrains: the probe
    memorised the fit set through them, and [latent, task, time] scored 0.46 on BabyAI where the
    latent alone scored 0.75 (issue 9). Ridge standardises them like every column: its penalty is
    cross-validated, and unscaled indicators under one penalty with standardised latents were
    over-penalised (Meta-World: [latent, task, time] NMSE 0.47 against 0.31 for task and time
    alone; standardised, 0.29 against 0.30).

    ``linear``: logistic regression (classes) or ridge regression (floats; the penalty chosen
    from ``RIDGE_ALPHAS`` by 5-fold cross-validation over contiguous blocks of ``x``, which
    keeps a clip's transitions together when they are adjacent rows; never on test data).
    ``mlp``: one hidden layer of 256 ReLU units (adam, early-stopped on 10% of ``x``; L-BFGS
    under 200 samples); regression targets are standardised.
    Returns a fitted sklearn estimator with ``predict``.
    """
    _check_pairs(x, y, "fit_probe")
    if probe not in PROBES:
        raise ValueError(f"probe={probe!r} is not one of {PROBES}")
    discrete = is_discrete(y)
    if probe == "linear":
        # ridge's penalty by 5-fold cross-validation on the fit set: at a fixed alpha of 1 a
        # probe on 1536 pixel features fit on ~400 transitions scored NMSE 2.0, worse than
        # predicting the mean (issue 9). Folds are contiguous, not shuffled: the transitions
        # of a clip are adjacent rows and near-copies of each other, and leave-one-out over
        # them chose penalties that did not carry to other episodes.
        folds = KFold(n_splits=min(5, len(x)))
        head = (LogisticRegression(max_iter=2000, random_state=seed) if discrete
                else RidgeCV(alphas=RIDGE_ALPHAS, cv=folds))
    else:
        kind = MLPClassifier if discrete else MLPRegressor
        # adam with early stopping on held-back samples; below 200 samples (too few to hold
        # any back) L-BFGS, which sklearn recommends for small sets
        small = len(x) < 200
        head = kind(hidden_layer_sizes=(256,), solver="lbfgs" if small else "adam",
                    early_stopping=not small, max_iter=1000, random_state=seed)
        if not discrete:
            head = TransformedTargetRegressor(head, transformer=StandardScaler())
    if not 0 <= indicators <= x.shape[1]:
        raise ValueError(f"indicators={indicators} is not between 0 and the {x.shape[1]} "
                         "feature columns")
    dense = x.shape[1] - indicators
    if not indicators or not discrete:
        model = make_pipeline(StandardScaler(), head)
    else:
        # the indicators go in as a sparse matrix (3 non-zeros in ~1,300 columns a row): the
        # [latent, task, time] fit took 1.5 s dense and 0.6 s sparse on the quickstart's probe
        # set, with the same predictions (issue 13)
        sparse = FunctionTransformer(csr_matrix, accept_sparse=True)
        model = make_pipeline(ColumnTransformer(
            [("dense", StandardScaler(), slice(0, dense)),
             ("indicators", sparse, slice(dense, None))], sparse_threshold=1.0) if dense
            else sparse, head)
    # float64: ridge on float32 features more numerous than the samples hit float32's precision
    # (scipy's LinAlgWarning on every fit). One thread: these fits are small, and BLAS and
    # OpenMP pools of 2 threads each, beside torch's, spent most of their time waiting on each
    # other (a 59-label logistic probe of 256 clips: 12.9 s on 2 threads, 1.7 s on 1)
    with threadpool_limits(limits=1):
        model.fit(np.asarray(x, dtype=np.float64), y)
    return model


def fit_in_parallel(jobs: dict[Any, Callable[[], Any]]) -> dict[Any, Any]:
    """Run independent probe fits (``jobs``: key -> a call without arguments) side by side, one
    BLAS/OpenMP thread each, on as many threads as torch uses; the same results as one by one
    (each fit is single-threaded either way), in ``jobs``' order.

    The fits spend their time in BLAS and compiled loss code, which release the GIL: the
    quickstart's probes took 3.8 s on 2 threads against 5.3 s one after another.
    """
    workers = max(1, min(len(jobs), torch.get_num_threads()))
    with threadpool_limits(limits=1), ThreadPoolExecutor(workers) as pool:
        futures = {key: pool.submit(job) for key, job in jobs.items()}
        return {key: future.result() for key, future in futures.items()}


def action_probe_scores(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                        test_y: np.ndarray, probe: str = "linear", seed: int = 0,
                        indicators: int = 0) -> dict[str, float]:
    """Fit a probe on (train_x, train_y), score it on (test_x, test_y) (``indicators``: as in
    ``fit_probe``).

    Discrete ``y`` (N,) ints: ``{"balanced_accuracy", "chance"}`` with chance = 1 / classes in
    the test set. Continuous ``y`` (N,) or (N, A) floats: ``{"nmse", "r2"}`` where ``nmse`` is
    the mean squared error over the test actions' variance (summed over dimensions; 1.0 = knows
    nothing) and ``r2`` the coefficient of determination averaged over dimensions.
    """
    _check_pairs(test_x, test_y, "action_probe_scores (test)")
    if is_discrete(train_y) != is_discrete(test_y):
        raise ValueError("train and test actions must both be discrete or both continuous")
    model = fit_probe(train_x, train_y, probe, seed, indicators)
    predicted = model.predict(test_x)
    if is_discrete(test_y):
        return {"balanced_accuracy": balanced_accuracy(test_y, predicted),
                "chance": 1.0 / len(np.unique(test_y))}
    return _regression_scores(test_y, predicted)


def _regression_scores(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """``nmse`` and ``r2`` of continuous predictions of (N,) or (N, A) ``truth``.

    ``nmse`` is the squared error summed over dimensions over the variance summed likewise, which
    is 1 - scikit-learn's variance-weighted R^2; ``r2`` is the plain mean over dimensions.
    """
    truth = np.asarray(truth, dtype=np.float64).reshape(len(truth), -1)  # (N, A)
    predicted = np.asarray(predicted, dtype=np.float64).reshape(truth.shape)
    if not (truth.var(axis=0) > 0).all():
        raise ValueError("a continuous action dimension is constant in the test set: its "
                         "normalised MSE and R^2 are undefined")
    return {"nmse": float(1 - r2_score(truth, predicted, multioutput="variance_weighted")),
            "r2": float(r2_score(truth, predicted, multioutput="uniform_average"))}


def frame_pair_features(frames: np.ndarray, size: int = 16, change: bool = True) -> np.ndarray:
    """Raw-pixel features of every transition of uint8 clips (N, T, H, W, 3): (N * (T-1), F).

    Each frame is area-downsampled to ``size`` x ``size`` and scaled to [0, 1]; a transition's
    features are frame t and the change to frame t+1, F = 2 * size * size * 3 (``change=False``:
    frame t alone, F = size * size * 3, what the scene tells before anything moves). Rows are
    ordered clip-major, like ``latents.reshape(-1, Z)`` of motion latents (N, T-1, Z).
    """
    frames = np.asarray(frames)
    if frames.ndim != 5 or frames.shape[-1] != 3 or frames.shape[1] < 2:
        raise ValueError(f"frames must be (N, T, H, W, 3) with T >= 2, got {frames.shape}")
    n, t = frames.shape[:2]
    video = torch.from_numpy(np.ascontiguousarray(frames)).float().div(255)
    video = video.reshape(n * t, *frames.shape[2:]).permute(0, 3, 1, 2)  # (N*T, 3, H, W)
    small = F.adaptive_avg_pool2d(video, size).reshape(n, t, -1).numpy()  # (N, T, 3*size*size)
    features = small[:, :-1]
    if change:
        features = np.concatenate([features, small[:, 1:] - small[:, :-1]], axis=-1)
    return features.reshape(n * (t - 1), -1)


def no_change_transitions(frames: np.ndarray) -> np.ndarray:
    """bool (N * (T-1),): which transitions of uint8 clips (N, T, H, W, 3) change no pixel.

    Rows are ordered clip-major, like ``frame_pair_features``.
    """
    frames = np.asarray(frames)
    if frames.ndim != 5 or frames.shape[1] < 2:
        raise ValueError(f"frames must be (N, T, H, W, C) with T >= 2, got {frames.shape}")
    return (frames[:, 1:] == frames[:, :-1]).all(axis=(2, 3, 4)).reshape(-1)


def no_change_ceiling(actions: np.ndarray, no_change: np.ndarray) -> dict[str, Any]:
    """The best action-probe score reachable when transitions that change no pixel look alike.

    ``actions``: (N,) ids or (N,) / (N, A) floats; ``no_change``: bool (N,), e.g.
    ``no_change_transitions``. Whatever the action of such a transition, what the probe reads of
    the change is the same, so the best it can do is one prediction for all of them. The oracle
    scored here knows the action of every transition that changes pixels and makes the best such
    prediction on the others: for discrete actions the class that maximises balanced accuracy
    (the one with the largest share of its own transitions unchanged, not necessarily the most
    common), for continuous actions their mean. A probe that also reads frame t (an agent against
    a wall is likelier to have walked into it) can beat it by that much; distractors that move by
    themselves change every frame, so take ``no_change`` from a clean rendering where there is one.

    Returns ``no_change_share`` (share of the N transitions), ``transitions`` (N) and the score
    as ``action_probe_scores`` names it: ``balanced_accuracy`` (with ``no_change_prediction``, the
    class predicted there, None without no-change transitions) or ``nmse`` and ``r2``.
    """
    actions, no_change = np.asarray(actions), np.asarray(no_change, dtype=bool)
    if no_change.ndim != 1 or len(no_change) != len(actions) or len(actions) == 0:
        raise ValueError(f"no_change must be (N,) for actions of {len(actions)} rows, N > 0, got "
                         f"shape {no_change.shape}")
    result: dict[str, Any] = {"no_change_share": float(no_change.mean()),
                              "transitions": len(actions)}
    if is_discrete(actions):
        # one prediction for every no-change transition: try each class that occurs there
        scores = {c.item(): balanced_accuracy(actions, np.where(no_change, c, actions))
                  for c in np.unique(actions[no_change])}
        best = max(scores, key=scores.get) if scores else None
        result.update(balanced_accuracy=scores[best] if scores else 1.0,
                      no_change_prediction=best)
        return result
    truth = np.asarray(actions, dtype=np.float64).reshape(len(actions), -1)  # (N, A)
    predicted = truth.copy()
    if no_change.any():
        predicted[no_change] = truth[no_change].mean(axis=0)
    result.update(_regression_scores(truth, predicted))
    return result


def task_time_features(fit_labels: Sequence[str], fit_steps: np.ndarray,
                       test_labels: Sequence[str], test_steps: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    """One-hot task identity and time step of each transition, encoded as in the fit set.

    ``*_labels``: (N,) the label of each transition's episode; ``*_steps``: int (N,) its index in
    its episode. Features: one-hot of the label, of the step and of the (label, step) pair, so a
    linear probe can learn any action a task takes at a step (a scripted expert's) and still share
    what a task or a step says alone. Values the fit set lacks (labels of held-out episodes, steps
    past its episodes' ends) encode as all zeros: task identity only helps where tasks recur.
    Returns float32 (N_fit, F) and (N_test, F).
    """
    def table(labels: Sequence[str], steps: np.ndarray) -> np.ndarray:
        labels, steps = np.asarray(labels, dtype=str), np.asarray(steps).astype(str)
        if labels.shape != steps.shape or labels.ndim != 1:
            raise ValueError(f"labels and steps must be two (N,) arrays, got {labels.shape} and "
                             f"{steps.shape}")
        return np.stack([labels, steps, np.char.add(np.char.add(labels, "\t"), steps)], axis=1)

    encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float32)
    fit = encoder.fit_transform(table(fit_labels, fit_steps))
    return fit, encoder.transform(table(test_labels, test_steps))


def retrieval(task: np.ndarray, labels: Sequence[str], text_embeddings: np.ndarray,
              candidates: Sequence[str]) -> dict[str, float]:
    """Top-1 / top-5 accuracy of ranking ``candidates`` (U, K embeddings) for each clip.

    ``task``: (N, K) task embeddings; ``labels``: (N,) each clip's own label, one of
    ``candidates``. Ranked by dot product (the embeddings are unit vectors, so cosine).
    """
    index = {label: i for i, label in enumerate(candidates)}
    truth = np.array([index[label] for label in labels])  # (N,)
    ranking = np.argsort(-(task @ text_embeddings.T), axis=1)  # (N, U)
    hits = ranking == truth[:, None]
    return {"top1": float(hits[:, :1].any(1).mean()), "top5": float(hits[:, :5].any(1).mean()),
            "chance_top1": 1.0 / len(candidates), "num_labels": len(candidates)}


def retrieval_with_chance(task: np.ndarray, labels: Sequence[str], text_embeddings: np.ndarray,
                          candidates: Sequence[str]) -> dict[str, float]:
    """``retrieval`` (top-1 / top-5 of the clip's label among ``candidates``) plus top-5 chance."""
    scores = retrieval(task, list(labels), text_embeddings, list(candidates))
    scores["chance_top5"] = min(5, len(candidates)) / len(candidates)
    return scores


DISENTANGLEMENT_SCORES = {"discrete": "balanced_accuracy", "continuous": "r2"}


def disentanglement_matrix(train: dict[str, dict[str, np.ndarray]],
                           test: dict[str, dict[str, np.ndarray]],
                           probe: str = "linear", seed: int = 0,
                           known: dict[tuple[str, str], dict[str, float]] | None = None
                           ) -> dict[str, Any]:
    """Probe every source to every target; one number per (source, target) cell.

    ``train`` and ``test`` map ``"sources"`` and ``"targets"`` to dicts of arrays with one row per
    sample, e.g. ``{"sources": {"motion": (N, Z), "task": (N, K)}, "targets": {"action": (N,),
    "camera_shift": (N, 2)}}``. The caller aligns rows (a per-transition target gets the clip's
    task embedding repeated on each of its transitions). A discrete target's cell is the probe's
    balanced accuracy over the test samples whose class occurs in ``train`` (a probe cannot name
    a class it never saw; episode labels are often unique to a few episodes); a continuous
    target's cell is its R^2. A target that is constant in either set (e.g. camera shift on clean
    renderings), or with no test class seen in ``train``, gets ``None`` in every cell.

    ``known``: ``action_probe_scores`` of (source, target) cells that the caller has already
    fit on these very arrays with this ``probe`` and ``seed`` (the evaluation's motion -> action
    probe); they are not fit again where the cell scores every test sample (no class unseen).

    Returns ``{"cells": {source: {target: score | None}}, "score": {target: score name},
    "chance": {target: chance or None}, "scored": {target: test samples scored}}``.
    """
    cells: dict[str, dict[str, float | None]] = {name: {} for name in train["sources"]}
    score_names, chance, scored = {}, {}, {}
    jobs: dict[tuple[str, str], Callable[[], dict[str, float]]] = {}
    for target, train_y in train["targets"].items():
        test_y, keep = test["targets"][target], slice(None)
        discrete = is_discrete(train_y)
        score_names[target] = DISENTANGLEMENT_SCORES["discrete" if discrete else "continuous"]
        if discrete:
            keep = np.isin(test_y, train_y)
            test_y = test_y[keep]
        constant = len(test_y) == 0 or any(
            len(np.unique(y)) < 2 if discrete
            else np.ptp(np.asarray(y).reshape(len(y), -1), axis=0).max() == 0
            for y in (train_y, test_y))
        chance[target] = 1.0 / len(np.unique(test_y)) if discrete and not constant else None
        scored[target] = 0 if constant else len(test_y)
        every_sample = not discrete or bool(np.all(keep))
        for source, train_x in train["sources"].items():
            cells[source][target] = None
            if not constant and every_sample and (source, target) in (known or {}):
                cells[source][target] = known[(source, target)][score_names[target]]
            elif not constant:
                jobs[(source, target)] = partial(action_probe_scores, train_x, train_y,
                                                 test["sources"][source][keep], test_y, probe,
                                                 seed)
    for (source, target), scores in fit_in_parallel(jobs).items():
        cells[source][target] = scores[score_names[target]]
    return {"cells": cells, "score": score_names, "chance": chance, "scored": scored}


def shift_clips(clips: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Translate every frame of uint8 clips (..., H, W, 3) by (dx, dy) pixels, edges repeated.

    Positive ``dx`` moves content right, positive ``dy`` down; the uncovered border repeats the
    nearest edge pixels, so no content wraps around.
    """
    height, width = clips.shape[-3], clips.shape[-2]
    if abs(dx) >= width or abs(dy) >= height:
        raise ValueError(f"shift ({dx}, {dy}) is larger than the frame ({height}x{width})")
    rows = np.clip(np.arange(height) - dy, 0, height - 1)
    cols = np.clip(np.arange(width) - dx, 0, width - 1)
    return clips[..., rows[:, None], cols[None, :], :]


def _mean_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b, axis=-1).mean())


def camera_shift_sensitivity(encode: Callable[[np.ndarray], np.ndarray], clips: np.ndarray,
                             actions: np.ndarray | None = None,
                             shifts: Sequence[int] = (1, 2, 3, 4), max_pairs: int = 4096,
                             seed: int = 0, latents: np.ndarray | None = None) -> dict[str, Any]:
    """How much latents move when the whole clip moves, against how much actions move them.

    ``encode`` maps uint8 clips (N, T, H, W, 3) to motion latents (N, T-1, Z). For each shift s,
    clip i is translated by s px in one of four directions (right, down, left, up by i mod 4)
    and ``shift_distance[s]`` is the mean Euclidean distance between a transition's latent before
    and after. The reference ``action_distance`` is the mean distance between the latents of up
    to ``max_pairs`` random pairs of unshifted transitions with different true ``actions`` (N, T-1)
    (different transitions at all, without actions). ``ratio[s]`` = shift / action distance:
    0 means shifting the camera does not move the latents; 1 means it moves them as much as
    changing the action does. ``latents``: ``encode(clips)`` where the caller has it already.
    """
    clips = np.asarray(clips)
    base = np.asarray(encode(clips) if latents is None else latents)  # (N, T-1, Z)
    if base.shape[:2] != (len(clips), clips.shape[1] - 1):
        raise ValueError(f"latents must be (N, T-1, Z) for clips {clips.shape}, got {base.shape}")
    flat = base.reshape(-1, base.shape[-1])
    rng = np.random.default_rng(seed)
    first, second = rng.integers(0, len(flat), (2, max_pairs))
    if actions is not None:
        labels = np.asarray(actions).reshape(-1)
        keep = labels[first] != labels[second]
    else:
        keep = first != second
    if not keep.any():
        raise ValueError("camera_shift_sensitivity needs two transitions with different actions")
    action_distance = _mean_distance(flat[first[keep]], flat[second[keep]])
    directions = np.array([(1, 0), (0, 1), (-1, 0), (0, -1)])[np.arange(len(clips)) % 4]
    shift_distance, ratio = {}, {}
    for s in shifts:
        moved = np.stack([shift_clips(clip, int(s * dx), int(s * dy))
                          for clip, (dx, dy) in zip(clips, directions, strict=True)])
        shift_distance[int(s)] = _mean_distance(np.asarray(encode(moved)), base)
        ratio[int(s)] = shift_distance[int(s)] / max(action_distance, 1e-12)
    return {"shift_distance": shift_distance, "action_distance": action_distance,
            "ratio": ratio, "mean_ratio": float(np.mean(list(ratio.values())))}


def focus_precision(maps: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """Share of focus-map mass on mask pixels, against a uniform map's share.

    ``maps``: non-negative (M, H, W); ``masks``: bool (M, H, W), the ground-truth pixels
    (``agent_mask``) of the frame each map is drawn on. Maps with an empty mask or no mass are
    left out. Returns ``precision`` (mean share of mass on the mask: 1 = all of it), ``uniform``
    (mean share of the frame the mask covers: what a uniform map scores), ``lift`` (precision /
    uniform; 1 = no better than uniform) and ``maps`` (how many were scored).
    """
    maps, masks = np.asarray(maps, dtype=np.float64), np.asarray(masks, dtype=bool)
    if maps.shape != masks.shape or maps.ndim != 3:
        raise ValueError(f"maps and masks must both be (M, H, W), got {maps.shape} and "
                         f"{masks.shape}")
    if (maps < 0).any():
        raise ValueError("focus maps must be non-negative")
    mass = maps.sum(axis=(1, 2))
    keep = masks.any(axis=(1, 2)) & (mass > 0)
    if not keep.any():
        raise ValueError("no map with a non-empty mask and non-zero mass to score")
    share = (maps * masks).sum(axis=(1, 2))[keep] / mass[keep]
    uniform = masks.mean(axis=(1, 2))[keep]
    precision, baseline = float(share.mean()), float(uniform.mean())
    return {"precision": precision, "uniform": baseline, "lift": precision / baseline,
            "maps": int(keep.sum())}


def psnr(prediction: torch.Tensor, target: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """PSNR in dB of each frame of (..., C, H, W) tensors spanning ``data_range`` -> (...)."""
    mse = (prediction.float() - target.float()).pow(2).mean(dim=(-3, -2, -1))
    return 10 * torch.log10(data_range ** 2 / mse.clamp(min=1e-10))


@torch.no_grad()
def controllability(decode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    frames: torch.Tensor, latents: torch.Tensor, *,
                    current: torch.Tensor | None = None, targets: torch.Tensor | None = None,
                    inferred: torch.Tensor | None = None) -> dict[str, float]:
    """Genie's Delta-PSNR: does the decoder's prediction depend on the inferred latent?

    ``frames``: float (B, T, C, H, W) in [-1, 1], B >= 2; ``latents``: (B, T-1, Z) inferred from
    them; ``decode(frames[:, :-1], latents)`` -> predicted frames 1..T-1 (B, T-1, C, H, W), e.g.
    ``model.decoder``. The other-clip latents are those of clip (i + 1) mod B at the same step.
    ``current`` (what ``decode`` is given instead of ``frames[:, :-1]``, e.g. camera-warped
    frames) and ``targets`` (what it should predict instead of ``frames[:, 1:]``, e.g. optical
    flow) are for decoders of other inputs or targets; a PSNR of non-image targets is taken with
    the same ``data_range`` of 2, so only the delta (10 log10 of the error ratio) is meaningful.
    ``inferred``: ``decode(current, latents)`` where the caller has it already (a model's forward
    made it), so it is not decoded twice.
    Returns ``psnr_inferred``, ``psnr_other`` (dB, mean over clips and steps) and ``delta_psnr``
    (inferred minus other: > 0 when the latent controls the prediction, ~0 when it is ignored).
    """
    if frames.ndim != 5 or latents.ndim != 3 or latents.shape[:2] != (frames.shape[0],
                                                                      frames.shape[1] - 1):
        raise ValueError(f"frames must be (B, T, C, H, W) and latents (B, T-1, Z), got "
                         f"{tuple(frames.shape)} and {tuple(latents.shape)}")
    if frames.shape[0] < 2:
        raise ValueError("controllability needs at least 2 clips (one lends the other latents)")
    current = frames[:, :-1] if current is None else current
    target = frames[:, 1:] if targets is None else targets
    if inferred is None:
        inferred = decode(current, latents)
    elif inferred.shape != target.shape:
        raise ValueError(f"inferred must be shaped like the targets {tuple(target.shape)}, got "
                         f"{tuple(inferred.shape)}")
    own = psnr(inferred, target).mean()
    other = psnr(decode(current, latents.roll(1, dims=0)), target).mean()
    return {"psnr_inferred": float(own), "psnr_other": float(other),
            "delta_psnr": float(own - other)}
