"""What ``groundlam eval`` shows: the markdown report, the latent-space plots and the short
summary the trainer prints after its final evaluation. Nothing here computes a metric; everything
reads ``metrics.json``'s dict (``groundlam.evaluation.evaluate``) or arrays it was computed from.

Dimension keys: N clips, T frames a clip, Z latent size, K text-embedding size.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from groundlam.evaluation.metrics import is_discrete

__all__ = ["plot_latents", "summary_rows", "summary_text", "write_report"]


def _embed_2d(points: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(points)
    import umap

    neighbours = min(15, len(points) - 1)  # umap's default, where there are enough points
    return umap.UMAP(n_components=2, n_neighbors=neighbours, random_state=seed
                     ).fit_transform(points)


def plot_latents(motion: np.ndarray, task: np.ndarray, labels: Sequence[str],
                 actions: np.ndarray | None, out: Path, name: str,
                 action_names: Sequence[str] | None = None) -> list[str]:
    """PCA (and UMAP where umap-learn is installed) of motion latents (N, T-1, Z) coloured by
    true action (N, T-1) where discrete and by label (N,), and of task embeddings (N, K) coloured
    by label; one PNG a method, written to ``out``. Returns the file names."""
    # a bare Figure renders with Agg and leaves pyplot's global backend (a notebook's) alone
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    steps = motion.shape[1]
    motion = motion.reshape(-1, motion.shape[-1])  # (N*(T-1), Z), clip-major
    label_names = sorted(set(labels))
    label_ids = np.array([label_names.index(label) for label in labels])  # (N,)
    panels = []
    if actions is not None and is_discrete(actions.reshape(-1, *actions.shape[2:])):
        panels.append(("motion latents by true action", motion, actions.reshape(-1), "action"))
    panels.append(("motion latents by label", motion, np.repeat(label_ids, steps), "label"))
    panels.append(("task embeddings by label", task, label_ids, "label"))
    methods = ["pca"] + (["umap"] if importlib.util.find_spec("umap") else [])
    files = []
    for method in methods:
        figure = Figure(figsize=(5 * len(panels), 4.5))
        axes = figure.subplots(1, len(panels), squeeze=False)
        for axis, (title, points, colours, kind) in zip(axes[0], panels, strict=True):
            if len(points) < 3:
                axis.set_title(f"{title}: too few points")
                continue
            xy = _embed_2d(points, method)
            classes, index = np.unique(colours, return_inverse=True)
            cmap = colormaps["tab10" if len(classes) <= 10 else "nipy_spectral"]
            if kind == "action":  # one collection a class, for the legend
                for k, value in enumerate(classes):
                    chosen = index == k
                    axis.scatter(xy[chosen, 0], xy[chosen, 1], s=6, color=cmap(k), alpha=0.7,
                                 label=action_names[value] if action_names
                                 else f"action {value}")
            else:  # one collection: a label's points are drawn in the data's order
                axis.scatter(xy[:, 0], xy[:, 1], s=6, alpha=0.7, c=cmap(
                    index if len(classes) <= 10 else index / max(len(classes) - 1, 1)))
            if kind == "action" or len(classes) <= 10:
                handles = axis.get_legend_handles_labels()[0]
                if handles:
                    axis.legend(fontsize=7, markerscale=2)
            axis.set_title(f"{title} ({len(classes)} {kind}s)", fontsize=10)
            axis.set_xlabel(f"{method.upper()} 1")
            axis.set_ylabel(f"{method.upper()} 2")
        figure.suptitle(f"{name}: held-out latents, {method.upper()}")
        figure.tight_layout()
        path = out / f"{name}_latents_{method}.png"
        figure.savefig(path, dpi=100)
        files.append(path.name)
    return files


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _get(tree: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def summary_rows(results: dict[str, Any]) -> list[tuple[str, Any]]:
    probe = results.get("action_probe") or {}
    score = "balanced_accuracy" if probe.get("actions") == "discrete" else "nmse"
    rows = []
    for key, name in (("motion_linear", "linear"), ("motion_mlp", "MLP"),
                      ("motion_task_time_linear", "latent + task + time step, linear"),
                      ("task_time_linear", "task + time step alone, linear (no latent)"),
                      ("pixels_linear", "raw pixels, linear (floor)"),
                      ("current_frame_linear", "frame t alone, raw pixels, linear "
                       "(what the scene gives away)")):
        rows.append((f"action probe {name}: {score.replace('_', ' ')}", _get(probe, key, score)))
    if score == "balanced_accuracy":
        rows.append(("action probe chance", _get(probe, "motion_linear", "chance")))
    else:
        rows.append(("action probe linear: R^2", _get(probe, "motion_linear", "r2")))
    rows.append(("action probe ceiling: oracle right wherever pixels change, "
                 f"{score.replace('_', ' ')}", _get(probe, "ceiling", score)))
    rows.append(("share of transitions that change no pixel",
                 _get(probe, "ceiling", "no_change_share")))
    for key, name in (("retrieval", "task retrieval"), ("retrieval_no_motion",
                                                         "no-motion control")):
        for k in ("top1", "top5"):
            rows.append((f"{name} {k} (chance {_fmt(_get(results, key, f'chance_{k}'))})",
                         _get(results, key, k)))
    rows.append(("camera-shift ratio, mean over 1-4 px (0 = ignores the camera)",
                 _get(results, "camera_shift", "mean_ratio")))
    for kind in ("motion", "task", "rollout_motion", "rollout_task"):
        uniform = _fmt(_get(results, "focus", kind, "uniform"))
        what = kind.replace("rollout_", "") + (" maps, rollout" if "rollout" in kind else " maps")
        rows.append((f"focus precision, {what} (uniform map: {uniform})",
                     _get(results, "focus", kind, "precision")))
    rows.append(("controllability: delta PSNR dB (inferred - other clip's latent)",
                 _get(results, "controllability", "delta_psnr")))
    return rows


def write_report(metrics: dict[str, Any], path: str | Path) -> Path:
    """Markdown: split statement, a summary table (metric x variant), the disentanglement
    matrices, latent-space plots and focus overlays (files beside ``path``)."""
    path = Path(path)
    variants = metrics["variants"]
    names = list(variants)
    split = metrics["split"]
    lines = [f"# groundlam eval: `{metrics['checkpoint']}`", "",
             f"Data `{metrics['data']}`, clips of {metrics['clip_length']} frames; model: "
             + ", ".join(f"{k} `{v}`" for k, v in metrics["model"].items())
             + f"; run config: `{metrics['config'] or 'defaults'}`"
             + (f" with {' '.join(metrics['overrides'])}" if metrics["overrides"] else "") + ".",
             "",
             f"Probes are fit on {split['fit']} and scored on {split['scored']}."]
    if split["held_out"] is False:
        lines += ["", "**Warning: the scored episodes are training data of this run; these are "
                      "not held-out numbers.**"]
    elif split["held_out"] is None:
        lines += ["", "**Warning: without the run's config it is unknown whether the model "
                      "trained on the scored episodes.**"]
    if "distractors" in split:  # synthetic: which rendering the model saw in training
        trained = (f"The model was trained on the **{split['trained_on']}** rendering"
                   if split["trained_on"] else "Which rendering the model was trained on is "
                                                 "unknown (no run config, or other training data)")
        on = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in split["distractors"].items() if v)
        lines += ["", f"{trained}; the distracted rendering has {on} "
                      f"({split['distractors_from']} distractors)."]
    if any("action_probe" in v for v in variants.values()):
        lines += ["", "Action probes: `latent + task + time step` against `task + time step "
                      "alone` is what the latent adds over knowing the task and how far into the "
                      "episode the transition is (one-hot; a task unseen in fitting is all "
                      "zeros). The ceiling is an oracle that knows every action that changes "
                      "pixels and makes the best single guess where none change (a blocked move, "
                      "a grab with nothing to grab): a probe of what changed cannot beat it."]
    lines += ["", "## Summary", "", "| metric | " + " | ".join(names) + " |",
              "|---|" + "---|" * len(names)]
    rows = {name: summary_rows(variants[name]) for name in names}
    for i, (label, _) in enumerate(rows[names[0]]):
        lines.append(f"| {label} | " + " | ".join(_fmt(rows[n][i][1]) for n in names) + " |")
    lines += ["", "Probe counts: " + ", ".join(
        f"{n}: fit on {variants[n]['fit_clips']} clips, scored on {variants[n]['test_clips']}"
        for n in names) + "."]
    seen = [(n, _get(variants[n], "action_probe", "task_labels_seen")) for n in names]
    if any(share is not None for _, share in seen):
        lines += ["", "Scored transitions whose task label occurs in the fit clips: " + ", ".join(
            f"{n} {_fmt(share)}" for n, share in seen) + "."]
    if any("disentanglement" in variants[n] for n in names):
        lines += ["", "## Disentanglement", "",
                  "Linear probes from each source to each target. Cells are balanced accuracy "
                  "for discrete targets (actions, label) and R^2 for continuous ones (camera "
                  "shift and background shift per transition); n/a where the target is constant "
                  "(e.g. clean renderings). Motion should predict the actions and not the "
                  "camera; the task embedding should predict the label.", ""]
    for name in names:
        matrix = variants[name].get("disentanglement")
        if matrix is None:
            continue
        targets = list(matrix["score"])
        lines += [f"**{name}**", "", "| source | " + " | ".join(
            f"{t} ({matrix['score'][t].replace('_', ' ')})" for t in targets) + " |",
            "|---|" + "---|" * len(targets)]
        for source, cells in matrix["cells"].items():
            lines.append(f"| {source} | " + " | ".join(_fmt(cells[t]) for t in targets) + " |")
        chance = ", ".join(f"{t} {_fmt(c)}" for t, c in matrix["chance"].items() if c)
        counts = ", ".join(f"{t} {n}" for t, n in matrix["scored"].items())
        lines += ["", f"Chance: {chance}. " if chance else "", f"Test samples scored: {counts} "
                  "(a discrete target only on classes the probe was fit on).", ""]
    if any(variants[n].get("plots") for n in names):
        lines += ["## Latent space", ""]
        for name in names:
            lines += [f"![{name} {plot}]({plot})" for plot in variants[name].get("plots", [])]
            lines.append("")
    if any("focus" in variants[n] for n in names):
        lines += ["## Focus maps", "",
                  "Each row: frame | motion-slot map | task-slot map, for the first held-out "
                  "clips; the maps averaged over the blocks, then with attention rollout "
                  "(`groundlam.focus` says what each does and does not mean). Precision scores "
                  "the maps against `agent_mask` (see the summary).", ""]
        for name in names:
            for key in ("overlays", "rollout_overlays"):
                for overlay in _get(variants[name], "focus", key) or []:
                    if overlay.endswith(".png"):
                        gif = overlay[:-4] + ".gif"
                        lines.append(f"[![{name} focus]({overlay})]({gif}) ")
                lines.append("")
    path.write_text("\n".join(lines) + "\n")
    return path


def summary_text(metrics: dict[str, Any]) -> str:
    """The summary table as plain text (metric, one column a rendering), rows without a number
    left out: what the trainer prints after its final evaluation."""
    names = list(metrics["variants"])
    rows = {name: summary_rows(metrics["variants"][name]) for name in names}
    kept = [(i, label) for i, (label, _) in enumerate(rows[names[0]])
            if any(rows[n][i][1] is not None for n in names)]
    width = max(len(label) for _, label in kept)
    lines = [f"{'held-out metrics':<{width}}  " + "  ".join(f"{n:>10}" for n in names)]
    lines += [f"{label:<{width}}  " + "  ".join(f"{_fmt(rows[n][i][1]):>10}" for n in names)
              for i, label in kept]
    return "\n".join(lines)
