"""Progress output: a bar only on a terminal, plain status lines otherwise, one switch (--quiet) for silence."""
from __future__ import annotations

import io
import re

import numpy as np
import pytest
import yaml
from PIL import Image
from train_support import tiny_config

from spnir.cli import main
from spnir.errors import SpnirError
from spnir.progress import Progress, configure, current_settings, shows_bar


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def default_settings(monkeypatch):
    monkeypatch.delenv("SPNIR_QUIET", raising=False)
    configure()
    yield
    configure()


def _run(stream, clock, steps=100, seconds_per_step=1.0, **kwargs):
    with Progress("train", steps, "it", stream=stream, clock=clock, **kwargs) as shown:
        for i in range(1, steps + 1):
            clock.now += seconds_per_step
            shown.update(i, {"l_pix": 0.5 / i})
    return stream.getvalue()


def test_not_a_terminal_gets_status_lines_every_n_seconds_and_no_redraws():
    configure(status_every=10)
    text = _run(io.StringIO(), FakeClock())
    lines = text.splitlines()
    assert "\r" not in text
    assert len(lines) == 10  # at 10 s, 20 s, ... 100 s; the last one is the end
    assert lines[0] == "train 10/100 it, l_pix 0.05, 1 it/s, ETA 0:01:30"
    assert lines[-1] == "train 100/100 it, l_pix 0.005, 1 it/s, elapsed 0:01:40"


def test_last_line_reports_the_end_between_status_lines():
    configure(status_every=30)
    lines = _run(io.StringIO(), FakeClock(), steps=45).splitlines()
    assert [line.split(",")[0] for line in lines] == ["train 30/45 it", "train 45/45 it"]


def test_terminal_gets_a_bar_unless_it_is_turned_off():
    configure(status_every=10)
    assert "\r" in _run(Terminal(), FakeClock(), steps=5)
    configure(bar=False, status_every=10)
    text = _run(Terminal(), FakeClock(), steps=20)
    assert "\r" not in text and text.splitlines()[0].startswith("train 10/20 it")
    configure(status_every=10)
    text = _run(Terminal(), FakeClock(), steps=20, bar=False)  # log.progress: false
    assert "\r" not in text and len(text.splitlines()) == 2


def test_downloads_draw_a_bar_only_where_loops_do():
    assert shows_bar(Terminal()) and not shows_bar(io.StringIO())
    configure(bar=False)
    assert not shows_bar(Terminal())
    configure(quiet=True)
    assert not shows_bar(Terminal())


def test_quiet_and_the_environment_silence_everything(monkeypatch):
    configure(quiet=True, status_every=1)
    assert _run(io.StringIO(), FakeClock()) == _run(Terminal(), FakeClock()) == ""
    monkeypatch.setenv("SPNIR_QUIET", "1")
    configure(status_every=1)
    assert current_settings().quiet and _run(io.StringIO(), FakeClock()) == ""
    configure()  # the environment still says quiet
    assert current_settings().quiet


def test_resumed_loop_counts_its_speed_from_where_it_started():
    configure(status_every=5)
    clock, stream = FakeClock(), io.StringIO()
    with Progress("train", 1000, "it", initial=900, stream=stream, clock=clock) as shown:
        for i in range(901, 911):
            clock.now += 0.5
            shown.update(i)
    assert stream.getvalue().splitlines()[0] == "train 910/1000 it, 2 it/s, ETA 0:00:45"


def test_status_every_must_be_positive(capsys, tmp_path):
    with pytest.raises(SpnirError, match="^status_every must be a number of seconds > 0; got 0$"):
        configure(status_every=0)
    assert main(["eval", "--status-every", "-1", "--scale", "2", "--data", str(tmp_path)]) == 2
    assert "--status-every must be a number of seconds > 0" in capsys.readouterr().err


def _hr_set(folder, count=3):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_eval_and_restore_commands_print_status_lines_off_a_terminal(tmp_path, capsys):
    hr = _hr_set(tmp_path / "HR")
    assert main(["eval", "--scale", "2", "--data", str(hr), "--status-every", "1e-9"]) == 0
    captured = capsys.readouterr()
    assert "\r" not in captured.err + captured.out
    assert re.search(r"^HR 3/3 img, .* img/s, elapsed ", captured.err, re.M), captured.err
    assert main(["eval", "--scale", "2", "--data", str(hr), "--status-every", "1e-9", "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_train_prints_status_lines_with_losses_and_quiet_silences_them(data, tmp_path, capsys):
    cfg = tmp_path / "c.yml"
    cfg.write_text(yaml.safe_dump(tiny_config(spn=False, total=3, log={"progress": True})))
    assert main(["train", "-c", str(cfg), "--out", str(tmp_path / "a"), "--status-every", "1e-9"]) == 0
    captured = capsys.readouterr()
    assert "\r" not in captured.err + captured.out
    status = [line for line in captured.err.splitlines() if line.startswith("train ")]
    assert [line.split(",")[0] for line in status][:3] == ["train 1/3 it", "train 2/3 it", "train 3/3 it"]
    assert all(" it/s" in line for line in status) and "ETA" in status[0] and ", pix " in status[0]
    assert main(["train", "-c", str(cfg), "--out", str(tmp_path / "b"), "--status-every", "1e-9", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert not [line for line in captured.err.splitlines() if line.startswith("train ")]
    assert "completed 3 iterations" in captured.out
