"""A small pure-Python reader of the running kernel's BTF (``/sys/kernel/btf/vmlinux``).

Why: the probes must read a few kernel struct fields (a socket's network namespace, an skb's
header offsets, ...) on a kernel whose layout need not match any installed headers (here the
headers are 6.1 and the kernel 6.18). BTF describes the *running* kernel, so offsets computed
from it are right by construction; the loader passes them to the C program as ``-D`` macros and
the C code only ever uses ``bpf_probe_read_kernel(ptr + OFFSET)``.

Only what the probes need is implemented: struct/union member offsets by a dotted member path
(anonymous struct/union members are searched through, as C does), type sizes, and the argument
types of raw tracepoints (the ``btf_trace_<name>`` typedefs), to check a raw tracepoint's
arguments before relying on them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

__all__ = ["DEFAULT_BTF", "Btf", "BtfError", "Member", "load", "load_cached", "offset_of"]

DEFAULT_BTF = Path("/sys/kernel/btf/vmlinux")

_MAGIC = 0xEB9F
# BTF kinds (include/uapi/linux/btf.h)
_INT, _PTR, _ARRAY, _STRUCT, _UNION, _ENUM, _FWD, _TYPEDEF = 1, 2, 3, 4, 5, 6, 7, 8
_VOLATILE, _CONST, _RESTRICT, _FUNC, _FUNC_PROTO, _VAR, _DATASEC = 9, 10, 11, 12, 13, 14, 15
_FLOAT, _DECL_TAG, _TYPE_TAG, _ENUM64 = 16, 17, 18, 19
# bytes of kind-specific data after the 12-byte common header: (fixed, per vlen entry)
_EXTRA: dict[int, tuple[int, int]] = {
    _INT: (4, 0),
    _PTR: (0, 0),
    _ARRAY: (12, 0),
    _STRUCT: (0, 12),
    _UNION: (0, 12),
    _ENUM: (0, 8),
    _FWD: (0, 0),
    _TYPEDEF: (0, 0),
    _VOLATILE: (0, 0),
    _CONST: (0, 0),
    _RESTRICT: (0, 0),
    _FUNC: (0, 0),
    _FUNC_PROTO: (0, 8),
    _VAR: (4, 0),
    _DATASEC: (0, 12),
    _FLOAT: (0, 0),
    _DECL_TAG: (4, 0),
    _TYPE_TAG: (0, 0),
    _ENUM64: (0, 12),
}
_MODIFIERS = (_TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG)


class BtfError(RuntimeError):
    """BTF is missing, unreadable or does not describe what was asked for."""


@dataclass(frozen=True, slots=True)
class Member:
    """Where a member lives: ``offset`` in bytes from the start of the outer struct.

    ``bit_size`` is non-zero for a bitfield; then ``bit_offset`` is exact and ``offset`` is the
    byte holding its first bit.
    """

    name: str
    offset: int
    bit_offset: int
    bit_size: int
    size: int
    type_name: str


@dataclass(frozen=True, slots=True)
class _Type:
    kind: int
    name: str
    vlen: int
    kind_flag: bool
    size_or_type: int  # size for INT/STRUCT/UNION/ENUM/FLOAT, referenced type id otherwise
    data: int  # offset of the kind-specific data in the type section


class Btf:
    """Parsed BTF: type table plus a name index of structs, unions and typedefs."""

    def __init__(self, blob: bytes, source: str = "<bytes>") -> None:
        self.source = source
        if len(blob) < 24:
            raise BtfError(f"{source}: too short to be BTF")
        magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", blob, 0)
        if magic != _MAGIC:
            raise BtfError(f"{source}: not BTF (magic {magic:#x}); big-endian BTF is unsupported")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", blob, 8)
        self._types_blob = memoryview(blob)[hdr_len + type_off : hdr_len + type_off + type_len]
        self._strings = bytes(blob[hdr_len + str_off : hdr_len + str_off + str_len])
        self._types: list[_Type] = [_Type(0, "void", 0, False, 0, 0)]  # id 0 is void
        self._by_name: dict[str, list[int]] = {}
        self._parse()

    # -- parsing ------------------------------------------------------------------------------
    def _str(self, off: int) -> str:
        end = self._strings.find(b"\0", off)
        return self._strings[off:end].decode("utf-8", "replace")

    def _parse(self) -> None:
        blob, pos, end = self._types_blob, 0, len(self._types_blob)
        unpack = struct.Struct("<III").unpack_from
        indexed = (_STRUCT, _UNION, _TYPEDEF, _ENUM, _ENUM64, _FWD)
        while pos < end:
            name_off, info, size_or_type = unpack(blob, pos)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            extra = _EXTRA.get(kind)
            if extra is None:
                raise BtfError(
                    f"{self.source}: unsupported BTF kind {kind} at type {len(self._types)}"
                )
            name = self._str(name_off) if name_off else ""
            self._types.append(_Type(kind, name, vlen, bool(info >> 31), size_or_type, pos + 12))
            if name and kind in indexed:
                self._by_name.setdefault(name, []).append(len(self._types) - 1)
            pos += 12 + extra[0] + extra[1] * vlen

    # -- lookups ------------------------------------------------------------------------------
    def _find(self, name: str, kinds: tuple[int, ...]) -> int:
        for tid in self._by_name.get(name, ()):
            if self._types[tid].kind in kinds:
                return tid
        raise BtfError(
            f"{self.source}: no {' or '.join(_kind_name(k) for k in kinds)} "
            f"named {name!r} in the running kernel's BTF"
        )

    def _resolve(self, tid: int) -> int:
        """Skip typedefs and qualifiers."""
        for _ in range(64):
            t = self._types[tid]
            if t.kind not in _MODIFIERS:
                return tid
            tid = t.size_or_type
        raise BtfError(f"{self.source}: typedef loop at type {tid}")

    def _members(self, tid: int) -> list[tuple[str, int, int, int]]:
        """(name, type id, bit offset, bitfield size) of a struct/union's direct members."""
        t = self._types[tid]
        out = []
        for i in range(t.vlen):
            name_off, mtype, off = struct.unpack_from("<III", self._types_blob, t.data + 12 * i)
            if t.kind_flag:
                bits, off = off >> 24, off & 0xFFFFFF
            else:
                bits = 0
            out.append((self._str(name_off) if name_off else "", mtype, off, bits))
        return out

    def _lookup_member(self, tid: int, name: str) -> tuple[int, int, int] | None:
        """(type id, bit offset, bitfield size) of ``name`` in struct/union ``tid``, searching
        anonymous members like C does."""
        for mname, mtype, off, bits in self._members(tid):
            if mname == name:
                return mtype, off, bits
            if not mname:
                inner = self._resolve(mtype)
                if self._types[inner].kind in (_STRUCT, _UNION):
                    found = self._lookup_member(inner, name)
                    if found is not None:
                        return found[0], off + found[1], found[2]
        return None

    def member(self, struct_name: str, path: str) -> Member:
        """Locate ``path`` (``"skc_net.net"``) inside ``struct struct_name`` (or a union/typedef
        of that name)."""
        tid = self._resolve(self._find(struct_name, (_STRUCT, _UNION, _TYPEDEF)))
        bit_offset, bits, mtype, where = 0, 0, tid, struct_name
        for part in path.split("."):
            cur = self._resolve(mtype)
            if self._types[cur].kind not in (_STRUCT, _UNION):
                raise BtfError(
                    f"{self.source}: {where} is not a struct or union, cannot look up {part!r}"
                )
            if bits:
                raise BtfError(f"{self.source}: {where} is a bitfield")
            found = self._lookup_member(cur, part)
            if found is None:
                raise BtfError(
                    f"{self.source}: struct {struct_name} has no member {path!r} "
                    f"(no {part!r} in {where})"
                )
            mtype, off, bits = found
            bit_offset += off
            where = f"{where}.{part}"
        return Member(
            path, bit_offset // 8, bit_offset, bits, self.sizeof_id(mtype), self.type_name(mtype)
        )

    def offset_of(self, struct_name: str, path: str) -> int:
        """Byte offset of a (non-bitfield, byte-aligned) member."""
        m = self.member(struct_name, path)
        if m.bit_size or m.bit_offset % 8:
            raise BtfError(
                f"{self.source}: {struct_name}.{path} is a bitfield "
                f"(bit {m.bit_offset}, {m.bit_size} bits); use member()"
            )
        return m.offset

    def has_member(self, struct_name: str, path: str) -> bool:
        try:
            self.member(struct_name, path)
        except BtfError:
            return False
        return True

    def members(self, struct_name: str) -> list[Member]:
        """Direct members of a struct/union, anonymous ones under the name ``""``."""
        tid = self._resolve(self._find(struct_name, (_STRUCT, _UNION, _TYPEDEF)))
        return [
            Member(n, off // 8, off, bits, self.sizeof_id(mt), self.type_name(mt))
            for n, mt, off, bits in self._members(tid)
        ]

    def sizeof(self, name: str) -> int:
        """Size in bytes of a named struct, union, typedef or enum."""
        return self.sizeof_id(self._find(name, (_STRUCT, _UNION, _TYPEDEF, _ENUM, _ENUM64)))

    def sizeof_id(self, tid: int) -> int:
        tid = self._resolve(tid)
        t = self._types[tid]
        if t.kind in (_INT, _STRUCT, _UNION, _ENUM, _ENUM64, _FLOAT):
            return t.size_or_type
        if t.kind == _PTR:
            return 8
        if t.kind == _ARRAY:
            elem, _index, nelems = struct.unpack_from("<III", self._types_blob, t.data)
            return nelems * self.sizeof_id(elem)
        return 0

    def type_name(self, tid: int) -> str:
        """C-ish spelling of a type: ``struct sock *``, ``__u16``, ``u8[4]``."""
        t = self._types[tid]
        if tid == 0:
            return "void"
        if t.kind == _PTR:
            return self.type_name(t.size_or_type) + " *"
        if t.kind in (_CONST, _VOLATILE, _RESTRICT, _TYPE_TAG):
            return self.type_name(t.size_or_type)  # qualifiers do not matter to us
        if t.kind == _ARRAY:
            elem, _index, nelems = struct.unpack_from("<III", self._types_blob, t.data)
            return f"{self.type_name(elem)}[{nelems}]"
        if t.kind in (_STRUCT, _UNION, _ENUM, _ENUM64, _FWD):
            prefix = {_STRUCT: "struct", _UNION: "union", _ENUM: "enum", _ENUM64: "enum"}.get(
                t.kind, "struct"
            )
            return f"{prefix} {t.name or '<anon>'}"
        if t.kind == _FUNC_PROTO:
            return "fn"
        return t.name or f"<type {tid}>"

    def raw_tracepoint_args(self, tracepoint: str) -> list[str]:
        """Argument types of raw tracepoint ``tracepoint`` (without the leading ``void *``),
        from the kernel's ``btf_trace_<tracepoint>`` typedef."""
        tid = self._resolve(self._find(f"btf_trace_{tracepoint}", (_TYPEDEF,)))
        t = self._types[tid]
        if t.kind == _PTR:
            tid = self._resolve(t.size_or_type)
            t = self._types[tid]
        if t.kind != _FUNC_PROTO:
            raise BtfError(f"{self.source}: btf_trace_{tracepoint} is not a function pointer")
        params = [
            self.type_name(struct.unpack_from("<II", self._types_blob, t.data + 8 * i)[1])
            for i in range(t.vlen)
        ]
        return params[1:]  # the first parameter is the tracepoint's private data


def _kind_name(kind: int) -> str:
    return {
        _STRUCT: "struct",
        _UNION: "union",
        _TYPEDEF: "typedef",
        _ENUM: "enum",
        _ENUM64: "enum64",
        _FWD: "forward declaration",
    }.get(kind, f"kind {kind}")


def load(path: str | Path = DEFAULT_BTF) -> Btf:
    """Read and parse a BTF file; :class:`BtfError` with the fix when it is not there."""
    p = Path(path)
    try:
        blob = p.read_bytes()
    except FileNotFoundError:
        raise BtfError(
            f"kernel BTF not found at {p}: the kernel must be built with "
            "CONFIG_DEBUG_INFO_BTF=y (most distribution kernels since 5.4 "
            "are)"
        ) from None
    except PermissionError:
        raise BtfError(f"cannot read kernel BTF at {p}: permission denied (run as root)") from None
    except OSError as exc:
        raise BtfError(f"cannot read kernel BTF at {p}: {exc.strerror or exc}") from None
    return Btf(blob, str(p))


@lru_cache(maxsize=4)
def _cached(path: str) -> Btf:
    return load(path)


def load_cached(path: str | Path = DEFAULT_BTF) -> Btf:
    """:func:`load`, parsed once per path (the running kernel's BTF does not change)."""
    return _cached(str(path))


def offset_of(struct_name: str, path: str, btf_path: str | Path = DEFAULT_BTF) -> int:
    """Byte offset of ``struct_name.path`` in the running kernel (parsed BTF is cached)."""
    return load_cached(btf_path).offset_of(struct_name, path)
