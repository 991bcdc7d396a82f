"""The comparison table: the reconstruction-only baseline against the GroundLAM variants.

    python -m evals.compare --preset cpu                       # writes evals/RESULTS.md
    python -m evals.compare --preset gpu --datasets synthetic,babyai,metaworld
    python -m evals.compare --preset cpu --dry-run             # the plan and the time estimate

Every row (``ROWS``: a name and the dotted overrides that switch the variant on) is trained by
``groundlam train`` in a subprocess, at the same ``train.max_steps`` for every row, once for each
seed (``train.seed``), then evaluated with ``groundlam.evaluation.evaluate.evaluate_checkpoint``
on held-out episodes. A run lives in ``RUNS/<dataset>/<row>/seed<k>/`` (``--runs``, default
``runs/compare/<preset>``); it is done when every ``metrics.json`` of its evaluations exists, and a
second invocation skips it, so the command is resumable after a crash: a training that stopped
part way continues from its last checkpoint (``--resume``), a finished training is not redone.
A run that fails is recorded (its ``train.log`` kept) and the others go on; the command then exits
with status 1.

Datasets (``--datasets``): ``synthetic`` (the built-in benchmark; probes fit on the training seed,
scored on a seed no run trains on, clean and distracted renderings of the same trajectories), and
``babyai`` / ``metaworld``: corpora generated once with ``groundlam datagen`` into
``--data-cache`` (default ``runs/compare/data_cache``), a training corpus (distracted) and a
held-out corpus of another seed (clean and distracted), each scored on its own: probes fit on the
first half of its episodes and scored on the second, so fit and score share a rendering and no
run has seen either.

Writes, under ``--out`` (default ``evals``): ``RESULTS.md`` (one table a dataset and rendering:
median and min-max over seeds per cell, with the command, seeds, date, git commit and machine),
``results/compare_<preset>.json`` (every run's numbers and the summaries) and
``results/compare_<preset>_probe.png`` (linear action probe, clean against distracted, per row).

Presets and how they were sized:

- ``smoke``: 2 rows, 1 seed, 5 steps of ``configs/smoke.yaml`` (a 32 px model with one
  transformer layer); for tests
  (about 15 s of training and 15 s of evaluation a run on a loaded 2-core machine).
- ``cpu``: must finish within 2 hours on 2 cores. ``configs/tiny.yaml`` (64 px) with batch 16
  of 4-frame clips, 250 steps, 3 seeds: every row on the synthetic benchmark (36 runs), and the
  baseline and GroundLAM on BabyAI and Meta-World with distractors (12 runs; each such run is
  scored twice, on clean and distracted held-out corpora). It was sized from an estimated 0.35 s
  a step and ~40 s of evaluation a run, and fitted. Measured alone on 2 idle cores at the
  current defaults (patch mixing, 128-d latents, matching, 512 probe clips) a step takes 0.65 s
  and an evaluation about 2 minutes, so the 48 runs take about 4 hours, over the budget:
  ``--dry-run`` prints the estimate, the progress lines and ``timings.json`` of each run the
  measurement; RESULTS.md states the total. The
  corpora (512 training and 64 held-out episodes a dataset) are generated once, before the runs
  (about 1 minute for BabyAI and several for Meta-World on 2 cores; not in the estimate).
- ``gpu``: ``configs/base.yaml`` (128 px, 8-layer transformer) at 3000 steps, 3 seeds, the three
  datasets (108 runs); its step time (0.15 s assumed for ``--dry-run``) was not measured: no GPU
  was available when it was written. Run ``--dry-run`` and cut ``--rows``/``--steps`` to fit.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["Row", "Preset", "ROWS", "PRESETS", "DATASETS", "METRICS", "run_comparison",
           "summarise", "write_results", "main"]


@dataclass(frozen=True)
class Row:
    """A row of the table: a name, what it is, and the overrides on the preset's config."""

    name: str
    description: str
    overrides: tuple[str, ...] = ()
    needs_actions: bool = False  # gets ``model.num_actions`` of the dataset


ROWS = (
    Row("reconstruction_only", "baseline: no language (loss.infonce_weight=0)",
        ("loss.infonce_weight=0",)),
    Row("groundlam", "GroundLAM defaults (InfoNCE on task slots)"),
    Row("task_pooling_both", "task embedding from task slots and latent actions",
        ("model.task_pooling=both",)),
    Row("camera_slots", "one camera slot predicting a global translation",
        ("model.num_camera_slots=1",)),
    Row("focus_weighted", "focus-weighted reconstruction", ("loss.focus_weight=0.5",)),
    Row("few_actions", "action head on 2.5% labelled episodes", ("loss.action_weight=1.0",),
        needs_actions=True),
    Row("flow_target", "decoder predicts optical flow", ("model.decoder_target=flow",)),
    Row("bottleneck_none", "no bottleneck", ("model.bottleneck=none",)),
    Row("bottleneck_vq", "VQ bottleneck", ("model.bottleneck=vq",)),
    Row("bottleneck_fsq", "FSQ bottleneck", ("model.bottleneck=fsq",)),
    Row("encoder_conv", "convolutional encoder (no slots)", ("model.encoder=conv",)),
    Row("encoder_linear", "linear encoder (no slots)", ("model.encoder=linear",)),
)
BASELINE = "reconstruction_only"
RENDERINGS = ("clean", "distracted")


@dataclass(frozen=True)
class Dataset:
    """A benchmark: its action head size and how to build it (extra ``groundlam datagen``
    arguments; the synthetic benchmark is generated by the trainer and the evaluation)."""

    name: str
    num_actions: int  # the action head's size: discrete actions, or a continuous action's size
    datagen: tuple[str, ...] = ()  # extra ``groundlam datagen`` arguments


DATASETS = {
    "synthetic": Dataset("synthetic", 6),
    "babyai": Dataset("babyai", 6, ("--level", "BabyAI-GoTo-v0", "--min-frames", "8",
                                    "--view", "room")),
    "metaworld": Dataset("metaworld", 4, ("--tasks", "drawer-open-v3,push-v3,reach-v3,"
                                                     "button-press-v3", "--episode-length", "48")),
}


@dataclass(frozen=True)
class Preset:
    config: str  # YAML under the repository root
    overrides: tuple[str, ...]
    steps: int
    seeds: tuple[int, ...]
    rows: tuple[str, ...]
    datasets: tuple[str, ...]
    max_clips: int  # clips a probe set (fit, scored) at most
    focus_clips: int
    train_episodes: int  # episodes of a generated training corpus (babyai, metaworld)
    eval_episodes: int  # episodes of a generated held-out corpus
    seconds_per_step: float  # for --dry-run's estimate
    seconds_per_eval: float
    image_size: int = 64
    # rows of a dataset where the preset trains fewer than ``rows`` (the time budget)
    dataset_rows: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def rows_for(self, dataset: str) -> tuple[str, ...]:
        return self.dataset_rows.get(dataset, self.rows)


ALL_ROWS = tuple(row.name for row in ROWS)
PRESETS = {
    "smoke": Preset("configs/smoke.yaml", (), steps=5, seeds=(0,), rows=(BASELINE, "groundlam"),
                    datasets=("synthetic",), max_clips=16, focus_clips=2, train_episodes=16,
                    eval_episodes=8, seconds_per_step=0.1, seconds_per_eval=15.0, image_size=32),
    # max_clips 512: every clip of a held-out half (Meta-World's is 384 clips). At 128 the probes
    # were short of data (issue 9, seed 0, the same checkpoints rescored): Meta-World raw pixels
    # NMSE 0.60 -> 0.22 and the latent 0.73 -> 0.50; BabyAI's change-weighted latent 0.74 -> 0.80
    "cpu": Preset("configs/tiny.yaml", (
        "data.clip_length=4", "train.batch_size=16", "train.warmup_steps=25",
        "data.eval_episodes=64"), steps=250, seeds=(0, 1, 2), rows=ALL_ROWS,
        datasets=("synthetic", "babyai", "metaworld"), max_clips=512, focus_clips=8,
        # measured alone on 2 idle cores (two threads): 0.65 s a step of BabyAI with difference
        # matching and 0.64 of the synthetic defaults; scoring both renderings at 512 clips
        # 113-119 s (170-370 s on a machine shared two to four ways)
        train_episodes=512, eval_episodes=64, seconds_per_step=0.65, seconds_per_eval=120.0,
        dataset_rows={"babyai": (BASELINE, "groundlam"), "metaworld": (BASELINE, "groundlam")}),
    "gpu": Preset("configs/base.yaml", ("train.warmup_steps=500", "data.eval_episodes=256"),
                  steps=3000, seeds=(0, 1, 2), rows=ALL_ROWS,
                  datasets=("synthetic", "babyai", "metaworld"), max_clips=256, focus_clips=8,
                  train_episodes=4000, eval_episodes=256, seconds_per_step=0.15,
                  seconds_per_eval=60.0, image_size=128),
}

# column -> (label, higher is better); the "probe_*" columns are balanced accuracy for discrete
# actions and normalised MSE (lower is better) for continuous ones, see ``_probe_kind``
METRICS = {
    "probe_linear": ("action probe, linear", True),
    # what the latent adds over the episode's task and time step: compare with probe_task_time
    "probe_latent_task_time": ("action probe, latent + task + time", True),
    # properties of the scored data, the same for every row: the references to read the above by
    "probe_task_time": ("action probe, task + time alone", None),
    "probe_pixels": ("action probe, raw pixels (floor)", None),
    # frame t alone: the share of the action the scene gives away before anything moves
    "probe_current_frame": ("action probe, frame t alone (raw pixels)", None),
    "probe_ceiling": ("action probe ceiling (no-change oracle)", None),
    "retrieval_top1": ("retrieval top-1", True),
    "no_motion_top1": ("no-motion control top-1", None),  # near chance is what we want
    "camera_shift_ratio": ("camera-shift ratio (0 = ignores)", False),
    "focus_lift_motion": ("focus lift, motion maps (1 = uniform)", True),
    "focus_lift": ("focus lift, task maps (1 = uniform)", True),
    "controllability": ("controllability, delta PSNR dB", True),
}
STARTUP_SECONDS = 15.0
NOTES_MARKER = "<!-- written by people: kept when compare.py rewrites the table above -->"


def _get(tree: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _probe_kind(results: dict[str, Any]) -> str | None:
    kind = _get(results, "action_probe", "actions")
    return None if kind is None else ("balanced_accuracy" if kind == "discrete" else "nmse")


def cell_values(results: dict[str, Any]) -> dict[str, float | None]:
    """One rendering's results in ``metrics.json`` -> {column: number or None}."""
    kind = _probe_kind(results)
    return {
        "probe_linear": _get(results, "action_probe", "motion_linear", kind) if kind else None,
        "probe_latent_task_time": _get(results, "action_probe", "motion_task_time_linear", kind)
        if kind else None,
        "probe_task_time": _get(results, "action_probe", "task_time_linear", kind)
        if kind else None,
        "probe_pixels": _get(results, "action_probe", "pixels_linear", kind) if kind else None,
        "probe_current_frame": _get(results, "action_probe", "current_frame_linear", kind)
        if kind else None,
        "probe_ceiling": _get(results, "action_probe", "ceiling", kind) if kind else None,
        "retrieval_top1": _get(results, "retrieval", "top1"),
        "no_motion_top1": _get(results, "retrieval_no_motion", "top1"),
        "camera_shift_ratio": _get(results, "camera_shift", "mean_ratio"),
        "focus_lift_motion": _get(results, "focus", "motion", "lift"),
        "focus_lift": _get(results, "focus", "task", "lift"),
        "controllability": _get(results, "controllability", "delta_psnr"),
    }


# ---------------------------------------------------------------------------------- running


def _log(message: str) -> None:
    print(f"[compare {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _env() -> dict[str, str]:
    env = dict(os.environ, WANDB_MODE="disabled", HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)  # a single-process run, whatever launched us
    return env


def _run_logged(command: list[str], log: Path, what: str) -> None:
    """Run ``command`` from the repository root, output to ``log``; raise naming ``what``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as handle:
        handle.write(shlex.join(command) + "\n")
        handle.flush()
        code = subprocess.run(command, cwd=ROOT, env=_env(), stdout=handle,
                              stderr=subprocess.STDOUT).returncode
    if code:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError(f"{what} failed (exit {code}); the end of {log}:\n" + "\n".join(tail))


def build_dataset(dataset: Dataset, preset: Preset, cache: Path,
                  train_rendering: str = "distracted") -> dict[str, str]:
    """Generate ``dataset``'s training (in ``train_rendering``) and held-out corpora once into
    ``cache``.

    Returns {"train": spec, "clean": spec, "distracted": spec}; a corpus is rebuilt only when its
    ``COMPLETE`` marker (written after ``groundlam datagen`` succeeded) is missing.
    """
    if train_rendering not in RENDERINGS:
        raise ValueError(f"train_rendering={train_rendering!r} is not one of {RENDERINGS}")
    specs = {}
    # a clean training corpus is its own folder; the distracted one keeps the name it always had
    train_part = "train" if train_rendering == "distracted" else "train_clean"
    for part, episodes, seed, variant in ((train_part, preset.train_episodes, 0, train_rendering),
                                          ("heldout", preset.eval_episodes, 1, "both")):
        # the generator's arguments name the corpus too: a cache built with other ones (e.g. the
        # full BabyAI grid before the room view) is not reused
        tag = hashlib.sha1(" ".join(dataset.datagen).encode()).hexdigest()[:8]
        folder = cache / f"{dataset.name}_{preset.image_size}px_{part}_{episodes}_{tag}"
        if not (folder / "COMPLETE").is_file():
            if folder.exists():
                shutil.rmtree(folder)  # a partial corpus from a crash
            _log(f"building {folder} ({episodes} {dataset.name} episodes)")
            _run_logged([sys.executable, "-m", "groundlam.cli", "datagen", dataset.name,
                         "--out", str(folder), "--episodes", str(episodes), "--seed", str(seed),
                         "--image-size", str(preset.image_size), "--variant", variant,
                         "--no-progress", *dataset.datagen],
                        cache / f"{folder.name}.log", f"groundlam datagen {dataset.name}")
            (folder / "COMPLETE").write_text(f"{episodes} episodes, seed {seed}\n")
        if part == train_part:
            specs["train"] = str(folder / train_rendering)
        else:
            specs["clean"], specs["distracted"] = str(folder / "clean"), str(folder / "distracted")
    return specs


@dataclass
class RunSpec:
    dataset: str
    row: Row
    seed: int
    folder: Path
    overrides: list[str] = field(default_factory=list)
    evaluations: list[tuple[str, str, Path]] = field(default_factory=list)  # (name, data, out)

    @property
    def done(self) -> bool:
        return all((out / "metrics.json").is_file() for _, _, out in self.evaluations)


def plan_runs(preset: Preset, rows: dict[str, list[Row]], seeds: list[int], runs: Path,
              specs: dict[str, dict[str, str]], steps: int, extra: tuple[str, ...] = ()
              ) -> list[RunSpec]:
    """Every (dataset, row, seed) run with its training overrides and evaluations; ``rows``:
    the rows of each dataset; ``extra``: overrides added to every run, after the row's."""
    planned = []
    for name, dataset_rows in rows.items():
        dataset = DATASETS[name]
        for row in dataset_rows:
            for seed in seeds:
                folder = runs / name / row.name / f"seed{seed}"
                overrides = [*preset.overrides, *row.overrides, *extra, f"train.max_steps={steps}",
                             f"train.seed={seed}", f"train.output_dir={folder}",
                             "train.final_eval=false", "train.progress=false",
                             f"train.save_every={max(steps // 4, 1)}", "train.keep_checkpoints=1"]
                if row.needs_actions:
                    overrides.append(f"model.num_actions={dataset.num_actions}")
                if name == "synthetic":
                    evaluations = [("synthetic", "synthetic", folder / "eval")]
                else:
                    overrides += [f"data.train={specs[name]['train']}", "data.eval=null"]
                    evaluations = [(variant, specs[name][variant], folder / f"eval_{variant}")
                                   for variant in ("clean", "distracted")]
                planned.append(RunSpec(name, row, seed, folder, overrides, evaluations))
    return planned


def rows_of(preset: Preset, datasets: list[str], rows: list[str] | None = None
            ) -> dict[str, list[Row]]:
    """{dataset: its rows}: ``rows`` for every dataset where given, else the preset's."""
    return {name: [row for row in ROWS if row.name in (rows or preset.rows_for(name))]
            for name in datasets}


def _read_timings(run: RunSpec) -> dict[str, float]:
    path = run.folder / "timings.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def train_and_evaluate(run: RunSpec, preset: Preset) -> dict[str, float]:
    """Train ``run`` in a subprocess (resuming a partial training), evaluate it; returns the
    seconds each took, whether it trained (1.0; 0.0: a finished training was only evaluated)
    and whether training resumed (1.0) from a checkpoint."""
    from groundlam.evaluation.evaluate import default_processes, evaluate_checkpoint

    final = run.folder / "final"
    timings = {"train_s": 0.0, "eval_s": 0.0, "resumed": 0.0, "trained": 0.0}
    if not (final / "config.json").is_file():
        timings["trained"] = 1.0
        command = [sys.executable, "-m", "groundlam.train", "--config",
                   str(ROOT / preset.config), *run.overrides]
        if (run.folder / "checkpoints" / "latest").exists():
            command.append("--resume")
            timings["resumed"] = 1.0
        start = time.perf_counter()
        _run_logged(command, run.folder / "train.log",
                    f"training {run.dataset}/{run.row.name}/seed{run.seed}")
        timings["train_s"] = time.perf_counter() - start
    start = time.perf_counter()
    for _, data, out in run.evaluations:
        if not (out / "metrics.json").is_file():
            # a generated held-out corpus: probes fit on its first half, in its own rendering
            evaluate_checkpoint(final, data, out, config_path=run.folder / "config.yaml",
                                max_clips=preset.max_clips, focus_clips=preset.focus_clips,
                                progress=False, probe_fit="half",
                                processes=default_processes(data))
    timings["eval_s"] = time.perf_counter() - start
    spent = _read_timings(run)  # seconds of earlier, interrupted attempts count too
    (run.folder / "timings.json").write_text(json.dumps(
        {key: spent.get(key, 0.0) + timings[key] for key in ("train_s", "eval_s")}) + "\n")
    return timings


def read_run(run: RunSpec) -> dict[str, Any]:
    """A finished run's cells: {"<rendering>/<column>": value} plus the probe's score kind."""
    cells: dict[str, Any] = {}
    for name, _, out in run.evaluations:
        metrics = json.loads((out / "metrics.json").read_text())
        for variant, results in metrics["variants"].items():
            rendering = variant if name == "synthetic" else name
            for column, value in cell_values(results).items():
                cells[f"{rendering}/{column}"] = value
            cells[f"{rendering}/probe_score"] = _probe_kind(results)
            cells[f"{rendering}/probe_chance"] = _get(results, "action_probe", "motion_linear",
                                                      "chance")
            cells[f"{rendering}/retrieval_chance"] = _get(results, "retrieval", "chance_top1")
    return cells


def summarise(values: list[float | None]) -> dict[str, Any] | None:
    """Median and min-max of the numbers in ``values`` (None and NaN left out), with ``n``."""
    numbers = [v for v in values if isinstance(v, int | float) and v == v]
    if not numbers:
        return None
    return {"median": statistics.median(numbers), "min": min(numbers), "max": max(numbers),
            "n": len(numbers)}


def run_comparison(preset_name: str, out: Path, runs: Path | None = None,
                   cache: Path | None = None, rows: list[str] | None = None,
                   seeds: list[int] | None = None, datasets: list[str] | None = None,
                   steps: int | None = None, command: str | None = None,
                   extra: tuple[str, ...] = (), train_rendering: str = "distracted"
                   ) -> dict[str, Any]:
    """Train and evaluate every missing run of the preset, then write the table, JSON and plot.

    ``train_rendering``: the rendering of the generated corpora's training episodes
    (``distracted``, the table's; ``clean`` for "trained and scored clean"); the synthetic
    benchmark always trains as the preset's config says.

    ``extra``: dotted overrides added to every run (``--set``), after the row's own.

    Returns the results dict written to ``out/results/compare_<preset>.json``.
    """
    preset = PRESETS[preset_name]
    unknown = [name for name in rows or () if name not in ALL_ROWS]
    if unknown:
        raise ValueError(f"unknown rows {unknown} (known: {', '.join(ALL_ROWS)})")
    datasets = list(datasets or preset.datasets)
    unknown = [name for name in datasets if name not in DATASETS]
    if unknown:
        raise ValueError(f"unknown datasets {unknown} (known: {', '.join(DATASETS)})")
    chosen = rows_of(preset, datasets, rows)
    seeds = list(seeds if seeds is not None else preset.seeds)
    steps = steps or preset.steps
    runs = Path(runs or ROOT / "runs" / "compare" / preset_name)
    cache = Path(cache or ROOT / "runs" / "compare" / "data_cache")
    specs = {name: build_dataset(DATASETS[name], preset, cache, train_rendering)
             for name in datasets if name != "synthetic"}
    planned = plan_runs(preset, chosen, seeds, runs, specs, steps, tuple(extra))
    failures = []
    skipped = sum(run.done for run in planned)
    if skipped:
        _log(f"{skipped} of {len(planned)} runs already finished: skipped")
    for index, run in enumerate(planned, 1):
        if run.done:
            continue
        label = f"[{index}/{len(planned)}] {run.dataset} {run.row.name} seed {run.seed}"
        try:
            timings = train_and_evaluate(run, preset)
        except Exception as error:  # noqa: BLE001 - recorded, reported, and the exit status is 1
            failures.append({"dataset": run.dataset, "row": run.row.name, "seed": run.seed,
                             "error": str(error)})
            _log(f"{label}: FAILED: {str(error).splitlines()[0]}")
            continue
        cells = read_run(run)
        probes = ", ".join(f"{key.split('/')[0]} {cells[key]:.3f}" for key in cells
                           if key.endswith("/probe_linear") and cells[key] is not None)
        if timings["trained"]:
            trained = (f"{'resumed and trained' if timings['resumed'] else 'trained'} to step "
                       f"{steps} in {timings['train_s']:.0f} s")
        else:
            trained = "already trained"
        score = next((v for k, v in cells.items() if k.endswith("/probe_score") and v), "")
        _log(f"{label}: {trained}, evaluated in {timings['eval_s']:.0f} s; linear action probe "
             f"({score.replace('_', ' ')}): {probes or 'n/a'}")
    results = collect_results(preset_name, preset, planned, chosen, seeds, steps, command,
                              failures)
    results.update(train_rendering=train_rendering, extra_overrides=list(extra))
    write_results(results, out)
    return results


def _git_commit() -> str | None:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty.strip() else "")


def _machine() -> str:
    import torch

    device = (torch.cuda.get_device_name(0) if torch.cuda.is_available()
              else f"CPU only, torch threads {torch.get_num_threads()}")
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores visible, "
            f"{device}, Python {platform.python_version()}, torch {torch.__version__}")


def collect_results(preset_name: str, preset: Preset, planned: list[RunSpec],
                    rows: dict[str, list[Row]], seeds: list[int], steps: int,
                    command: str | None, failures: list[dict[str, Any]]) -> dict[str, Any]:
    """Every finished run's cells and the per-row summaries, as written to the JSON."""
    table: dict[str, Any] = {}
    all_rows = [row for row in ROWS if any(row in chosen for chosen in rows.values())]
    not_run = [f"on {name}: {', '.join(row.name for row in all_rows if row not in chosen)} "
               f"(the `{preset_name}` preset trains only {', '.join(r.name for r in chosen)} "
               "there, to fit its time budget)"
               for name, chosen in rows.items() if any(row not in chosen for row in all_rows)]
    run_seconds = 0.0
    for name, dataset_rows in rows.items():
        table[name] = {}
        for row in dataset_rows:
            members = [run for run in planned if run.dataset == name and run.row is row]
            finished = [(run, read_run(run)) for run in members if run.done]
            run_seconds += sum(sum(_read_timings(run).values()) for run, _ in finished)
            keys = sorted({k for _, cells in finished for k in cells
                           if not k.endswith(("/probe_score", "_chance"))})
            table[name][row.name] = {
                "description": row.description, "overrides": list(row.overrides),
                "runs": [{"seed": run.seed, "folder": str(run.folder), **cells}
                         for run, cells in finished],
                "summary": {key: summarise([cells.get(key) for _, cells in finished])
                            for key in keys},
                "probe_score": next((v for _, cells in finished for k, v in cells.items()
                                     if k.endswith("/probe_score") and v), None),
                # chance levels belong to the scored data: the same for every run of a dataset
                "chance": {k: v for _, cells in finished for k, v in cells.items()
                           if k.endswith("_chance")}}
    return {"preset": preset_name, "command": command, "config": preset.config,
            "preset_overrides": list(preset.overrides), "steps": steps, "seeds": seeds,
            "datasets": list(rows), "rows": [row.name for row in all_rows],
            "run_minutes": round(run_seconds / 60, 1),
            "columns": list(METRICS), "date": datetime.datetime.now(datetime.UTC).isoformat(
                timespec="seconds"), "git_commit": _git_commit(), "machine": _machine(),
            "failures": failures, "not_run": not_run, "table": table}


# ---------------------------------------------------------------------------------- writing


def _cell(summary: dict[str, Any] | None) -> str:
    if not summary:
        return "n/a"
    if summary["n"] == 1:
        return f"{summary['median']:.3f}"
    return f"{summary['median']:.3f} [{summary['min']:.3f}, {summary['max']:.3f}]"


def _renderings(table: dict[str, Any]) -> list[str]:
    keys = {k.split("/")[0] for row in table.values() for k in row["summary"]}
    return [r for r in ("clean", "distracted") if r in keys] + sorted(
        keys - {"clean", "distracted"})


def _findings(results: dict[str, Any]) -> list[str]:
    """Plain statements from the medians: which rows beat the baseline on which cells."""
    lines = []
    for name, table in results["table"].items():
        base = table.get(BASELINE)
        if base is None:
            continue
        for rendering in _renderings(table):
            for column, (label, higher) in METRICS.items():
                key = f"{rendering}/{column}"
                reference = (base["summary"].get(key) or {}).get("median")
                if higher is None or reference is None:
                    continue
                if column.startswith("probe_") and base.get("probe_score") == "nmse":
                    higher = False
                edge = base["summary"][key]["max" if higher else "min"]
                better = []
                for row, entry in table.items():
                    median = (entry["summary"].get(key) or {}).get("median")
                    if row == BASELINE or median is None:
                        continue
                    if median > reference if higher else median < reference:
                        beyond = median > edge if higher else median < edge
                        better.append(row + (" (beyond the baseline's whole spread)"
                                             if beyond and base["summary"][key]["n"] > 1 else ""))
                others = [row for row in table if row != BASELINE]
                if others:
                    lines.append(f"- {name} {rendering}, {label}: {len(better)} of {len(others)} "
                                 f"variants beat the baseline's median ({reference:.3f})"
                                 + (f": {', '.join(better)}" if better else "") + ".")
    return lines


def best_row(table: dict[str, Any], rendering: str, having: str | None = None) -> str | None:
    """The non-baseline row with the best median linear action probe on ``rendering``, among
    the rows with a ``having`` column (e.g. ``focus_lift``: rows whose encoder has slots)."""
    key = f"{rendering}/probe_linear"
    scored = [(entry["summary"][key]["median"], row) for row, entry in table.items()
              if row != BASELINE and entry["summary"].get(key)
              and (having is None or entry["summary"].get(f"{rendering}/{having}"))]
    if not scored:
        return None
    lower = next(e["probe_score"] for e in table.values() if e["probe_score"]) == "nmse"
    return (min if lower else max)(scored)[1]


def copy_focus_overlays(results: dict[str, Any], folder: Path) -> list[tuple[str, str, Path]]:
    """Copy the first distracted focus overlay (PNG strip) of the baseline and of the best row
    with focus maps (``best_row`` on distracted data), lowest seed, of each dataset into
    ``folder``.

    Returns [(dataset, row, copied file)]; runs' own folders are not committed, these are.
    """
    copied = []
    for name, table in results["table"].items():
        best = best_row(table, "distracted", having="focus_lift")
        for row in [BASELINE, best] if best else [BASELINE]:
            runs = sorted(_get(table, row, "runs") or [], key=lambda run: run["seed"])
            if not runs:
                continue
            run = Path(runs[0]["folder"])
            # synthetic: eval/ holds clean and distracted; a generated corpus: eval_distracted/
            path = next((run / sub / "metrics.json" for sub in ("eval_distracted", "eval")
                         if (run / sub / "metrics.json").is_file()), None)
            if path is None:
                continue
            variants = json.loads(path.read_text())["variants"]
            scored = variants.get("distracted") or next(iter(variants.values()))
            png = next((o for o in _get(scored, "focus", "overlays") or []
                        if o.endswith(".png")), None)
            if png:
                folder.mkdir(parents=True, exist_ok=True)
                target = folder / f"{name}_{row}_seed{runs[0]['seed']}.png"
                shutil.copyfile(path.parent / png, target)
                copied.append((name, row, target))
    return copied


def write_results(results: dict[str, Any], out: Path) -> dict[str, Path]:
    """``out/RESULTS.md``, ``out/results/compare_<preset>.json`` and the probe plot."""
    out = Path(out)
    (out / "results").mkdir(parents=True, exist_ok=True)
    preset = results["preset"]
    json_path = out / "results" / f"compare_{preset}.json"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    plot_path = plot_probes(results, out / "results" / f"compare_{preset}_probe.png")
    lines = ["# GroundLAM comparison table", "",
             f"Command: `{results['command']}`", "",
             f"Preset `{preset}`: `{results['config']}` with "
             f"`{' '.join(results['preset_overrides']) or 'no overrides'}`, "
             f"{results['steps']} training steps for every row, seeds {results['seeds']}; "
             f"{results['run_minutes']} minutes of training and evaluation in all.",
             f"Date {results['date']}, git commit `{results['git_commit']}`, "
             f"machine: {results['machine']}.", "",
             f"BabyAI and Meta-World runs trained on their "
             f"{results.get('train_rendering', 'distracted')} training corpus"
             + (f"; every run also had `{' '.join(results['extra_overrides'])}`"
                if results.get("extra_overrides") else "") + ".", "",
             "Each cell: median [min, max] over seeds, on held-out episodes (synthetic: probes "
             "fit on the training seed's episodes, scored on a seed no run trained on; BabyAI "
             "and Meta-World: fit on the first half of a held-out corpus, scored on the second, "
             "in the same rendering). "
             "`no-motion control top-1`: task retrieval on clips of one repeated frame; well "
             "above chance means the task embedding reads appearance, not motion. Camera-shift "
             "ratio: latent change under a 1-4 px shift of the clip over the change between "
             "different actions. Focus lift: the share of a focus map's mass on the agent's pixels "
             "over a uniform map's share, for the motion and the task slots (n/a for encoders "
             "without slots). `latent + task + time` against `task + time alone` (one-hot "
             "episode label and time step, no latent) is what the latent adds over knowing the "
             "task and the step; `raw pixels` is the floor; the ceiling is an oracle right on "
             "every transition that changes pixels (none can be told apart where no pixel "
             "changes). Numbers from short runs are noisy; read the spread before the median.",
             ""]
    for name, table in results["table"].items():
        score = next((e["probe_score"] for e in table.values() if e["probe_score"]), None)
        probe_note = {"balanced_accuracy": "balanced accuracy (higher is better)",
                      "nmse": "MSE / action variance (1.0 = knows nothing, lower is better)"}
        for rendering in _renderings(table):
            chance = next((e.get("chance") for e in table.values() if e.get("chance")), {})
            probe_chance = chance.get(f"{rendering}/probe_chance")
            retrieval_chance = chance.get(f"{rendering}/retrieval_chance")
            lines += [f"## {name}, {rendering}", "",
                      f"Action probe: {probe_note.get(score, 'n/a')}"
                      + (f", chance {probe_chance:.3f}" if probe_chance is not None else "")
                      + (f"; retrieval top-1 chance {retrieval_chance:.3f}"
                         if retrieval_chance is not None else "") + ".", "",
                      "| row | " + " | ".join(label for label, _ in METRICS.values()) + " |",
                      "|---|" + "---|" * len(METRICS)]
            for row, entry in table.items():
                lines.append(f"| {row} | " + " | ".join(
                    _cell(entry["summary"].get(f"{rendering}/{column}")) for column in METRICS)
                    + " |")
            lines.append("")
    lines += ["## Rows", "", "| row | what | overrides |", "|---|---|---|"]
    for row in ROWS:
        if row.name in results["rows"]:
            lines.append(f"| {row.name} | {row.description} | "
                         f"`{' '.join(row.overrides) or '(none)'}` |")
    lines += ["", "## What the medians say", "",
              "Generated from the table: against the reconstruction-only baseline, per cell "
              "(the no-motion control is left out: lower is not simply better). A variant that "
              "does not beat the baseline is not listed as better.", ""]
    lines += _findings(results) or ["- no baseline row in this table."]
    if plot_path is not None:
        lines += ["", f"![linear action probe, clean vs distracted]"
                      f"({plot_path.relative_to(out).as_posix()})"]
    overlays = copy_focus_overlays(results, out / "results" / f"compare_{preset}_focus")
    if overlays:
        lines += ["", "## Focus maps: the baseline and the best row", "",
                  "The first held-out distracted clip of the lowest seed; each row of a strip is a "
                  "frame | motion-slot map | task-slot map (the blocks' mean attention; "
                  "`groundlam.focus` says what the maps do and do not mean). The best row is "
                  "the one with focus maps and the highest median linear action probe on "
                  "distracted data (lowest normalised MSE for continuous actions).", ""]
        for name, row, path in overlays:
            lines.append(f"**{name}, {row}**: ![{name} {row} focus]"
                         f"({path.relative_to(out).as_posix()})")
            lines.append("")
    if results["not_run"]:
        lines += ["", "## Rows not run", ""] + [f"- {line}." for line in results["not_run"]]
    if results["failures"]:
        lines += ["", "## Failed runs", ""] + [
            f"- {f['dataset']} {f['row']} seed {f['seed']}: {f['error'].splitlines()[0]} "
            f"... `{f['error'].splitlines()[-1].strip()}`" for f in results["failures"]]
    results_md = out / "RESULTS.md"
    # what people wrote under NOTES_MARKER (the interpretation) survives a rewrite of the table
    kept = results_md.read_text().partition(NOTES_MARKER)[2] if results_md.is_file() else ""
    results_md.write_text("\n".join(lines) + "\n" + (NOTES_MARKER + kept if kept else ""))
    return {"markdown": results_md, "json": json_path, "plot": plot_path}


def plot_probes(results: dict[str, Any], path: Path) -> Path | None:
    """Bar chart per dataset: linear action probe median (min-max bars), clean vs distracted,
    per row. None when no run has a probe number."""
    panels = []
    for name, table in results["table"].items():
        renderings = [r for r in _renderings(table)
                      if any(e["summary"].get(f"{r}/probe_linear") for e in table.values())]
        if renderings:
            panels.append((name, table, renderings))
    if not panels:
        return None
    import numpy as np
    from matplotlib.figure import Figure  # a bare Figure renders with Agg

    figure = Figure(figsize=(max(6.0, 0.7 * max(len(t) for _, t, _ in panels) + 2),
                             3.8 * len(panels)))
    axes = figure.subplots(len(panels), 1, squeeze=False)[:, 0]
    for axis, (name, table, renderings) in zip(axes, panels, strict=True):
        rows = list(table)
        width = 0.8 / len(renderings)
        for k, rendering in enumerate(renderings):
            stats = [table[row]["summary"].get(f"{rendering}/probe_linear") for row in rows]
            median = np.array([s["median"] if s else np.nan for s in stats])
            low = np.array([s["median"] - s["min"] if s else 0.0 for s in stats])
            high = np.array([s["max"] - s["median"] if s else 0.0 for s in stats])
            axis.bar(np.arange(len(rows)) + (k - (len(renderings) - 1) / 2) * width, median,
                     width, yerr=[low, high], capsize=3, label=rendering)
        score = next((e["probe_score"] for e in table.values() if e["probe_score"]), "")
        axis.set_xticks(np.arange(len(rows)), rows, rotation=30, ha="right", fontsize=8)
        axis.set_ylabel(score.replace("_", " ") or "probe")
        chance = next((e.get("chance", {}).get(f"{renderings[0]}/probe_chance")
                       for e in table.values() if e.get("chance")), None)
        if score == "nmse":  # the mean predictor's normalised error
            chance = 1.0
        if chance is not None:
            axis.axhline(chance, color="grey", linestyle="--", linewidth=1,
                         label="chance" if score != "nmse" else "knows nothing (1.0)")
        axis.set_title(f"{name}: linear action probe on motion latents\n(median, bars min-max "
                       f"over seeds)", fontsize=10)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


# ---------------------------------------------------------------------------------- command


def _estimate(preset: Preset, runs: int, steps: int) -> float:
    return runs * (steps * preset.seconds_per_step + STARTUP_SECONDS + preset.seconds_per_eval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evals.compare", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=tuple(PRESETS), required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "evals",
                        help="folder for RESULTS.md and results/ (default: evals)")
    parser.add_argument("--runs", type=Path, help="folder of the runs (default: "
                                                  "runs/compare/<preset>)")
    parser.add_argument("--data-cache", type=Path, help="folder of generated corpora (default: "
                                                        "runs/compare/data_cache)")
    parser.add_argument("--rows", help=f"comma-separated subset of {', '.join(ALL_ROWS)}")
    parser.add_argument("--seeds", help="comma-separated seeds (default: the preset's)")
    parser.add_argument("--datasets", help=f"comma-separated subset of {', '.join(DATASETS)}")
    parser.add_argument("--steps", type=int, help="training steps a run (default: the preset's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a dotted override added to every run, after the row's (repeat "
                             "for more); give such runs their own --runs and --out")
    parser.add_argument("--train-rendering", choices=RENDERINGS, default="distracted",
                        help="babyai / metaworld: train on the clean or the distracted corpus "
                             "(default distracted); give clean runs their own --runs and --out")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the runs and the time estimate, train nothing")
    args = parser.parse_args(argv)

    def split(text: str | None) -> list[str] | None:
        return [item.strip() for item in text.split(",") if item.strip()] if text else None

    preset = PRESETS[args.preset]
    try:
        seeds = [int(s) for s in split(args.seeds)] if args.seeds else None
    except ValueError:
        parser.error(f"--seeds {args.seeds!r}: not comma-separated integers")
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps {args.steps}: must be at least 1")
    rows, datasets = split(args.rows), split(args.datasets)
    for given, known, flag in ((rows, ALL_ROWS, "--rows"), (datasets, tuple(DATASETS),
                                                           "--datasets")):
        bad = [item for item in given or [] if item not in known]
        if bad:
            parser.error(f"{flag}: unknown {bad} (known: {', '.join(known)})")
    bad = [item for item in args.set if "=" not in item or item.startswith("=")]
    if bad:
        parser.error(f"--set: {bad} not of the form KEY=VALUE (e.g. model.motion_dim=64)")
    if args.dry_run:
        chosen = rows_of(preset, datasets or list(preset.datasets), rows)
        count = sum(map(len, chosen.values())) * len(seeds or preset.seeds)
        steps = args.steps or preset.steps
        plan = "; ".join(f"{name}: {', '.join(row.name for row in dataset_rows)}"
                         for name, dataset_rows in chosen.items())
        print(f"{count} runs of {steps} steps, seeds {seeds or list(preset.seeds)}; {plan}; "
              f"estimated {_estimate(preset, count, steps) / 60:.0f} minutes of runs "
              "(before skipping finished runs; generating corpora not counted)")
        return 0
    command = shlex.join(["python", "-m", "evals.compare",
                          *(argv if argv is not None else sys.argv[1:])])
    results = run_comparison(args.preset, args.out, args.runs, args.data_cache, rows, seeds,
                             datasets, args.steps, command, tuple(args.set),
                             args.train_rendering)
    _log(f"wrote {args.out / 'RESULTS.md'} and {args.out / 'results'}")
    if results["failures"]:
        _log(f"{len(results['failures'])} run(s) failed; see RESULTS.md")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
