"""Atomic, checksummed files for the memories (``save`` / ``load``).

Layout of a file (format version 2)::

    b"METARLMEM\\n"                 10 bytes, the magic
    header length                   8 bytes, little-endian unsigned
    header                          UTF-8 JSON: format version, kind, the object's settings,
                                    every tensor's shape and dtype, payload length, payload sha256
    header sha256                   32 bytes, the digest of the header length and the header
    payload                         torch.save of {name: CPU tensor}, read back with weights_only=True

So every byte after the magic is under a checksum: the header's own, and through the header
the payload's. Version 1 files (written before the header had its checksum) are still read;
their header is checked field by field only.

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
FORMAT_VERSION = 2
LEGACY_VERSION = 1      # no header checksum; read, never written
_LEN = struct.Struct("<Q")
_DIGEST_BYTES = 32      # sha256


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
    head = _LEN.pack(len(header)) + header
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC)
            f.write(head)
            f.write(hashlib.sha256(head).digest())
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
    """Read and verify a file written by :func:`save` for ``kind``; returns ``(meta, tensors)`` (CPU).

    Any damage (truncation, a flipped byte in the header or the payload, a header of the wrong
    shape, a payload that does not unpickle or does not match the header) raises ``ValueError``
    naming the file, before anything is built.
    """
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
    end = pos + _LEN.size + hlen
    if len(data) < end:
        raise bad("truncated header")
    raw = data[pos + _LEN.size:end]
    if hashlib.sha256(data[pos:end]).digest() == data[end:end + _DIGEST_BYTES]:
        header, payload = _parse_header(raw, bad), data[end + _DIGEST_BYTES:]
        if header["format_version"] != FORMAT_VERSION:
            raise bad(f"format version {header['format_version']}, this metarl reads versions "
                      f"{LEGACY_VERSION} and {FORMAT_VERSION}")
    else:   # a damaged header, or a version 1 file (no header checksum)
        header, payload = _parse_header(raw, bad), data[end:]
        if header["format_version"] == FORMAT_VERSION:
            raise bad("header checksum mismatch (the header is corrupted)")
        if header["format_version"] != LEGACY_VERSION:
            raise bad(f"format version {header['format_version']}, this metarl reads versions "
                      f"{LEGACY_VERSION} and {FORMAT_VERSION}")
    if header["kind"] != kind:
        raise bad(f"it holds a {header['kind']}")
    nbytes, specs = header["payload_bytes"], header["tensors"]
    if len(payload) != nbytes:
        raise bad(f"payload is {len(payload)} bytes, the header says {nbytes} (truncated or appended to)")
    if hashlib.sha256(payload).hexdigest() != header["sha256"]:
        raise bad("checksum mismatch (the file is corrupted)")
    try:
        tensors = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as e:   # a payload that passed the checksum but does not unpickle
        raise bad(f"unreadable payload ({type(e).__name__}: {e})") from None
    if not isinstance(tensors, dict) or set(tensors) != set(specs):
        raise bad("payload does not match the header's tensor list")
    for name, spec in specs.items():
        t = tensors[name]
        if (not isinstance(t, torch.Tensor) or list(t.shape) != spec["shape"]
                or str(t.dtype).removeprefix("torch.") != spec["dtype"]):
            raise bad(f"tensor {name!r} does not match the header")
    return header["meta"], tensors


def _parse_header(raw: bytes, bad) -> dict:
    """The header JSON, with every field :func:`load` reads checked for its type; else ``bad(why)``."""
    try:
        header = json.loads(raw.decode())
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise bad(f"corrupt header ({type(e).__name__}: {e})") from None

    def is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    fields = {"format_version": is_int, "kind": lambda v: isinstance(v, str), "meta": lambda v: isinstance(v, dict),
              "tensors": lambda v: isinstance(v, dict), "payload_bytes": lambda v: is_int(v) and v >= 0,
              "sha256": lambda v: isinstance(v, str)}
    if not isinstance(header, dict):
        raise bad(f"corrupt header (a JSON {type(header).__name__}, expected an object)")
    for name, ok in fields.items():
        if name not in header:
            raise bad(f"corrupt header (no {name!r} field)")
        if not ok(header[name]):
            raise bad(f"corrupt header ({name!r} is {header[name]!r})")
    for name, spec in header["tensors"].items():
        if (not isinstance(spec, dict) or not isinstance(spec.get("shape"), list)
                or not all(is_int(n) and n >= 0 for n in spec["shape"]) or not isinstance(spec.get("dtype"), str)):
            raise bad(f"corrupt header (tensor {name!r} is described as {spec!r})")
    return header


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
