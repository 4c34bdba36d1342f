"""Config validation, --set overrides, ${VAR} paths, the BasicSR mapping, and the learning-rate schedules."""
from __future__ import annotations

import math

import pytest
import torch
import yaml

from spnir.errors import SpnirError
from spnir.train.config import apply_override, expand_path, load_config
from spnir.train.optim import build_optimizer, build_scheduler
from train_support import tiny_config


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
    assert expand_path("${SPNIR_NOT_SET}/HR", "data.train.gt") == tmp_path / "HR"


# The SPN authors' published option file (FFANet on RESIDE indoor), as BasicSR users write them.
OFFICIAL_SPN_FFANET = """
name: MCLIR-FFANet_RESIDE_IN_Reproduce_FromScratch
model_type: ImageRestorationModel_FFANet_Neg_Multi
scale: 1
num_gpu: 1
manual_seed: 42
datasets:
  train:
    name: RESIDE-IN
    type: PairedImageDataset
    dataroot_gt: /data/ITS/clear
    dataroot_lq: /data/ITS/hazy
    filename_tmpl: '{}'
    io_backend: {type: disk}
    gt_size: 128
    use_hflip: true
    use_rot: true
    use_shuffle: true
    num_worker_per_gpu: 4
    batch_size_per_gpu: 4
    dataset_enlarge_ratio: 1
    pin_memory: true
  val:
    name: ITS
    type: PairedImageDataset
    dataroot_gt: /data/SOTS/indoor/gt
    dataroot_lq: /data/SOTS/indoor/hazy
    io_backend: {type: disk}
network_g: {type: FFANet, gps: 3, blocks: 19}
path: {pretrain_network_g: ~, strict_load_g: true, resume_state: ~}
path_neg: {pretrain_network_g: ~, strict_load_g: true, resume_state: ~}
train:
  use_grad_norm: 0.05
  ema_decay: 0.999
  neg_decay: [0.1, 0.1, 0.1, 0.1]
  neg_iter: [100, 200, 500, 1000]
  neg_start: 0.1
  optim_g: {type: AdamW, lr: !!float 2e-4, weight_decay: 0.0, betas: [0.9, 0.9]}
  scheduler: {type: TrueCosineAnnealingLR, T_max: 100000, eta_min: !!float 1e-8}
  total_iter: 500000
  warmup_iter: -1
  pixel_opt: {type: L1Loss, loss_weight: 1.0, reduction: mean}
  perceptual_opt:
    type: PerceptualLoss
    layer_weights: {'relu1_2': 0.2, 'relu2_2': 0.3, 'relu3_3': 0.5}
    vgg_type: vgg16
    use_input_norm: true
    range_norm: false
    perceptual_weight: 0.001
    style_weight: 0
    criterion: l1
val:
  val_freq: !!float 5e3
  save_img: false
  metrics:
    psnr: {type: calculate_psnr, crop_border: 0, test_y_channel: false}
    ssim: {type: calculate_ssim, crop_border: 0, test_y_channel: false}
logger:
  print_freq: 200
  save_checkpoint_freq: !!float 5e3
  use_tb_logger: true
  wandb: {project: ~, resume_id: ~}
dist_params: {backend: nccl, port: 29500}
"""


def test_basicsr_option_file_of_the_spn_authors_is_mapped(tmp_path):
    path = tmp_path / "ffanet.yml"
    path.write_text(OFFICIAL_SPN_FFANET)
    notes: list[str] = []
    config = load_config(path, notes=notes)
    assert config["model"] == {"name": "ffanet", "scale": None, "args": {}, "pretrained": None,
                               "pretrained_key": None, "pretrained_strict": True}
    spn = config["spn"]
    assert spn["enabled"] and spn["weight"] == 0.001 and spn["features"] == "vgg16"
    assert spn["periods"] == [100, 200, 500, 1000] and spn["decays"] == [0.1] * 4 and spn["init_decay"] == 0.1
    assert spn["layer_weights"] == {"relu1_2": 0.2, "relu2_2": 0.3, "relu3_3": 0.5}
    assert config["optim"] == {"type": "AdamW", "lr": 2e-4, "betas": [0.9, 0.9], "weight_decay": 0.0, "eps": 1e-8}
    assert config["scheduler"]["type"] == "cosine" and config["scheduler"]["t_max"] == 100000
    assert config["scheduler"]["eta_min"] == 1e-8 and config["train"]["total_iter"] == 500000
    train = config["data"]["train"]
    assert (train["patch_size"], train["batch_size"], train["flip"], train["rot90"]) == (128, 4, True, True)
    assert train["lq"] == "/data/ITS/hazy" and config["data"]["val"][0]["name"] == "ITS"
    assert config["ema"]["decay"] == 0.999 and config["seed"] == 42
    assert config["val"]["every"] == 5000 and config["val"]["metrics"] == ["psnr", "ssim"]
    assert config["checkpoint"]["every"] == 5000 and config["log"]["every"] == 200
    joined = " ".join(notes)
    assert "use_grad_norm ignored" in joined and "num_gpu ignored" in joined and "dist_params ignored" in joined


@pytest.mark.parametrize("edit,words", [
    (lambda o: o["datasets"]["train"]["io_backend"].update(type="lmdb"), "datasets.train.io_backend.type=lmdb"),
    (lambda o: o["train"]["perceptual_opt"].update(style_weight=1.0), "train.perceptual_opt.style_weight"),
    (lambda o: o["train"].update(gan_opt={"type": "GANLoss"}), "train.gan_opt"),
    (lambda o: o["train"]["scheduler"].update(type="ExponentialLR"), "train.scheduler.type=ExponentialLR"),
    (lambda o: o["network_g"].update(gps=4), "network_g FFANet with gps=4"),
    (lambda o: o["datasets"]["train"].update(meta_info_file="x.txt"), "datasets.train.meta_info_file"),
])
def test_unsupported_basicsr_parts_are_named(tmp_path, edit, words):
    options = yaml.safe_load(OFFICIAL_SPN_FFANET)
    edit(options)
    path = tmp_path / "o.yml"
    path.write_text(yaml.safe_dump(options))
    with pytest.raises(SpnirError) as info:
        load_config(path)
    assert "does not support" in str(info.value) and words in str(info.value)


def test_basicsr_edsr_option_maps_to_the_preset_and_a_real_perceptual_loss_is_refused(tmp_path):
    options = {
        "name": "edsr", "model_type": "SRModel", "scale": 2, "num_gpu": 2, "manual_seed": 10,
        "datasets": {"train": {"type": "PairedImageDataset", "dataroot_gt": "a", "dataroot_lq": "b", "gt_size": 96,
                               "use_hflip": True, "use_rot": True, "batch_size_per_gpu": 16,
                               "dataset_enlarge_ratio": 100, "io_backend": {"type": "disk"}}},
        "network_g": {"type": "EDSR", "num_in_ch": 3, "num_out_ch": 3, "num_feat": 64, "num_block": 16, "upscale": 2,
                      "res_scale": 1, "img_range": 255.0, "rgb_mean": [0.4488, 0.4371, 0.4040]},
        "train": {"optim_g": {"type": "Adam", "lr": 1e-4, "weight_decay": 0, "betas": [0.9, 0.99]},
                  "scheduler": {"type": "MultiStepLR", "milestones": [200000], "gamma": 0.5},
                  "total_iter": 300000, "warmup_iter": -1, "pixel_opt": {"type": "L1Loss", "loss_weight": 1.0}},
    }
    path = tmp_path / "edsr.yml"
    path.write_text(yaml.safe_dump(options))
    config = load_config(path)
    assert config["model"]["name"] == "edsr-baseline" and config["model"]["scale"] == 2 and config["model"]["args"] == {}
    assert config["data"]["train"]["batch_size"] == 32 and config["data"]["train"]["enlarge"] == 100
    assert config["spn"]["enabled"] is False and config["ema"]["decay"] is None
    options["train"]["perceptual_opt"] = {"type": "PerceptualLoss", "perceptual_weight": 1.0}
    path.write_text(yaml.safe_dump(options))
    with pytest.raises(SpnirError, match="perceptual_opt without neg_"):
        load_config(path)


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


def test_basicsr_gradient_clipping_follows_each_codebase(tmp_path):
    options = {
        "name": "nafnet", "scale": 1, "num_gpu": 1,
        "network_g": {"type": "NAFNet", "width": 32, "enc_blk_nums": [1, 1, 1, 28], "middle_blk_num": 1,
                      "dec_blk_nums": [1, 1, 1, 1]},
        "datasets": {"train": {"type": "PairedImageDataset", "dataroot_gt": "a", "dataroot_lq": "b", "gt_size": 256,
                               "batch_size_per_gpu": 4, "io_backend": {"type": "disk"}}},
        "train": {"total_iter": 10, "pixel_opt": {"type": "PSNRLoss", "loss_weight": 1},
                  "optim_g": {"type": "AdamW", "lr": 1e-3}},
    }
    path = tmp_path / "nafnet.yml"
    path.write_text(yaml.safe_dump(options))
    assert load_config(path)["train"]["grad_clip"] == 0.01  # NAFNet's trainer clips at 0.01 by default
    options["train"]["use_grad_clip"] = 0.5  # BasicSR-derived code passes a number as the max norm
    path.write_text(yaml.safe_dump(options))
    assert load_config(path)["train"]["grad_clip"] == 0.5


def test_basicsr_negatives_with_different_decays_pair_as_the_official_loop(tmp_path):
    path = tmp_path / "neg.yml"
    options = yaml.safe_load(OFFICIAL_SPN_FFANET)
    options["train"]["neg_decay"] = [0.1, 0.2, 0.3, 0.4]
    path.write_text(yaml.safe_dump(options))
    notes: list[str] = []
    spn = load_config(path, notes=notes)["spn"]
    assert spn["periods"] == [1000, 500, 200, 100] and spn["decays"] == [0.1, 0.2, 0.3, 0.4]
    assert any("reverse order" in n for n in notes)
