"""Regression tests for the file and id defects of issue 18 in the memories and checkpoints: the
memory files' header under the checksum, counters (``next_id``, the LRU clock, fill counts) checked
against what is stored, every damaged or crafted header or payload refused with a ``ValueError``
naming the file (fuzzed), ids near ``2**63``, and keys whose squared norm overflows float32.
"""
import hashlib
import io
import json
import pickle
import struct

import numpy as np
import pytest
import torch

from metarl import checkpoint
from metarl.memory import DND, BatchedIndex, FlatIndex, _io

KINDS = ["FlatIndex", "BatchedIndex", "DND"]


def make(kind):
    """A small memory of each kind with entries, removals (flat) and LRU uses behind it."""
    g = torch.Generator().manual_seed(0)
    if kind == "FlatIndex":
        index = FlatIndex(4, capacity=50)
        index.add(torch.randn(30, 4, generator=g))
        index.add_with_ids(torch.randn(3, 4, generator=g), [100, 7_000, 55])
        index.remove_ids([3, 55])
        index.search(torch.randn(2, 4, generator=g), 3)
        return index
    if kind == "BatchedIndex":
        index = BatchedIndex(2, 3, capacity=4)
        for _ in range(3):
            index.add(torch.randn(2, 3, 3, generator=g))
        index.search(torch.randn(2, 2, 3, generator=g), 2)
        return index
    dnd = DND(2, key_dim=3, capacity=5, k=2)
    dnd.write(torch.randn(6, 3, generator=g), torch.randn(6, generator=g), torch.tensor([0, 1, 0, 1, 0, 0]))
    dnd.lookup(torch.randn(2, 3, generator=g))
    return dnd


def state(obj):
    """Everything a load may change, as plain values."""
    if isinstance(obj, FlatIndex):
        meta, tensors = obj._state()
        return meta, {k: v.clone() for k, v in tensors.items()}, dict(obj._id_to_slot), sorted(obj._free)
    if isinstance(obj, BatchedIndex):
        return obj._clock, {name: getattr(obj, name).clone() for name in obj._TENSORS}
    return {k: v.clone() for k, v in obj.state_dict().items()}


def assert_same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    else:
        assert a == b


def split(data: bytes):
    """A memory file as ``(header dict, payload bytes)`` (version 2: a header checksum between them)."""
    (hlen,) = struct.unpack_from("<Q", data, len(_io.MAGIC))
    start = len(_io.MAGIC) + 8
    header = json.loads(data[start:start + hlen])
    return header, data[start + hlen + (32 if header["format_version"] == 2 else 0):]


def craft(header, payload: bytes, *, version: int = 2) -> bytes:
    """A memory file with any header (any JSON value), its checksum right (version 2) or absent (version 1)."""
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    head = struct.pack("<Q", len(raw)) + raw
    return _io.MAGIC + head + (hashlib.sha256(head).digest() if version == 2 else b"") + payload


def saved(tmp_path, kind):
    obj = make(kind)
    path = tmp_path / f"{kind}.mem"
    obj.save(path)
    return obj, path, path.read_bytes()


def assert_refused(tmp_path, kind, obj, data: bytes, name: str, match: str | None = None):
    """Loading ``data`` raises ValueError naming the file, both ways, and ``obj`` is unchanged."""
    path = tmp_path / name
    path.write_bytes(data)
    before = state(obj)
    cls = type(obj)
    with pytest.raises(ValueError, match=path.name) as e:
        cls.load(path)
    if match is not None:
        assert match in str(e.value), str(e.value)
    with pytest.raises(ValueError, match=path.name):
        obj.load(path)
    assert_same(before, state(obj))


# ----------------------------------------------------------------------------- the header's checksum
@pytest.mark.parametrize("kind", KINDS)
def test_header_edit_that_stays_valid_json_is_refused(tmp_path, kind):
    """A header field changed to another valid value (here the clock, same length) used to load
    silently: the header was outside the checksum."""
    obj, path, data = saved(tmp_path, kind)
    header, _ = split(data)
    start = data.index(b'"clock": ') + len(b'"clock": ') if kind != "DND" else None
    if kind == "DND":      # the DND keeps its clock in the payload: edit k (also a header field)
        start = data.index(b'"k": ') + len(b'"k": ')
    digit = data[start:start + 1]
    assert digit.isdigit()
    bad = data[:start] + (b"7" if digit != b"7" else b"8") + data[start + 1:]
    assert_refused(tmp_path, kind, obj, bad, "edited.mem", match="header checksum mismatch")


@pytest.mark.parametrize("kind", KINDS)
def test_every_bit_flip_before_the_payload_is_refused(tmp_path, kind):
    """Flip one bit of each byte of the magic, the length, the header and its checksum: always a
    ValueError naming the file (a flipped key used to raise KeyError)."""
    obj, path, data = saved(tmp_path, kind)
    (hlen,) = struct.unpack_from("<Q", data, len(_io.MAGIC))
    end = len(_io.MAGIC) + 8 + hlen + 32
    bad = tmp_path / "flipped.mem"
    for i in range(end):
        for bit in (0x01, 0x20):
            flipped = bytearray(data)
            flipped[i] ^= bit
            bad.write_bytes(bytes(flipped))
            with pytest.raises(ValueError, match=bad.name):
                type(obj).load(bad)
    assert_refused(tmp_path, kind, obj, data[:20] + bytes([data[20] ^ 0x04]) + data[21:], "one.mem")


# ----------------------------------------------------------------------------- version 1 files
@pytest.mark.parametrize("kind", KINDS)
def test_version_1_files_still_load(tmp_path, kind):
    obj, path, data = saved(tmp_path, kind)
    header, payload = split(data)
    old = tmp_path / "v1.mem"
    old.write_bytes(craft({**header, "format_version": 1}, payload, version=1))
    assert_same(state(obj), state(type(obj).load(old)))


def _header_mutations(header):
    """(what, header) pairs: flipped keys, wrong JSON types, non-int lengths, broken tensor specs."""
    for key in header:
        yield f"key {key} flipped", {(k[:-1] + chr(ord(k[-1]) ^ 1) if k == key else k): v for k, v in header.items()}
        for wrong in ([], "x", 1.5, None, {}, True, -1):
            if wrong != header[key] and not (key == "meta" and wrong == {}):
                yield f"{key} = {wrong!r}", {**header, key: wrong}
    yield "payload_bytes as a string", {**header, "payload_bytes": str(header["payload_bytes"])}
    name = next(iter(header["tensors"]))
    spec = header["tensors"][name]
    for what, bad_spec in [("shape key flipped", {"shapf": spec["shape"], "dtype": spec["dtype"]}),
                           ("shape a string", {**spec, "shape": "4"}), ("shape of floats", {**spec, "shape": [1.5]}),
                           ("dtype a number", {**spec, "dtype": 3}), ("spec a list", [spec["shape"], spec["dtype"]])]:
        yield f"tensor {name}: {what}", {**header, "tensors": {**header["tensors"], name: bad_spec}}
    for top in ([], "header", 3, None):
        yield f"header is {top!r}", top


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("version", [1, 2])
def test_crafted_headers_are_refused(tmp_path, kind, version):
    """Headers with their checksum right (version 2) or without one (version 1) but the wrong shape:
    a ValueError naming the file, never KeyError / TypeError / AttributeError."""
    obj, path, data = saved(tmp_path, kind)
    header, payload = split(data)
    header["format_version"] = version
    for i, (what, bad) in enumerate(_header_mutations(header)):
        if isinstance(bad, dict) and bad.get("format_version") == 1 and version == 2:
            continue    # a version 2 file relabelled 1: covered by the bit flips
        path = tmp_path / f"crafted{i}.mem"
        path.write_bytes(craft(bad, payload, version=version))
        try:
            type(obj).load(path)
        except ValueError as e:
            assert path.name in str(e), (what, e)
        else:
            pytest.fail(f"{what}: loaded")


def _meta_mutations(kind, meta):
    optional = {"FlatIndex": {"capacity"}, "BatchedIndex": set(), "DND": {"value_dim"}}[kind]
    for key in meta:
        if key not in optional:
            yield f"{key} missing", {k: v for k, v in meta.items() if k != key}
        wrongs = [[], "x", {}, True, -1, 0] + ([] if key in optional else [None])
        if key == "delta":
            wrongs += [float("nan"), float("inf")]
        elif key != "clock":        # a clock of 0 is refused only when uses are stored (checked below)
            wrongs += [1.5]
        for wrong in wrongs:
            if not (key == "clock" and wrong == 0):
                yield f"{key} = {wrong!r}", {**meta, key: wrong}
    big = {"FlatIndex": "dim", "BatchedIndex": "dim", "DND": "key_dim"}[kind]
    yield f"{big} = 10**12 (no such tensors)", {**meta, big: 10**12}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("version", [1, 2])
def test_crafted_settings_are_refused(tmp_path, kind, version):
    """The object's settings in a header whose checksum is right but whose values are of the wrong
    type or do not fit the stored tensors: ValueError naming the file, before anything is allocated
    (a key_dim of 10**12 used to allocate, or fail to)."""
    obj, path, data = saved(tmp_path, kind)
    header, payload = split(data)
    header["format_version"] = version
    for i, (what, meta) in enumerate(_meta_mutations(kind, header["meta"])):
        path = tmp_path / f"meta{i}.mem"
        path.write_bytes(craft({**header, "meta": meta}, payload, version=version))
        try:
            type(obj).load(path)
        except ValueError as e:
            assert path.name in str(e), (what, e)
        else:
            pytest.fail(f"{what}: loaded")


def _payloads():
    yield "garbage", b"not a torch file"
    yield "random bytes", bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8))
    yield "a pickle of code", pickle.dumps(print, protocol=2)    # weights_only refuses it
    buf = io.BytesIO()
    torch.save([torch.zeros(3)], buf)                     # a list, not a dict
    yield "a list", buf.getvalue()
    buf = io.BytesIO()
    torch.save({"keys": torch.zeros(3)}, buf)              # the wrong tensors
    yield "the wrong tensors", buf.getvalue()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("version", [1, 2])
def test_garbage_payload_with_a_matching_checksum_is_refused(tmp_path, kind, version):
    obj, path, data = saved(tmp_path, kind)
    header, _ = split(data)
    header["format_version"] = version
    for i, (_, payload) in enumerate(_payloads()):
        bad = {**header, "payload_bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
        assert_refused(tmp_path, kind, obj, craft(bad, payload, version=version), f"payload{i}.mem")


# ----------------------------------------------------------------------------- counters against what is stored
def _resaved(tmp_path, kind, obj, edit):
    """``obj`` saved through ``_io.save`` (checksums right) after ``edit(meta, tensors)``."""
    if isinstance(obj, FlatIndex):
        meta, tensors = obj._state()
    elif isinstance(obj, BatchedIndex):
        meta = {"num_memories": obj.num_memories, "dim": obj.d, "capacity": obj.capacity, "clock": obj._clock}
        tensors = {name[1:]: getattr(obj, name).clone() for name in obj._TENSORS}
    else:
        path = tmp_path / "dnd.mem"
        obj.save(path)
        meta = split(path.read_bytes())[0]["meta"]
        tensors = {k: v.clone() for k, v in obj.state_dict().items()}
    tensors = {k: v.clone() for k, v in tensors.items()}
    edit(meta, tensors)
    path = tmp_path / "counters.mem"
    _io.save(path, kind, meta, tensors)
    return path


@pytest.mark.parametrize("next_id", [7_000, 6_999, 31, 0])
def test_next_id_not_above_the_stored_ids_is_refused(tmp_path, next_id):
    """The largest stored id is 7,000: a next_id at or below it made the next add() reuse ids."""
    index = make("FlatIndex")
    path = _resaved(tmp_path, "FlatIndex", index, lambda meta, t: meta.update(next_id=next_id))
    with pytest.raises(ValueError, match="counters.mem.*next_id"):
        FlatIndex.load(path)
    before = state(index)
    with pytest.raises(ValueError, match="counters.mem.*next_id"):
        index.load(path)
    assert_same(before, state(index))


def test_next_id_past_the_stored_ids_loads(tmp_path):
    index = make("FlatIndex")
    path = _resaved(tmp_path, "FlatIndex", index, lambda meta, t: meta.update(next_id=7_001))
    loaded = FlatIndex.load(path)
    new = loaded.add(torch.zeros(2, 4))
    assert new.tolist() == [7_001, 7_002]
    assert len(set(loaded.get_ids().tolist())) == loaded.ntotal


@pytest.mark.parametrize("kind", KINDS)
def test_lru_clock_not_above_the_stored_uses_is_refused(tmp_path, kind):
    obj = make(kind)

    def edit(meta, t):
        last = int(t["last_use"][t["valid"]].max())
        if kind == "DND":
            t["clock"].fill_(last)
        else:
            meta["clock"] = last

    with pytest.raises(ValueError, match="counters.mem.*clock"):
        type(obj).load(_resaved(tmp_path, kind, obj, edit))


def test_batched_fill_counts_not_above_the_stored_generations_are_refused(tmp_path):
    """A slot's next id is fills * C + slot: a fill count lowered under a stored id's generation
    would make the next add hand that id out again."""
    index = make("BatchedIndex")
    assert int(index._fills.max()) >= 2
    path = _resaved(tmp_path, "BatchedIndex", index, lambda meta, t: t["fills"].sub_(1))
    with pytest.raises(ValueError, match="counters.mem.*fill counts"):
        BatchedIndex.load(path)


# ----------------------------------------------------------------------------- ids near 2**63
def test_add_after_the_largest_int64_id_is_a_clear_error(tmp_path):
    index = FlatIndex(2)
    index.add_with_ids(np.ones((1, 2), np.float32), [2**63 - 1])
    before = state(index)
    with pytest.raises(ValueError, match="add_with_ids"):       # was OverflowError
        index.add(np.zeros((1, 2), np.float32))
    assert_same(before, state(index))
    index.add_with_ids(np.zeros((2, 2), np.float32), [5, 2**63 - 2])
    assert sorted(index.get_ids().tolist()) == [5, 2**63 - 2, 2**63 - 1]
    _, ids = index.search(np.ones((1, 2), np.float32), 1)
    assert ids.tolist() == [[2**63 - 1]]
    index.save(tmp_path / "big.mem")                            # next_id = 2**63 round-trips
    loaded = FlatIndex.load(tmp_path / "big.mem")
    with pytest.raises(ValueError, match="add_with_ids"):
        loaded.add(np.zeros((1, 2), np.float32))


def test_add_up_to_the_largest_int64_id():
    index = FlatIndex(2)
    index.add_with_ids(np.ones((1, 2), np.float32), [2**63 - 3])
    assert index.add(np.zeros((2, 2), np.float32)).tolist() == [2**63 - 2, 2**63 - 1]
    with pytest.raises(ValueError, match="add_with_ids"):
        index.add(np.zeros((1, 2), np.float32))


# ----------------------------------------------------------------------------- keys whose norm overflows
@pytest.mark.parametrize("kind", KINDS)
def test_keys_whose_squared_norm_overflows_float32_are_refused_on_add(kind):
    """3e19 is finite, but its square is not a float32: such a key would make every later search fail."""
    obj = make(kind)
    before = state(obj)
    with pytest.raises(ValueError, match="overflows"):
        if kind == "FlatIndex":
            obj.add(torch.tensor([[0.0, 3e19, 0.0, 0.0]]))
        elif kind == "BatchedIndex":
            x = torch.zeros(2, 1, 3)
            x[1, 0, 2] = 3e19
            obj.add(x)
        else:
            obj.write(torch.tensor([[3e19, 0.0, 0.0]]), torch.ones(1), torch.tensor([1]))
    assert_same(before, state(obj))


# ----------------------------------------------------------------------------- checkpoints
def _ckpt_split(data: bytes):
    end = data.index(b"\n", len(checkpoint.MAGIC))
    return json.loads(data[len(checkpoint.MAGIC):end]), data[end + 1:]


def _ckpt(header, payload: bytes) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return checkpoint.MAGIC + raw + b"\n" + payload


def _ckpt_mutations(header, payload):
    for key in header:
        yield f"key {key} flipped", _ckpt({(k + "_" if k == key else k): v for k, v in header.items()}, payload)
        for wrong in ([], "x", 1.5, None, {}, True, -1):
            if wrong != header[key]:
                yield f"{key} = {wrong!r}", _ckpt({**header, key: wrong}, payload)
    yield "length as a string", _ckpt({**header, "length": str(header["length"])}, payload)
    for top in ([], "header", 3, None):
        yield f"header is {top!r}", _ckpt(top, payload)
    yield "no end of line", checkpoint.MAGIC + b'{"kind": "rl2"' + b"x" * 5000
    yield "not JSON", _ckpt(b"{kind: rl2}", payload)
    for what, garbage in list(_payloads())[:3]:      # the others are well-formed checkpoints
        fixed = {**header, "length": len(garbage), "sha256": hashlib.sha256(garbage).hexdigest()}
        yield f"payload: {what}", _ckpt(fixed, garbage)


def test_checkpoint_bad_header_or_payload_raise_value_error(tmp_path):
    """Was AttributeError (a list header), TypeError, UnpicklingError or RuntimeError (garbage payload)."""
    path = tmp_path / "ck.pt"
    checkpoint.save(path, {"w": torch.arange(5.0), "step": 3}, kind="rl2")
    header, payload = _ckpt_split(path.read_bytes())
    assert checkpoint.load(path, kind="rl2")["step"] == 3
    for i, (what, data) in enumerate(_ckpt_mutations(header, payload)):
        bad = tmp_path / f"bad{i}.pt"
        bad.write_bytes(data)
        with pytest.raises(ValueError, match=bad.name):
            checkpoint.load(bad, kind="rl2")
        try:        # the header alone: a well-formed one with another kind is fine
            assert isinstance(checkpoint.read_kind(bad), str)
        except ValueError as e:
            assert bad.name in str(e), (what, e)


def test_checkpoint_every_bit_flip_of_the_header_is_refused(tmp_path):
    path = tmp_path / "ck.pt"
    checkpoint.save(path, {"w": torch.arange(5.0)}, kind="rl2")
    data = path.read_bytes()
    end = data.index(b"\n", len(checkpoint.MAGIC)) + 1
    bad = tmp_path / "flipped.pt"
    for i in range(end):
        flipped = bytearray(data)
        flipped[i] ^= 0x01
        bad.write_bytes(bytes(flipped))
        with pytest.raises(ValueError, match=bad.name):
            checkpoint.load(bad, kind="rl2")
