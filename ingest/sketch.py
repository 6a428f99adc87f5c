"""Mergeable distinct-count sketch for window features (distinct peers, ports, DNS names).

A window partial built on one node and a partial built on another must combine into exactly the
state that one node would have built from both streams, so :class:`DistinctSketch` is a hybrid
HyperLogLog whose merge is *exact* (``==``, same internal state), not just close:

* **Exact mode.** Up to ``exact_limit`` distinct hashes (default 32) are kept as a set, and
  :meth:`DistinctSketch.count` is the exact number of distinct hashes.
* **Register mode.** Past ``exact_limit`` the set is folded into ``2**precision`` HyperLogLog
  registers (default ``precision=10``: 1024 one-byte registers) and :meth:`~DistinctSketch.count`
  is an estimate with relative standard error about ``1.04 / sqrt(2**precision)`` (3.25 % at
  ``precision=10``, 1.6 % at 12, 0.81 % at 14): linear counting while the raw estimate is at most
  ``2.5 * 2**precision``, the bias-corrected (``alpha_m``) HyperLogLog estimate above that
  (plus a bias of up to +2.5 % near that switch; see :class:`DistinctSketch`). The hashes are
  64 bits wide, so no large-range correction is needed.

The caller hashes values with :func:`stable_hash64` / :func:`stable_hash64_many` (BLAKE2b for
strings and bytes, the SplitMix64 bijection for 64-bit integers). Never feed Python's
``hash()``: it is salted per process, so two nodes would disagree about the same peer.

Why the merge is exact
----------------------
Write ``S`` for the set of distinct hashes a sketch has been fed, ``L`` for ``exact_limit`` and
``R(S)`` for the registers of ``S``: ``R(S)[j] = max(rho(h) for h in S if bucket(h) == j)``
(0 for an empty bucket). The state of a sketch is always exactly

    phi(S) = ("exact", S)       if |S| <= L
             ("registers", R(S)) otherwise.

``R(A | B) == maximum(R(A), R(B))`` element-wise because ``max`` is associative, commutative and
idempotent, and ``|S|`` never shrinks, so a sketch never has to leave register mode. ``add``,
``update`` and ``+`` each map ``phi(A)`` and ``phi(B)`` to ``phi(A | B)`` (case analysis in
:meth:`DistinctSketch.__iadd__`), hence every split of a stream into partials, merged in any order
and any grouping, empty partials included, ends in ``phi(S)`` of the whole stream. Duplicates
change nothing, because ``S`` is a set. ``tests/test_sketch.py`` proves this with hypothesis.

Examples
--------
>>> from netwarden.ingest.sketch import DistinctSketch, stable_hash64, stable_hash64_many
>>> a = DistinctSketch()
>>> a.update(stable_hash64_many(["10.0.0.1", "10.0.0.2", "10.0.0.1"]))
>>> a.count()
2.0
>>> b = DistinctSketch()
>>> b.add(stable_hash64("10.0.0.3"))
>>> (a + b).count()
3.0
>>> DistinctSketch.from_bytes((a + b).to_bytes()) == a + b
True
"""

from __future__ import annotations

import hashlib
import math
import operator
import struct
import sys
import zlib
from collections.abc import Iterable, Sequence
from typing import Final

import numpy as np

__all__ = ["DistinctSketch", "stable_hash64", "stable_hash64_many"]

_MASK64: Final = (1 << 64) - 1
_MIN_INT64: Final = -(1 << 63)

# --------------------------------------------------------------------------------------------
# Stable 64-bit hashing
# --------------------------------------------------------------------------------------------

_blake2b = hashlib.blake2b
_INT_PERSON: Final = b"netwarden-int"

# SplitMix64 (Steele, Lea & Flood 2014; Vigna's constants): an invertible mixer, so distinct
# 64-bit integers never collide, and every output bit depends on every input bit.
_SM_GAMMA: Final = 0x9E3779B97F4A7C15
_SM_M1: Final = 0xBF58476D1CE4E5B9
_SM_M2: Final = 0x94D049BB133111EB


def _splitmix64(x: int) -> int:
    z = (x + _SM_GAMMA) & _MASK64
    z = ((z ^ (z >> 30)) * _SM_M1) & _MASK64
    z = ((z ^ (z >> 27)) * _SM_M2) & _MASK64
    return z ^ (z >> 31)


def _splitmix64_array(x: np.ndarray) -> np.ndarray:
    # uint64 array arithmetic wraps modulo 2**64, exactly like the masked int version above.
    z = x.astype(np.uint64) + np.uint64(_SM_GAMMA)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_SM_M1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_SM_M2)
    return z ^ (z >> np.uint64(31))


def stable_hash64(value: str | bytes | int) -> int:
    """Hash a value to 64 bits, identically in every process, on every node, in every release.

    Parameters
    ----------
    value : str, bytes or int
        ``str`` is hashed as its UTF-8 bytes (lone surrogates pass through), so
        ``stable_hash64("a") == stable_hash64(b"a")``; ``bytes``, ``bytearray`` and
        ``memoryview`` with BLAKE2b (8-byte digest, read little-endian). An integer (also a numpy
        integer or ``bool``) in ``[-2**63, 2**64)`` is taken modulo ``2**64`` (so ``-1`` and
        ``2**64 - 1`` share a hash) and mixed with SplitMix64, which is a bijection: distinct
        64-bit integers never collide. Larger integers (IPv6 addresses, say) are hashed with
        BLAKE2b over their signed little-endian bytes.

    Returns
    -------
    int
        A hash in ``[0, 2**64)``, ready for :meth:`DistinctSketch.add`.

    See Also
    --------
    stable_hash64_many : the same function over a sequence, into a ``uint64`` array.

    Examples
    --------
    >>> stable_hash64("kube-dns.kube-system") == stable_hash64(b"kube-dns.kube-system")
    True
    >>> 0 <= stable_hash64(443) < 2**64
    True
    """
    if isinstance(value, str):
        try:
            data = value.encode()
        except UnicodeEncodeError:
            data = value.encode("utf-8", "surrogatepass")
        return int.from_bytes(_blake2b(data, digest_size=8).digest(), "little")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return int.from_bytes(_blake2b(value, digest_size=8).digest(), "little")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(
            f"stable_hash64 takes str, bytes or int, got {type(value).__name__}"
        ) from None
    if _MIN_INT64 <= v <= _MASK64:
        return _splitmix64(v & _MASK64)
    data = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
    return int.from_bytes(_blake2b(data, digest_size=8, person=_INT_PERSON).digest(), "little")


def stable_hash64_many(
    values: Sequence[str] | Iterable[str | bytes | int] | np.ndarray,
) -> np.ndarray:
    """Hash many values at once; element ``i`` equals ``stable_hash64(values[i])``.

    Parameters
    ----------
    values : sequence of str (or bytes or int), or a numpy array
        A list of ``str`` takes the fast path (one BLAKE2b call per value, about 0.4 us each).
        A numpy integer array is mixed with SplitMix64 fully vectorised.

    Returns
    -------
    numpy.ndarray
        ``uint64`` hashes, one per value, ready for :meth:`DistinctSketch.update`.

    Examples
    --------
    >>> h = stable_hash64_many(["a", "b"])
    >>> h.dtype, [int(x) for x in h] == [stable_hash64("a"), stable_hash64("b")]
    (dtype('uint64'), True)
    >>> int(stable_hash64_many(np.array([53]))[0]) == stable_hash64(53)
    True
    """
    if isinstance(values, np.ndarray):
        if values.dtype.kind in "iub":
            return _splitmix64_array(values.ravel())
        values = values.ravel().tolist()
    elif not isinstance(values, (list, tuple)):
        values = list(values)
    if not values:
        return np.empty(0, dtype=np.uint64)
    b2 = _blake2b
    try:
        digests = b"".join([b2(v.encode(), digest_size=8).digest() for v in values])
    except (AttributeError, UnicodeEncodeError):  # not all str: go value by value
        return np.fromiter(map(stable_hash64, values), dtype=np.uint64, count=len(values))
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


# --------------------------------------------------------------------------------------------
# HyperLogLog helpers
# --------------------------------------------------------------------------------------------

# 2**-r for every possible register value r (at most 64 - 4 + 1 = 61).
_INV_POW2: Final = np.ldexp(1.0, -np.arange(66, dtype=np.int32))
_LOW32: Final = np.uint64(0xFFFFFFFF)
_SMALL_BATCH: Final = 16  # below this, update() loops in Python: cheaper than numpy's overhead


def _alpha(m: int) -> float:
    """The bias correction constant ``alpha_m`` of Flajolet et al. (2007)."""
    if m == 16:
        return 0.673
    if m == 32:
        return 0.697
    if m == 64:
        return 0.709
    return 0.7213 / (1.0 + 1.079 / m)


def _fold(registers: np.ndarray, hashes: np.ndarray, precision: int) -> None:
    """``registers[j] = max(registers[j], rho(h))`` for every ``h`` in bucket ``j``, vectorised.

    The bucket is the top ``precision`` bits of the hash. ``rho`` is the 1-based position of the
    first 1 bit in the remaining ``q = 64 - precision`` bits (``q + 1`` if they are all zero),
    i.e. ``q + 1 - bit_length(suffix)``. ``bit_length`` comes from the float exponent of each
    32-bit half, which float64 represents exactly (a 64-bit value could round up to the next
    power of two).
    """
    q = 64 - precision
    buckets = (hashes >> np.uint64(q)).astype(np.intp)
    suffix = hashes & np.uint64((1 << q) - 1)
    _, e_hi = np.frexp((suffix >> np.uint64(32)).astype(np.float64))
    _, e_lo = np.frexp((suffix & _LOW32).astype(np.float64))
    bit_length = np.where(e_hi > 0, e_hi + 32, e_lo)
    rho = (q + 1 - bit_length).astype(np.uint8)
    np.maximum.at(registers, buckets, rho)


def _as_hashes(hashes: np.ndarray | Iterable[int]) -> np.ndarray:
    """A flat ``uint64`` view/copy of ``hashes``; rejects negative, float and bool input."""
    if not isinstance(hashes, np.ndarray):
        # Element by element: np.asarray would turn [2**64 - 1, 7] into float64 and lose bits.
        return np.fromiter(map(_check_hash, hashes), dtype=np.uint64)
    arr = hashes
    kind = arr.dtype.kind
    if kind == "u":
        if arr.dtype != np.uint64:
            arr = arr.astype(np.uint64)
    elif kind == "i":
        if arr.size and arr.min() < 0:
            raise ValueError("hashes must be in [0, 2**64); got a negative value")
        arr = arr.astype(np.uint64)
    elif arr.size == 0:
        arr = np.empty(0, dtype=np.uint64)
    elif kind == "O":
        arr = np.fromiter(map(_check_hash, arr.ravel().tolist()), dtype=np.uint64)
    else:
        raise TypeError(f"hashes must be a uint64 array, got dtype {arr.dtype}")
    return arr.ravel()


# --------------------------------------------------------------------------------------------
# Serialization format (version 1), little-endian:
#   header  "<4sBBBBH": magic b"NWDS", version, mode (0 exact, 1 registers), precision, 0, limit
#   exact      "<H" n, then n uint64 hashes, strictly increasing
#   registers  2**precision uint8 registers
#   trailer "<I": CRC-32 of everything before it
# The encoding is canonical: equal sketches give equal bytes.
# --------------------------------------------------------------------------------------------

_MAGIC: Final = b"NWDS"
_VERSION: Final = 1
_MODE_EXACT: Final = 0
_MODE_REGISTERS: Final = 1
_HEADER: Final = struct.Struct("<4sBBBBH")
_COUNT: Final = struct.Struct("<H")
_CRC: Final = struct.Struct("<I")


class DistinctSketch:
    """Distinct count of 64-bit hashes: exact up to ``exact_limit``, HyperLogLog beyond.

    Parameters
    ----------
    precision : int, default 10
        HyperLogLog precision ``p`` in ``[4, 16]``: ``2**p`` one-byte registers and a relative
        standard error of about ``1.04 / sqrt(2**p)`` (3.25 % at the default) in register mode.
    exact_limit : int, default 32
        Largest number of distinct hashes kept exactly, in ``[0, 4096]``. Counts up to it are
        exact; one more distinct hash switches the sketch to registers for good.

    Notes
    -----
    Error bound. In exact mode the count is exact (a 64-bit hash collision, probability below
    ``n**2 / 2**65``, is the only way to lose a value). In register mode the estimate has a
    relative standard error of about ``1.04 / sqrt(2**p)``: linear counting while the raw
    estimate is at most ``2.5 * 2**p``, the ``alpha_m`` bias-corrected HyperLogLog estimate
    above; the result is never below ``exact_limit + 1``, which register mode implies. Measured
    over 300 seeds, the RMSE is 0.85-1.1 standard errors everywhere except where the estimator
    switches: for ``2.4 * 2**p < n < 3 * 2**p`` the classic raw estimate is biased by up to
    +2.5 %, an RMSE of up to 1.3 standard errors at ``p=10``, 1.7 at ``p=12`` and 3.1 at
    ``p=14`` (a known limit of this estimator; HLL++ bias tables or Ertl's 2017 estimator would
    remove it without changing the state).

    Merging is exact: ``sketch(A) + sketch(B) == sketch(A | B)`` for any split of a stream, in
    any order, because the state is a function of the set of distinct hashes seen (see the
    module docstring). Both sides must share ``precision`` and ``exact_limit``.

    Memory (:meth:`nbytes`): a few hundred bytes for a handful of values, about 3.5 kB just
    below the default ``exact_limit`` (a Python set of ints), about 1.2 kB in register mode at
    ``precision=10``. :meth:`to_bytes` is 16 + 8 n bytes exact, 2**p + 14 bytes in registers.

    See Also
    --------
    stable_hash64, stable_hash64_many : hash values before adding them.

    Examples
    --------
    >>> s = DistinctSketch(precision=10, exact_limit=32)
    >>> s.update(stable_hash64_many([f"10.0.0.{i % 20}" for i in range(100)]))
    >>> s.count(), s.is_exact
    (20.0, True)
    >>> s.update(stable_hash64_many([f"10.1.{i // 256}.{i % 256}" for i in range(5000)]))
    >>> s.is_exact, abs(s.count() - 5020) / 5020 < 3 * 1.04 / 32
    (False, True)
    """

    __slots__ = ("_exact", "_exact_limit", "_precision", "_registers")

    _precision: int
    _exact_limit: int
    _exact: set[int] | None
    _registers: np.ndarray | None

    def __init__(self, *, precision: int = 10, exact_limit: int = 32) -> None:
        self._precision = _check_int("precision", precision, 4, 16)
        self._exact_limit = _check_int("exact_limit", exact_limit, 0, 4096)
        self._exact = set()
        self._registers = None

    def empty_like(self) -> DistinctSketch:
        """A new empty sketch with the same parameters, without re-validating them (cheap:
        window statistics create many)."""
        new = DistinctSketch.__new__(DistinctSketch)
        new._precision = self._precision
        new._exact_limit = self._exact_limit
        new._exact = set()
        new._registers = None
        return new

    # -- parameters and mode -----------------------------------------------------------------

    @property
    def precision(self) -> int:
        """HyperLogLog precision ``p`` (``2**p`` registers)."""
        return self._precision

    @property
    def exact_limit(self) -> int:
        """Largest number of distinct hashes counted exactly."""
        return self._exact_limit

    @property
    def is_exact(self) -> bool:
        """True while the sketch holds its distinct hashes and :meth:`count` is exact."""
        return self._exact is not None

    # -- feeding -----------------------------------------------------------------------------

    def add(self, h: int) -> None:
        """Add one 64-bit hash (an int in ``[0, 2**64)``, e.g. from :func:`stable_hash64`)."""
        exact = self._exact
        if exact is not None and h in exact:  # the common case: a peer seen before
            return
        h = _check_hash(h)
        if exact is not None:
            exact.add(h)
            if len(exact) > self._exact_limit:
                self._to_registers()
            return
        q = 64 - self._precision
        bucket = h >> q
        rho = q + 1 - (h & ((1 << q) - 1)).bit_length()
        registers = self._registers
        if rho > registers[bucket]:
            registers[bucket] = rho

    def add_hashes(self, hashes: Iterable[int]) -> None:
        """Add a few hashes that are known to be valid (Python ints from :func:`stable_hash64`):
        no numpy and no checks, the cheap way for the handful a window side folds at a time.
        Same result as ``add`` on each."""
        exact = self._exact
        if exact is None:
            for h in hashes:
                self.add(h)
            return
        exact.update(hashes)
        if len(exact) > self._exact_limit:
            self._to_registers()

    def update(self, hashes: np.ndarray | Iterable[int]) -> None:
        """Add a batch of 64-bit hashes (a ``uint64`` array, e.g. from
        :func:`stable_hash64_many`); vectorised. Same result as ``add`` on each element."""
        arr = _as_hashes(hashes)
        n = arr.size
        if n == 0:
            return
        exact = self._exact
        if exact is None:
            if n < _SMALL_BATCH:
                for h in arr.tolist():
                    self.add(h)
            else:
                _fold(self._registers, arr, self._precision)
            return
        limit = self._exact_limit
        if n <= limit + 1 - len(exact) or n < _SMALL_BATCH:
            exact.update(arr.tolist())
        elif len(exact.union(arr[: 2 * (limit + 1)].tolist())) > limit:
            # A short prefix already overflows: fold the whole batch without deduplicating it.
            self._to_registers(arr)
            return
        else:
            # Deduplicate with numpy first: a window often holds thousands of flows to a few
            # peers, and sorting 10k hashes is several times cheaper than a set of 10k ints.
            ordered = np.sort(arr)
            distinct = ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]
            if distinct.size > limit:  # the union is certainly too large: straight to registers
                self._to_registers(distinct)
                return
            exact.update(distinct.tolist())
        if len(exact) > limit:
            self._to_registers()

    def _to_registers(self, extra: np.ndarray | None = None) -> None:
        """Switch to register mode: ``R(S)``, folded with ``extra`` hashes if given."""
        registers = np.zeros(1 << self._precision, dtype=np.uint8)
        exact = self._exact
        if exact:
            _fold(registers, np.fromiter(exact, dtype=np.uint64, count=len(exact)), self._precision)
        if extra is not None:
            _fold(registers, extra, self._precision)
        self._registers = registers
        self._exact = None

    # -- reading -----------------------------------------------------------------------------

    def count(self) -> float:
        """Number of distinct hashes: exact in exact mode, an estimate in register mode."""
        exact = self._exact
        if exact is not None:
            return float(len(exact))
        registers = self._registers
        m = registers.size
        estimate = _alpha(m) * m * m / float(_INV_POW2[registers].sum())
        if estimate <= 2.5 * m:
            zeros = m - int(np.count_nonzero(registers))
            if zeros:
                estimate = m * math.log(m / zeros)  # linear counting
        # Register mode means more than exact_limit distinct hashes were seen.
        return max(estimate, float(self._exact_limit + 1))

    def nbytes(self) -> int:
        """Approximate memory footprint in bytes of the sketch object and its state."""
        size = sys.getsizeof(self)
        exact = self._exact
        if exact is not None:
            return size + sys.getsizeof(exact) + sum(map(sys.getsizeof, exact))
        return size + sys.getsizeof(self._registers)

    # -- merging -----------------------------------------------------------------------------

    def _check_compatible(self, other: DistinctSketch) -> None:
        if (self._precision, self._exact_limit) != (other._precision, other._exact_limit):
            raise ValueError(
                "cannot merge DistinctSketch("
                f"precision={self._precision}, exact_limit={self._exact_limit}) with "
                f"DistinctSketch(precision={other._precision}, exact_limit={other._exact_limit})"
                ": precision and exact_limit must be equal"
            )

    def __iadd__(self, other: DistinctSketch) -> DistinctSketch:
        """Merge ``other`` into this sketch; afterwards it is ``phi(A | B)``."""
        if not isinstance(other, DistinctSketch):
            return NotImplemented
        self._check_compatible(other)
        mine, theirs = self._exact, other._exact
        if mine is not None and theirs is not None:
            # exact + exact: the union, exact iff |A | B| <= L, else R(A | B) from the union.
            mine |= theirs
            if len(mine) > self._exact_limit:
                self._to_registers()
        elif mine is None and theirs is not None:
            # registers + exact: |A| > L already; R(A | B) = max(R(A), R(B)) = fold B into R(A).
            if theirs:
                hashes = np.fromiter(theirs, dtype=np.uint64, count=len(theirs))
                _fold(self._registers, hashes, self._precision)
        elif mine is not None:
            # exact + registers: |B| > L; R(A | B) = R(B) with A folded in.
            registers = other._registers.copy()
            if mine:
                hashes = np.fromiter(mine, dtype=np.uint64, count=len(mine))
                _fold(registers, hashes, self._precision)
            self._registers = registers
            self._exact = None
        else:
            # registers + registers: R(A | B) = element-wise max.
            np.maximum(self._registers, other._registers, out=self._registers)
        return self

    def __add__(self, other: DistinctSketch) -> DistinctSketch:
        """A new sketch of the union; neither operand changes."""
        if not isinstance(other, DistinctSketch):
            return NotImplemented
        result = self.copy()
        result += other
        return result

    def __eq__(self, other: object) -> bool:
        """Same parameters and same state (the same distinct hashes, or the same registers)."""
        if not isinstance(other, DistinctSketch):
            return NotImplemented
        if (self._precision, self._exact_limit) != (other._precision, other._exact_limit):
            return False
        if self._exact is not None or other._exact is not None:
            return self._exact == other._exact
        return bool(np.array_equal(self._registers, other._registers))

    __hash__ = None  # type: ignore[assignment]  # mutable

    def copy(self) -> DistinctSketch:
        """An independent copy."""
        new = type(self).__new__(type(self))
        new._precision = self._precision
        new._exact_limit = self._exact_limit
        new._exact = None if self._exact is None else set(self._exact)
        new._registers = None if self._registers is None else self._registers.copy()
        return new

    def __repr__(self) -> str:
        mode = "exact" if self._exact is not None else "registers"
        return (
            f"{type(self).__name__}(precision={self._precision}, "
            f"exact_limit={self._exact_limit}) <{mode}, count={self.count():.6g}>"
        )

    # -- serialization -----------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Compact, versioned, checksummed encoding; :meth:`from_bytes` reads it back.

        Canonical: equal sketches give equal bytes. 16 + 8 n bytes in exact mode, ``2**p + 14``
        bytes in register mode.
        """
        exact = self._exact
        if exact is not None:
            mode = _MODE_EXACT
            hashes = np.fromiter(exact, dtype=np.uint64, count=len(exact))
            hashes.sort()
            payload = _COUNT.pack(len(exact)) + hashes.astype("<u8").tobytes()
        else:
            mode = _MODE_REGISTERS
            payload = self._registers.tobytes()
        header = _HEADER.pack(_MAGIC, _VERSION, mode, self._precision, 0, self._exact_limit)
        body = header + payload
        return body + _CRC.pack(zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> DistinctSketch:
        """Decode :meth:`to_bytes` output. Raises ``ValueError`` on anything malformed."""
        data = bytes(data)
        if len(data) < _HEADER.size + _CRC.size:
            raise ValueError(f"DistinctSketch data too short ({len(data)} bytes)")
        body, (crc,) = data[: -_CRC.size], _CRC.unpack(data[-_CRC.size :])
        if zlib.crc32(body) != crc:
            raise ValueError("DistinctSketch data is corrupted (checksum mismatch)")
        magic, version, mode, precision, reserved, exact_limit = _HEADER.unpack_from(body)
        if magic != _MAGIC:
            raise ValueError(f"not DistinctSketch data (magic {magic!r})")
        if version != _VERSION:
            raise ValueError(f"unsupported DistinctSketch format version {version}")
        if reserved != 0:
            raise ValueError("DistinctSketch data has a non-zero reserved byte")
        try:
            sketch = cls(precision=precision, exact_limit=exact_limit)
        except ValueError as exc:
            raise ValueError(f"invalid DistinctSketch header: {exc}") from None
        payload = body[_HEADER.size :]
        if mode == _MODE_EXACT:
            if len(payload) < _COUNT.size:
                raise ValueError("DistinctSketch data truncated (no value count)")
            (n,) = _COUNT.unpack_from(payload)
            if n > exact_limit:
                raise ValueError(
                    f"exact DistinctSketch holds {n} values > exact_limit {exact_limit}"
                )
            if len(payload) != _COUNT.size + 8 * n:
                raise ValueError(
                    f"exact DistinctSketch payload must be {_COUNT.size + 8 * n} bytes"
                )
            hashes = np.frombuffer(payload, dtype="<u8", offset=_COUNT.size)
            if n > 1 and not bool(np.all(hashes[1:] > hashes[:-1])):
                raise ValueError("exact DistinctSketch values are not strictly increasing")
            sketch._exact = set(hashes.tolist())
        elif mode == _MODE_REGISTERS:
            m = 1 << precision
            if len(payload) != m:
                raise ValueError(f"DistinctSketch register payload must be {m} bytes")
            registers = np.frombuffer(payload, dtype=np.uint8).copy()
            if int(registers.max()) > 65 - precision:
                raise ValueError(f"DistinctSketch register value above {65 - precision}")
            if not registers.any():
                raise ValueError("DistinctSketch in register mode has no register set")
            sketch._registers = registers
            sketch._exact = None
        else:
            raise ValueError(f"unknown DistinctSketch mode {mode}")
        return sketch

    def __reduce__(self) -> tuple:
        # Pickle (multiprocessing, copy.deepcopy) through the validated compact format.
        return (type(self).from_bytes, (self.to_bytes(),))


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int in [{low}, {high}], got {value!r}")
    value = int(value)
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return value


def _check_hash(h: object) -> int:
    try:
        v = operator.index(h)
    except TypeError:
        raise TypeError(f"a hash must be an int in [0, 2**64), got {type(h).__name__}") from None
    if not 0 <= v <= _MASK64:
        raise ValueError(f"a hash must be in [0, 2**64), got {v}")
    return v
