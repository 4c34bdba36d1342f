"""Sub-commands of the ``spnir`` command line (see :mod:`spnir.cli`), and the options several of them share."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--cpu-allocator``, for the commands that run a model (restore, eval)."""
    from spnir.allocator import CHOICES

    parser.add_argument("--device", default="auto", help="auto (default: cuda when available, else cpu), cpu, cuda "
                                                         "or cuda:N")
    parser.add_argument("--cpu-allocator", choices=CHOICES, default="keep",
                        help="keep (default): freed CPU memory stays in the process, no page faults per image "
                             "(glibc); system: leave malloc as it is")


def runtime_device(args: argparse.Namespace) -> torch.device:
    """Apply ``--cpu-allocator`` and return the device ``--device`` names."""
    from spnir.allocator import use_cpu_allocator
    from spnir.device import pick_device

    use_cpu_allocator(args.cpu_allocator)
    return pick_device(args.device, setting="--device")
