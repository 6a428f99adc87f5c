"""Tracepoint format files of the running kernel: field layout and symbolic names.

Why: the numbering of ``enum skb_drop_reason`` changes between kernels (a reason is added
almost every release), so a hard-coded table is wrong somewhere. The running kernel prints its
own table in ``events/skb/kfree_skb/format``: ``__print_symbolic(REC->reason, { 2,
"NOT_SPECIFIED" }, { 3, "NO_SOCKET" }, ...)``. This module parses that, and the field list of
any format file, which the loader uses to lay out the C structs of the tracepoint arguments (so
the probes never depend on the installed kernel headers' ideas of a tracepoint's layout or of
enum types such as ``enum skb_drop_reason`` / ``enum sk_rst_reason``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CONSUMED_NAMES",
    "DEFAULT_TRACEFS",
    "Field",
    "TracepointFormat",
    "find_tracefs",
    "load_drop_reasons",
    "parse_drop_reasons",
    "reason_name",
]

DEFAULT_TRACEFS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))

#: Names a kernel may use for "freed normally, not dropped": never reported as drops.
CONSUMED_NAMES = frozenset({"NOT_DROPPED_YET", "CONSUMED", "SKB_CONSUMED"})

_FIELD_RE = re.compile(
    r"^\s*field:(?P<decl>[^;]+);\s*offset:(?P<offset>\d+);\s*size:(?P<size>\d+);"
    r"\s*signed:(?P<signed>-?\d+);",
    re.MULTILINE,
)
_SYMBOL_RE = re.compile(r"\{\s*([^,{}]+?)\s*,\s*\"([^\"]*)\"\s*\}")


@dataclass(frozen=True, slots=True)
class Field:
    """One ``field:`` line: ``decl`` as printed (``__u8 saddr[4]``), offset/size in bytes."""

    name: str
    decl: str
    offset: int
    size: int
    signed: bool

    @property
    def is_array(self) -> bool:
        return "[" in self.decl


@dataclass(frozen=True, slots=True)
class TracepointFormat:
    """A parsed ``events/<system>/<event>/format`` file."""

    name: str
    id: int
    fields: dict[str, Field] = field(default_factory=dict)
    print_fmt: str = ""

    @classmethod
    def parse(cls, text: str) -> TracepointFormat:
        name_m = re.search(r"^name:\s*(\S+)", text, re.MULTILINE)
        id_m = re.search(r"^ID:\s*(\d+)", text, re.MULTILINE)
        fields: dict[str, Field] = {}
        for m in _FIELD_RE.finditer(text):
            decl = m.group("decl").strip()
            fname = re.sub(r"\[.*$", "", decl).split()[-1].lstrip("*")
            fields[fname] = Field(
                fname, decl, int(m.group("offset")), int(m.group("size")), m.group("signed") == "1"
            )
        pf = re.search(r"^print fmt:\s*(.*)$", text, re.MULTILINE | re.DOTALL)
        return cls(
            name_m.group(1) if name_m else "",
            int(id_m.group(1)) if id_m else 0,
            fields,
            pf.group(1).strip() if pf else "",
        )

    @classmethod
    def read(cls, system: str, event: str, tracefs: Path | None = None) -> TracepointFormat:
        """Read a format file; FileNotFoundError when the kernel lacks the tracepoint."""
        root = tracefs or find_tracefs()
        if root is None:
            raise FileNotFoundError("tracefs is not mounted (/sys/kernel/tracing)")
        return cls.parse((root / "events" / system / event / "format").read_text())

    def symbols(self, field_name: str) -> dict[int, str]:
        """``{value: name}`` of ``__print_symbolic(REC-><field_name>, ...)`` in the print
        format; entries whose value is not a number (an unresolved enum) are skipped."""
        out: dict[int, str] = {}
        for start in (
            m.end()
            for m in re.finditer(
                r"__print_symbolic\(\s*REC->" + re.escape(field_name) + r"\s*,", self.print_fmt
            )
        ):
            depth, i = 1, start
            while i < len(self.print_fmt) and depth:
                ch = self.print_fmt[i]
                if ch == '"':  # skip string literals, which may hold parentheses
                    i = self.print_fmt.index('"', i + 1)
                elif ch == "(":
                    depth += 1
                elif ch == ")":
                    depth -= 1
                i += 1
            for value, name in _SYMBOL_RE.findall(self.print_fmt[start:i]):
                try:
                    out[int(value, 0)] = name
                except ValueError:
                    continue
        return out


def find_tracefs(candidates: tuple[Path, ...] = DEFAULT_TRACEFS) -> Path | None:
    """The first mounted tracefs among ``candidates`` (it has an ``events`` directory)."""
    for c in candidates:
        if (c / "events").is_dir():
            return c
    return None


def parse_drop_reasons(format_text: str) -> dict[int, str]:
    """``{code: NAME}`` from the text of ``skb/kfree_skb/format`` (names without the
    ``SKB_DROP_REASON_`` prefix, as the kernel prints them)."""
    table = TracepointFormat.parse(format_text).symbols("reason")
    return {code: name.removeprefix("SKB_DROP_REASON_") for code, name in table.items()}


def load_drop_reasons(tracefs: Path | None = None) -> dict[int, str]:
    """The running kernel's drop reason table (empty when kfree_skb has no reason field)."""
    root = tracefs or find_tracefs()
    if root is None:
        raise FileNotFoundError("tracefs is not mounted (/sys/kernel/tracing)")
    return parse_drop_reasons((root / "events/skb/kfree_skb/format").read_text())


def reason_name(code: int, table: dict[int, str]) -> str:
    """The kernel's name for ``code``, or ``REASON_<code>`` when the format does not name it."""
    return table.get(code) or f"REASON_{code}"
