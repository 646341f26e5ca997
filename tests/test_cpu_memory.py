"""The CPU heap setting really keeps freed activations resident for reuse (Linux with glibc only)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from latentavatar_ns.utils.cpu_memory import keep_freed_memory

PROBE = """
import os, sys, torch
from latentavatar_ns.utils.cpu_memory import keep_freed_memory
def resident():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
def released_on_free():
    x = torch.ones(48 << 18)  # 48 MiB: above glibc's largest default mmap threshold (32 MiB)
    before = resident()
    del x
    return (before - resident()) / 2**20
default = released_on_free()
applied = keep_freed_memory(int(sys.argv[1]))
print(applied, default, released_on_free())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="mallopt is glibc's")
def test_freed_buffer_stays_resident_for_reuse():
    out = subprocess.run([sys.executable, "-c", PROBE, "256"], capture_output=True, text=True, check=True)
    applied, default, kept = out.stdout.split()
    assert applied == "True"
    assert float(default) > 40  # glibc's default: a large tensor is unmapped (page-faulted in again next time)
    assert float(kept) < 8  # with the setting: kept on the heap for the next allocation


def test_zero_leaves_the_allocator_alone_and_too_large_is_refused():
    assert keep_freed_memory(0) is False
    with pytest.raises(ValueError, match="2048 MiB"):
        keep_freed_memory(4096)
