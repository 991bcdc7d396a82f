"""groundlam.allocator: freed memory stays in the process, so a pass over big arrays stops paying
the kernel for every page again."""

import platform
import subprocess
import sys

import pytest

from groundlam.allocator import keep_freed_memory

# a forward pass's pattern: ten 8 MiB activations live at once, all freed at the end, 20 times;
# prints the minor page faults the last 20 passes took
SCRIPT = """
import resource, sys
import numpy as np
from groundlam.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def forward():
    return [np.ones(1 << 20) for _ in range(10)]  # float64: 8 MiB each
forward()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    forward()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True,
                          check=True)
    return int(done.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_kept_memory_is_not_paged_in_again():
    default, kept = page_faults("default"), page_faults("keep")
    # by default most of the 80 MiB freed at the end of a pass goes back to the kernel and is
    # paged in again by the next (102 thousand faults of 4 KiB measured, of 20 x 20480 possible)
    assert default > 50_000
    assert kept < 2_000


def test_bad_thresholds_are_refused():
    if platform.libc_ver()[0] != "glibc":
        assert keep_freed_memory() is False
        return
    with pytest.raises(ValueError, match="positive C int"):
        keep_freed_memory(trim_threshold=1 << 31)
    with pytest.raises(ValueError, match="mmap_threshold"):
        keep_freed_memory(mmap_threshold=0)
