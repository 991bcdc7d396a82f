"""Keep freed memory in the process: glibc malloc settings for torch on the CPU.

glibc gives memory back to the kernel as soon as more than 128 KiB lies free at the top of its
heap, and serves blocks above a threshold that moves between 128 KiB and 32 MiB with mmap calls
of their own, unmapped again when freed. A torch forward over a batch of clips allocates and frees
several MiB per layer, so the kernel paged the same activations in again at every layer of every
batch: a full ``groundlam eval`` took 4.1 million minor page faults and 9 of its 62-66
CPU-seconds in the kernel; with freed memory kept 0.4 million and 2 s (issue 13;
``evals/results/bench_eval_2026-12-06.json``). Training steps at the matched dims of
``evals/bench_train.py`` allocate blocks above glibc's 32 MiB cap on that threshold from
16-frame clips on (the MLP's hidden activations), which mmap served whatever the threshold: a
32-frame clip trained 5-13% fewer frames a second than an 8-frame one, and as many once every
block came from the heap (``evals/results/bench_train_2026-12-06_malloc.json``).

The cost is resident memory: what a pass freed stays mapped until the process ends, and a heap
cannot hand back the free space between live blocks (matched dims up to 32-frame clips: peak RSS
3.9-4.1 GB against 3.6-3.8; the same at 8 frames). ``keep_freed_memory`` is called by the trainer
and command-line entry points, never on import; library users who want it call it themselves.
Elsewhere than glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import platform

__all__ = ["keep_freed_memory"]

# mallopt parameters, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
MMAP_THRESHOLD_MAX = 32 << 20  # glibc's cap on 64-bit systems


def keep_freed_memory(trim_threshold: int = 1 << 30, mmap_threshold: int | None = None) -> bool:
    """Return freed heap memory to the kernel only above ``trim_threshold`` bytes free, for the
    rest of the process, and serve blocks from the heap: every block (``mmap_threshold`` None,
    the default), or those under ``mmap_threshold`` bytes (at most glibc's 32 MiB; larger ones
    then get mmap calls of their own, paged in anew each time). Returns whether glibc took the
    settings (False elsewhere than glibc)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if not 0 < trim_threshold < 2 ** 31:
        raise ValueError(f"trim_threshold={trim_threshold}: mallopt takes a positive C int")
    if mmap_threshold is not None and not 0 < mmap_threshold <= MMAP_THRESHOLD_MAX:
        raise ValueError(f"mmap_threshold={mmap_threshold}: glibc takes 1 to {MMAP_THRESHOLD_MAX} "
                         "bytes (None: no block is mmapped)")
    libc = ctypes.CDLL(None)
    settings = [(M_TRIM_THRESHOLD, trim_threshold)]
    settings += ([(M_MMAP_MAX, 0)] if mmap_threshold is None
                 else [(M_MMAP_THRESHOLD, mmap_threshold)])
    return all(bool(libc.mallopt(parameter, value)) for parameter, value in settings)
