"""Checksums of what spnir writes: a sha256 over every tensor (name, dtype, shape, bytes) and plain value.

A checkpoint spnir writes carries ``checksum`` beside its content; reading it recomputes the sum, so a file
whose bytes changed on disk (a bad copy, a failing drive) is refused instead of loading other numbers.
Files from elsewhere (official releases) have no checksum and are read as they are.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import torch

KEY = "checksum"
PREFIX = "sha256:"


def content_checksum(content: Any) -> str:
    """``"sha256:<hex>"`` of a nested structure of dicts, lists/tuples, tensors and plain values."""
    digest = hashlib.sha256()
    _feed(digest, content)
    return PREFIX + digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    if torch.is_tensor(value):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    elif isinstance(value, Mapping):
        digest.update(f"D{len(value)}".encode())
        for key in sorted(value, key=str):
            digest.update(f"K{key!r}".encode())
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):  # a round trip may turn tuples into lists: hash both alike
        digest.update(f"L{len(value)}".encode())
        for item in value:
            _feed(digest, item)
    else:
        digest.update(f"V{type(value).__name__}{value!r}".encode())


def with_checksum(content: Mapping[str, Any]) -> dict[str, Any]:
    """``content`` with its checksum added under ``"checksum"``."""
    body = {k: v for k, v in content.items() if k != KEY}
    return {**body, KEY: content_checksum(body)}


def verify(content: Mapping[str, Any], source: str) -> None:
    """Raise :class:`SpnirError` naming ``source`` if ``content`` carries a checksum that does not match."""
    from spnir.errors import SpnirError

    expected = content.get(KEY)
    if expected is None:
        return
    body = {k: v for k, v in content.items() if k != KEY}
    if content_checksum(body) != expected:
        raise SpnirError(f"{source}: damaged: checksum mismatch (the file's tensors changed after spnir wrote "
                         "it); use another copy or an older checkpoint")
