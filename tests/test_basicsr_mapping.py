"""The BasicSR option-file mapping: each model_type of the SPN authors' fork (github.com/Aitical/MCLIR) and
NAFNet's trainer mapped with the semantics of its class, every use_grad_clip form, refusals naming the key."""
from __future__ import annotations

import math

import pytest
import torch
import yaml

from spnir.errors import SpnirError
from spnir.train.basicsr import MODEL_TYPES
from spnir.train.config import load_config
from spnir.train.optim import build_optimizer, build_scheduler

# The authors' published option file (options/FFANet_RESIDE_IN_fromScratch.yml), with local data paths.
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




def _load(tmp_path, options: dict, notes: list[str] | None = None) -> dict:
    path = tmp_path / "options.yml"
    path.write_text(yaml.safe_dump(options))
    return load_config(path, notes=notes)


def _official(**train) -> dict:
    options = yaml.safe_load(OFFICIAL_SPN_FFANET)
    options["train"].update(train)
    return options


def test_basicsr_option_file_of_the_spn_authors_is_mapped(tmp_path):
    path = tmp_path / "ffanet.yml"
    path.write_text(OFFICIAL_SPN_FFANET)
    notes: list[str] = []
    config = load_config(path, notes=notes)
    assert config["model"] == {"name": "ffanet", "scale": None, "args": {}, "pretrained": None,
                               "pretrained_key": None, "pretrained_strict": True}
    spn = config["spn"]
    assert spn["enabled"] and spn["weight"] == 0.001 and spn["features"] == "vgg16"
    # SRNegModel_Multi.optimize_parameters: negative idx refreshed every neg_iter[::-1][idx] with neg_decay[idx]
    assert spn["periods"] == [1000, 500, 200, 100] and spn["decays"] == [0.1] * 4 and spn["init_decay"] == 0.1
    assert spn["adaptive_threshold"] is None
    assert spn["layer_weights"] == {"relu1_2": 0.2, "relu2_2": 0.3, "relu3_3": 0.5}
    assert config["optim"] == {"type": "AdamW", "lr": 2e-4, "betas": [0.9, 0.9], "weight_decay": 0.0, "eps": 1e-8,
                               "fused": None, "foreach": None}
    assert config["scheduler"]["type"] == "cosine" and config["scheduler"]["t_max"] == 100000
    assert config["scheduler"]["eta_min"] == 1e-8 and config["train"]["total_iter"] == 500000
    train = config["data"]["train"]
    assert (train["patch_size"], train["batch_size"], train["flip"], train["rot90"]) == (128, 4, True, True)
    assert train["lq"] == "/data/ITS/hazy" and config["data"]["val"][0]["name"] == "ITS"
    assert config["ema"]["decay"] == 0.999 and config["seed"] == 42
    assert config["val"]["use_ema"] is False  # the FFANet classes' test() runs net_g, not net_g_ema
    assert config["train"]["grad_clip"] is None  # use_grad_clip absent (use_grad_norm is never read)
    assert config["val"]["every"] == 5000 and config["val"]["metrics"] == ["psnr", "ssim"]
    assert config["checkpoint"]["every"] == 5000 and config["log"]["every"] == 200
    joined = " ".join(notes)
    assert "use_grad_norm ignored" in joined and "num_gpu ignored" in joined and "dist_params ignored" in joined
    assert "image_restoration_ffanet_neg_model.py ImageRestorationModel_FFANet_Neg_Multi" in joined
    assert "val.use_ema false" in joined and "reverse order" in joined


def test_the_authors_option_file_trains_like_the_recipe_config():
    """configs/dehaze/ffanet_its_mclir_spn.yml is the authors' option file written as a spnir config."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs" / "dehaze"
    ours = load_config(root / "ffanet_its_mclir_spn.yml")
    theirs = load_config(yaml.safe_load(OFFICIAL_SPN_FFANET))
    for section in ("model", "spn", "ema", "optim", "scheduler"):
        assert ours[section] == theirs[section], section
    for key in ("total_iter", "grad_clip"):
        assert ours["train"][key] == theirs["train"][key], key
    for key in ("patch_size", "batch_size", "flip", "rot90", "enlarge"):
        assert ours["data"]["train"][key] == theirs["data"]["train"][key], key
    assert ours["val"]["use_ema"] == theirs["val"]["use_ema"] and ours["val"]["every"] == theirs["val"]["every"]
    baseline = load_config(root / "ffanet_its_mclir.yml")
    assert not baseline["spn"]["enabled"]


def test_the_authors_cosine_is_torch_cosine_annealing_past_t_max():
    """TrueCosineAnnealingLR is torch's CosineAnnealingLR (base_model.setup_schedulers): past T_max the lr rises
    again (period 2 T_max), it does not restart; spnir's cosine with t_max follows it."""
    config = load_config(yaml.safe_load(OFFICIAL_SPN_FFANET), ["scheduler.t_max=4", "train.total_iter=20"])
    ours_param, ref_param = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    ours_opt = build_optimizer([ours_param], config["optim"])
    ours = build_scheduler(ours_opt, config["scheduler"], 20, 1)
    ref_opt = torch.optim.AdamW([ref_param], lr=2e-4, betas=(0.9, 0.9))
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, T_max=4, eta_min=1e-8)
    for _ in range(20):
        assert ours_opt.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-9, abs=1e-15)
        ours_opt.step(), ref_opt.step(), ours.step(), ref.step()


@pytest.mark.parametrize("edit,words", [
    (lambda o: o["datasets"]["train"]["io_backend"].update(type="lmdb"), "datasets.train.io_backend.type=lmdb"),
    (lambda o: o["train"]["perceptual_opt"].update(style_weight=1.0), "train.perceptual_opt.style_weight"),
    (lambda o: o["train"].update(gan_opt={"type": "GANLoss"}), "train.gan_opt"),
    (lambda o: o["train"]["scheduler"].update(type="ExponentialLR"), "train.scheduler.type=ExponentialLR"),
    (lambda o: o["network_g"].update(gps=4), "network_g FFANet with gps=4"),
    (lambda o: o["datasets"]["train"].update(meta_info_file="x.txt"), "datasets.train.meta_info_file"),
    (lambda o: o["train"].update(perceptual_pos_opt={"type": "PerceptualLoss"}), "train.perceptual_pos_opt"),
    (lambda o: o["train"].update(perceptual_contrastive_opt={"type": "X"}), "train.perceptual_contrastive_opt"),
    (lambda o: o["val"].update(grids=True), "val.grids"),
    (lambda o: o["path_neg"].update(pretrain_network_g_neg="n.pth"), "path_neg.pretrain_network_g_neg"),
    (lambda o: o.update(network_g_net={"type": "EDSR"}), "network_g_net"),
    (lambda o: o["train"].update(neg_decay=[0.1, 0.1]), "train.neg_decay=[0.1, 0.1]"),
    (lambda o: o["train"].update(neg_iter=100), "train.neg_iter=100"),
    (lambda o: o.update(network_g={"type": "EDSR", "num_feat": 64}, scale=2), "normalises the input"),
])
def test_unsupported_basicsr_parts_are_named(tmp_path, edit, words):
    options = yaml.safe_load(OFFICIAL_SPN_FFANET)
    edit(options)
    with pytest.raises(SpnirError) as info:
        _load(tmp_path, options)
    assert "does not support" in str(info.value) and words in str(info.value)


@pytest.mark.parametrize("model_type,words", [(None, "model_type is missing"),
                                               ("SwinIRModel", "model_type 'SwinIRModel' is not one spnir maps")])
def test_a_missing_or_unknown_model_type_is_refused_with_the_known_ones(tmp_path, model_type, words):
    options = yaml.safe_load(OFFICIAL_SPN_FFANET)
    options.pop("model_type")
    if model_type:
        options["model_type"] = model_type
    with pytest.raises(SpnirError) as info:
        _load(tmp_path, options)
    assert words in str(info.value) and all(name in str(info.value) for name in MODEL_TYPES)


def _edsr(model_type: str, **train) -> dict:
    return {
        "name": "edsr", "model_type": model_type, "scale": 2, "num_gpu": 2, "manual_seed": 10,
        "datasets": {"train": {"type": "PairedImageDataset", "dataroot_gt": "a", "dataroot_lq": "b", "gt_size": 96,
                               "use_hflip": True, "use_rot": True, "batch_size_per_gpu": 16,
                               "dataset_enlarge_ratio": 100, "io_backend": {"type": "disk"}}},
        "network_g": {"type": "EDSR", "num_in_ch": 3, "num_out_ch": 3, "num_feat": 64, "num_block": 16, "upscale": 2,
                      "res_scale": 1, "img_range": 255.0, "rgb_mean": [0.4488, 0.4371, 0.4040]},
        "train": {"optim_g": {"type": "Adam", "lr": 1e-4, "weight_decay": 0, "betas": [0.9, 0.99]},
                  "scheduler": {"type": "MultiStepLR", "milestones": [200000], "gamma": 0.5},
                  "total_iter": 300000, "warmup_iter": -1, "pixel_opt": {"type": "L1Loss", "loss_weight": 1.0},
                  **train},
    }


NEG = {"type": "PerceptualLoss", "layer_weights": {"relu1_2": 0.2, "relu2_2": 0.3, "relu3_3": 0.5},
       "vgg_type": "vgg16", "perceptual_weight": 0.001}


def test_srmodel_maps_to_the_preset_trains_plain_and_refuses_a_real_perceptual_loss(tmp_path):
    notes: list[str] = []
    config = _load(tmp_path, _edsr("SRModel", use_grad_clip=0.5, neg_iter=[10], ema_decay=0.999), notes)
    assert (config["model"]["name"], config["model"]["scale"], config["model"]["args"]) == ("edsr-baseline", 2, {})
    assert config["data"]["train"]["batch_size"] == 32 and config["data"]["train"]["enlarge"] == 100
    assert config["spn"]["enabled"] is False and config["train"]["grad_clip"] is None
    assert config["ema"]["decay"] == 0.999 and config["val"]["use_ema"] is True  # SRModel.test() runs net_g_ema
    joined = " ".join(notes)
    assert "use_grad_clip ignored" in joined and "train.neg_iter ignored: this model_type has no negatives" in joined
    with pytest.raises(SpnirError, match="perceptual_opt under a model_type without negatives"):
        _load(tmp_path, _edsr("SRModel", perceptual_opt=NEG))


@pytest.mark.parametrize("model_type", ["SRNegModel", "SwinIRNegModel"])
def test_single_negative_types_take_scalar_settings_and_default_neg_start_0999(tmp_path, model_type):
    notes: list[str] = []
    config = _load(tmp_path, _edsr(model_type, perceptual_opt=NEG, neg_iter=50, neg_decay=0.2, ema_decay=0.999), notes)
    spn = config["spn"]
    assert spn["enabled"] and spn["periods"] == [50] and spn["decays"] == [0.2]
    assert spn["init_decay"] == 0.999 and spn["adaptive_threshold"] is None  # SRNegModel: neg_start default 0.999
    assert config["val"]["use_ema"] is True
    assert "train.neg_start absent -> spn.init_decay 0.999 (the class's default)" in notes
    config = _load(tmp_path, _edsr(model_type, perceptual_opt=NEG, neg_iter=50, neg_start=0.3))
    assert config["spn"]["init_decay"] == 0.3 and config["spn"]["decays"] == [0.0]  # neg_decay default 0
    with pytest.raises(SpnirError, match=r"train.neg_iter=\[50, 100\]"):
        _load(tmp_path, _edsr(model_type, perceptual_opt=NEG, neg_iter=[50, 100], neg_decay=0.1))


@pytest.mark.parametrize("model_type", ["SRNegModel_Multi", "SwinIRNegModel_Multi"])
def test_multi_negative_types_reverse_the_periods_and_default_neg_start_001(tmp_path, model_type):
    notes: list[str] = []
    config = _load(tmp_path, _edsr(model_type, perceptual_opt=NEG, neg_iter=[100, 200, 500],
                                   neg_decay=[0.1, 0.2, 0.3], ema_decay=0.999, update_scaling=2.0), notes)
    spn = config["spn"]
    assert spn["periods"] == [500, 200, 100] and spn["decays"] == [0.1, 0.2, 0.3]
    assert spn["init_decay"] == 0.01 and config["val"]["use_ema"] is True
    assert any("update_scaling ignored" in n for n in notes)


def test_multi_negative_types_without_perceptual_opt_train_the_baseline(tmp_path):
    notes: list[str] = []
    config = _load(tmp_path, _edsr("SRNegModel_Multi", neg_iter=[100], neg_decay=[0.1]), notes)
    assert config["spn"]["enabled"] is False and any("computes no negative term" in n for n in notes)


def test_ffanet_network_outside_the_ffanet_classes_is_fed_unnormalised(tmp_path):
    options = _official()
    options["model_type"] = "SRNegModel_Multi"
    notes: list[str] = []
    config = _load(tmp_path, options, notes)
    assert config["model"]["args"] == {"input_norm": False} and config["val"]["use_ema"] is True
    assert config["spn"]["init_decay"] == 0.1


@pytest.mark.parametrize("neg_t,expected", [(None, 0.022), (0.05, 0.05)])
def test_adaptive_type_refreshes_adaptively_only(tmp_path, neg_t, expected):
    options = _official(**({} if neg_t is None else {"neg_t": neg_t}))
    options["model_type"] = "ImageRestorationModel_FFANet_Neg_Multi_Adaptive_DDP"
    options["train"].pop("neg_start")
    notes: list[str] = []
    config = _load(tmp_path, options, notes)
    spn = config["spn"]
    assert spn["periods"] == [0, 0, 0, 0] and len(spn["decays"]) == 4
    assert spn["adaptive_threshold"] == expected and spn["adaptive_decay"] == 0.001
    assert spn["init_decay"] == 0.01 and config["val"]["use_ema"] is False
    assert any("refreshes adaptively only" in n for n in notes)
    assert any("absent: the class's default" in n for n in notes if n.startswith("train.neg_t")) == (neg_t is None)


def test_neg_t_outside_the_adaptive_type_is_noted_as_unused(tmp_path):
    notes: list[str] = []
    config = _load(tmp_path, _official(neg_t=0.03), notes)
    assert config["spn"]["adaptive_threshold"] is None
    assert "train.neg_t ignored: this model_type refreshes periodically only" in notes


def _nafnet(**train) -> dict:
    return {
        "name": "nafnet", "model_type": "ImageRestorationModel", "scale": 1, "num_gpu": 1,
        "network_g": {"type": "NAFNet", "width": 32, "enc_blk_nums": [1, 1, 1, 28], "middle_blk_num": 1,
                      "dec_blk_nums": [1, 1, 1, 1]},
        "datasets": {"train": {"type": "PairedImageDataset", "dataroot_gt": "a", "dataroot_lq": "b", "gt_size": 256,
                               "batch_size_per_gpu": 4, "io_backend": {"type": "disk"}}},
        "train": {"total_iter": 10, "pixel_opt": {"type": "PSNRLoss", "loss_weight": 1},
                  "optim_g": {"type": "AdamW", "lr": 1e-3}, **train},
    }


_ABSENT = object()


@pytest.mark.parametrize("model_type", [m for m in MODEL_TYPES if m != "ImageRestorationModel"])
@pytest.mark.parametrize("value,expected", [(_ABSENT, None), (False, None), (0, None), (True, 1.0), (1, 1.0),
                                            (0.5, 0.5), (5, 5.0)])
def test_use_grad_clip_in_the_forks_classes_is_the_max_norm(tmp_path, model_type, value, expected):
    options = _official(**({} if value is _ABSENT else {"use_grad_clip": value}))
    options["model_type"] = model_type
    if MODEL_TYPES[model_type].negatives is None:
        options["train"].pop("perceptual_opt")
    if MODEL_TYPES[model_type].negatives == "single":
        options["train"].update(neg_iter=100, neg_decay=0.1)
    config = _load(tmp_path, options)
    # SRModel never reads use_grad_clip; the others call clip_grad_norm_(params, use_grad_clip)
    assert config["train"]["grad_clip"] == (None if model_type == "SRModel" else expected)


@pytest.mark.parametrize("value,expected", [(_ABSENT, 0.01), (True, 0.01), (0.5, 0.01), (1, 0.01),
                                            (False, None), (0, None)])
def test_use_grad_clip_in_nafnets_class_is_a_switch_for_001(tmp_path, value, expected):
    notes: list[str] = []
    config = _load(tmp_path, _nafnet(**({} if value is _ABSENT else {"use_grad_clip": value}), ema_decay=0.999), notes)
    assert config["train"]["grad_clip"] == expected
    assert config["ema"]["decay"] is None and "train.ema_decay ignored: this model_type keeps no EMA copy" in notes


def test_nafnet_class_has_no_negatives(tmp_path):
    with pytest.raises(SpnirError, match="perceptual_opt under a model_type without negatives"):
        _load(tmp_path, _nafnet(perceptual_opt=NEG, neg_iter=[100], neg_decay=[0.1]))


def test_every_model_type_maps_and_names_its_class_in_the_notes(tmp_path):
    for model_type, kind in MODEL_TYPES.items():
        options = _official()
        options["model_type"] = model_type
        if kind.negatives is None:
            options["train"].pop("perceptual_opt")
        if kind.negatives == "single":
            options["train"].update(neg_iter=100, neg_decay=0.1)
        notes: list[str] = []
        config = _load(tmp_path, options, notes)
        assert f"model_type {model_type}: mapped as {kind.source} trains" in notes
        assert config["spn"]["enabled"] == (kind.negatives is not None)
        assert config["val"]["use_ema"] == (kind.validates_ema or config["ema"]["decay"] is None)
        assert (config["model"]["args"].get("input_norm", True)) == kind.ffanet_input
        assert math.isclose(config["spn"]["init_decay"], 0.1) or kind.negatives is None
