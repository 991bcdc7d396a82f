"""Held-out probes of a trained GroundLAM, as JSON.

    python evals/probe.py --checkpoint runs/tiny/final --config runs/tiny/config.yaml

For the built-in benchmark: a linear probe from frozen motion latents to the true actions
(balanced accuracy; fit on clips of training episodes, scored on held-out episodes of another
seed) and task -> label retrieval top-1/top-5 over the held-out labels, with the no-motion control
(clips of one repeated frame), each on clean and on distracted renderings of the same episodes.
For other data, the same on ``data.train`` (probe fit) and ``data.eval`` (scored).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from groundlam.config import load_config  # noqa: E402
from groundlam.evaluation.probe import probe_checkpoint  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a save_pretrained folder")
    parser.add_argument("--config", required=True, help="the run's config (data section is used)")
    parser.add_argument("--max-clips", type=int, default=512)
    parser.add_argument("overrides", nargs="*", help="dotted key=value, e.g. data.eval_episodes=64")
    args = parser.parse_args()
    config = load_config(args.config, args.overrides)
    print(json.dumps(probe_checkpoint(args.checkpoint, config, max_clips=args.max_clips),
                     indent=2))


if __name__ == "__main__":
    main()
