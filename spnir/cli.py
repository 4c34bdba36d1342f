"""The ``spnir`` command: one sub-command per module under :mod:`spnir.commands`.

Each command module exposes ``add_arguments(parser)`` and ``run(args) -> int``; its one-line help lives in
:data:`COMMANDS`, so a module is imported only when its command runs and ``spnir --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from spnir.errors import SpnirError, worded_as_options
from spnir.optional import missing_package

# command name -> (module under spnir.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "weights": ("weights", "place and verify weights (ImageNet VGG, LPIPS, DISTS) in the torch hub cache"),
    "eval": ("eval", "PSNR/SSIM of a method on benchmark sets (paper-like table, JSON)"),
    "restore": ("restore", "restore images or folders with a model preset and a checkpoint (tiled, self-ensemble)"),
    "demo": ("demo", "train one small network plain and with SPN on embedded photographs; write a report"),
    "train": ("train", "train a network from a config (SPN on/off), resumable, single process or torchrun/DDP"),
    "export": ("export", "export a checkpoint as ONNX (verified with onnxruntime) or safetensors with metadata"),
    "study": ("study", "train one network under several loss settings and seeds; report with paired tests"),
}


class _OneLineErrors(argparse.ArgumentParser):
    """argparse, with a refused argument said in one line (the usage block is what ``--help`` is for)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _progress_arguments() -> _OneLineErrors:
    """``--quiet``, ``--no-progress``, ``--status-every``: how every command reports progress."""
    common = _OneLineErrors(add_help=False)
    group = common.add_argument_group("progress (every command)")
    group.add_argument("--quiet", action="store_true",
                       help="no progress output at all: no bar, no status lines (also: SPNIR_QUIET=1)")
    group.add_argument("--no-progress", action="store_true",
                       help="no progress bar, plain status lines instead (as when the output is not a terminal)")
    group.add_argument("--status-every", type=float, default=60.0, metavar="SECONDS",
                       help="seconds between status lines when there is no bar (default 60)")
    return common


def options_of(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Parameter name (an option's ``dest``) -> the option that gives it (its longest spelling)."""
    return {a.dest: max(a.option_strings, key=len) for a in parser._actions if a.option_strings}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _OneLineErrors(
        prog="spnir", description="SPN (self-prior guided negative loss) for image restoration."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    chosen = next((a for a in argv if not a.startswith("-")), None)
    command = chosen
    options: dict[str, str] = {}
    try:
        common = _progress_arguments()
        for name, (module_name, help_text) in COMMANDS.items():
            p = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
            if name == chosen:
                importlib.import_module(f"spnir.commands.{module_name}").add_arguments(p)
                options = options_of(p)
        args = parser.parse_args(argv)
        command = args.command
        module = importlib.import_module(f"spnir.commands.{COMMANDS[command][0]}")
        from spnir.progress import configure

        configure(quiet=args.quiet, bar=not args.no_progress, status_every=args.status_every)
        with worded_as_options(options):
            return int(module.run(args) or 0)
    except ModuleNotFoundError as exc:  # a toolkit package imported at the top of a module (spnir.optional)
        error = missing_package(exc, "this command")
        if error is None:
            raise
        print(f"spnir {command}: error: {error}", file=sys.stderr)
        return 2
    except SpnirError as exc:
        with worded_as_options(options):
            print(f"spnir {command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"spnir {command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
