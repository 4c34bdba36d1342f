"""pick_device: the one device rule of training, `spnir eval` and `spnir restore`."""
from __future__ import annotations

import pytest
import torch

from spnir.cli import main
from spnir.device import pick_device
from spnir.errors import SpnirError
from spnir.train.distributed import init_distributed

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a CUDA device")


def test_cpu_and_auto():
    assert pick_device("cpu") == torch.device("cpu")
    expected = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    assert pick_device("auto") == expected and pick_device(None) == expected


def test_unknown_value_names_the_setting():
    with pytest.raises(SpnirError, match=r"--device = 'gpu'; expected auto, cpu, cuda or cuda:N"):
        pick_device("gpu", setting="--device")


@no_gpu
def test_cuda_without_a_gpu_is_an_error_everywhere(tmp_path, capsys):
    with pytest.raises(SpnirError, match="train.device = cuda, but torch sees no CUDA device"):
        init_distributed("cuda")
    assert init_distributed("auto").device == torch.device("cpu")
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    assert main(["restore", str(image), "--checkpoint", str(weights), "--out", str(tmp_path / "out"),
                 "--device", "cuda"]) == 2
    assert "--device = cuda, but torch sees no CUDA device" in capsys.readouterr().err
    assert main(["eval", "--scale", "2", "--data", str(tmp_path), "--device", "cuda:1"]) == 2
    assert "--device = cuda:1, but torch sees no CUDA device" in capsys.readouterr().err
    assert main(["restore", str(image), "--checkpoint", str(weights), "--out", str(tmp_path / "out"), "--half"]) == 2
    assert "--half needs a CUDA device" in capsys.readouterr().err
