"""Training speed of git revisions side by side: the same step, the same dims, one run.

    python -m evals.bench_revisions 77d54be HEAD              # before and after issue 13
    python -m evals.bench_revisions 77d54be HEAD --rounds 4 --config tiny
    python -m evals.bench_revisions HEAD HEAD@model.temporal_attention=slots   # a switch

A revision may carry config overrides after ``@`` (comma-separated ``key=value``), so two
settings of one revision are timed side by side the same way.

Each revision is checked out into a temporary ``git worktree`` and timed by the same worker
(``WORKER`` below, run with that worktree first on ``PYTHONPATH``): a full training step (the
revision's model and ``compute_losses`` on random uint8 clips, backward, AdamW) in fp32 and under
``torch.autocast("cpu", bfloat16)``, at the matched dims of ``evals.bench_train`` by default
(fp32 only on a CPU that multiplies bf16 slower than fp32: ``evals.bench_train.bf16_skipped``).
Rounds interleave the revisions (A B A B ...), so a change in the machine's load hits both;
each round is a fresh process. Prints one JSON object: per revision and precision the median step
time and frames/s over rounds (each round's median of ``--steps`` steps after 2 warm-up steps),
the ratio of each revision to the first, and the fp32 and bf16 matmul rates measured in the
same processes. The worker uses only what every revision since the trainer split has
(``load_config``, ``GroundLAM``, ``compute_losses``, ``label_ids``, ``to_model_input``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from evals.bench_train import PRESETS, bf16_skipped

ROOT = Path(__file__).resolve().parent.parent

WORKER = r"""
import json, statistics, sys, time
import torch
import torch.nn.functional as F
from groundlam.config import load_config
from groundlam.losses import compute_losses, label_ids
from groundlam.model import GroundLAM
from groundlam.video import to_model_input

config_file, overrides, steps = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
precisions = json.loads(sys.argv[4])
config = load_config(config_file, overrides)
torch.manual_seed(0)
model = GroundLAM(config.model).train()
batch, length, size = config.train.batch_size, config.data.clip_length, config.model.image_size
video = torch.randint(0, 256, (batch, length, size, size, 3), dtype=torch.uint8)
ids = label_ids([f"label {i % 8}" for i in range(batch)])
text = F.normalize(torch.randn(8, config.model.text_dim), dim=-1)[torch.arange(batch) % 8]
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

def step(bf16):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        frames = to_model_input(video)
        loss = compute_losses(model, model(frames), frames, text, ids, config)["loss"]
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)

def matmul(dtype, n=2048):
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(5):
        start = time.perf_counter(); a @ b; times.append(time.perf_counter() - start)
    return 2 * n ** 3 / statistics.median(times)

result = {"parameters": sum(p.numel() for p in model.parameters()),
          "frames_per_step": batch * length, "matmul_flops_per_s": {}, "step_s": {}}
for precision in precisions:
    bf16 = precision == "bf16"
    for _ in range(2):
        step(bf16)
    times = []
    for _ in range(steps):
        start = time.perf_counter(); step(bf16); times.append(time.perf_counter() - start)
    result["step_s"][precision] = statistics.median(times)
    result["matmul_flops_per_s"][precision] = matmul(torch.bfloat16 if bf16 else torch.float32)
print(json.dumps(result))
"""


def worktree(revision: str, folder: Path) -> Path:
    path = folder / revision.replace("/", "_")
    subprocess.run(["git", "worktree", "add", "--detach", str(path), revision], cwd=ROOT,
                   check=True, capture_output=True)
    return path


def parse_arm(arm: str) -> tuple[str, list[str]]:
    """``"REV"`` or ``"REV@key=value,key=value"`` -> (revision, overrides)."""
    revision, _, extra = arm.partition("@")
    overrides = [item for item in extra.split(",") if item]
    if not revision or any("=" not in item for item in overrides):
        raise ValueError(f"{arm!r}: use REV or REV@key=value[,key=value]")
    return revision, overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("revisions", nargs="+",
                        help="git revisions, each optionally REV@key=value[,key=value]; the "
                             "first is the baseline")
    parser.add_argument("--config", default="matched",
                        help="matched (configs/tiny.yaml at the peers' dims) or a config name")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="timed steps a round and precision")
    parser.add_argument("--no-bf16", dest="bf16", action="store_false",
                        help="fp32 only (by default also on a CPU that multiplies bf16 slower "
                             "than fp32)")
    parser.add_argument("--force-bf16", action="store_true",
                        help="time bf16 even on a CPU that multiplies it slower than fp32")
    args = parser.parse_args(argv)
    skipped = bf16_skipped(args)
    if skipped:
        print(f"[bench_revisions] no bf16: {skipped}", file=sys.stderr)
    precisions = ["fp32"] if skipped else ["fp32", "bf16"]
    if len(set(args.revisions)) < len(args.revisions):
        parser.error("a revision is named twice")
    name, overrides = PRESETS.get(args.config, (args.config, ()))
    try:
        arms = {arm: parse_arm(arm) for arm in args.revisions}  # arm -> (revision, overrides)
    except ValueError as error:
        parser.error(str(error))
    rows: dict[str, list[dict[str, Any]]] = {arm: [] for arm in args.revisions}
    with tempfile.TemporaryDirectory() as folder:
        revisions = {revision for revision, _ in arms.values()}
        trees = {revision: worktree(revision, Path(folder)) for revision in sorted(revisions)}
        try:
            for round_ in range(args.rounds):
                for arm, (revision, extra) in arms.items():
                    tree = trees[revision]
                    config_file = str(tree / "configs" / f"{name}.yaml")
                    out = subprocess.run(
                        [sys.executable, "-c", WORKER, config_file,
                         json.dumps([*overrides, *extra]), str(args.steps),
                         json.dumps(precisions)], cwd=tree,
                        env={**os.environ, "PYTHONPATH": str(tree)},
                        check=True, capture_output=True, text=True).stdout
                    rows[arm].append(json.loads(out.strip().splitlines()[-1]))
                    print(f"[bench_revisions] round {round_ + 1} {arm}: "
                          f"{rows[arm][-1]['step_s']}", file=sys.stderr)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT,
                               capture_output=True)
    report: dict[str, Any] = {"config": args.config, "overrides": list(overrides),
                              "rounds": args.rounds, "steps": args.steps,
                              "bf16_skipped": skipped, "revisions": {}}
    for revision, results in rows.items():
        frames = results[0]["frames_per_step"]
        summary = {"parameters": results[0]["parameters"], "frames_per_step": frames}
        for precision in precisions:
            times = [r["step_s"][precision] for r in results]
            summary[precision] = {
                "step_s_median": round(statistics.median(times), 4),
                "step_s_rounds": [round(t, 4) for t in times],
                "train_frames_per_s": round(frames / statistics.median(times), 1),
                "matmul_flops_per_s": round(statistics.median(
                    r["matmul_flops_per_s"][precision] for r in results) / 1e9, 1) * 1e9}
        report["revisions"][revision] = summary
    base = report["revisions"][args.revisions[0]]
    for summary in report["revisions"].values():
        for precision in precisions:
            summary[precision]["speedup_vs_first"] = round(
                base[precision]["step_s_median"] / summary[precision]["step_s_median"], 3)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
