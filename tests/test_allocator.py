"""keep_freed_memory: a freed large tensor's memory is reused without page faults (glibc), untouched elsewhere."""
import platform
import subprocess
import sys

import pytest

from spnir import allocator

ON_GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Faults taken by allocating and filling a 64 MiB tensor after an 80 MiB one was freed (a fresh process each
# time: the setting is process-wide and lasting).
PROBE = """
import resource, sys, torch
from spnir.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
x = torch.ones(20 * 2**20)
del x
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
x = torch.ones(16 * 2**20)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied, int(faults)


@pytest.mark.skipif(not ON_GLIBC, reason="keeping freed memory is a glibc malloc setting")
def test_kept_memory_is_reused_without_page_faults():
    assert page_faults("system")[1] > 8000  # 16384 pages of 4 KiB, faulted in again
    applied, faults = page_faults("keep")
    assert applied == "True"
    assert faults < 500


def test_elsewhere_it_changes_nothing(monkeypatch):
    monkeypatch.setattr(allocator, "_applied", False)
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
    assert allocator.keep_freed_memory() is False


def test_choices_are_checked_and_system_leaves_malloc_alone(monkeypatch):
    monkeypatch.setattr(allocator, "_applied", False)
    assert allocator.use_cpu_allocator("system") == "CPU allocator: malloc as the system sets it"
    assert allocator._applied is False
    with pytest.raises(allocator.SpnirError, match="must be one of keep, system; got 'jemalloc'"):
        allocator.use_cpu_allocator("jemalloc")
