"""How long ``groundlam eval`` takes on a trained checkpoint, and where the time goes.

    groundlam train --config configs/tiny.yaml          # the quickstart: runs/tiny/final
    python -m evals.bench_eval --checkpoint runs/tiny/final
    python -m evals.bench_eval --checkpoint runs/tiny/final --presets quick --repeats 3

Runs ``groundlam eval --checkpoint C --data synthetic --max-clips 256 --preset P`` (issue 13:
under 20 s on 2 idle cores) as a fresh process for each preset and repeat, the way a user runs
it, and prints one JSON object: per preset, each run's wall time (process start to exit, imports
and data generation included), the median, the children's peak RSS, and the per-stage seconds
that ``groundlam eval`` writes into ``metrics.json`` (``timings_s`` of each rendering), plus the
machine's fp32 matmul rate and the share of CPU other processes took (compare runs only when
that is near 0).
"""

from __future__ import annotations

import argparse
import json
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
    machine_cpu_seconds,
    matmul_flops_per_s,
    own_cpu_seconds,
    rounded,
)

ROOT = Path(__file__).resolve().parent.parent


def run_eval(checkpoint: str, preset: str, max_clips: int, out: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "groundlam.cli", "eval", "--checkpoint", checkpoint,
               "--data", "synthetic", "--max-clips", str(max_clips), "--preset", preset,
               "--out", str(out), "--no-progress"]
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    wall = time.perf_counter() - start
    metrics = json.loads((out / "metrics.json").read_text())
    return {"wall_s": round(wall, 2),
            "timings_s": {name: variant.get("timings_s")
                          for name, variant in metrics["variants"].items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a save_pretrained folder")
    parser.add_argument("--presets", nargs="+", default=["full", "quick"])
    parser.add_argument("--max-clips", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    if not Path(args.checkpoint).is_dir():
        parser.error(f"--checkpoint {args.checkpoint}: no such folder (train the quickstart: "
                     "groundlam train --config configs/tiny.yaml)")
    started, cpu_start = time.perf_counter(), machine_cpu_seconds()
    own_start = own_cpu_seconds(children=True)
    matmul = rounded(matmul_flops_per_s(2048, 5, torch.float32))
    report: dict[str, Any] = {"checkpoint": args.checkpoint, "max_clips": args.max_clips,
                              "matmul_fp32_flops_per_s": matmul, "presets": {}}
    with tempfile.TemporaryDirectory() as folder:
        for preset in args.presets:
            runs = [run_eval(args.checkpoint, preset, args.max_clips,
                             Path(folder) / f"{preset}_{i}") for i in range(args.repeats)]
            report["presets"][preset] = {
                "wall_s_median": statistics.median(run["wall_s"] for run in runs), "runs": runs}
            print(f"[bench_eval] {preset}: {[run['wall_s'] for run in runs]} s", file=sys.stderr)
    report["children_peak_rss_mb"] = round(
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    # the evaluations are this process's children: their CPU time is not "others"
    report["cpu_share_taken_by_others"] = contention(cpu_start, own_start, started,
                                                     children=True)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
