"""How long ``groundlam eval`` takes on a trained checkpoint, and where the time goes.

    groundlam train --config configs/tiny.yaml          # the quickstart: runs/tiny/final
    python -m evals.bench_eval --checkpoint runs/tiny/final
    python -m evals.bench_eval --checkpoint runs/tiny/final --presets quick --repeats 3
    git worktree add /tmp/before REV                    # a baseline timed in the same run:
    python -m evals.bench_eval --checkpoint runs/tiny/final --sources /tmp/before .

Runs ``groundlam eval --checkpoint C --data synthetic --max-clips 256 --preset P`` (issue 13:
under 20 s on 2 idle cores) as a fresh process for each preset and repeat, the way a user runs
it, and prints one JSON object: per source checkout and preset, each run's wall time (process
start to exit, imports and data generation included), its user and system CPU seconds and minor
page faults, the median wall time, and the per-stage seconds that ``groundlam eval`` writes into
``metrics.json`` (``timings_s`` of each rendering); then the children's peak RSS, the machine's
fp32 matmul rate and the share of CPU other processes took (compare runs only when that is near
0). With several ``--sources`` (checkouts whose ``groundlam`` runs: a ``git worktree`` of another
revision), their runs alternate within each repeat, so a baseline sees the same machine, and
``metrics_equal`` says whether every number of their ``metrics.json`` agrees with the first
source's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from evals.bench_train import (
    contention,
    git_revision,
    machine_cpu_seconds,
    matmul_flops_per_s,
    own_cpu_seconds,
    rounded,
)

ROOT = Path(__file__).resolve().parent.parent


def run_eval(checkpoint: str, preset: str, max_clips: int, out: Path,
             source: Path = ROOT) -> tuple[dict[str, Any], dict[str, Any]]:
    """One ``groundlam eval`` in a fresh process, run from the checkout ``source``: its times and
    the numbers of its ``metrics.json`` (``numbers``)."""
    command = [sys.executable, "-m", "groundlam.cli", "eval", "--checkpoint", checkpoint,
               "--data", "synthetic", "--max-clips", str(max_clips), "--preset", preset,
               "--out", str(out), "--no-progress"]
    environment = {**os.environ, "PYTHONPATH": str(source)}  # its groundlam, not the installed
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, cwd=source, env=environment, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    variants = json.loads((out / "metrics.json").read_text())["variants"]
    return {"wall_s": round(wall, 2), "user_s": round(after.ru_utime - before.ru_utime, 2),
            "system_s": round(after.ru_stime - before.ru_stime, 2),
            "minor_page_faults": after.ru_minflt - before.ru_minflt,
            "timings_s": {name: variant.get("timings_s") for name, variant in variants.items()}
            }, numbers(variants)


def numbers(metrics: Any, prefix: str = "") -> dict[str, Any]:
    """Every number (and None) of a ``metrics.json`` dict by its dotted key, timings left out."""
    if not isinstance(metrics, dict):
        return {prefix: metrics} if metrics is None or isinstance(metrics, (int, float)) else {}
    found: dict[str, Any] = {}
    for key, value in metrics.items():
        if key != "timings_s":
            found |= numbers(value, f"{prefix}.{key}" if prefix else str(key))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a save_pretrained folder")
    parser.add_argument("--presets", nargs="+", default=["full", "quick"])
    parser.add_argument("--max-clips", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sources", nargs="+", type=Path, default=[ROOT],
                        help="checkouts whose groundlam to time (default: this one); their runs "
                             "alternate")
    args = parser.parse_args(argv)
    checkpoint = Path(args.checkpoint).resolve()
    if not checkpoint.is_dir():
        parser.error(f"--checkpoint {args.checkpoint}: no such folder (train the quickstart: "
                     "groundlam train --config configs/tiny.yaml)")
    sources = [source.resolve() for source in args.sources]
    for source in sources:
        if not (source / "groundlam" / "cli.py").is_file():
            parser.error(f"--sources {source}: not a groundlam checkout (no groundlam/cli.py)")
    names = [str(source) for source in sources]
    started, cpu_start = time.perf_counter(), machine_cpu_seconds()
    own_start = own_cpu_seconds(children=True)
    matmul = rounded(matmul_flops_per_s(2048, 5, torch.float32))
    report: dict[str, Any] = {"checkpoint": str(checkpoint), "max_clips": args.max_clips,
                              "matmul_fp32_flops_per_s": matmul,
                              "sources": {name: {"git": git_revision(source), "presets": {}}
                                          for name, source in zip(names, sources, strict=True)}}
    with tempfile.TemporaryDirectory() as folder:
        for preset in args.presets:
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
            scores: dict[str, dict[str, Any]] = {}  # each source's first run's numbers
            for i in range(args.repeats):
                for k, (name, source) in enumerate(zip(names, sources, strict=True)):
                    row, found = run_eval(str(checkpoint), preset, args.max_clips,
                                          Path(folder) / f"{preset}_{k}_{i}", source)
                    runs[name].append(row)
                    scores.setdefault(name, found)
                    print(f"[bench_eval] {name} {preset}: {row['wall_s']} s", file=sys.stderr)
            first = scores[names[0]]
            for name in names:
                mine = scores[name]
                differ = {key: [first.get(key), mine.get(key)] for key in first.keys() | mine
                          if first.get(key) != mine.get(key)}
                report["sources"][name]["presets"][preset] = {
                    "wall_s_median": statistics.median(run["wall_s"] for run in runs[name]),
                    "metrics_equal": not differ, "metrics_differing": differ,
                    "runs": runs[name]}
    report["children_peak_rss_mb"] = round(
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    # the evaluations are this process's children: their CPU time is not "others"
    report["cpu_share_taken_by_others"] = contention(cpu_start, own_start, started,
                                                     children=True)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
