"""``spnir study``: train the same network under several loss settings and seeds, then compare them.

A study file (YAML) names a training config, the settings (each a list of ``--set`` overrides), the seeds
and the evaluation sets::

    name: sr_x4
    config: train.yml                 # relative to the study file
    set: [train.total_iter=400]       # overrides for every run
    seeds: [0, 1, 2]
    settings:
      - {name: baseline, set: []}
      - {name: spn, set: [spn.enabled=true]}
    eval:                             # same entries as data.val; default: the config's data.val
      - {name: Set14, type: clean, gt: ../shared/data/Set14, degradations: [{type: bicubic, scale: 4}]}
    compare: {set: Set14, image: 0, size: 96}   # the crop shown side by side in the report
    baseline: [released, plain]       # the difference tables (default: the first setting)

Two kinds of setting besides plain ``set`` overrides:

- ``{name: released, evaluate_only: true}``: the config's model (its ``model.pretrained`` weights) evaluated
  as it is, no training: the starting row of a fine-tuning study.
- ``{name: plain-equal-compute, set: [...], equal_compute: {of: spn, base: plain}}``: trained for
  ``round(iterations of spn x step time of spn / step time of plain)`` iterations, the step times (median
  train-step wall time, ``step_s`` in ``scalars.csv``) measured in that seed's ``spn`` and ``plain`` runs, so it
  gets the compute of the ``spn`` run. Both must come earlier in ``settings``; the measurement is kept in the
  run's ``compute.json`` and in the report.

Each run trains in ``OUT/runs/<setting>/seed<k>`` with ``--resume auto`` (an interrupted study continues
where it stopped; finished runs are skipped) and keeps its final weights. A finished run is evaluated once
per image and writes ``metrics.json``. :func:`write_report` turns whatever has finished into
``OUT/report.md`` with ``curves.png`` and ``comparison.png``: mean and standard deviation over seeds of
PSNR/SSIM per set, and the difference to the baseline with a paired t-test across images.

Modules: :mod:`~spnir.study.schema` (the study file and its checks), :mod:`~spnir.study.run` (training and
evaluating each setting x seed, resuming), :mod:`~spnir.study.stats` (mean/std, paired t-tests with scipy),
:mod:`~spnir.study.report` (tables, curves, the comparison crop, ``report.md``). ``spnir demo``
(:mod:`spnir.demo`) is a two-setting study with its own short report.
"""
from __future__ import annotations

from spnir.study.report import summary_tables, write_report
from spnir.study.run import collect, evaluate_run, final_model, run_study
from spnir.study.schema import Setting, Study, load_study, run_dir
from spnir.study.stats import incomplete_beta, mean_std, paired_t_test

__all__ = ["Setting", "Study", "collect", "evaluate_run", "final_model", "incomplete_beta", "load_study", "mean_std",
           "paired_t_test", "run_dir", "run_study", "summary_tables", "write_report"]
