"""Tests for ``netwarden.ingest.sketch``: the merge proof, accuracy, serialization, validation."""

from __future__ import annotations

import doctest
import hashlib
import math
import pickle
import struct
import zlib

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from netwarden.ingest import sketch as sketch_module
from netwarden.ingest.sketch import DistinctSketch, stable_hash64, stable_hash64_many

MAX64 = 2**64 - 1

# Hashes that stress the bucket/rho arithmetic (all-zero suffix, top and bottom buckets, values
# whose float64 conversion would round up), plus a fixed pool so streams repeat values.
EDGE_HASHES = [0, 1, 2**63, MAX64, 2**53 - 1, 2**54 - 1, 2**32 - 1, 2**32, 2**60 - 1, 2**60]
POOL = EDGE_HASHES + [int(h) for h in np.random.default_rng(7).integers(0, MAX64, 40, np.uint64)]

hash_values = st.one_of(st.sampled_from(POOL), st.integers(0, MAX64))
parameters = st.tuples(st.sampled_from([4, 5, 6, 10]), st.sampled_from([0, 1, 2, 5, 8, 32]))


def feed(sketch: DistinctSketch, hashes: list[int], how: str) -> DistinctSketch:
    """Feed ``hashes`` one at a time, as one batch, or in small batches."""
    if how == "add":
        for h in hashes:
            sketch.add(h)
    elif how == "update":
        sketch.update(np.array(hashes, dtype=np.uint64))
    else:
        for start in range(0, len(hashes), 7):
            sketch.update(np.array(hashes[start : start + 7], dtype=np.uint64))
    return sketch


def reference_registers(hashes: set[int], precision: int) -> np.ndarray:
    """R(S) written out with Python ints, independently of the vectorised code."""
    q = 64 - precision
    registers = np.zeros(1 << precision, dtype=np.uint8)
    for h in hashes:
        bucket, suffix = h >> q, h & ((1 << q) - 1)
        rho = q + 1 - suffix.bit_length()
        registers[bucket] = max(int(registers[bucket]), rho)
    return registers


# --- the merge proof ------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_parallel_merge_equals_one_stream(data: st.DataObject) -> None:
    """Split a stream over partials (interleaved, some empty), feed each one any way, ship some
    as bytes, merge in a random order and grouping: the result == the one-stream sketch."""
    precision, exact_limit = data.draw(parameters, label="precision, exact_limit")
    stream = data.draw(st.lists(hash_values, max_size=150), label="stream")
    n_parts = data.draw(st.integers(1, 6), label="n_parts")
    owner = data.draw(
        st.lists(st.integers(0, n_parts - 1), min_size=len(stream), max_size=len(stream)),
        label="owner",
    )

    def new() -> DistinctSketch:
        return DistinctSketch(precision=precision, exact_limit=exact_limit)

    parts = []
    for i in range(n_parts):
        how = data.draw(st.sampled_from(["add", "update", "chunks"]), label=f"feed {i}")
        part = feed(new(), [h for h, o in zip(stream, owner) if o == i], how)
        if data.draw(st.booleans(), label=f"ship {i}"):
            part = DistinctSketch.from_bytes(part.to_bytes())
        parts.append(part)
    parts = data.draw(st.permutations(parts), label="order")
    event(f"exact partials: {sum(p.is_exact for p in parts)}/{len(parts)}")
    event(f"empty partial: {any(p.count() == 0 for p in parts)}")
    while len(parts) > 1:  # merge two neighbours at a time: any order, any grouping
        i = data.draw(st.integers(0, len(parts) - 2), label="merge at")
        left, right = parts[i], parts[i + 1]
        if data.draw(st.booleans(), label="in place"):
            left += right
            merged = left
        else:
            merged = left + right
        parts[i : i + 2] = [merged]

    one_stream = feed(new(), stream, "add")
    assert parts[0] == one_stream
    assert parts[0] == feed(new(), stream, "update")
    assert parts[0].to_bytes() == one_stream.to_bytes()
    distinct = set(stream)
    event(f"result: {'exact' if len(distinct) <= exact_limit else 'registers'}")
    assert parts[0].is_exact == (len(distinct) <= exact_limit)
    if parts[0].is_exact:
        assert parts[0].count() == len(distinct)
    else:
        assert np.array_equal(parts[0]._registers, reference_registers(distinct, precision))


@pytest.mark.parametrize("n", [0, 5, 32, 33, 500])
def test_empty_partials_are_neutral(n: int) -> None:
    hashes = np.random.default_rng(n).integers(0, MAX64, n, dtype=np.uint64, endpoint=True)
    full = DistinctSketch()
    full.update(hashes)
    empty = DistinctSketch()
    shipped_empty = DistinctSketch.from_bytes(DistinctSketch().to_bytes())
    assert full + empty == full
    assert empty + full == full
    assert shipped_empty + full + empty == full
    in_place = DistinctSketch()
    in_place += full
    in_place += empty
    assert in_place == full


def test_add_and_update_follow_the_reference_model_on_edge_hashes() -> None:
    for precision in (4, 10, 16):
        by_add = DistinctSketch(precision=precision, exact_limit=0)
        for h in EDGE_HASHES:
            by_add.add(h)
        by_update = DistinctSketch(precision=precision, exact_limit=0)
        by_update.update(np.array(EDGE_HASHES * 3, dtype=np.uint64))
        expected = reference_registers(set(EDGE_HASHES), precision)
        assert np.array_equal(by_add._registers, expected)
        assert by_update == by_add


def test_merge_does_not_mutate_the_right_operand_or_share_state() -> None:
    a, b = DistinctSketch(exact_limit=4), DistinctSketch(exact_limit=4)
    a.update(np.arange(1, 4, dtype=np.uint64))
    b.update(np.arange(100, 200, dtype=np.uint64))  # registers
    b_before = b.copy()
    c = a + b
    assert b == b_before and a.is_exact and not c.is_exact
    c.add(12345)
    a += b
    a.add(2**40)
    assert b == b_before  # a took a copy of b's registers, not a reference


# --- counting ----------------------------------------------------------------------------


@pytest.mark.parametrize("exact_limit", [0, 1, 32, 100])
def test_counts_are_exact_up_to_the_limit(exact_limit: int) -> None:
    hashes = stable_hash64_many([f"10.0.{i // 256}.{i % 256}" for i in range(exact_limit + 1)])
    sketch = DistinctSketch(exact_limit=exact_limit)
    assert sketch.count() == 0.0 and sketch.is_exact
    for i, h in enumerate(hashes[:exact_limit].tolist(), start=1):
        sketch.add(h)
        sketch.add(h)
        assert sketch.is_exact and sketch.count() == float(i)
    sketch.add(int(hashes[exact_limit]))
    assert not sketch.is_exact
    assert sketch.count() >= exact_limit + 1  # register mode implies more than the limit


def test_duplicates_do_not_change_the_state() -> None:
    rng = np.random.default_rng(3)
    for distinct in (5, 5000):
        hashes = rng.integers(0, MAX64, distinct, dtype=np.uint64, endpoint=True)
        once = DistinctSketch()
        once.update(hashes)
        many = DistinctSketch()
        many.update(np.repeat(hashes, 3))  # 15 or 15000 flows, duplicate-heavy batch
        many.update(rng.permutation(hashes))
        for h in hashes[:50].tolist():
            many.add(h)
        assert many == once
        assert many.count() == once.count()
    assert once.is_exact is False and many.is_exact is False


@pytest.mark.parametrize("precision", [10, 14])
@pytest.mark.parametrize("n", [1_000, 10_000, 100_000])
@pytest.mark.parametrize("source", ["random", "strings", "ints"])
def test_estimate_within_three_standard_errors(precision: int, n: int, source: str) -> None:
    if source == "random":
        rng = np.random.default_rng(n + precision)
        hashes = rng.integers(0, MAX64, n, np.uint64, endpoint=True)
        n = np.unique(hashes).size
    elif source == "strings":  # how pods and DNS names arrive
        hashes = stable_hash64_many([f"peer-{i}.ns-{i % 7}.svc" for i in range(n)])
    else:  # sequential integers (ports, identities) through SplitMix64
        hashes = stable_hash64_many(np.arange(n, dtype=np.int64))
    sketch = DistinctSketch(precision=precision)
    sketch.update(hashes)
    standard_error = 1.04 / math.sqrt(2**precision)
    assert abs(sketch.count() / n - 1) < 3 * standard_error


# --- serialization -------------------------------------------------------------------------


def make(n: int, *, exact_limit: int = 32, precision: int = 10) -> DistinctSketch:
    sketch = DistinctSketch(precision=precision, exact_limit=exact_limit)
    sketch.update(np.random.default_rng(n).integers(0, MAX64, n, np.uint64, endpoint=True))
    return sketch


@pytest.mark.parametrize("n", [0, 1, 32, 33, 10_000])
def test_serialization_round_trip(n: int) -> None:
    original = make(n)
    data = original.to_bytes()
    restored = DistinctSketch.from_bytes(data)
    assert restored == original
    assert restored.count() == original.count()
    assert restored.is_exact == original.is_exact
    assert DistinctSketch.from_bytes(bytearray(data)) == original
    assert DistinctSketch.from_bytes(memoryview(data)) == original
    assert len(data) == (16 + 8 * n if original.is_exact else 1024 + 14)
    restored.add(99)  # the restored state is writable and independent
    assert pickle.loads(pickle.dumps(original)) == original


def test_serialization_is_canonical() -> None:
    hashes = np.random.default_rng(1).integers(0, MAX64, 20, np.uint64, endpoint=True)
    a, b = DistinctSketch(), DistinctSketch()
    a.update(hashes)
    for h in hashes[::-1].tolist():
        b.add(h)
    assert a.to_bytes() == b.to_bytes()


def with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.mark.parametrize("n", [0, 3, 33])
def test_every_single_bit_flip_is_rejected(n: int) -> None:
    data = make(n).to_bytes()
    for position in range(len(data)):
        for bit in (0, 7):
            corrupted = bytearray(data)
            corrupted[position] ^= 1 << bit
            with pytest.raises(ValueError):
                DistinctSketch.from_bytes(bytes(corrupted))


def test_truncated_and_extended_data_is_rejected() -> None:
    data = make(5).to_bytes()
    for end in range(len(data)):
        with pytest.raises(ValueError):
            DistinctSketch.from_bytes(data[:end])
    with pytest.raises(ValueError):
        DistinctSketch.from_bytes(data + b"\x00")


def _header(*, magic=b"NWDS", version=1, mode=0, precision=10, reserved=0, limit=32) -> bytes:
    return struct.pack("<4sBBBBH", magic, version, mode, precision, reserved, limit)


def _exact_payload(values: list[int]) -> bytes:
    return struct.pack("<H", len(values)) + np.array(values, dtype="<u8").tobytes()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_header(magic=b"XXXX") + _exact_payload([]), "magic"),
        (_header(version=2) + _exact_payload([]), "version"),
        (_header(mode=7) + _exact_payload([]), "mode"),
        (_header(reserved=1) + _exact_payload([]), "reserved"),
        (_header(precision=3) + _exact_payload([]), "precision"),
        (_header(limit=5000) + _exact_payload([]), "exact_limit"),
        (_header(limit=2) + _exact_payload([1, 2, 3]), "exact_limit"),
        (_header() + _exact_payload([5, 3]), "increasing"),
        (_header() + _exact_payload([3, 3]), "increasing"),
        (_header() + _exact_payload([1, 2])[:-1], "payload"),
        (_header(), "truncated"),
        (_header(mode=1) + bytes(1024), "no register"),
        (_header(mode=1) + bytes(1023) + b"\x38", "register value"),
        (_header(mode=1) + b"\x01" * 1000, "register payload"),
    ],
)
def test_malformed_data_is_rejected_with_a_reason(body: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DistinctSketch.from_bytes(with_crc(body))


def test_wellformed_hand_built_data_is_accepted() -> None:
    restored = DistinctSketch.from_bytes(with_crc(_header() + _exact_payload([3, 5])))
    expected = DistinctSketch()
    expected.add(5)
    expected.add(3)
    assert restored == expected
    registers = DistinctSketch.from_bytes(with_crc(_header(mode=1) + bytes(1023) + b"\x37"))
    assert not registers.is_exact


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"precision": 3}, ValueError, r"precision must be in \[4, 16\], got 3"),
        ({"precision": 17}, ValueError, r"precision must be in \[4, 16\], got 17"),
        ({"exact_limit": -1}, ValueError, r"exact_limit must be in \[0, 4096\], got -1"),
        ({"exact_limit": 4097}, ValueError, r"exact_limit must be in \[0, 4096\], got 4097"),
        ({"precision": 10.0}, TypeError, "precision must be an int"),
        ({"exact_limit": True}, TypeError, "exact_limit must be an int"),
    ],
)
def test_parameter_validation_names_the_parameter(kwargs, error, message) -> None:
    with pytest.raises(error, match=message):
        DistinctSketch(**kwargs)


def test_parameter_bounds_are_inclusive() -> None:
    for precision, exact_limit in [(4, 0), (16, 4096), (np.int64(12), np.uint16(7))]:
        sketch = DistinctSketch(precision=precision, exact_limit=exact_limit)
        assert (sketch.precision, sketch.exact_limit) == (int(precision), int(exact_limit))
    with pytest.raises(TypeError):
        DistinctSketch(10)  # keyword-only


@pytest.mark.parametrize(("left", "right"), [((10, 32), (11, 32)), ((10, 32), (10, 16))])
def test_merging_incompatible_sketches_raises(left, right) -> None:
    a = DistinctSketch(precision=left[0], exact_limit=left[1])
    b = DistinctSketch(precision=right[0], exact_limit=right[1])
    with pytest.raises(ValueError, match="precision and exact_limit must be equal"):
        a + b
    with pytest.raises(ValueError, match="precision and exact_limit must be equal"):
        a += b
    assert a != b
    with pytest.raises(TypeError):
        a + 1
    assert a.__eq__(1) is NotImplemented


def test_hash_input_validation() -> None:
    sketch = DistinctSketch()
    with pytest.raises(ValueError, match="2\\*\\*64"):
        sketch.add(-1)
    with pytest.raises(ValueError, match="2\\*\\*64"):
        sketch.add(2**64)
    with pytest.raises(TypeError):
        sketch.add(1.5)
    with pytest.raises(ValueError, match="negative"):
        sketch.update(np.array([1, -2]))
    with pytest.raises(TypeError, match="uint64"):
        sketch.update(np.array([1.0, 2.0]))
    with pytest.raises(ValueError):
        sketch.update([1, -(2**70)])
    with pytest.raises(TypeError):
        sketch.update([1, 2.0])
    with pytest.raises(ValueError):
        sketch.update(np.array([1, 2**64], dtype=object))
    assert sketch.count() == 0
    sketch.update([])
    sketch.update(np.array([[1, 2], [2, 3]], dtype=np.int64))  # any int dtype, any shape
    sketch.update([2**64 - 1, 7])
    sketch.add(np.uint64(7))
    assert sketch.count() == 5


def test_copy_is_independent_and_nbytes_is_plausible() -> None:
    for n in (3, 5000):
        original = make(n)
        clone = original.copy()
        assert clone == original
        clone.update(np.arange(10**6, 10**6 + 100, dtype=np.uint64))
        assert clone != original
    assert 0 < DistinctSketch().nbytes() < make(32).nbytes()
    assert make(5000).nbytes() >= 1024
    assert make(5000, precision=14).nbytes() >= 2**14


# --- hashing --------------------------------------------------------------------------------


def test_stable_hash64_known_answers() -> None:
    """Pinned values: changing them silently breaks merging with older nodes and stored data."""
    assert stable_hash64("") == 0xB4B2797457A0A6E4
    assert stable_hash64("10.0.0.1") == 0xE6034DE146F68E53
    assert stable_hash64(b"\x00") == 0x4882EAD1CDD9F694
    assert stable_hash64(0) == 0xE220A8397B1DCDAF  # SplitMix64's published first output
    assert stable_hash64(443) == 0x39901A2C182C93DB
    assert stable_hash64(2**100) == 0xFB1F8F5B23CB2E65
    expected = hashlib.blake2b(b"10.0.0.1", digest_size=8).digest()
    assert stable_hash64("10.0.0.1") == int.from_bytes(expected, "little")


def test_stable_hash64_many_matches_the_scalar_hash() -> None:
    strings = ["", "a", "kube-dns.kube-system.svc.cluster.local", "ünïcödé", "\ud800lone"]
    mixed = ["a", b"a", 0, -1, 2**64 - 1, 2**100, True, np.int64(-5), bytearray(b"x")]
    ints = np.array([0, 1, -1, 2**63 - 1, -(2**63)], dtype=np.int64)
    for values in (strings, mixed, tuple(strings), np.array(strings), iter(strings)):
        expected = [stable_hash64(v) for v in (strings if not isinstance(values, list) else values)]
        got = stable_hash64_many(values)
        assert got.dtype == np.uint64 and got.tolist() == expected
    assert stable_hash64_many(ints).tolist() == [stable_hash64(int(v)) for v in ints]
    unsigned = np.array([0, 2**64 - 1], dtype=np.uint64)
    assert stable_hash64_many(unsigned).tolist() == [stable_hash64(0), stable_hash64(2**64 - 1)]
    assert stable_hash64_many([]).dtype == np.uint64 and stable_hash64_many([]).size == 0
    assert stable_hash64("a") == stable_hash64(b"a") != stable_hash64("b")
    assert stable_hash64(-1) == stable_hash64(2**64 - 1)  # documented: taken modulo 2**64
    assert len(set(stable_hash64_many(np.arange(100_000)).tolist())) == 100_000  # bijection
    with pytest.raises(TypeError, match="str, bytes or int"):
        stable_hash64(1.5)
    with pytest.raises(TypeError):
        stable_hash64_many(["a", 1.5])


def test_docstring_examples() -> None:
    results = doctest.testmod(sketch_module, optionflags=doctest.ELLIPSIS)
    assert results.attempted > 0 and results.failed == 0


def test_empty_like_matches_a_fresh_sketch() -> None:
    from netwarden.ingest.sketch import DistinctSketch

    proto = DistinctSketch(precision=12, exact_limit=8)
    proto.add(5)
    new = proto.empty_like()
    assert new == DistinctSketch(precision=12, exact_limit=8)
    assert new.count() == 0 and proto.count() == 1
