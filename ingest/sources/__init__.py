"""Live flow sources: one :class:`Source` protocol, every source, and the factory by name.

``netwarden serve SOURCE`` names its source; :func:`open_source` builds it. Sources that need a
heavy or privileged stack (gRPC for Hubble, the kernel probes for eBPF) or live in a layer of
their own (the traffic generator) are registered by name, as ``"module:Class"``, and imported
only when asked for: ``import netwarden.ingest`` never imports ``bcc``, ``grpc`` or the
generator. :func:`register_source` adds a kind.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from typing import Any

from netwarden.ingest.sources.base import LineSource, Source, SourceStatus
from netwarden.ingest.sources.files import FollowFile, StreamSource

__all__ = [
    "FollowFile",
    "LineSource",
    "Source",
    "SourceStatus",
    "StreamSource",
    "open_source",
    "register_source",
    "source_class",
]

#: Source kinds by name, as "module:Class", imported when first asked for.
_KINDS: dict[str, str] = {
    "generator": "netwarden.generator.source:GeneratorSource",
    "hubble": "netwarden.ingest.sources.hubble:HubbleSource",
    "ebpf": "netwarden.ingest.sources.ebpf:EbpfSource",
}

_SPECS = (
    "'generator', 'hubble' (the node's Hubble socket), 'hubble:ADDR' (a socket path or "
    "Relay's host:port), 'ebpf' (netwarden's own probes), '-' (stdin), 'file:PATH' or a "
    "PATH"
)


def register_source(kind: str, target: str) -> None:
    """Make ``kind`` a source name, built by the class at ``target`` (``"module:Class"``)."""
    if ":" not in target:
        raise ValueError(f"source {kind!r}: target must be 'module:Class', got {target!r}")
    _KINDS[kind] = target


def source_class(kind: str) -> type[Any]:
    """The class registered for ``kind`` (imported now)."""
    module, _, name = _KINDS[kind].partition(":")
    return getattr(importlib.import_module(module), name)


def open_source(spec: str, **options: Any) -> Source:
    """The live source named by ``spec``, built with ``options`` (keyword arguments of its class).

    ``"generator"`` the built-in traffic generator; ``"hubble"`` Hubble's gRPC API on the node's
    socket, ``"hubble:ADDR"`` at a socket path or ``host:port``; ``"ebpf"`` netwarden's own
    probes; ``"-"`` standard input; ``"file:PATH"`` or a plain ``PATH`` a followed file. Anything
    else is a ValueError.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty source: use {_SPECS}")
    scheme, sep, rest = spec.partition(":")
    if spec == "-":
        return _build(StreamSource, spec, {"stream": sys.stdin.buffer, "name": "-", **options})
    if sep and scheme == "file":
        if not rest:
            raise ValueError("source 'file:' needs a path: file:PATH")
        return _build(FollowFile, spec, {"path": rest, **options})
    if scheme == "hubble":
        if sep and not rest:
            raise ValueError(
                "source 'hubble:' needs an address: hubble:HOST:PORT or "
                "hubble:/path/to/hubble.sock (plain 'hubble' is the node's socket)"
            )
        server = {"server": rest} if rest else {}
        return _build(source_class("hubble"), spec, {**options, **server})
    if not sep and spec in _KINDS:
        return _build(source_class(spec), spec, options)
    if (
        sep
        and len(scheme) > 1
        and scheme.replace("+", "").replace("-", "").isalnum()
        and "/" not in scheme
    ):
        raise ValueError(
            f"unknown source {spec!r}: use {_SPECS} (write file:PATH for a file name with a colon)"
        )
    return _build(FollowFile, spec, {"path": spec, **options})


def _build(cls: type[Any], spec: str, kwargs: dict[str, Any]) -> Any:
    params = inspect.signature(cls).parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        valid = ", ".join(p for p in params if p not in ("stream", "path", "server"))
        raise ValueError(
            f"source {spec!r} ({cls.__name__}) has no option {', '.join(unknown)}; valid: {valid}"
        )
    return cls(**kwargs)
