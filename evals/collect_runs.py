"""Collect the held-out probe numbers of finished training runs into one JSON table.

    python evals/collect_runs.py runs/tiny runs/tiny_recon runs/seeds/* > evals/results/x.json

Each run folder holds ``config.yaml`` and ``probe.json`` (written by training's final
evaluation, or by ``evals/probe.py``). Runs are grouped by ``loss.infonce_weight``
(0 = the reconstruction-only baseline); each group lists every run (seed and numbers, nothing
dropped) and the median and the min-max spread of each number.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import yaml

METRICS = {  # name in the table -> path in probe.json's per-variant dict
    "action_probe": ("action_probe_balanced_accuracy",),
    "retrieval_top1": ("retrieval", "top1"),
    "retrieval_top5": ("retrieval", "top5"),
    "no_motion_top1": ("retrieval_no_motion", "top1"),
}


def read_run(folder: Path) -> dict:
    config = yaml.safe_load((folder / "config.yaml").read_text())
    probe = json.loads((folder / "probe.json").read_text())
    row = {"run": str(folder), "seed": config["train"]["seed"],
           "steps": config["train"]["max_steps"],
           "infonce_weight": config["loss"]["infonce_weight"]}
    for variant, results in probe.items():
        if not isinstance(results, dict):
            continue
        for name, keys in METRICS.items():
            value = results
            for key in keys:
                value = value.get(key) if isinstance(value, dict) else None
            if value is not None:
                row[f"{variant}/{name}"] = value
        if "action_chance" in results:
            row[f"{variant}/action_chance"] = results["action_chance"]
        row[f"{variant}/retrieval_chance"] = results["retrieval"]["chance_top1"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    rows = [read_run(folder) for folder in args.runs if (folder / "probe.json").exists()]
    missing = [str(f) for f in args.runs if not (f / "probe.json").exists()]
    groups: dict[str, dict] = {}
    for weight in sorted({row["infonce_weight"] for row in rows}):
        members = [row for row in rows if row["infonce_weight"] == weight]
        keys = sorted({k for row in members for k in row if "/" in k})
        summary = {}
        for key in keys:
            values = [row[key] for row in members if key in row]
            summary[key] = {"median": statistics.median(values), "min": min(values),
                            "max": max(values), "n": len(values)}
        name = "reconstruction_only" if weight == 0 else f"groundlam_infonce_{weight}"
        groups[name] = {"runs": members, "summary": summary}
    print(json.dumps({"groups": groups, "missing": missing}, indent=2))


if __name__ == "__main__":
    main()
