"""Held-out metrics, plots and a report for a GroundLAM checkpoint (same as ``groundlam eval``).

    python evals/evaluate.py --checkpoint runs/tiny/final --data synthetic --out runs/tiny/eval

See ``groundlam/evaluation/evaluate.py`` for which episodes fit the probes and which are scored.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from groundlam.evaluation.evaluate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
