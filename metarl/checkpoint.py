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
    """Read a file written by :func:`save`; ``ValueError`` naming the file if it is truncated,
    corrupt (header or payload), or of another kind or format version."""
    path = Path(path)
    data = path.read_bytes()
    header, end = _header(path, data)
    if header["format_version"] != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {header['format_version']}, this metarl reads {FORMAT_VERSION}")
    if header["kind"] != kind:
        raise ValueError(f"{path}: a {header['kind']!r} file, expected {kind!r}")
    payload = data[end + 1:]
    if len(payload) != header["length"]:
        raise ValueError(f"{path}: truncated checkpoint ({len(payload)} of {header['length']} bytes)")
    if hashlib.sha256(payload).hexdigest() != header["sha256"]:
        raise ValueError(f"{path}: checkpoint checksum mismatch (corrupt file)")
    try:
        return torch.load(io.BytesIO(payload), weights_only=True)
    except Exception as e:   # a payload that matches its checksum but does not unpickle (or is not weights-only)
        raise ValueError(f"{path}: unreadable checkpoint payload ({type(e).__name__}: {e})") from None


def read_kind(path) -> str:
    """The ``kind`` a checkpoint was saved with (which learner wrote it), from its header alone."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(len(MAGIC) + _MAX_HEADER)
    return _header(path, head)[0]["kind"]


_MAX_HEADER = 4096     # bytes: save writes ~150
_FIELDS = {"format_version": int, "kind": str, "length": int, "sha256": str}


def _header(path: Path, data: bytes) -> tuple[dict, int]:
    """The checked header at the start of ``data`` and the position of its closing newline;
    ``ValueError`` naming ``path`` unless it is a JSON object with every field of the right type."""
    if not data.startswith(MAGIC):
        raise ValueError(f"{path}: not a metarl checkpoint (bad magic)")
    end = data.find(b"\n", len(MAGIC), len(MAGIC) + _MAX_HEADER)
    if end < 0:
        raise ValueError(f"{path}: corrupt checkpoint header (no end of line in its first {_MAX_HEADER} bytes)")
    try:
        header = json.loads(data[len(MAGIC):end])
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ValueError(f"{path}: corrupt checkpoint header ({type(e).__name__}: {e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: corrupt checkpoint header (a JSON {type(header).__name__}, expected an object)")
    for name, typ in _FIELDS.items():
        value = header.get(name)
        if not isinstance(value, typ) or isinstance(value, bool) or (typ is int and value < 0):
            raise ValueError(f"{path}: corrupt checkpoint header ({name!r} is {value!r})")
    return header, end
