"""Config validation, --set overrides, ${VAR} paths and the learning-rate schedules (the BasicSR mapping:
test_basicsr_mapping.py)."""
from __future__ import annotations

import math

import pytest
import torch
from train_support import tiny_config

from spnir.errors import SpnirError
from spnir.train.config import apply_override, expand_path, load_config
from spnir.train.optim import build_optimizer, build_scheduler


def test_defaults_are_filled_in():
    config = load_config(tiny_config())
    assert config["optim"]["betas"] == [0.9, 0.99] and config["scheduler"]["unit"] == "iter"
    assert config["data"]["val"][0]["max_images"] is None


@pytest.mark.parametrize("path,value,words", [
    (("optim", "lrr"), 1e-4, "unknown key 'optim.lrr'; did you mean optim.lr?"),
    (("spn", "periodes"), [100], "did you mean spn.periods?"),
    (("trian",), {}, "did you mean train?"),
])
def test_unknown_key_names_it_and_the_near_match(path, value, words):
    config = tiny_config()
    node = config
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    with pytest.raises(SpnirError) as info:
        load_config(config)
    assert words in str(info.value)


@pytest.mark.parametrize("override,words", [
    ("optim.lr=abc", "optim.lr = 'abc' (str): expected a number > 0"),
    ("optim.lr=-1", "optim.lr = -1.0: expected a number > 0"),
    ("data.train.batch_size=2.5", "data.train.batch_size = 2.5 (float): expected an integer > 0"),
    ("ema.decay=1.0", "ema.decay = 1.0: expected a number in [0, 1)"),
    ("train.amp=fp8", "train.amp = 'fp8' is not one of ['none', 'bf16', 'fp16']"),
    ("train.amp=bfloat16", "train.amp = 'bfloat16': write bf16"),
    ("spn.feature_dtype=float16", "spn.feature_dtype = 'float16': write fp16"),
    ("spn.init_decay=2", "spn.init_decay = 2.0: expected a number in [0, 1]"),
    ("spn.periods=[1,2,3]", "need one entry per negative"),
    ("spn.weight=much", "spn.weight = 'much': expected a number >= 0 or 'auto'"),
    ("train.epochs=3", "set exactly one of train.total_iter and train.epochs"),
    ("data.train.degradations=[{type: bicubik}]", "bicubik"),
    ("optim", "expected key=value"),
])
def test_wrong_type_or_range_says_what_was_expected(override, words):
    with pytest.raises(SpnirError) as info:
        load_config(tiny_config(), [override])
    assert words in str(info.value)


def test_set_overrides_parse_yaml_and_accept_unparsed_floats():
    config = load_config(tiny_config(), ["optim.lr=1e-4", "spn.enabled=false", "optim.betas=[0.9, 0.9]",
                                         "scheduler.milestones=[2, 4]"])
    assert config["optim"]["lr"] == 1e-4 and config["spn"]["enabled"] is False
    assert config["optim"]["betas"] == [0.9, 0.9] and config["scheduler"]["milestones"] == [2, 4]
    raw: dict = {}
    apply_override(raw, "a.b.c=3")
    assert raw == {"a": {"b": {"c": 3}}}


def test_env_paths_expand_at_build_time_with_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("SPNIR_NOT_SET", raising=False)
    load_config(tiny_config())  # validation does not need the variable
    with pytest.raises(SpnirError, match=r"uses the environment variable SPNIR_NOT_SET, which is not set; .*export"):
        expand_path("${SPNIR_NOT_SET}/HR", "data.train.gt")
    monkeypatch.setenv("SPNIR_NOT_SET", str(tmp_path))
    (tmp_path / "HR").mkdir()
    assert expand_path("${SPNIR_NOT_SET}/HR", "data.train.gt") == tmp_path / "HR"


# The SPN authors' published option file (FFANet on RESIDE indoor), as BasicSR users write them.
def _lrs(sched: dict, total: int, per_epoch: int = 1, steps: int | None = None) -> list[float]:
    param = torch.nn.Parameter(torch.zeros(1))
    config = load_config(tiny_config(), [f"scheduler={sched}"])
    optimizer = build_optimizer([param], {**config["optim"], "lr": 1.0})
    scheduler = build_scheduler(optimizer, config["scheduler"], total, per_epoch)
    lrs = []
    for _ in range(steps or total):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_schedules_follow_their_definitions():
    assert _lrs({"type": "multistep", "milestones": [2, 4], "gamma": 0.5}, 6) == [1, 1, 0.5, 0.5, 0.25, 0.25]
    cosine = _lrs({"type": "cosine", "eta_min": 0.1}, 5)
    assert cosine == pytest.approx([0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t / 5)) for t in range(5)])
    restarts = _lrs({"type": "cosine_restarts", "periods": [2, 4], "restart_weights": [1, 0.5]}, 6)
    # BasicSR's CosineAnnealingRestartLR: cycle k covers (end_{k-1}, end_k], so iteration 2 still ends the
    # first cycle at the minimum and the second (weight 0.5, period 4) starts one iteration later
    second = [0.25 * (1 + math.cos(math.pi * k / 4)) for k in range(1, 4)]
    assert restarts == pytest.approx([1, 0.5, 0, *second])
    warm = _lrs({"type": "constant", "warmup": 4}, 6)
    assert warm == pytest.approx([0.25, 0.5, 0.75, 1, 1, 1])
    assert _lrs({"type": "linear"}, 4) == pytest.approx([1, 0.75, 0.5, 0.25])


def test_epoch_unit_changes_the_lr_once_per_epoch():
    config = tiny_config()
    config["train"] = {"epochs": 3, "device": "cpu"}
    config["scheduler"] = {"type": "multistep", "unit": "epoch", "milestones": [1, 2], "gamma": 0.1}
    config = load_config(config)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer([param], {**config["optim"], "lr": 1.0})
    scheduler = build_scheduler(optimizer, config["scheduler"], total_iter=6, iters_per_epoch=2)
    lrs = []
    for _ in range(6):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_config_and_model_arguments_read_values_with_one_engine():
    """``2e3`` (a string to YAML) is an integer where one is expected, in the schema and in ``model.args``."""
    config = load_config(tiny_config(), ["train.total_iter=2e3", "model.args.num_feat=8.0", "optim.lr=1e-3"])
    assert config["train"]["total_iter"] == 2000 and config["model"]["args"]["num_feat"] == 8
    assert isinstance(config["model"]["args"]["num_feat"], int) and config["optim"]["lr"] == 1e-3
    for override in ("train.total_iter=2.5", "model.args.num_feat=2.5"):
        with pytest.raises(SpnirError, match="2.5 \\(float\\): .*an integer"):
            load_config(tiny_config(), [override])


@pytest.mark.parametrize("override,build,words", [
    ("spn.max_distance=-1", lambda: _spn(max_distance=-1.0), "max_distance = -1.0: expected a number > 0"),
    ("spn.adaptive_decay=1.5", lambda: _spn(adaptive_decay=1.5), "adaptive_decay = 1.5: expected a number in [0, 1]"),
    ("ema.decay=1", lambda: _ema(1.0), "decay = 1.0: expected a number in [0, 1)"),
])
def test_a_rule_a_constructor_enforces_reads_the_same_in_the_config(override, build, words):
    with pytest.raises(SpnirError) as from_config:
        load_config(tiny_config(), [override])
    with pytest.raises(SpnirError) as from_python:
        build()
    assert words in str(from_python.value)
    key = override.split("=")[0]
    assert f"override {override!r}: {key.rsplit('.', 1)[0]}.{words}" in str(from_config.value)


def _spn(**options):
    from spnir.spn import SPN

    return SPN(torch.nn.Conv2d(3, 3, 1), layer_weights={"raw": 1.0}, features=lambda x: {"raw": x}, **options)


def _ema(decay):
    from spnir.ema import ModelEMA

    return ModelEMA(torch.nn.Conv2d(3, 3, 1), decay)


def test_schedule_rules_live_with_the_schedules():
    from spnir.train.optim import check_schedule

    sched = load_config(tiny_config())["scheduler"]
    with pytest.raises(SpnirError, match="milestones must increase"):
        check_schedule({**sched, "milestones": [4, 2]})
    with pytest.raises(SpnirError, match=r"override 'scheduler.milestones=\[4, 2\]': scheduler.milestones must"):
        load_config(tiny_config(), ["scheduler.milestones=[4, 2]"])


def test_the_tilers_rule_is_checked_at_validation_in_its_own_words():
    with pytest.raises(SpnirError, match=r"override 'val.tile_overlap=16': val.tile=16, val.tile_overlap=16: need"):
        load_config(tiny_config(val={"tile": 16}), ["val.tile_overlap=16"])


def test_an_owners_error_names_the_set_that_gave_the_key_it_names(tmp_path):
    import yaml

    config = tiny_config()
    config["spn"]["weight"] = "much"
    path = tmp_path / "run.yml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(SpnirError, match=f"^{path}: spn.weight = 'much'"):
        load_config(path, ["spn.enabled=true"])
    with pytest.raises(SpnirError, match="^override 'loss.type=l3': unknown loss type 'l3'"):
        load_config(tiny_config(), ["loss.type=l3"])


def test_a_custom_models_arguments_are_converted_as_a_presets_are():
    config = tiny_config(model={"name": "train_support:NaNAfter", "scale": None, "args": {"after": "2e0"}})
    for entry in (config["data"]["train"], *config["data"]["val"]):
        entry["degradations"] = [{"type": "noise", "sigma": 5}]  # the x1 network's task
    assert load_config(config)["model"]["args"] == {"after": 2}
