"""The GPU checks of issue 13: what runs on a CUDA machine when one is lent (not a test).

    python -m evals.gpu_checks              # every check, about 15 minutes on one H100
    python -m evals.gpu_checks --only bench train
    python -m evals.gpu_checks --compare-steps 3000    # the gpu preset at its own length

Without a CUDA GPU it says so and exits 0: there is nothing to check. With one, each check runs
in its own subprocess under a time limit; one that fails or times out is recorded with the end
of its output and the next one runs. Everything lands in ``evals/results/gpu_<device>.json``
(``--out``), the device named inside:

- ``environment``: torch, CUDA and NCCL versions, the GPUs, bf16 support.
- ``bench``: ``python -m evals.bench_train --device cuda`` on tiny, matched and base: train
  frames/s, FLOPs a frame, the share of the same process's fp32 and bf16 matmul, per-op time
  (torch.profiler, on the GPU), and the DeepSpeed engine in fp32, bf16 autocast and DeepSpeed's
  bf16 weights (NCCL, a world of one).
- ``train``: ``deepspeed --num_gpus N groundlam/train.py --config configs/base.yaml`` with bf16
  autocast and NCCL, under ZeRO 2 and ZeRO 3 (a shortened run on a smaller synthetic corpus,
  then the trainer's final evaluation): exit status, frames/s and loss from ``metrics.jsonl``.
- ``compare``: the ``gpu`` preset of ``evals.compare`` on the synthetic benchmark, GroundLAM
  against its no-language control, seed 0, ``--compare-steps`` steps (the preset's 3000 steps
  x 108 runs do not fit a lent machine's time; ``--compare-steps 3000 --seeds 0,1,2`` is the
  real thing).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
CHECKS = ("bench", "train", "compare")
TAIL = 4000  # characters of a failed check's output kept in the JSON


def environment() -> dict[str, Any]:
    devices = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
    return {
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "nccl": ".".join(map(str, torch.cuda.nccl.version())),
        "gpus": [{"name": d.name, "memory_gib": round(d.total_memory / 2**30, 1),
                  "capability": f"{d.major}.{d.minor}"} for d in devices],
        "bf16": torch.cuda.is_bf16_supported(),
    }


def run(command: list[str], timeout: int, log: Path, stdout: Path | None = None
        ) -> dict[str, Any]:
    """Run ``command`` from the repository root; its output goes to ``log`` (its standard
    output to ``stdout`` where given)."""
    start = time.perf_counter()
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    print(f"[gpu_checks] {' '.join(command)}", file=sys.stderr, flush=True)
    try:
        with log.open("w") as err, (stdout or log).open("a") as out:
            status = subprocess.run(command, cwd=ROOT, env=env, stdout=out, stderr=err,
                                    timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        status = "timeout"
    result: dict[str, Any] = {"command": " ".join(command), "status": status,
                              "wall_s": round(time.perf_counter() - start, 1), "log": str(log)}
    if status != 0:
        result["output_tail"] = log.read_text(errors="replace")[-TAIL:]
    return result


def check_bench(folder: Path, timeout: int) -> dict[str, Any]:
    report = folder / "bench.json"
    report.unlink(missing_ok=True)
    result = run([sys.executable, "-m", "evals.bench_train", "--device", "cuda",
                  "--configs", "tiny", "matched", "base", "--deepspeed", "tiny", "matched",
                  "--steps", "10", "--warmup", "3"],
                 timeout, folder / "bench.log", stdout=report)
    if result["status"] == 0:
        result["report"] = json.loads(report.read_text())
    return result


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """The last logged step of a run, and its final evaluation's action probes."""
    summary: dict[str, Any] = {}
    lines = (run_dir / "metrics.jsonl").read_text().splitlines() if (
        run_dir / "metrics.jsonl").is_file() else []
    if lines:
        last = json.loads(lines[-1])
        summary["last_step"] = {key: last.get(key) for key in (
            "step", "loss", "reconstruction", "infonce", "frames_per_s", "latent_spread")}
    evaluation = run_dir / "eval" / "metrics.json"
    if evaluation.is_file():
        variants = json.loads(evaluation.read_text()).get("variants", {})
        summary["action_probe"] = {
            name: variant.get("action_probe", {}).get("motion_linear")
            for name, variant in variants.items()}
    return summary


def check_train(folder: Path, timeout: int, steps: int) -> dict[str, Any]:
    gpus = torch.cuda.device_count()
    results = {}
    for stage in (2, 3):
        run_dir = folder / f"train_zero{stage}"
        result = run(["deepspeed", "--num_gpus", str(gpus), "groundlam/train.py",
                      "--config", "configs/base.yaml", f"train.max_steps={steps}",
                      f"train.zero_stage={stage}", "train.precision=bf16",
                      f"train.warmup_steps={max(steps // 10, 1)}", "train.save_every=1000000",
                      f"train.output_dir={run_dir}", "data.synthetic.num_episodes=2000",
                      "data.eval_episodes=128", f"loss.infonce_start={steps // 2}"],
                     timeout, folder / f"train_zero{stage}.log")
        result.update(read_metrics(run_dir), gpus=gpus, zero_stage=stage)
        results[f"zero{stage}"] = result
    return results


def check_compare(folder: Path, timeout: int, steps: int, seeds: str) -> dict[str, Any]:
    out = folder / "compare"
    result = run([sys.executable, "-m", "evals.compare", "--preset", "gpu",
                  "--datasets", "synthetic", "--rows", "reconstruction_only,groundlam",
                  "--seeds", seeds, "--steps", str(steps), "--out", str(out),
                  "--runs", str(folder / "compare_runs")], timeout, folder / "compare.log")
    table = out / "results" / "compare_gpu.json"
    if table.is_file():
        result["results"] = json.loads(table.read_text()).get("summary")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=CHECKS, default=list(CHECKS))
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--compare-steps", type=int, default=500)
    parser.add_argument("--seeds", default="0", help="comma-separated seeds of the compare check")
    parser.add_argument("--timeout", type=int, default=600, help="seconds a check at most")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "gpu_checks",
                        help="folder of the runs and logs")
    parser.add_argument("--out", type=Path, help="the JSON (default: "
                                                 "evals/results/gpu_<device>.json)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA GPU here: nothing to check (run this on a GPU machine)")
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name(0)
    report: dict[str, Any] = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                              "device": device, "environment": environment(), "checks": {}}
    if "bench" in args.only:
        report["checks"]["bench"] = check_bench(args.work, args.timeout)
    if "train" in args.only:
        report["checks"]["train"] = check_train(args.work, args.timeout, args.train_steps)
    if "compare" in args.only:
        report["checks"]["compare"] = check_compare(args.work, args.timeout,
                                                    args.compare_steps, args.seeds)
    slug = "".join(c if c.isalnum() else "_" for c in device.lower()).strip("_")
    out = args.out or ROOT / "evals" / "results" / f"gpu_{slug}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    runs = [check for value in report["checks"].values()
            for check in ([value] if "status" in value else value.values())]
    return 0 if all(check["status"] == 0 for check in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
