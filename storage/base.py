"""The one ORM base of netwarden: every table (anomalies, windows, proposals, audit events, the
alert outbox) is declared on :class:`Base`, so one ``metadata`` creates the whole schema.

Stores hand callers frozen dataclasses, never ORM rows: :func:`record_of` copies a row's
columns into one, so a record does not repeat its table field by field.
"""

from __future__ import annotations

from dataclasses import fields
from functools import cache
from typing import Any, TypeVar

from sqlalchemy.orm import DeclarativeBase

__all__ = ["Base", "record_of"]

_R = TypeVar("_R")


class Base(DeclarativeBase):
    """The declarative base (and ``Base.metadata``) of every netwarden table."""


@cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def record_of(cls: type[_R], row: object, **converted: Any) -> _R:
    """A ``cls`` dataclass from ``row``: each field is the row attribute of the same name,
    unless ``converted`` gives its value (a JSON column made a tuple, a renamed column)."""
    values = {
        name: converted[name] if name in converted else getattr(row, name)
        for name in _field_names(cls)
    }
    return cls(**values)
