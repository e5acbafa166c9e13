"""Atomic, checksummed files for the memories (``save`` / ``load``).

Layout of a file::

    b"METARLMEM\\n"                 10 bytes, the magic
    header length                   8 bytes, little-endian unsigned
    header                          UTF-8 JSON: format version, kind, the object's settings,
                                    every tensor's shape and dtype, payload length, payload sha256
    payload                         torch.save of {name: CPU tensor}, read back with weights_only=True

A save writes a temporary file in the target's directory, flushes and fsyncs it, then
``os.replace``-s it over the target (and fsyncs the directory where the OS allows), so a
crash leaves either the old file or the new one, never a mix. A load reads and checks the
whole file (magic, header, length, checksum, shapes) before it builds anything, so a
truncated or corrupted file raises ``ValueError`` naming the file and changes nothing.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import struct
import tempfile

import torch

MAGIC = b"METARLMEM\n"
FORMAT_VERSION = 1
_LEN = struct.Struct("<Q")


def save(path, kind: str, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Write ``meta`` (JSON-able settings) and ``tensors`` to ``path`` atomically."""
    path = os.fspath(path)
    buf = io.BytesIO()
    torch.save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, buf)
    payload = buf.getvalue()
    header = json.dumps({
        "format_version": FORMAT_VERSION, "kind": kind, "meta": meta,
        "tensors": {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
                    for k, v in tensors.items()},
        "payload_bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest(),
    }, sort_keys=True).encode()
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC)
            f.write(_LEN.pack(len(header)))
            f.write(header)
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):   # make the rename itself durable (POSIX); not possible everywhere
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def load(path, kind: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read and verify a file written by :func:`save` for ``kind``; returns ``(meta, tensors)`` (CPU)."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()

    def bad(why: str) -> ValueError:
        return ValueError(f"{path!r} is not a valid metarl {kind} file: {why}")

    if not data.startswith(MAGIC):
        raise bad("bad magic bytes (not a metarl memory file, or its start is damaged)")
    pos = len(MAGIC)
    if len(data) < pos + _LEN.size:
        raise bad("truncated header")
    (hlen,) = _LEN.unpack_from(data, pos)
    pos += _LEN.size
    if len(data) < pos + hlen:
        raise bad("truncated header")
    try:
        header = json.loads(data[pos:pos + hlen].decode())
        version, file_kind = header["format_version"], header["kind"]
        meta, specs = header["meta"], header["tensors"]
        nbytes, digest = int(header["payload_bytes"]), header["sha256"]
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise bad(f"corrupt header ({e})") from None
    if version != FORMAT_VERSION:
        raise bad(f"format version {version}, this metarl reads version {FORMAT_VERSION}")
    if file_kind != kind:
        raise bad(f"it holds a {file_kind}")
    payload = data[pos + hlen:]
    if len(payload) != nbytes:
        raise bad(f"payload is {len(payload)} bytes, the header says {nbytes} (truncated or appended to)")
    if hashlib.sha256(payload).hexdigest() != digest:
        raise bad("checksum mismatch (the file is corrupted)")
    try:
        tensors = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as e:   # a payload that passed the checksum but does not unpickle
        raise bad(f"unreadable payload ({e})") from None
    if not isinstance(tensors, dict) or set(tensors) != set(specs):
        raise bad("payload does not match the header's tensor list")
    for name, spec in specs.items():
        t = tensors[name]
        if (not isinstance(t, torch.Tensor) or list(t.shape) != spec["shape"]
                or str(t.dtype).removeprefix("torch.") != spec["dtype"]):
            raise bad(f"tensor {name!r} does not match the header")
    return meta, tensors


class classmethod_or_method:
    """``Cls.load(path)`` builds a new object; ``obj.load(path)`` loads into ``obj``.

    ``for_class(cls, *args, **kw)`` and ``for_instance(obj, *args, **kw)``.
    """

    def __init__(self, for_class, for_instance):
        self.for_class, self.for_instance = for_class, for_instance
        self.__doc__ = for_class.__doc__

    def __get__(self, obj, cls=None):
        if obj is None:
            return self.for_class.__get__(cls, type(cls))
        return self.for_instance.__get__(obj, cls)
