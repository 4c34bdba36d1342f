"""``spnir train -c CONFIG.yml [--set key=value ...] [--resume auto|PATH] [--out DIR]``.

Under ``torchrun --nproc_per_node=N -m spnir train ...`` every rank runs this command; see docs/training.md.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from spnir.commands import existing_file, output_folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, type=existing_file,
                        help="YAML config: spnir format or a BasicSR option file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.lr=1e-4 --set spn.enabled=false")
    parser.add_argument("--resume", metavar="auto|PATH",
                        help="continue a run: 'auto' picks the newest checkpoint in --out (starts fresh if none); "
                             "or a checkpoint file / run folder")
    parser.add_argument("--out", dest="out_dir", type=output_folder, help="run folder (default: runs/<config name>)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run already in --out (its checkpoints, weights, logs); without it such a "
                             "folder is refused")
    parser.add_argument("--print-config", action="store_true",
                        help="print the validated config with every default (and the BasicSR mapping) and exit")


def run(args: argparse.Namespace) -> int:
    from spnir.train.config import dump_config, load_config

    notes: list[str] = []
    config = load_config(args.config, args.overrides, notes)
    if args.print_config:
        for note in notes:
            print(f"# note: {note}")
        print(dump_config(config), end="")
        return 0
    from spnir.train.record import resume_command
    from spnir.train.run import run_training

    out = Path(args.out_dir) if args.out_dir else Path("runs") / config["name"]
    result = run_training(args.config, out, resume=args.resume, overrides=args.overrides, overwrite=args.overwrite)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
        return 0 if result.completed else (128 + result.signal if result.signal else 1)
    if result.completed:
        print(f"spnir train: completed {result.iteration} iterations; run folder {out}")
        for kind, path in result.final_weights.items():
            print(f"  final {kind} weights: {path}")
        for name, metrics in result.best.items():
            best = ", ".join(f"{m} {v:.4f} @ {it}" for m, (v, it) in metrics.items())
            print(f"  best on {name}: {best}")
        return 0
    print(f"spnir train: {result.status} at iteration {result.iteration}/{result.total_iter}; "
          f"checkpoint {result.last_checkpoint}; continue with: {resume_command(args.config, args.overrides, out)}")
    return 128 + result.signal if result.signal else 1
