"""Bad input is named before any work: model overrides, the shared config check of --print-config and training,
YAML duplicate keys and --set origins, data headers and data.verify, command-line arguments, user-facing words."""
from __future__ import annotations

import pytest
import torch
from train_support import tiny_config

from spnir.archs import create_model
from spnir.archs.arguments import ArgumentError, check_arguments, describe_type
from spnir.archs.model_files import model_for_inference, save_model_checkpoint
from spnir.archs.registry import check_overrides
from spnir.cli import main
from spnir.errors import SpnirError, worded_as_options
from spnir.train.config import load_config


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


def test_inference_overrides_are_checked_before_the_file_is_read_and_named_as_the_caller_gave_them(tmp_path):
    missing = tmp_path / "not-there.pth"
    with pytest.raises(SpnirError, match="^override num_feats: preset 'edsr-baseline' has no argument"):
        model_for_inference(missing, "edsr-baseline", 2, overrides={"num_feats": 4})
    ckpt = save_model_checkpoint(create_model("edsr-baseline", 2, num_feat=4, num_block=1), tmp_path / "m.pt")
    with pytest.raises(SpnirError, match="trained for scale 2; got scale=3$"):
        model_for_inference(ckpt, scale=3)
    with worded_as_options({"overrides": "--set", "scale": "--scale"}):  # as restore, eval and export word them
        with pytest.raises(SpnirError, match="^--set num_feats: preset 'edsr-baseline' has no argument"):
            model_for_inference(missing, "edsr-baseline", 2, overrides={"num_feats": 4})
        with pytest.raises(SpnirError, match="^--set num_block = 'two' \\(str\\)"):
            model_for_inference(ckpt, overrides={"num_block": "two"})
        with pytest.raises(SpnirError, match="trained for scale 2; got --scale 3$"):
            model_for_inference(ckpt, scale=3)


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
    ("data.val=[{name: v, type: paired, lq: a, gt: b, layout: csv}]", "layout csv needs pairs"),
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
    with pytest.raises(SpnirError, match="^override 'optim.lr=slow': optim.lr = 'slow'"):
        load_config(path, ["optim.lr=slow"])
    with worded_as_options({"overrides": "--set"}), pytest.raises(SpnirError, match="^--set optim.lr=slow: optim"):
        load_config(path, ["optim.lr=slow"])  # as spnir train words it
    with pytest.raises(SpnirError, match=f"^{path}: optim.lr = 'fast'"):  # another override: still the file
        load_config(path, ["optim.type=AdamW"])
    with pytest.raises(SpnirError, match="^override 'optim={lr: x}': optim.lr = 'x'"):  # a whole section set
        load_config(path, ["optim={lr: x}"])
    with pytest.raises(SpnirError, match="expected a dotted key"):
        load_config(path, ["=3"])


# -- command-line arguments, checked while parsing (before models or images load) ---------------------------
def _parse_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("argv,words", [
    (["restore", "x.png", "--checkpoint", "{ckpt}", "--out", "{tmp}/o", "--tile", "0"],
     "argument --tile: 0 is not allowed; expected an integer >= 1"),
    (["restore", "x.png", "--checkpoint", "{ckpt}", "--out", "{tmp}/o", "--tile-overlap", "-2"],
     "argument --tile-overlap: -2 is not allowed; expected an integer >= 0"),
    (["restore", "x.png", "--checkpoint", "{ckpt}", "--out", "{ckpt}"], "is a file; expected a folder"),
    (["restore", "x.png", "--checkpoint", "{tmp}/none.pth", "--out", "{tmp}/o"], "none.pth: no such file"),
    (["restore", "x.png", "--checkpoint", "{ckpt}", "--out", "{tmp}/o", "--model", "swinir-lite"],
     "unknown model preset 'swinir-lite' (did you mean swinir-light"),
    (["eval", "--scale", "2", "--data", "{tmp}", "--crop-border", "-1"], "argument --crop-border: -1 is not allowed"),
    (["eval", "--scale", "2", "--data", "{tmp}", "--json", "{tmp}"], "is a folder; expected a file name to write"),
    (["eval", "--scale", "2", "--data", "{tmp}", "--json", "{ckpt}/r.json"], "is a file, so nothing can be written"),
    (["eval", "--scale", "0", "--data", "{tmp}"], "argument --scale: 0 is not allowed"),
    (["eval", "--scale", "2", "--data", "{tmp}/Set5"], "Set5: no such folder"),
    (["eval", "--model", "edsr-basline", "--checkpoint", "{ckpt}", "--scale", "2", "--data", "{tmp}"],
     "did you mean edsr-baseline"),
    (["demo", "--vgg-weights", "imagnet", "--out", "{tmp}/d"], "did you mean imagenet?"),
    (["demo", "--iterations", "many", "--out", "{tmp}/d"], "'many' is not an integer"),
    (["train", "-c", "{tmp}/none.yml"], "none.yml: no such file"),
    (["train", "-c", "{ckpt}", "--out", "{ckpt}"], "is a file; expected a folder"),
    (["study", "-c", "{ckpt}", "--out", "{ckpt}"], "is a file; expected a folder"),
    (["weights", "vgg16", "--from", "{tmp}/none.pth"], "none.pth: no such file"),
])
def test_bad_arguments_stop_while_parsing(argv, words, tmp_path, capsys):
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"")
    argv = [a.format(tmp=tmp_path, ckpt=ckpt) for a in argv]
    assert words in _parse_error(argv, capsys)


def test_tile_overlap_must_be_below_the_tile(tmp_path, capsys):
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"")
    code = main(["restore", str(tmp_path), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"), "--tile", "16",
                 "--tile-overlap", "16"])
    assert code == 2 and "--tile-overlap 16 must be smaller than --tile 16" in capsys.readouterr().err


def test_eval_checks_its_sets_before_loading_the_model(tmp_path, capsys, monkeypatch):
    import spnir.archs.model_files as model_files

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the sets were checked")

    monkeypatch.setattr(model_files, "model_for_inference", no_model)
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"")
    (tmp_path / "empty").mkdir()
    code = main(["eval", "--model", "ffanet", "--checkpoint", str(ckpt), "--task", "dehaze", "--data",
                 str(tmp_path / "empty")])
    assert code == 2 and "needs LQ/GT folder pairs" in capsys.readouterr().err


# -- VGG weights: the user's words, said before any work ---------------------------------------------------
def test_demo_without_imagenet_vgg_says_the_option_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    import spnir.train

    monkeypatch.setattr(spnir.train, "run_training", lambda *a, **k: pytest.fail("training started"))
    code = main(["demo", "--vgg-weights", "imagenet", "--out", str(tmp_path / "d"), "--iterations", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "ask for it explicitly with --vgg-weights random" in err and "vgg_weights=" not in err


def test_training_without_imagenet_vgg_names_the_set_option(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    config = tiny_config()
    config["spn"]["vgg_weights"] = "imagenet"
    config["data"]["train"]["gt"] = str(tmp_path / "no-data-needed")
    code = main(["train", "-c", str(_write(config, tmp_path / "c.yml")), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "--set spn.vgg_weights=random" in err and "vgg_weights='random'" not in err


def test_weights_check_verifies_the_given_file_and_writes_nothing(tmp_path, monkeypatch, capsys):
    import spnir.weights.vgg as vw

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    candidate = tmp_path / "vgg16.pth"
    candidate.write_bytes(b"not vgg")
    assert main(["weights", "vgg16", "--check", "--from", str(candidate)]) == 1
    assert "does not match vgg16-397923af.pth" in capsys.readouterr().out
    monkeypatch.setattr(vw, "expected_hash_prefix", lambda kind: vw.sha256_of(candidate)[:8])
    assert main(["weights", "vgg16", "--check", "--from", str(candidate)]) == 0
    assert "is the file of ImageNet VGG16, torchvision weights" in capsys.readouterr().out
    assert not vw.cached_vgg_path("vgg16").exists()
    assert main(["weights", "vgg16", "--check"]) == 1 and "missing at" in capsys.readouterr().out


# -- data: every image checked before the first step -------------------------------------------------------
@pytest.fixture
def data(tmp_path, monkeypatch):
    from train_support import make_data

    root = make_data(tmp_path / "data")
    monkeypatch.setenv("SPNIR_TEST_DATA", str(root))
    return root


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _count_steps(monkeypatch):
    import spnir.train.trainer as trainer

    steps = []
    original = trainer.Trainer.train_step
    monkeypatch.setattr(trainer.Trainer, "train_step", lambda self, *a: steps.append(1) or original(self, *a))
    return steps


@pytest.mark.parametrize("content,words", [
    (b"not an image", "cannot read image header"),
    ("16bit", "16-bit PNG; expected 8 bits per channel"),
])
def test_a_bad_training_image_stops_before_the_first_step(data, tmp_path, monkeypatch, content, words):
    from spnir.train import run_training

    bad = data / "train" / "img01.png"
    if content == "16bit":
        import numpy as np
        from PIL import Image

        Image.fromarray(np.zeros((32, 32), dtype=np.uint16)).save(bad)
    else:
        bad.write_bytes(content)
    steps = _count_steps(monkeypatch)
    with pytest.raises(SpnirError, match=f"{bad}: {words}"):
        run_training(tiny_config(spn=False), tmp_path / "run")
    assert steps == []


def test_data_verify_decodes_everything_up_front(data, tmp_path, monkeypatch):
    from spnir.train import run_training

    bad = data / "train" / "img02.png"
    _truncate(bad)  # the header is intact: only decoding shows it
    steps = _count_steps(monkeypatch)
    with pytest.raises(SpnirError, match=f"{bad}: cannot read image \\(image file is truncated\\)"):
        run_training(tiny_config(spn=False, data={"verify": True}), tmp_path / "run")
    assert steps == []
    # without data.verify the file is found when first read, in one line that names the switch
    with pytest.raises(SpnirError) as info:
        run_training(tiny_config(spn=False, total=20), tmp_path / "run2")
    assert str(info.value).startswith(f"{bad}: cannot read image") and "data.verify: true" in str(info.value)
    assert "\n" not in str(info.value)


def test_one_line_errors_from_loader_workers(data, tmp_path):
    from spnir.train import run_training

    bad = data / "train" / "img03.png"
    _truncate(bad)
    config = tiny_config(spn=False, total=20)
    config["data"]["train"]["workers"] = 1
    with pytest.raises(SpnirError) as info:
        run_training(config, tmp_path / "run")
    assert str(info.value).startswith(f"{bad}: cannot read image") and "Traceback" not in str(info.value)


def test_validation_images_follow_evals_rule(data, tmp_path):
    from train_support import write_images

    from spnir.train import run_training

    write_images(data / "val", 2, size=24, seed=2)
    bad = data / "val" / "img01.png"
    bad.write_bytes(b"broken")
    result = run_training(tiny_config(spn=False, total=3), tmp_path / "run")  # skip: the default
    assert result.completed
    log = (tmp_path / "run" / "train.log").read_text()
    assert f"validation set v: skipped {bad}: cannot read image header" in log
    with pytest.raises(SpnirError, match=f"{bad}: cannot read image header"):
        run_training(tiny_config(spn=False, total=3, val={"every": 3, "on_error": "stop"}), tmp_path / "run2")
    assert not (tmp_path / "run2" / "checkpoints").exists() or not list((tmp_path / "run2" / "checkpoints").iterdir())


def test_a_validation_set_with_no_good_image_stops_the_run(data, tmp_path):
    from spnir.train import run_training

    (data / "val" / "img00.png").write_bytes(b"broken")
    with pytest.raises(SpnirError, match="every one of its 1 images failed its check; the first: .*img00.png"):
        run_training(tiny_config(spn=False, total=3), tmp_path / "run")


def test_paired_folders_skip_or_stop_on_a_bad_pair(tmp_path):
    from train_support import write_images

    from spnir.data import PairedFolder

    write_images(tmp_path / "lq", 3, size=8)
    write_images(tmp_path / "gt", 3, size=16)
    _truncate(tmp_path / "gt" / "img01.png")
    assert len(PairedFolder(tmp_path / "lq", tmp_path / "gt", scale=2)) == 3  # headers alone cannot tell
    with pytest.raises(SpnirError, match="img01.png: cannot read image"):
        PairedFolder(tmp_path / "lq", tmp_path / "gt", scale=2, verify=True)
    folder = PairedFolder(tmp_path / "lq", tmp_path / "gt", scale=2, verify=True, on_error="skip")
    assert len(folder) == 2 and folder.skipped[0][0] == str(tmp_path / "lq" / "img01.png")


def test_missing_frozen_negative_files_are_named_before_the_data_is_read(tmp_path, monkeypatch):
    import spnir.train.build as build
    from spnir.train import run_training

    monkeypatch.setattr(build, "build_train_data", lambda config: pytest.fail("data read before the check"))
    config = tiny_config()
    config["spn"].update(source="frozen", frozen=[str(tmp_path / "gone.pt")])
    with pytest.raises(SpnirError, match=r"spn.frozen\[0\] = .*gone.pt.*: .*gone.pt does not exist"):
        run_training(config, tmp_path / "run")


# -- one message, two audiences: parameters for Python callers, options at the command line ----------------
def test_a_parameter_error_names_parameters_in_python_and_options_in_a_command():
    from spnir.errors import Param, ParameterError

    error = ParameterError("run: continue it with ", Param("resume", "auto"), ", or give a fresh ", Param("out_dir"),
                           " folder (", Param("overwrite", True), "); ", Param("overrides", ["a=1", "b=[1, 2]"]))
    assert str(error) == ("run: continue it with resume='auto', or give a fresh out_dir folder (overwrite=True); "
                          "overrides=['a=1', 'b=[1, 2]']")
    options = {"resume": "--resume", "out_dir": "--out", "overwrite": "--overwrite", "overrides": "--set"}
    assert error.worded(options) == ("run: continue it with --resume auto, or give a fresh --out folder "
                                     "(--overwrite); --set a=1 --set 'b=[1, 2]'")
    with worded_as_options(options):  # while a command runs, every str() of it (logs, skip reasons) names options
        assert str(error) == error.worded(options)
    assert str(error).startswith("run: continue it with resume='auto'")
    assert error.worded({"resume": "--resume"}).startswith("run: continue it with --resume auto, or give a fresh "
                                                           "out_dir folder")  # a parameter without an option


def test_run_folder_and_study_refusals_name_options_at_the_command_line(data, tmp_path, capsys):
    from spnir.train import run_training

    config = _write(tiny_config(total=2), tmp_path / "c.yml")
    run_training(config, tmp_path / "run")
    assert main(["train", "-c", str(config), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "continue it with --resume auto, or give a fresh --out folder (--overwrite replaces that run)" in err
    assert "resume=" not in err and "out_dir" not in err
    assert main(["train", "-c", str(config), "--out", str(tmp_path / "run"), "--resume", "auto", "--overwrite"]) == 2
    assert "--overwrite replaces a run and --resume continues one" in capsys.readouterr().err
    study = tmp_path / "s.yml"
    study.write_text(f"name: s\nconfig: {config}\nsettings: [{{name: a}}]\n")
    assert main(["study", "-c", str(study), "--out", str(tmp_path / "s"), "--only", "b"]) == 2
    assert "--only names ['b'], not settings of the study (a)" in capsys.readouterr().err
