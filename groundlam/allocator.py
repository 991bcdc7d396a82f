"""Keep freed memory in the process: glibc malloc settings for batched inference on the CPU.

glibc gives memory back to the kernel as soon as more than 128 KiB lies free at the top of its
heap, and serves blocks above a threshold that moves between 128 KiB and 32 MiB with mmap calls
of their own. A torch forward over a batch of clips allocates and frees several MiB per layer, so
the kernel paged the same activations in again at every layer of every batch: a full
``groundlam eval`` took 4.1 million minor page faults and 9 of its 62-66 CPU-seconds in the
kernel; with freed memory kept (and batches of 32 clips, whose activations stay under the 32 MiB
limit) 0.4 million and 2 s (issue 13; ``evals/results/bench_eval_2026-12-06.json``). The cost is
resident memory: what a pass freed stays mapped until the process ends.

``keep_freed_memory`` is called by command-line entry points, never on import; library users who
want it call it themselves. Elsewhere than glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import platform

__all__ = ["keep_freed_memory"]

# mallopt parameters, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def keep_freed_memory(trim_threshold: int = 1 << 30, mmap_threshold: int = 32 << 20) -> bool:
    """Return freed heap memory to the kernel only above ``trim_threshold`` bytes free, and serve
    blocks below ``mmap_threshold`` bytes (glibc's maximum, 32 MiB) from the heap, for the rest of
    the process. Returns whether glibc took both settings (False elsewhere than glibc)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    for name, value in (("trim_threshold", trim_threshold), ("mmap_threshold", mmap_threshold)):
        if not 0 < value < 2 ** 31:
            raise ValueError(f"{name}={value}: mallopt takes a positive C int")
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(M_TRIM_THRESHOLD, trim_threshold)) and bool(
        libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold))
