"""Cilium label selectors over a flow endpoint's labels: one engine for filters and policies.

Hubble flow filters (:mod:`netwarden.observer.filters`, string syntax) and policy simulation
(:mod:`netwarden.remediation.matcher`, ``matchLabels``/``matchExpressions``) both compile to
:class:`Requirement` and :class:`LabelSelector` here, so a selector means the same in both.
Follows cilium v1.19 ``pkg/labels``, ``pkg/policy/api`` and ``pkg/hubble/filters/labels.go``:

* A flow label ``k8s:app=cart`` is (source ``k8s``, key ``app``, value ``cart``); a label without
  a source is ``unspec``; ``$host`` and ``reserved.host`` are ``reserved:host`` (``ParseLabel``).
* A policy selector key is split at the first ``:`` (``k8s:app`` -> source ``k8s``); without ``:``
  the source is ``any`` (matches every source), except ``reserved.<name>`` and ``$<name>``, which
  mean ``reserved``. A dotted key such as ``k8s.io.kubernetes.pod.namespace`` is therefore source
  ``any`` with that whole key: it does *not* name the pod namespace (Cilium's own quirk).
* A Hubble filter key has no such shortcuts (Hubble's ``translateKey`` prefixes every key without
  ``:`` with ``any.``): ``source:key`` names a source, anything else is an ``any`` key as written.
* A requirement looks its key up as Cilium's ``LabelArray.Lookup`` does: the first label (in
  the endpoint's order) with that key and a compatible source supplies the value.
* ``In``/``NotIn``/``Exists``/``DoesNotExist`` keep Kubernetes' meaning (``NotIn`` matches an
  absent key); Kubernetes' ``=``/``!=`` are ``In``/``NotIn`` with one value. An empty selector
  matches every endpoint.

Selectors are compiled once (bad operators fail then, not per flow).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec

__all__ = [
    "ANY",
    "OPERATORS",
    "RESERVED",
    "UNSPEC",
    "Label",
    "LabelSelector",
    "Requirement",
    "SelectorError",
    "label_list",
    "parse_filter_key",
    "parse_label",
    "parse_labels",
    "parse_selector_key",
]

ANY: Final = "any"
RESERVED: Final = "reserved"
UNSPEC: Final = "unspec"
OPERATORS: Final = frozenset({"In", "NotIn", "Exists", "DoesNotExist"})

#: (source, key, value), as Cilium stores a label.
Label = tuple[str, str, str]

_labels_decoder = msgspec.json.Decoder(list[str])


class SelectorError(ValueError):
    """A selector that Cilium (or the CRD) would reject."""


def _source(text: str) -> tuple[str, str]:
    """Cilium ``ParseSource(str, ':')``: the source (``""`` when absent) and the rest."""
    if not text:
        return "", ""
    if text[0] == "$":
        return RESERVED, text[1:]
    source, sep, rest = text.partition(":")
    if not sep:
        if text.startswith(RESERVED + "."):
            return RESERVED, text[len(RESERVED) + 1 :]
        return "", text
    return source, rest


def parse_label(text: str) -> Label:
    """A flow label string as (source, key, value).

    >>> parse_label("k8s:app=cart"), parse_label("reserved:world"), parse_label("$host")
    (('k8s', 'app', 'cart'), ('reserved', 'world', ''), ('reserved', 'host', ''))
    """
    source, rest = _source(text)
    key, _, value = rest.partition("=")
    return (source or UNSPEC, key, value)


def parse_labels(texts: Iterable[str]) -> tuple[Label, ...]:
    """An endpoint's label strings as labels, in their order (the order lookups see)."""
    return tuple(parse_label(t) for t in texts)


def parse_selector_key(key: str) -> tuple[str, str]:
    """A policy selector key (``matchLabels``/``matchExpressions``) as (source, key).

    >>> parse_selector_key("app"), parse_selector_key("k8s:app"), parse_selector_key("reserved.world")
    (('any', 'app'), ('k8s', 'app'), ('reserved', 'world'))
    >>> parse_selector_key("k8s.io.kubernetes.pod.namespace")
    ('any', 'k8s.io.kubernetes.pod.namespace')
    """
    source, rest = _source(key)
    return (source or ANY, rest)


def parse_filter_key(key: str) -> tuple[str, str]:
    """A Hubble label-filter key as (source, key): ``source:key`` needs both parts, anything else
    is an ``any`` key as written (no ``reserved.``/``$`` shortcuts, unlike policy keys).

    >>> parse_filter_key("k8s:app"), parse_filter_key("app"), parse_filter_key("reserved.world")
    (('k8s', 'app'), ('any', 'app'), ('any', 'reserved.world'))
    >>> parse_filter_key(":app"), parse_filter_key("k8s:")
    (('any', ':app'), ('any', 'k8s:'))
    """
    source, sep, rest = key.partition(":")
    return (source, rest) if sep and source and rest else (ANY, key)


def label_list(labels: Any) -> tuple[str, ...]:
    """Endpoint labels from a decoded list/tuple, a raw JSON list (``CompactEndpoint`` of a
    file) or a protobuf repeated field (``CompactEndpoint`` of the Hubble gRPC source)."""
    if isinstance(labels, tuple):
        return labels
    if isinstance(labels, list):
        return tuple(labels)
    if isinstance(labels, msgspec.Raw):
        raw = bytes(labels)
        if raw:
            try:
                return tuple(_labels_decoder.decode(raw))
            except msgspec.MsgspecError:
                return ()
        return ()
    if labels is None or isinstance(labels, (str, bytes)):
        return ()
    return tuple(str(label) for label in labels)


def _as_value(value: Any) -> str:
    """YAML may load ``true``/``1`` where Kubernetes means the string; match on the string."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True, slots=True)
class Requirement:
    """One ``matchLabels`` entry (operator ``In`` with one value), ``matchExpressions`` item or
    comma-separated term of a Hubble label filter."""

    source: str
    key: str
    operator: str
    values: frozenset[str] = frozenset()

    @property
    def extended_key(self) -> str:
        """Cilium's internal ``source.key`` form, used for the prefix checks of defaulting."""
        return f"{self.source}.{self.key}"

    def matches(self, labels: Sequence[Label]) -> bool:
        found = False
        value = ""
        for source, key, val in labels:
            if key == self.key and (self.source == ANY or source == self.source):
                found, value = True, val
                break
        op = self.operator
        if op == "In":
            return found and value in self.values
        if op == "NotIn":
            return not found or value not in self.values
        if op == "Exists":
            return found
        return not found  # DoesNotExist


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """A compiled Kubernetes label selector with Cilium's key/source rules (AND of requirements)."""

    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any] | None) -> LabelSelector:
        """Compile ``{matchLabels: {...}, matchExpressions: [...]}``; ``None``/``{}`` selects all."""
        if spec is None:
            return cls()
        if not isinstance(spec, Mapping):
            raise SelectorError(f"selector must be a mapping, got {type(spec).__name__}")
        reqs: list[Requirement] = []
        for key, value in (spec.get("matchLabels") or {}).items():
            source, name = parse_selector_key(str(key))
            reqs.append(Requirement(source, name, "In", frozenset({_as_value(value)})))
        for expr in spec.get("matchExpressions") or ():
            op = expr.get("operator")
            if op not in OPERATORS:
                raise SelectorError(f"unknown matchExpressions operator {op!r}")
            values = frozenset(_as_value(v) for v in expr.get("values") or ())
            if op in ("In", "NotIn") and not values:
                raise SelectorError(f"operator {op} needs values (key {expr.get('key')!r})")
            source, name = parse_selector_key(str(expr.get("key", "")))
            reqs.append(Requirement(source, name, op, values))
        return cls(tuple(reqs))

    def matches(self, labels: Sequence[Label]) -> bool:
        return all(req.matches(labels) for req in self.requirements)

    def has_key(self, source: str, key: str) -> bool:
        return any(r.source == source and r.key == key for r in self.requirements)

    def has_key_prefix(self, prefix: str) -> bool:
        """Whether some key's ``source.key`` form starts with ``prefix`` (Cilium ``HasKeyPrefix``)."""
        return any(r.extended_key.startswith(prefix) for r in self.requirements)

    def with_requirement(self, req: Requirement) -> LabelSelector:
        """This selector plus one requirement; an existing ``In`` on the same key is replaced
        (Cilium ``AddMatch`` overwrites ``matchLabels[key]``)."""
        kept = tuple(
            r
            for r in self.requirements
            if not (
                req.operator == "In"
                and r.operator == "In"
                and r.source == req.source
                and r.key == req.key
            )
        )
        return LabelSelector((*kept, req))

    @classmethod
    def of(cls, labels: Iterable[str]) -> LabelSelector:
        """Selector requiring each ``source:key=value`` label (for entities)."""
        reqs = []
        for text in labels:
            source, key, value = parse_label(text)
            reqs.append(Requirement(source, key, "In", frozenset({value})))
        return cls(tuple(reqs))

    def __str__(self) -> str:
        if not self.requirements:
            return "{}"
        parts = []
        for r in self.requirements:
            name = f"{r.source}:{r.key}"
            if r.operator == "In" and len(r.values) == 1:
                parts.append(f"{name}={next(iter(r.values))}")
            elif r.operator in ("In", "NotIn"):
                parts.append(f"{name} {r.operator} ({','.join(sorted(r.values))})")
            else:
                parts.append(f"{r.operator} {name}")
        return "{" + ", ".join(parts) + "}"
