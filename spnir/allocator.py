"""Keep freed CPU memory in the process, so training steps stop paying page faults for their tensors.

glibc's malloc serves every block above 32 MiB (the image batches and feature maps of a training step) with a
fresh ``mmap`` and returns it with ``munmap`` when the tensor dies, so each step faults in, and the kernel zeroes,
every page of its activations again: 2.4 million faults per EDSR-baseline x4 SPN step at batch 16, 42% of its
time on 2 cores (5.9 s -> 3.5 s; ``bench/README.md``). :func:`keep_freed_memory` makes malloc serve large blocks
from its heap and keep freed memory there for the next step, as a caching allocator does (CUDA's does the same
for GPU memory). The cost: the process keeps most of its peak memory until it exits (only a free stretch of
more than 2 GiB at the top of the heap goes back); the benchmark processes peaked 2-28% higher.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import platform

from spnir.errors import SpnirError

# mallopt parameters from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM_ABOVE = 2**31 - 1  # bytes (mallopt takes an int): a free heap top beyond 2 GiB still goes back

CHOICES = ("keep", "system")

_applied = False


def keep_freed_memory() -> bool:
    """Make this process's malloc keep freed memory for reuse (no ``mmap`` per large block; the heap is
    trimmed only when more than 2 GiB at its top are free).

    Process-wide and lasting; call once, early (``spnir train``, ``restore`` and ``eval`` do unless told
    ``system``).
    Returns ``True`` when applied (Linux with glibc), ``False`` elsewhere, where it changes nothing
    (preloading jemalloc or tcmalloc gives the same effect there).
    """
    global _applied
    if _applied:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    _applied = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_ABOVE))
    return _applied


def use_cpu_allocator(choice: str) -> str:
    """``"keep"``: :func:`keep_freed_memory`; ``"system"``: leave malloc alone. Returns a line for the log."""
    if choice not in CHOICES:
        raise SpnirError(f"CPU allocator must be one of {', '.join(CHOICES)}; got {choice!r}")
    if choice == "system":
        return "CPU allocator: malloc as the system sets it"
    if keep_freed_memory():
        return "CPU allocator: freed memory kept in the process for reuse"
    return "CPU allocator: unchanged (keeping freed memory needs glibc; preload jemalloc or tcmalloc instead)"


__all__ = ["CHOICES", "keep_freed_memory", "use_cpu_allocator"]
