"""VGG feature extractor with BasicSR's layer names, loading torchvision-layout weight files.

``VGGFeatures("vgg16", ["relu1_2", "relu2_2", "relu3_3"])`` returns a dict of those feature maps and
computes nothing past the last one. Parameters never require gradients. A feature space is the weights *and* the
input convention they were trained with (:mod:`spnir.weights.vgg`): torchvision's (mean/std normalisation) or
Caffe's (x255, BGR, minus the BGR mean). The transform is applied to the input, never folded into the first
convolution (zero padding would then differ at the borders).
"""
from __future__ import annotations

import difflib
import os
from collections.abc import Iterable

import torch
from torch import nn

from spnir.errors import SpnirError
from spnir.weights.vgg import resolve_feature_space

# Convolution widths per block, and the names torchvision's ``features`` indices carry in BasicSR.
_BLOCKS = {
    "vgg16": (2, 2, 3, 3, 3),
    "vgg19": (2, 2, 4, 4, 4),
}
VGG_KINDS: tuple[str, ...] = tuple(_BLOCKS)
_WIDTHS = (64, 128, 256, 512, 512)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def layer_names(kind: str) -> list[str]:
    """BasicSR's names for the entries of torchvision's ``vgg.features``, in order."""
    if kind not in _BLOCKS:
        raise SpnirError(f"unknown VGG kind {kind!r}; expected one of {', '.join(_BLOCKS)}")
    names: list[str] = []
    for block, convs in enumerate(_BLOCKS[kind], start=1):
        for i in range(1, convs + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return names


def check_layers(kind: str, layers: Iterable[str], setting: str = "layers", features: str = "kind") -> None:
    """The rule :class:`VGGFeatures` enforces: at least one layer, each one of :func:`layer_names` of ``kind``;
    errors name ``setting`` and ``features`` (a config passes ``spn.layer_weights`` and ``spn.features``)."""
    names, layers = layer_names(kind), list(layers)
    if not layers:
        raise SpnirError(f"{setting} is empty: name at least one VGG layer")
    unknown = [name for name in layers if name not in names]
    if unknown:
        near = difflib.get_close_matches(unknown[0], names, n=1)
        hint = f" (did you mean {near[0]}?)" if near else ""
        raise SpnirError(f"{setting} names {unknown}{hint}, which {features} {kind} does not have; its layers: "
                         f"{', '.join(names)}")


class VGGFeatures(nn.Module):
    """Named VGG feature maps of an image batch in ``[0, 1]`` (or ``[-1, 1]`` with ``range_norm``).

    Args:
        kind: ``"vgg16"`` or ``"vgg19"``.
        layers: names to return (``conv1_1``, ``relu1_1``, ..., ``pool5``).
        vgg_weights: ``"imagenet"`` (torchvision's file in the torch hub cache), ``"imagenet-caffe"`` (Oxford's
            VGG16, Caffe convention), a path (``caffe:PATH`` / ``torchvision:PATH`` states its convention), or
            ``"random"`` (seeded Kaiming init; not the method's feature space). See :mod:`spnir.weights.vgg`.
        input_norm: transform the input as the weights expect (their convention); ``False`` feeds it as it is.
        range_norm: map inputs from ``[-1, 1]`` to ``[0, 1]`` first.
        seed: seed of the random weights.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        kind: str = "vgg16",
        layers: Iterable[str] = ("relu1_2", "relu2_2", "relu3_3"),
        vgg_weights: str | os.PathLike = "imagenet",
        input_norm: bool = True,
        range_norm: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        names = layer_names(kind)
        self.kind = kind
        self.layers = list(layers)
        check_layers(kind, self.layers)
        depth = max(names.index(name) for name in self.layers) + 1
        self.names = names[:depth]
        self.body = nn.Sequential(*_build_layers(kind, depth))
        space = resolve_feature_space(kind, vgg_weights, seed)
        if space.path is None:
            _random_init(self.body, seed)
        else:
            self.body.load_state_dict(_load_torchvision_features(space.path, kind, depth))
        self.feature_space = space.description
        self.convention = space.convention
        self.input_norm = input_norm
        self.range_norm = range_norm
        if space.convention == "caffe":  # x255, RGB -> BGR, minus the BGR mean: (x[:, ::-1] - mean/255) * 255
            mean, std = tuple(m / 255 for m in CAFFE_MEAN_BGR), (1 / 255,) * 3
        else:
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGGFeatures:
        # A fixed feature space: never in training mode (VGG has no dropout here, but stay explicit).
        return super().train(False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.shape[1] == 1:  # a grayscale image: VGG sees the channel replicated, as an RGB view of it
            x = x.expand(-1, 3, -1, -1)
        if self.range_norm:
            x = (x + 1) / 2
        if self.input_norm:
            if self.convention == "caffe":
                x = x.flip(1)
            x = (x - self.mean) / self.std
        wanted = set(self.layers)
        out: dict[str, torch.Tensor] = {}
        previous = None
        for name, layer in zip(self.names, self.body):
            # ReLU in place on a convolution output nobody asked for: one large allocation less per layer
            # (convolutions do not need their output for backward, so autograd allows it).
            x = torch.relu_(x) if isinstance(layer, nn.ReLU) and previous not in wanted else layer(x)
            if name in wanted:
                out[name] = x
            previous = name
        return out

    def extra_repr(self) -> str:
        return f"layers={self.layers}, feature_space={self.feature_space!r}"


def _build_layers(kind: str, depth: int) -> list[nn.Module]:
    """The first ``depth`` entries of torchvision's ``vgg.features`` for ``kind``."""
    layers: list[nn.Module] = []
    channels = 3
    for convs, width in zip(_BLOCKS[kind], _WIDTHS):
        for _ in range(convs):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=False)]
            channels = width
        layers.append(nn.MaxPool2d(2, 2))
        if len(layers) >= depth:
            break
    return layers[:depth]


def _random_init(body: nn.Sequential, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for layer in body:
        if isinstance(layer, nn.Conv2d):
            fan_out = layer.out_channels * layer.kernel_size[0] * layer.kernel_size[1]
            with torch.no_grad():
                layer.weight.normal_(0.0, (2.0 / fan_out) ** 0.5, generator=generator)
                if layer.bias is not None:
                    layer.bias.zero_()


def _conv_shapes(kind: str) -> dict[str, tuple[int, ...]]:
    """``features`` state_dict keys of torchvision's ``kind`` and their shapes."""
    shapes: dict[str, tuple[int, ...]] = {}
    index, channels = 0, 3
    for convs, width in zip(_BLOCKS[kind], _WIDTHS):
        for _ in range(convs):
            shapes[f"{index}.weight"] = (width, channels, 3, 3)
            shapes[f"{index}.bias"] = (width,)
            index, channels = index + 2, width
        index += 1
    return shapes


def _load_torchvision_features(path: os.PathLike, kind: str, depth: int) -> dict[str, torch.Tensor]:
    """Read a torchvision-layout VGG file (whole model or ``features`` only; ``.pth`` or ``.safetensors``) and
    check it is ``kind``."""
    state: object
    if str(path).endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise SpnirError(f"{path}: cannot load as a safetensors file ({exc})") from exc
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]  # torch's advice runs many lines
            raise SpnirError(f"{path}: cannot load as a weights-only torch file ({reason})") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise SpnirError(f"{path}: expected a state_dict, got {type(state).__name__}")
    features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    if not features:
        features = dict(state)
    expected = _conv_shapes(kind)
    if set(features) != set(expected):
        other = next((k for k in _BLOCKS if k != kind and set(features) == set(_conv_shapes(k))), None)
        found = f"a {other} file" if other else f"keys {sorted(features)[:6]}..."
        raise SpnirError(f"{path}: expected torchvision {kind} weights (features.N.weight/bias), found {found}")
    for key, tensor in features.items():
        if tuple(tensor.shape) != expected[key]:
            raise SpnirError(
                f"{path}: features.{key} has shape {tuple(tensor.shape)}, expected {expected[key]} for {kind}"
            )
    return {k: v for k, v in features.items() if int(k.split(".")[0]) < depth}
