"""spnir study: the paired t-test, skipping finished runs, resuming interrupted ones, the report."""
from __future__ import annotations

import json
import math
import os
import signal
import sys
from pathlib import Path

import pytest
import yaml

from spnir.errors import SpnirError
from spnir.study import incomplete_beta, load_study, mean_std, paired_t_test, run_dir, run_study, write_report

CONFIG = {
    "task": "sr",
    "model": {"name": "edsr-baseline", "scale": 2, "args": {"num_feat": 4, "num_block": 1}},
    "data": {"train": {"type": "builtin", "degradations": [{"type": "bicubic", "scale": 2}], "patch_size": 16,
                       "batch_size": 2, "workers": 0},
             "val": [{"name": "tiny", "type": "builtin", "split": "val", "max_images": 1,
                      "degradations": [{"type": "bicubic", "scale": 2}]}]},
    "optim": {"lr": 1e-3},
    "ema": {"decay": None},
    "train": {"total_iter": 4, "device": "cpu"},
    "val": {"every": 2, "crop_border": 2},
    "checkpoint": {"every": 1, "keep": 1},
    "log": {"every": 1, "progress": False, "tensorboard": False},
    "spn": {"vgg_weights": "random", "layer_weights": {"relu1_1": 1.0}, "weight": "auto"},
}


def write_study(tmp_path: Path, **extra) -> Path:
    study = {"name": "tiny", "config": "train.yml", "seeds": [0], "settings": [
        {"name": "baseline"},
        {"name": "spn", "set": ["spn.enabled=true", "spn.periods=[2]", "spn.decays=[0.5]", "spn.init_decay=0"]},
        {"name": "cr", "set": ["spn.enabled=true", "spn.source=input", "spn.form=ratio"]},
    ], "compare": {"size": 16}, **extra}
    (tmp_path / "train.yml").write_text(yaml.safe_dump(CONFIG))
    path = tmp_path / "study.yml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_paired_t_test_matches_known_values():
    mean, t, p = paired_t_test([2, 4, 6, 8], [1, 2, 3, 4])  # differences 1, 2, 3, 4
    assert mean == pytest.approx(2.5)
    assert t == pytest.approx(2.5 / (math.sqrt(5 / 3) / 2))
    assert p == pytest.approx(0.030466, abs=1e-5)  # Student t, 3 degrees of freedom, two-sided
    assert paired_t_test([1.0], [0.0])[2] != paired_t_test([1.0], [0.0])[2]  # NaN with one pair
    assert paired_t_test([1, 2], [1, 2])[2] == 1.0
    assert paired_t_test([1.5, 3.5, 2.5], [1.0, 3.0, 2.0]) == (0.5, math.inf, 0.0)  # the same gain everywhere
    assert incomplete_beta(2.0, 3.0, 0.0) == 0.0 and incomplete_beta(2.0, 3.0, 1.0) == 1.0
    assert incomplete_beta(1.0, 1.0, 0.3) == pytest.approx(0.3)  # uniform
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    with pytest.raises(SpnirError, match="equally many"):
        paired_t_test([1, 2], [1])


def test_paired_t_test_agrees_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    a = [30.1, 28.4, 31.2, 27.9, 29.5, 33.0, 26.2]
    b = [30.0, 28.6, 30.9, 27.5, 29.4, 32.7, 26.3]
    _, t, p = paired_t_test(a, b)
    ref = stats.ttest_rel(a, b)
    assert t == pytest.approx(ref.statistic, rel=1e-9)
    assert p == pytest.approx(ref.pvalue, rel=1e-7)


def test_missing_scipy_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.stats", None)  # import fails as if scipy were not installed
    with pytest.raises(SpnirError, match=r"needs scipy, which is not installed: pip install 'spnir\[toolkit\]'"):
        paired_t_test([1.0, 2.0, 4.0], [1.0, 1.5, 2.0])


def test_study_runs_skips_finished_resumes_interrupted_and_reports(tmp_path, monkeypatch):
    study = load_study(write_study(tmp_path))
    out = tmp_path / "out"

    import spnir.train as train_pkg

    real = train_pkg.run_training

    def interrupted_once(config, folder, resume=None, **kwargs):  # SIGTERM at iteration 2 of the spn run
        def hook(it: int) -> None:
            if it == 2:
                os.kill(os.getpid(), signal.SIGTERM)

        return real(config, folder, resume=resume, on_iteration=hook if "spn" in str(folder) else None)

    monkeypatch.setattr(train_pkg, "run_training", interrupted_once)
    assert run_study(study, out, log=lambda m: None) is False
    base, spn = run_dir(out, "baseline", 0), run_dir(out, "spn", 0)
    assert (base / "metrics.json").is_file()
    assert not (spn / "model_final.pt").exists() and any((spn / "checkpoints").iterdir())
    partial = write_report(study, out).read_text()
    assert "PARTIAL" in partial and "spn/seed0" in partial

    monkeypatch.setattr(train_pkg, "run_training", real)
    stamp = (base / "metrics.json").stat().st_mtime_ns
    assert run_study(study, out, log=lambda m: None) is True
    assert (base / "metrics.json").stat().st_mtime_ns == stamp  # finished runs are skipped
    assert "resumed from" in (spn / "train.log").read_text()
    metrics = json.loads((spn / "metrics.json").read_text())
    assert list(metrics["sets"]) == ["tiny"] and len(metrics["sets"]["tiny"]["psnr"]) == 1

    report = write_report(study, out, report_dir=tmp_path / "report")
    text = report.read_text()
    assert "PARTIAL" not in text
    for name in ("baseline", "spn", "cr"):
        assert f"| {name} | 1 |" in text
    assert "| spn | tiny | 1 | 1 |" in text and "p (seeds)" in text  # paired seeds, images
    assert "SPN feature space: `spn`: vgg16 with seeded random weights (seed 0), not an ImageNet feature space" in text
    table = text.split("| setting | negative term | L1 loss |")[1].split("\n\n")[0].splitlines()[2:]
    assert [row.split(" | ")[0] for row in table] == ["| spn", "| cr"] and all(r.endswith("| 1 |") for r in table)
    assert float(table[0].split(" | ")[1]) < 0 < float(table[0].split(" | ")[3])  # signed term, |term| / L1
    assert (tmp_path / "report" / "curves.png").is_file() and (tmp_path / "report" / "comparison.png").is_file()


def test_study_file_values_are_checked_like_the_config(tmp_path):
    with pytest.raises(SpnirError, match=r"study.yml: unknown key 'sedes'; did you mean seeds\?"):
        load_study(write_study(tmp_path, sedes=[0]))
    with pytest.raises(SpnirError, match=r"study.yml: seeds = \['one'\]: expected a list of integers"):
        load_study(write_study(tmp_path, seeds=["one"]))
    with pytest.raises(SpnirError, match=r"settings\[0\]: unknown key 'sett'; did you mean set\?"):
        load_study(write_study(tmp_path, settings=[{"name": "a", "sett": []}]))
    with pytest.raises(SpnirError, match=r"settings\[0\]: evaluate_only = 'yes': expected true or false"):
        load_study(write_study(tmp_path, settings=[{"name": "a", "evaluate_only": "yes"}]))
    study = load_study(write_study(tmp_path, seeds=3))  # one value where a list is expected: a list of one
    assert study.seeds == [3]


def test_bad_study_files(tmp_path):
    with pytest.raises(SpnirError, match=r": only names \['spm'\]"):
        run_study(load_study(write_study(tmp_path)), tmp_path / "out", only=["spm"])
    with pytest.raises(SpnirError, match="unknown key"):
        load_study(write_study(tmp_path, sedes=[0]))
    with pytest.raises(SpnirError, match="baseline"):
        load_study(write_study(tmp_path, baseline="nope"))
    with pytest.raises(SpnirError, match="setting 'bad'.*spn.form"):
        path = write_study(tmp_path)
        raw = yaml.safe_load(path.read_text())
        raw["settings"].append({"name": "bad", "set": ["spn.form=triplet"]})
        path.write_text(yaml.safe_dump(raw))
        load_study(path)


def test_released_row_and_equal_compute_arm(tmp_path):
    """evaluate_only measures the config's model untrained (once, copied per seed); equal_compute trains
    for spn's iterations x the measured spn/plain step-time ratio, kept in compute.json."""
    path = write_study(tmp_path, seeds=[0, 1], baseline=["released", "plain"], settings=[
        {"name": "released", "evaluate_only": True},
        {"name": "plain"},
        {"name": "spn", "set": ["spn.enabled=true", "spn.periods=[2]", "spn.decays=[0.5]"]},
        {"name": "plain-eq", "equal_compute": {"of": "spn", "base": "plain"}},
    ])
    study = load_study(path)
    out = tmp_path / "out"
    assert run_study(study, out, log=lambda _: None)
    released = [json.loads((run_dir(out, "released", k) / "metrics.json").read_text()) for k in (0, 1)]
    assert released[0] == released[1] and not (run_dir(out, "released", 0) / "model_final.pt").exists()
    compute = json.loads((run_dir(out, "plain-eq", 0) / "compute.json").read_text())
    assert compute["of_iterations"] == 4
    assert compute["ratio"] == pytest.approx(compute["of_step_s"] / compute["base_step_s"])
    assert compute["iterations"] == max(1, round(4 * compute["ratio"]))
    config = yaml.safe_load((run_dir(out, "plain-eq", 0) / "config.yml").read_text())
    assert config["train"]["total_iter"] == compute["iterations"]
    report = write_report(study, out).read_text()
    assert "Difference to `released`" in report and "Difference to `plain`" in report
    assert "evaluated as loaded, no training" in report and "Equal-compute runs" in report


def test_equal_compute_must_name_earlier_trained_settings(tmp_path):
    with pytest.raises(SpnirError, match="equal_compute names 'spn'"):
        load_study(write_study(tmp_path, settings=[
            {"name": "plain"}, {"name": "eq", "equal_compute": {"of": "spn", "base": "plain"}}, {"name": "spn"}]))
