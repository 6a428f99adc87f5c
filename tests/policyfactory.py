"""Build CiliumNetworkPolicy dicts and labelled endpoints for matcher tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

CNP_EXAMPLES = Path(__file__).resolve().parent / "data" / "cnp-examples"


def cnp(
    selector: dict[str, Any] | None = None,
    *,
    name: str = "p",
    namespace: str | None = "shop",
    **sections: Any,
) -> dict[str, Any]:
    """A CNP whose single spec selects ``matchLabels: selector`` and has ``sections``."""
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    spec = {"endpointSelector": {"matchLabels": selector or {}}, **sections}
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": meta,
        "spec": spec,
    }


def ccnp(
    selector: dict[str, Any] | None = None, *, name: str = "c", **sections: Any
) -> dict[str, Any]:
    spec = {"endpointSelector": {"matchLabels": selector or {}}, **sections}
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumClusterwideNetworkPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


def example(filename: str, namespace: str | None = None) -> list[dict[str, Any]]:
    """The policies of one file in tests/data/cnp-examples, optionally placed in ``namespace``."""
    docs = [d for d in yaml.safe_load_all((CNP_EXAMPLES / filename).read_text()) if d]
    if namespace is not None:
        for doc in docs:
            if doc["kind"] == "CiliumNetworkPolicy" and "namespace" not in doc["metadata"]:
                doc["metadata"]["namespace"] = namespace
    return docs


def with_labels(end: dict[str, Any], *labels: str) -> dict[str, Any]:
    """A copy of a flowfactory endpoint with ``source:key=value`` labels added (or replaced)."""
    out = copy.deepcopy(end)
    keys = {label.partition("=")[0] for label in labels}
    kept = [lb for lb in out["endpoint"].get("labels", []) if lb.partition("=")[0] not in keys]
    out["endpoint"]["labels"] = sorted([*kept, *labels])
    return out
