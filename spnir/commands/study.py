"""``spnir study -c STUDY.yml --out DIR``: train every setting x seed (resuming), evaluate, write the report."""
from __future__ import annotations

import argparse
import shlex
import sys

from spnir.commands import existing_file, output_folder
from spnir.optional import require


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--study", required=True, type=existing_file,
                        help="study file (YAML): config, settings, seeds, eval sets")
    parser.add_argument("--out", required=True, type=output_folder,
                        help="folder of the runs (checkpoints, weights, logs) and report")
    parser.add_argument("--only", default=None, help="comma-separated settings to train now (default: all)")
    parser.add_argument("--report-only", action="store_true", help="write the report from what has finished")
    parser.add_argument("--report-dir", default=None, type=output_folder,
                        help="where report.md and the plots go (default: --out)")


def run(args: argparse.Namespace) -> int:
    from spnir.study import load_study, run_study, write_report

    for module in ("matplotlib", "scipy.stats"):  # before hours of training, not after
        require(module, "the study's report")

    study = load_study(args.study)
    done = True
    if not args.report_only:
        only = args.only.split(",") if args.only else None
        done = run_study(study, args.out, only)
    command = "spnir " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else ""
    path = write_report(study, args.out, command=command, report_dir=args.report_dir)
    print(f"report: {path}" + ("" if done else " (partial: the study was interrupted; run it again to resume)"))
    return 0 if done else 130
