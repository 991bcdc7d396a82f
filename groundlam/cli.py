"""The ``groundlam`` command: each subcommand's parser lives beside its code (``COMMANDS``).

    groundlam train --config configs/tiny.yaml [key=value ...] [--resume]
    groundlam focus VIDEO_OR_DATASET --checkpoint DIR_OR_HUB_ID --out focus.gif
    groundlam datagen {synthetic,babyai,metaworld} --out DIR --episodes N [--seed S] ...
    groundlam eval --checkpoint DIR_OR_HUB_ID --data SPEC --out DIR [--preset quick]
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["COMMANDS", "main"]

# subcommand -> (the module whose ``main(argv)`` runs it, what it does)
COMMANDS = {
    "train": ("groundlam.train", "train a GroundLAM (see configs/)"),
    "focus": ("groundlam.focus", "draw focus maps of a clip"),
    "datagen": ("groundlam.datagen", "generate an episode corpus (Parquet shards + data card)"),
    "eval": ("groundlam.evaluation.evaluate",
             "held-out metrics, plots and a report of a checkpoint"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(f"usage: groundlam {{{','.join(COMMANDS)}}} ...\n")
        for name, (_, text) in COMMANDS.items():
            print(f"  {name:8s}{text}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module, _ = COMMANDS[argv[0]]
    return importlib.import_module(module).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
