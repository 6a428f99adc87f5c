"""Does a proposal's policy target its identity, and nothing more?

A proposal is reviewed as "this policy for workload ``namespace/workload``"; a policy that selects
other endpoints would be approved under a false label. So a proposal's policy must be:

* a ``CiliumNetworkPolicy`` (a ``CiliumClusterwideNetworkPolicy`` selects across every
  namespace) in the identity's namespace (a CNP's selectors only reach endpoints in its own);
* with no ``nodeSelector`` (a host policy selects nodes, not the workload);
* whose every rule's ``endpointSelector`` *pins* the workload: it requires, in ``matchLabels`` (or
  a one-value ``In`` expression), a label the workload carries that names it. Requirements are
  ANDed, so one such label bounds the selector to that workload; an empty selector selects every
  endpoint of the namespace, and a selector on other labels only (a tier, a team) selects whatever
  else carries them.

Which labels name the workload: the ones the proposal was built for when netwarden knows them
(``workload_labels``: the stable labels :class:`~netwarden.remediation.propose.Proposer` learned
from the workload's flows, or the selector of the workload's current policy that a containment
patches); otherwise the labels :mod:`netwarden.ingest.identity` names workloads by
(``app.kubernetes.io/name``, ``app``, ``k8s-app``) with the identity's workload name as value, as
netwarden's standalone containments select (``k8s:app=<workload>``). A selector label that
contradicts a known workload label (same key, other value) selects another workload and is
refused too. A ``netwarden.io/identity`` annotation must name the identity, if present.

Selector keys follow Cilium: ``k8s:app``, ``any:app`` and ``app`` are the same Kubernetes label;
keys of other sources (``reserved:``, ``cidr:``, ...) never name a workload.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = ["IDENTITY_ANNOTATION", "NAMING_KEYS", "target_problems"]

IDENTITY_ANNOTATION: Final = "netwarden.io/identity"
#: The labels identity resolution names a workload by (netwarden.ingest.identity).
NAMING_KEYS: Final = ("app.kubernetes.io/name", "app", "k8s-app")
_K8S_SOURCES: Final = ("k8s", "any")


def _k8s_key(key: str) -> str | None:
    """The Kubernetes label key a selector key means, or None for another label source."""
    source, sep, rest = key.partition(":")
    if not sep:
        return key
    return rest if source in _K8S_SOURCES else None


def _naming_labels(workload: str, known: Mapping[str, str] | None) -> dict[str, str]:
    if known:
        out = {}
        for key, value in known.items():
            k8s_key = _k8s_key(str(key))
            if k8s_key is not None:
                out[k8s_key] = str(value)
        return out
    return dict.fromkeys(NAMING_KEYS, workload)


def _requirements(selector: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """(label -> value pinned by the selector, problems with its form)."""
    pinned: dict[str, str] = {}
    problems: list[str] = []
    labels = selector.get("matchLabels") or {}
    if not isinstance(labels, Mapping):
        return {}, ["matchLabels is not a map"]
    for key, value in labels.items():
        k8s_key = _k8s_key(str(key))
        if k8s_key is not None:
            pinned[k8s_key] = str(value)
    expressions = selector.get("matchExpressions") or []
    if not isinstance(expressions, list):
        return pinned, ["matchExpressions is not a list"]
    for expr in expressions:
        if not isinstance(expr, Mapping):
            continue
        values = expr.get("values") or []
        k8s_key = _k8s_key(str(expr.get("key", "")))
        if expr.get("operator") == "In" and isinstance(values, list) and len(values) == 1:
            if k8s_key is not None:
                pinned.setdefault(k8s_key, str(values[0]))
    return pinned, problems


def _selector_problems(
    where: str, rule: Any, workload: str, naming: Mapping[str, str], known: bool
) -> list[str]:
    if not isinstance(rule, Mapping):
        return [f"{where}: not a rule"]
    if "nodeSelector" in rule:
        return [f"{where}.nodeSelector: a host policy selects nodes, not workload {workload}"]
    selector = rule.get("endpointSelector")
    if not isinstance(selector, Mapping):
        return [f"{where}.endpointSelector: missing; the policy must select workload {workload}"]
    pinned, problems = _requirements(selector)
    problems = [f"{where}.endpointSelector: {p}" for p in problems]
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        return [
            *problems,
            f"{where}.endpointSelector: empty, it selects every endpoint of the namespace, "
            f"not only workload {workload}",
        ]
    contradicting = sorted(k for k, v in pinned.items() if k in naming and naming[k] != v)
    if known and contradicting:
        listed = ", ".join(f"{k}={pinned[k]}" for k in contradicting)
        problems.append(
            f"{where}.endpointSelector: {listed} selects another workload than {workload} "
            f"(its labels: {_listed(naming)})"
        )
    elif not any(naming.get(k) == v for k, v in pinned.items()):
        shown = _listed(selector.get("matchLabels") or {}) or "only expressions"
        problems.append(
            f"{where}.endpointSelector ({shown}) does not pin workload {workload}: it must "
            f"require one of its labels {_listed(naming)}, or it may select other endpoints"
        )
    return problems


def _listed(labels: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))


def target_problems(
    policy: Any, identity: str, *, workload_labels: Mapping[str, str] | None = None
) -> list[str]:
    """Why ``policy`` does not target exactly the workload ``identity`` (``namespace/workload``);
    empty when it does. ``workload_labels``: the labels the proposal was built for, when known
    (see the module docstring)."""
    namespace, _, workload = identity.partition("/")
    if not isinstance(policy, Mapping):
        return ["the policy is not an object"]
    problems: list[str] = []
    kind = policy.get("kind")
    if kind != "CiliumNetworkPolicy":
        why = (
            " (a clusterwide policy selects endpoints in every namespace)"
            if kind == "CiliumClusterwideNetworkPolicy"
            else ""
        )
        problems.append(
            f"kind {kind}: a proposal for workload {identity} must be a CiliumNetworkPolicy in "
            f"namespace {namespace}{why}"
        )
    meta = policy.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    if kind == "CiliumNetworkPolicy" and meta.get("namespace") != namespace:
        problems.append(
            f"metadata.namespace {meta.get('namespace')!r}: the policy of {identity} must be in "
            f"namespace {namespace!r}"
        )
    annotations = meta.get("annotations")
    named = annotations.get(IDENTITY_ANNOTATION) if isinstance(annotations, Mapping) else None
    if named is not None and named != identity:
        problems.append(
            f"metadata.annotations.{IDENTITY_ANNOTATION} names {named!r}, not {identity!r}"
        )
    naming = _naming_labels(workload, workload_labels)
    spec, specs = policy.get("spec"), policy.get("specs")
    rules: list[tuple[str, Any]] = []
    if spec is not None:
        rules.append(("spec", spec))
    if isinstance(specs, list):
        rules += [(f"specs[{i}]", rule) for i, rule in enumerate(specs)]
    if not rules:
        problems.append(f"spec: missing; the policy must select workload {identity}")
    for where, rule in rules:
        problems += _selector_problems(where, rule, identity, naming, bool(workload_labels))
    return problems
