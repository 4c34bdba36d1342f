"""Bad input is named before any work: model overrides, the shared config check of --print-config and training,
YAML duplicate keys and --set origins, data headers and data.verify, command-line arguments, user-facing words."""
from __future__ import annotations

import pytest
import torch

from spnir.archs import create_model
from spnir.archs.arguments import ArgumentError, check_arguments, describe_type
from spnir.archs.checkpoint import model_for_inference, save_model_checkpoint
from spnir.archs.registry import check_overrides
from spnir.cli import main
from spnir.errors import SpnirError
from spnir.train.config import load_config
from train_support import tiny_config


# -- model overrides ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,scale,args,words", [
    ("edsr-baseline", 2, {"num_feats": 8}, "has no argument 'num_feats' (did you mean num_feat?); it accepts: "
                                           "num_feat, num_block, res_scale"),
    ("edsr-baseline", 2, {"num_feat": "wide"}, "num_feat = 'wide' (str): preset 'edsr-baseline' expects an integer"),
    ("edsr-baseline", 2, {"rgb_mean": [0.4, 0.4]}, "expects a list of 3 numbers"),
    ("nafnet-width32", None, {"local": "yes"}, "local = 'yes' (str): preset 'nafnet-width32' expects true or false"),
    ("swinir-light", 2, {"depths": [2, "x"]}, "expects a list of integers"),
    ("ffanet", None, {"group": 1}, "did you mean groups?"),
    ("swinir-light", 2, {"scale": 4}, "scale is a setting of its own (model.scale in a config, --scale"),
])
def test_preset_overrides_are_checked_from_the_signature(name, scale, args, words):
    with pytest.raises(ArgumentError) as info:
        if "scale" in args:  # only a config's model.args or --set can pass it twice
            check_overrides(name, args)
        create_model(name, scale, **args)
    assert words in str(info.value)
    assert info.value.key == next(iter(args))


def test_override_values_are_converted_where_the_signature_allows():
    model = create_model("edsr-baseline", 2, num_feat=4, num_block=1, res_scale="1e-1")  # YAML 1.1's unparsed float
    assert model.spnir_preset["overrides"]["res_scale"] == pytest.approx(0.1)


def test_custom_callables_are_checked_too():
    def factory(width: int = 4, scale: int | None = None) -> torch.nn.Module:
        return torch.nn.Conv2d(3, 3, 1)

    assert check_arguments(factory, {"width": 8}, "model f") == {"width": 8}
    with pytest.raises(ArgumentError, match="has no argument 'widht' \\(did you mean width\\?\\)"):
        check_arguments(factory, {"widht": 8}, "model f")
    assert check_arguments(lambda **kw: None, {"anything": 1}, "model g") == {"anything": 1}  # nothing to check
    assert describe_type(int | None) == "an integer or null"


def test_inference_overrides_name_the_set_option_before_the_file_is_read(tmp_path):
    missing = tmp_path / "not-there.pth"
    with pytest.raises(SpnirError, match="^--set num_feats: preset 'edsr-baseline' has no argument"):
        model_for_inference(missing, "edsr-baseline", 2, overrides={"num_feats": 4}, cli=True)
    ckpt = save_model_checkpoint(create_model("edsr-baseline", 2, num_feat=4, num_block=1), tmp_path / "m.pt")
    with pytest.raises(SpnirError, match="^--set num_block = 'two' \\(str\\)"):
        model_for_inference(ckpt, overrides={"num_block": "two"}, cli=True)
    with pytest.raises(SpnirError, match="trained for scale 2; got --scale 3"):
        model_for_inference(ckpt, scale=3, cli=True)


def test_cli_restore_names_a_bad_override(tmp_path, capsys):
    ckpt = save_model_checkpoint(create_model("edsr-baseline", 2, num_feat=4, num_block=1), tmp_path / "m.pt")
    from spnir.imageio import save_image

    save_image(torch.rand(3, 8, 8), tmp_path / "x.png")
    code = main(["restore", str(tmp_path / "x.png"), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"),
                 "--set", "num_feats=8"])
    err = capsys.readouterr().err
    assert code == 2 and "--set num_feats: preset 'edsr-baseline' has no argument 'num_feats'" in err
    assert "Traceback" not in err and not (tmp_path / "o").exists()


# -- one check for --print-config and training -------------------------------------------------------------
@pytest.mark.parametrize("override,words", [
    ("model.name=edsr-basline", "unknown model preset 'edsr-basline' (did you mean edsr-baseline?"),
    ("model.args.num_feats=3", "model.args.num_feats: preset 'edsr-baseline' has no argument"),
    ("model.args.num_feat=wide", "model.args.num_feat = 'wide' (str): preset 'edsr-baseline' expects an integer"),
    ("model.scale=5", "supports scales (2, 3, 4); got model.scale 5"),
    ("spn.decays=[0.1]", "need one entry per negative"),
    ("data.train.patch_size=15", "data.train.patch_size 15 is not a multiple of model.scale 2"),
    ("spn.layer_weights={relu9_9: 1.0}", "spn.layer_weights names ['relu9_9']"),
    ("spn.max_distance=1.0", None),
    ("model.name=nosuchmodule:build", "cannot import build from nosuchmodule"),
])
def test_print_config_refuses_what_the_run_would(override, words, capsys):
    config = tiny_config()
    if override.startswith("spn.max_distance"):
        config["spn"]["form"] = "ratio"
        words = "spn.max_distance caps the distance of spn.form difference"
    code = main(["train", "-c", _write(config), "--print-config", "--set", override])
    err = capsys.readouterr().err
    assert code == 2 and f"--set {override}: " in err and words in err


def test_a_degradation_scale_other_than_the_model_scale_is_refused_at_validation():
    config = tiny_config()
    config["data"]["val"][0]["degradations"] = [{"type": "bicubic", "scale": 4}]
    with pytest.raises(SpnirError, match="data.val\\[0\\].degradations scale by 4, but model.scale is 2"):
        load_config(config)


def _write(config, path=None):
    import tempfile

    import yaml

    path = path or tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False).name
    with open(path, "w") as fh:
        yaml.safe_dump(config, fh)
    return path


# -- YAML files and --set origins --------------------------------------------------------------------------
def test_duplicate_yaml_keys_are_refused_with_key_and_line(tmp_path):
    path = tmp_path / "dup.yml"
    path.write_text("name: a\noptim:\n  lr: 1.0e-4\n  type: Adam\n  lr: 2.0e-4\n")
    with pytest.raises(SpnirError, match=r"dup.yml:5: key 'lr' given twice \(first on line 3\)"):
        load_config(path)


def test_duplicate_keys_in_a_study_file_are_refused(tmp_path):
    from spnir.study import load_study

    path = tmp_path / "study.yml"
    path.write_text("config: train.yml\nseeds: [0]\nseeds: [1]\n")
    with pytest.raises(SpnirError, match=r"study.yml:3: key 'seeds' given twice"):
        load_study(path)


def test_errors_name_the_file_or_the_override_that_set_the_value(tmp_path):
    config = tiny_config()
    config["optim"]["lr"] = "fast"
    path = _write(config, tmp_path / "run.yml")
    with pytest.raises(SpnirError, match=f"^{path}: optim.lr = 'fast'"):
        load_config(path)
    with pytest.raises(SpnirError, match="^--set optim.lr=slow: optim.lr = 'slow'"):
        load_config(path, ["optim.lr=slow"])
    with pytest.raises(SpnirError, match=f"^{path}: optim.lr = 'fast'"):  # another override: still the file
        load_config(path, ["optim.type=AdamW"])
    with pytest.raises(SpnirError, match="^--set optim={lr: x}: optim.lr = 'x'"):  # a whole section set
        load_config(path, ["optim={lr: x}"])
    with pytest.raises(SpnirError, match="expected a dotted key"):
        load_config(path, ["=3"])
