"""Atomic, verified checkpoints: ``save(path, obj)`` / ``load(path)``.

A file is ``MAGIC``, one JSON header line (format version, kind, payload length, SHA-256)
and a ``torch.save`` payload (nested dicts / lists of tensors, numbers and strings). It is
written to a temporary file in the same directory, flushed, fsynced and renamed over the
target, so a crash leaves either the old checkpoint or the new one, never half of one.
:func:`load` checks the magic, the header, the length and the checksum before unpickling
(with ``weights_only=True``), and raises ``ValueError`` naming the file otherwise.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path

import torch

MAGIC = b"METARLCKPT\n"
FORMAT_VERSION = 1


def save(path, obj, *, kind: str = "checkpoint") -> None:
    """Write ``obj`` to ``path`` atomically (see the module docstring)."""
    path = Path(path)
    buf = io.BytesIO()
    torch.save(obj, buf)
    payload = buf.getvalue()
    header = json.dumps({"format_version": FORMAT_VERSION, "kind": kind, "length": len(payload),
                         "sha256": hashlib.sha256(payload).hexdigest()}).encode() + b"\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC + header + payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load(path, *, kind: str = "checkpoint"):
    """Read a file written by :func:`save`; ``ValueError`` if it is truncated, corrupt or of
    another kind or format version."""
    path = Path(path)
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        raise ValueError(f"{path}: not a metarl checkpoint (bad magic)")
    end = data.find(b"\n", len(MAGIC))
    try:
        header = json.loads(data[len(MAGIC):end])
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: corrupt checkpoint header") from e
    if header.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {header.get('format_version')}, this metarl reads "
                         f"{FORMAT_VERSION}")
    if header.get("kind") != kind:
        raise ValueError(f"{path}: a {header.get('kind')!r} file, expected {kind!r}")
    payload = data[end + 1:]
    if len(payload) != header.get("length"):
        raise ValueError(f"{path}: truncated checkpoint ({len(payload)} of {header.get('length')} bytes)")
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise ValueError(f"{path}: checkpoint checksum mismatch (corrupt file)")
    return torch.load(io.BytesIO(payload), weights_only=True)


def read_kind(path) -> str:
    """The ``kind`` a checkpoint was saved with (which learner wrote it), from its header alone."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(len(MAGIC) + 4096)
    if not head.startswith(MAGIC):
        raise ValueError(f"{path}: not a metarl checkpoint (bad magic)")
    end = head.find(b"\n", len(MAGIC))
    try:
        return str(json.loads(head[len(MAGIC):end])["kind"])
    except (ValueError, KeyError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: corrupt checkpoint header") from e
