"""groundlam.allocator: freed memory stays in the process, so a pass over big arrays stops paying
the kernel for every page again."""

import platform
import subprocess
import sys

import pytest

from groundlam.allocator import keep_freed_memory

# a forward pass's pattern: activations of one size live at once, all freed at the end, 20
# times; prints the minor page faults the last 20 passes took. argv: the malloc setting
# (system, keep, keep_32mib), the MiB of each of the pass's 80 MiB of blocks, and whose arrays
# (numpy or torch: numpy asks for huge pages above 4 MiB, so few faults for large blocks)
SCRIPT = """
import importlib, resource, sys
from groundlam.allocator import keep_freed_memory
mode, mib, library = sys.argv[1], int(sys.argv[2]), importlib.import_module(sys.argv[3])
if mode == "keep":
    assert keep_freed_memory()
elif mode == "keep_32mib":
    assert keep_freed_memory(mmap_threshold=32 << 20)
def forward():
    return [library.ones(mib << 18, dtype=library.float32) for _ in range(80 // mib)]
forward()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    forward()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str, mib: int, library: str = "numpy") -> int:
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode, str(mib), library],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")


@glibc
def test_kept_memory_is_not_paged_in_again():
    default, kept = page_faults("system", 8), page_faults("keep", 8)
    # by default most of the 80 MiB freed at the end of a pass goes back to the kernel and is
    # paged in again by the next (102 thousand faults of 4 KiB measured, of 20 x 20480 possible)
    assert default > 50_000
    assert kept < 2_000


@glibc
def test_blocks_above_the_mmap_cap_are_kept_too():
    # torch's 40 MiB blocks, above the 32 MiB that glibc's mmap threshold can reach: a threshold
    # alone leaves them to mmap, so each pass pages all 80 MiB in again (409,640 faults
    # measured, of 20 x 20480 possible); from the heap, 10,240
    assert page_faults("keep_32mib", 40, "torch") > 300_000
    assert page_faults("keep", 40, "torch") < 30_000


def test_bad_thresholds_are_refused():
    if platform.libc_ver()[0] != "glibc":
        assert keep_freed_memory() is False
        return
    with pytest.raises(ValueError, match="positive C int"):
        keep_freed_memory(trim_threshold=1 << 31)
    with pytest.raises(ValueError, match="mmap_threshold"):
        keep_freed_memory(mmap_threshold=0)
    with pytest.raises(ValueError, match="mmap_threshold"):
        keep_freed_memory(mmap_threshold=64 << 20)
