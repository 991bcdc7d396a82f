"""Benchmarks, probes and the comparison table of groundlam (``python -m evals.compare``)."""
