"""Measured memory of live window state: the sizes of the objects themselves, not estimates.

:func:`deep_size` walks the containers a window owns (dicts, lists, sets, tuples, slotted
objects such as :class:`~netwarden.ingest.features.SideStats` and the sketches, numpy arrays)
and adds :func:`sys.getsizeof` of every object reached, each once. It does not descend into
anything else (a :class:`~netwarden.ingest.identity.Subject`, a flow): those belong to the
builder's caches or to the input, not to the window. Small integers, ``None`` and booleans are
interpreter singletons and cost a window nothing. So the figure is what the window's state
really holds, an upper bound only in that a string or large integer a window shares with a
cache is counted as its own.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["deep_size"]

_CONTAINERS = (dict, list, set, frozenset, tuple)
_LEAVES = (int, float, str, bytes, np.ndarray)


def deep_size(roots: Iterable[Any], seen: set[int] | None = None) -> int:
    """Bytes held by ``roots`` and what they own (see the module docstring); objects already in
    ``seen`` (ids) are not counted again, so a caller can sum over windows sharing nothing."""
    seen = set() if seen is None else seen
    total = 0
    stack = list(roots)
    getsizeof = sys.getsizeof
    while stack:
        obj = stack.pop()
        if obj is None or obj is True or obj is False or id(obj) in seen:
            continue
        kind = type(obj)
        if kind is int and -5 <= obj <= 256:
            continue
        if isinstance(obj, _CONTAINERS):
            seen.add(id(obj))
            total += getsizeof(obj)
            if isinstance(obj, dict):
                stack.extend(obj.keys())
                stack.extend(obj.values())
            else:
                stack.extend(obj)
        elif isinstance(obj, _LEAVES):
            seen.add(id(obj))
            total += getsizeof(obj)
        else:
            slots = _slots(kind)
            if slots is None:
                continue  # not the window's own state (a subject, a flow, a cache)
            seen.add(id(obj))
            total += getsizeof(obj)
            stack.extend(getattr(obj, name, None) for name in slots)
    return total


def _slots(kind: type) -> tuple[str, ...] | None:
    """Slot names of a netwarden ``ingest`` state class (its own and inherited), else None
    (identities are the builder's, shared by every window of a subject)."""
    module = kind.__module__
    if not module.startswith("netwarden.ingest.") or module == "netwarden.ingest.identity":
        return None
    names: list[str] = []
    for klass in kind.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        names.extend((slots,) if isinstance(slots, str) else slots)
    return tuple(names) if names else None
