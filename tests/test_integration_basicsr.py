"""spnir.integrations.basicsr: the fork's options read as its classes read them, the SPN classes against a
stand-in with SRModel's calling contract, and (only where ``basicsr`` imports) a real BasicSR training that
resumes bit-exactly. docs/integrations.md records the runs against BasicSR master and NAFNet's fork."""
from __future__ import annotations

import copy
import importlib
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

from spnir.errors import SpnirError
from spnir.integrations import basicsr as adapter
from spnir.integrations.basicsr import CLASSES, NegativeTerm, negative_model_class, negative_settings
from spnir.train.basicsr import MODEL_TYPES

# train: as the fork's options/FFANet_RESIDE_IN_fromScratch.yml spells it (perceptual_opt is the negative term)
FORK_NEGATIVE_TERM = {"type": "PerceptualLoss", "layer_weights": {"relu1_2": 0.2, "relu2_2": 0.3, "relu3_3": 0.5},
                      "vgg_type": "vgg16", "use_input_norm": True, "range_norm": False, "perceptual_weight": 0.001,
                      "style_weight": 0, "criterion": "l1"}
FORK_TRAIN = {"use_grad_norm": 0.05, "ema_decay": 0.999, "neg_decay": [0.1, 0.1, 0.1, 0.1],
              "neg_iter": [100, 200, 500, 1000], "neg_start": 0.1, "perceptual_opt": FORK_NEGATIVE_TERM}


def _kind(model_type: str):
    return CLASSES[model_type][2]


def test_multi_negative_options_read_as_the_fork_reads_them():
    notes: list[str] = []
    settings = negative_settings({"model_type": "SRNegModel_Multi", "train": FORK_TRAIN}, _kind("SRNegModel_Multi"),
                                 notes)
    assert settings == {"layer_weights": {"relu1_2": 0.2, "relu2_2": 0.3, "relu3_3": 0.5}, "features": "vgg16",
                        "input_norm": True, "range_norm": False, "weight": 0.001,
                        "periods": [1000, 500, 200, 100], "decays": [0.1, 0.1, 0.1, 0.1], "init_decay": 0.1,
                        "vgg_weights": "imagenet"}
    assert any("reverse order" in note for note in notes)


def test_one_negative_defaults_are_the_fork_classs():
    train = {"neg_iter": 2, "perceptual_opt": {**FORK_NEGATIVE_TERM, "vgg_weights": "random"}}
    settings = negative_settings({"model_type": "SRNegModel", "train": train}, _kind("SRNegModel"), [])
    assert (settings["periods"], settings["decays"], settings["init_decay"]) == ([2], [0.0], 0.999)
    assert settings["vgg_weights"] == "random"
    single = negative_settings({"train": train}, _kind("ImageRestorationNegModel"), [])
    multi = negative_settings({"train": {**train, "neg_iter": [2], "neg_decay": [0.5]}},
                              _kind("ImageRestorationNegModel_Multi"), [])
    assert (single["init_decay"], multi["init_decay"]) == (0.999, 0.01)


@pytest.mark.parametrize("change, named", [
    ({"train": {"neg_iter": [2, 4]}}, "train.neg_iter"),
    ({"path_neg": {"pretrain_network_g_neg": "neg.pth"}}, "path_neg.pretrain_network_g_neg"),
    ({"network_g_net": {"type": "EDSR"}}, "network_g_net"),
    ({"train": {"perceptual_opt": {**FORK_NEGATIVE_TERM, "criterion": "l2"}}}, "train.perceptual_opt.criterion"),
    ({"train": {"perceptual_opt": {**FORK_NEGATIVE_TERM, "style_weight": 1.0}}}, "train.perceptual_opt.style_weight"),
])
def test_options_the_classes_cannot_honour_are_refused_by_name(change, named):
    opt = {"model_type": "SRNegModel", "train": {"neg_iter": 2, "perceptual_opt": FORK_NEGATIVE_TERM}}
    for key, value in change.items():
        opt[key] = {**opt.get(key, {}), **value}
    with pytest.raises(SpnirError, match=named.replace(".", r"\.")):
        negative_settings(opt, _kind("SRNegModel"), [])


def test_no_perceptual_opt_means_no_negative_term():
    notes: list[str] = []
    assert negative_settings({"train": {"neg_iter": 2}}, _kind("SRNegModel"), notes) is None
    assert any("SPN is off" in note for note in notes)


def test_the_classes_base_on_basicsr_and_nafnet_with_the_forks_semantics():
    assert {name: (base, kind.negatives) for name, (_, base, kind) in CLASSES.items()} == {
        "SRNegModel": ("SRModel", "single"), "SRNegModel_Multi": ("SRModel", "multi"),
        "SwinIRNegModel": ("SwinIRModel", "single"), "SwinIRNegModel_Multi": ("SwinIRModel", "multi"),
        "ImageRestorationNegModel": ("ImageRestorationModel", "single"),
        "ImageRestorationNegModel_Multi": ("ImageRestorationModel", "multi")}
    assert CLASSES["SRNegModel"][2] is MODEL_TYPES["SRNegModel"]
    assert CLASSES["ImageRestorationNegModel"][2].clip == "nafnet"  # NAFNet's own clipping stays


def _network(opt: dict) -> nn.Module:
    return nn.Conv2d(3, 3, 3, padding=1)


class StandInSRModel:
    """What spnir's classes rely on in BasicSR's SRModel (basicsr/models/sr_model.py), nothing more: the loss
    objects come from ``opt['train']`` in ``init_training_settings``; ``optimize_parameters`` calls
    ``cri_perceptual(output, gt) -> (l_percep, l_style)``, adds ``l_percep`` to the total, steps ``optimizer_g``
    once and reports ``log_dict``."""

    def __init__(self, opt: dict) -> None:
        self.opt = opt
        self.net_g = _network(opt["network_g"])
        self.init_training_settings()

    def init_training_settings(self) -> None:
        train = self.opt["train"]
        self.base_saw_perceptual_opt = "perceptual_opt" in train
        self.cri_pix = nn.L1Loss()
        self.cri_perceptual = None
        self.optimizer_g = torch.optim.Adam(self.net_g.parameters(), lr=0.01)

    def feed_data(self, lq: torch.Tensor, gt: torch.Tensor) -> None:
        self.lq, self.gt = lq, gt

    def optimize_parameters(self, current_iter: int) -> None:
        self.optimizer_g.zero_grad()
        self.output = self.net_g(self.lq)
        loss_dict = OrderedDict(l_pix=self.cri_pix(self.output, self.gt))
        l_total = loss_dict["l_pix"]
        if self.cri_perceptual:
            l_percep, _ = self.cri_perceptual(self.output, self.gt)
            l_total = l_total + l_percep
            loss_dict["l_percep"] = l_percep
        l_total.backward()
        self.optimizer_g.step()
        self.log_dict = OrderedDict((k, float(v.detach())) for k, v in loss_dict.items())


def _opt(**train) -> dict:
    negative = {**FORK_NEGATIVE_TERM, "layer_weights": {"relu1_2": 1.0}, "perceptual_weight": 0.5,
                "vgg_weights": "random"}
    return {"model_type": "SRNegModel", "manual_seed": 3, "network_g": {"type": "Conv"},
            "train": {"neg_iter": 2, "neg_decay": 0.5, "neg_start": 0.5, "perceptual_opt": negative, **train}}


def _train(model, steps: int) -> None:
    batch = torch.Generator().manual_seed(1)
    for i in range(1, steps + 1):
        model.feed_data(torch.rand(2, 3, 16, 16, generator=batch), torch.rand(2, 3, 16, 16, generator=batch))
        model.optimize_parameters(i)


def test_the_class_adds_the_signed_negative_term_and_steps_the_negatives_with_the_optimizer():
    cls = negative_model_class("SRNegModel", StandInSRModel, _kind("SRNegModel"), _network)
    model = cls(_opt())
    assert not model.base_saw_perceptual_opt  # the base class builds no perceptual loss towards the ground truth
    assert isinstance(model.cri_perceptual, NegativeTerm)
    _train(model, 3)
    assert model.spn.source.steps == 3
    assert set(model.log_dict) == {"l_pix", "l_neg"} and model.log_dict["l_neg"] < 0


def test_use_grad_clip_clips_before_the_step_as_the_forks_class():
    cls = negative_model_class("SRNegModel", StandInSRModel, _kind("SRNegModel"), _network)
    clipped, free = cls(_opt(use_grad_clip=1e-4)), cls(_opt())
    _train(clipped, 1)
    _train(free, 1)
    clipped_norm, free_norm = (torch.cat([p.grad.flatten() for p in m.net_g.parameters()]).norm()
                               for m in (clipped, free))
    assert clipped_norm <= 1e-4 * 1.001 < free_norm


def test_the_negatives_resume_from_the_optimizer_state_as_basicsr_saves_it(tmp_path):
    cls = negative_model_class("SRNegModel", StandInSRModel, _kind("SRNegModel"), _network)
    model = cls(_opt())
    _train(model, 3)  # refreshed at step 2: the negative is no longer what a new run starts from
    torch.save({"optimizers": [model.optimizer_g.state_dict()]}, tmp_path / "3.state")
    resumed = cls(_opt())
    resumed.net_g.load_state_dict(model.net_g.state_dict())
    before = copy.deepcopy(resumed.spn.source.state_dict())
    resumed.optimizer_g.load_state_dict(torch.load(tmp_path / "3.state", weights_only=True)["optimizers"][0])
    after = resumed.spn.source.state_dict()
    assert not all(torch.equal(before[k], after[k]) for k in before if torch.is_tensor(before[k]))
    assert all(torch.equal(v, after[k]) for k, v in model.spn.source.state_dict().items() if torch.is_tensor(v))
    assert resumed.spn.source.steps == 3


# Stand-in packages with only the layout register() reads: BasicSR master's MODEL_REGISTRY
# (basicsr/utils/registry.py, a name registered twice is an error) and NAFNet's model module list with its
# create_model lookup (basicsr/models/__init__.py). The real packages are run in docs/integrations.md.
STAND_INS = {
    "master": {
        "utils/__init__.py": "",
        "utils/registry.py": """
class Registry:
    def __init__(self):
        self._obj_map = {}
    def register(self, obj):
        assert obj.__name__ not in self._obj_map, obj.__name__
        self._obj_map[obj.__name__] = obj
    def get(self, name):
        return self._obj_map[name]
    def __contains__(self, name):
        return name in self._obj_map
MODEL_REGISTRY = Registry()
""",
        "archs/__init__.py": "def build_network(opt):\n    raise NotImplementedError\n",
        "models/__init__.py": "",
        "models/sr_model.py": "class SRModel:\n    pass\n",
    },
    "nafnet": {
        "utils/__init__.py": "",  # no registry.py
        "models/__init__.py": """
from basicsr.models import image_restoration_model
_model_modules = [image_restoration_model]
def find_model(model_type):
    for module in _model_modules:
        model_cls = getattr(module, model_type, None)
        if model_cls is not None:
            return model_cls
""",
        "models/archs/__init__.py": "def define_network(opt):\n    raise NotImplementedError\n",
        "models/image_restoration_model.py": "class ImageRestorationModel:\n    pass\n",
    },
}


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    """Writes a stand-in ``basicsr`` of a layout and makes it the one imported (a real one is hidden meanwhile)."""
    def make(layout: str):
        for relative, text in {"__init__.py": "", **STAND_INS[layout]}.items():
            path = tmp_path / layout / "basicsr" / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        monkeypatch.syspath_prepend(str(tmp_path / layout))
        return importlib.import_module("basicsr")

    for name in [m for m in sys.modules if m == "basicsr" or m.startswith("basicsr.")]:
        monkeypatch.delitem(sys.modules, name)
    yield make
    for name in [m for m in sys.modules if m == "basicsr" or m.startswith("basicsr.")]:
        del sys.modules[name]


def test_register_adds_the_classes_whose_base_exists_to_basicsrs_registry_once(stand_in):
    stand_in("master")
    registry = importlib.import_module("basicsr.utils.registry").MODEL_REGISTRY
    base = importlib.import_module("basicsr.models.sr_model").SRModel
    assert adapter.register() == ["SRNegModel", "SRNegModel_Multi"]  # the stand-in has no swinir_model
    assert adapter.register() == ["SRNegModel", "SRNegModel_Multi"]  # again: harmless
    assert registry.get("SRNegModel").__bases__ == (base,) and registry.get("SRNegModel_Multi") is not base


def test_register_refuses_a_name_basicsr_has_for_a_class_of_its_own(stand_in):
    stand_in("master")
    registry = importlib.import_module("basicsr.utils.registry").MODEL_REGISTRY
    registry.register(type("SRNegModel", (), {}))  # as in the SPN authors' fork
    with pytest.raises(SpnirError, match="already registers a model SRNegModel"):
        adapter.register()


def test_register_appends_the_classes_to_nafnets_model_modules_once(stand_in):
    stand_in("nafnet")
    models = importlib.import_module("basicsr.models")
    assert adapter.register() == ["ImageRestorationNegModel", "ImageRestorationNegModel_Multi"]
    adapter.register()
    assert len(models._model_modules) == 2
    found = models.find_model("ImageRestorationNegModel_Multi")
    assert found.__bases__ == (importlib.import_module("basicsr.models.image_restoration_model").ImageRestorationModel,)


def test_without_basicsr_register_and_the_command_say_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "basicsr", None)  # an import of basicsr fails, as where it is not installed
    with pytest.raises(SpnirError, match="PyPI's basicsr 1.4.2 does not import"):
        adapter.register()
    assert adapter.main() == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("spnir.integrations.basicsr: error: basicsr could not be imported") and "\n" not in err


def _basicsr_master():
    try:
        train = importlib.import_module("basicsr.train")
    except ImportError as exc:
        pytest.skip(f"basicsr is not importable here ({exc}); docs/integrations.md records the run on BasicSR master")
    if not hasattr(train, "train_pipeline"):
        pytest.skip("this basicsr has no train_pipeline (NAFNet's fork?); docs/integrations.md records that run")
    return train


OPTIONS = """
name: spn_resume
model_type: SRNegModel
scale: 2
num_gpu: 0
manual_seed: 10
datasets:
  train: {{name: one, type: PairedImageDataset, dataroot_gt: {root}/gt, dataroot_lq: {root}/lq,
          io_backend: {{type: disk}}, gt_size: 16, use_hflip: false, use_rot: false, num_worker_per_gpu: 0,
          batch_size_per_gpu: 1, dataset_enlarge_ratio: 1, prefetch_mode: ~}}
network_g: {{type: EDSR, num_in_ch: 3, num_out_ch: 3, num_feat: 8, num_block: 1, upscale: 2, img_range: 255.}}
path: {{pretrain_network_g: ~, strict_load_g: true, resume_state: ~}}
train:
  ema_decay: 0.9
  neg_iter: 2
  neg_decay: 0.5
  neg_start: 0.5
  use_grad_clip: 0.5
  optim_g: {{type: Adam, lr: !!float 1e-2, betas: [0.9, 0.99]}}
  scheduler: {{type: MultiStepLR, milestones: [3], gamma: 0.5}}
  total_iter: 4
  warmup_iter: -1
  pixel_opt: {{type: L1Loss, loss_weight: 1.0, reduction: mean}}
  perceptual_opt: {{type: PerceptualLoss, layer_weights: {{relu1_2: 1.0}}, vgg_type: vgg16, perceptual_weight: 0.1,
                   style_weight: 0, criterion: l1, vgg_weights: random}}
logger: {{print_freq: 1, save_checkpoint_freq: 2, use_tb_logger: false}}
"""


def test_basicsr_master_resume_continues_the_negatives_bit_exactly(tmp_path, monkeypatch):
    """One image, no augmentation: every iteration sees the same batch, so a resumed run equals an uninterrupted
    one exactly when BasicSR restores the network, Adam, the scheduler, the EMA and the negatives."""
    _basicsr_master()
    cv2 = pytest.importorskip("cv2")
    for folder, size in (("gt", 16), ("lq", 8)):
        (tmp_path / folder).mkdir()
        image = torch.Generator().manual_seed(size)
        pixels = (torch.rand(size, size, 3, generator=image) * 255).byte().numpy()
        cv2.imwrite(str(tmp_path / folder / "a.png"), pixels)
    (tmp_path / "opt.yml").write_text(OPTIONS.format(root=tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["spnir.integrations.basicsr", "-opt", "opt.yml"])
    assert adapter.main() == 0
    run = Path("experiments/spn_resume")
    uninterrupted = torch.load(run / "training_states/4.state", weights_only=True)
    weights = torch.load(run / "models/net_g_4.pth", weights_only=True)
    for stale in (run / "training_states/4.state", run / "models/net_g_4.pth", run / "models/net_g_latest.pth"):
        stale.unlink()
    monkeypatch.setattr(sys, "argv", ["spnir.integrations.basicsr", "-opt", "opt.yml", "--auto_resume"])
    assert adapter.main() == 0
    resumed = torch.load(run / "training_states/4.state", weights_only=True)
    spn, spn_resumed = uninterrupted["optimizers"][0]["spnir"], resumed["optimizers"][0]["spnir"]
    assert spn_resumed["negatives._extra_state"]["steps"] == 4
    assert spn.keys() == spn_resumed.keys()
    assert all(torch.equal(v, spn_resumed[k]) for k, v in spn.items() if torch.is_tensor(v))
    resumed_weights = torch.load(run / "models/net_g_4.pth", weights_only=True)
    for key in ("params", "params_ema"):
        assert all(torch.equal(v, resumed_weights[key][k]) for k, v in weights[key].items())
