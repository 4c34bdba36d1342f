"""One name per setting across the Python API, the config keys and the CLI flags."""
from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spnir.errors import SpnirError
from spnir.features import VGGFeatures
from spnir.spn import SPN, NegativeLoss
from spnir.train.config import SCHEMA, validate

ROOT = Path(__file__).resolve().parents[1]
OLD_NAMES = ("feature_weights", "auto_ratio", "bound=")


def _minimal(**spn) -> dict:
    return {"model": {"name": "edsr-baseline", "scale": 4},
            "data": {"train": {"type": "builtin", "degradations": "sr", "patch_size": 32, "batch_size": 2}},
            "optim": {"lr": 1e-4}, "train": {"total_iter": 1}, "spn": spn}


def test_python_api_and_config_share_the_names():
    spn_keys = set(SCHEMA["spn"])
    for cls in (SPN, NegativeLoss):
        params = set(inspect.signature(cls.__init__).parameters)
        for name in ("vgg_weights", "max_distance", "target_ratio", "feature_dtype", "layer_weights", "form",
                     "uncertainty_weight"):
            assert name in params and name in spn_keys, (cls.__name__, name)
        assert not {"bound", "auto_ratio", "weights", "feature_weights"} & params
    vgg = set(inspect.signature(VGGFeatures.__init__).parameters)
    assert {"vgg_weights", "input_norm", "range_norm"} <= vgg and "weights" not in vgg


def test_old_python_names_are_refused_not_aliased():
    with pytest.raises(TypeError, match="bound"):
        NegativeLoss(None, layer_weights={"raw": 1.0}, features=lambda x: {"raw": x}, bound=1.0)
    with pytest.raises(TypeError, match="weights"):
        VGGFeatures("vgg16", ["relu1_1"], weights="random")


def test_the_config_takes_the_api_names():
    config = validate(_minimal(enabled=True, vgg_weights="random", max_distance=2.0, target_ratio=0.1))
    assert config["spn"]["vgg_weights"] == "random"


def test_no_old_spelling_left_in_the_repository():
    """Configs, docs, examples, benchmarks and experiments use the one name (only docs/reliability.md's line on
    the "old names" mentions them)."""
    files = [p for folder in ("spnir", "configs", "docs", "examples", "bench", "experiments")
             for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".yml", ".yaml", ".md")]
    files += [ROOT / "README.md"]
    hits = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        for old in OLD_NAMES:
            for number, line in enumerate(text.splitlines(), 1):
                if old in line and "old name" not in line:
                    hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_every_shipped_config_validates_with_the_new_names():
    from spnir.train.config import load_config

    for path in sorted((ROOT / "configs").rglob("*_spn.yml")):
        assert "vgg_weights" in load_config(path)["spn"], path


def test_demo_cli_flag_matches_the_config_key():
    out = subprocess.run([sys.executable, "-m", "spnir", "demo", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "--vgg-weights" in out


def test_config_vocabularies_come_from_their_owners():
    from spnir.data.paired import LAYOUTS
    from spnir.device import AUTOCAST_DTYPES
    from spnir.evaluation import TASKS
    from spnir.features import VGG_KINDS
    from spnir.losses import LOSSES
    from spnir.negative_sources import SOURCES
    from spnir.spn import FORMS
    from spnir.train.optim import OPTIMIZERS, SCHEDULERS

    assert SCHEMA["scheduler"]["type"].choices == tuple(SCHEDULERS)
    assert SCHEMA["optim"]["type"].choices == tuple(OPTIMIZERS)
    assert SCHEMA["spn"]["source"].choices == tuple(SOURCES)
    assert SCHEMA["spn"]["form"].choices == FORMS and SCHEMA["spn"]["features"].choices == VGG_KINDS
    assert SCHEMA["data"]["train"]["layout"].choices == ("auto", *LAYOUTS)
    assert all(name in SCHEMA["loss"]["type"].doc for name in LOSSES)
    assert SCHEMA["task"].choices == (*TASKS, "other")
    for field in (SCHEMA["train"]["amp"], SCHEMA["val"]["amp"], SCHEMA["spn"]["feature_dtype"]):
        assert field.choices[1:] == tuple(AUTOCAST_DTYPES)


@pytest.mark.parametrize("key,short,right", [("train.amp", "bfloat16", "bf16"), ("val.amp", "float16", "fp16"),
                                             ("spn.feature_dtype", "bfloat16", "bf16")])
def test_a_dtype_has_one_spelling_and_the_other_names_it(key, short, right):
    section, name = key.split(".")
    config = _minimal(enabled=True, vgg_weights="random")
    config.setdefault(section, {})[name] = short
    with pytest.raises(SpnirError, match=f"{key} = '{short}': write {right}"):
        validate(config)
    config[section][name] = right
    assert validate(config)[section][name] == right


def test_the_python_api_refuses_the_long_dtype_spelling_too():
    from spnir.device import autocast_dtype
    from spnir.negative_sources import InputNegatives

    with pytest.raises(SpnirError, match="feature_dtype = 'bfloat16': write bf16"):
        NegativeLoss(InputNegatives(), layer_weights={"raw": 1.0}, features=lambda x: {"raw": x},
                     feature_dtype="bfloat16")
    assert autocast_dtype("fp16", "val.amp") is torch.float16 and autocast_dtype("none") is None
