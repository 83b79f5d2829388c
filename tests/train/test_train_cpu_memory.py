"""glibc keeps freed training memory for reuse: no fresh pages for every step's activations."""

import platform
import resource

import pytest
import torch

from ladder.train.cpu_memory import keep_freed_memory


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_blocks_are_reused_without_page_faults():
    assert keep_freed_memory()
    pages = (32 << 20) // resource.getpagesize()
    for _ in range(2):
        torch.ones(32 << 18)  # first allocations: the heap grows and its pages fault in once
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        torch.ones(32 << 18)  # 32 MiB, written and freed, as a step's activations are
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    # glibc's defaults hand every block back and fault in all 10 x 8,192 pages again (measured:
    # 81,930); kept, they are reused (0 faults, or one block's worth when the heap moves once).
    assert faults <= 2 * pages
