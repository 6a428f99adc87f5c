"""The one label-selector engine: Cilium's label, key and lookup rules, for filters and policies."""

from __future__ import annotations

import msgspec
import pytest

from netwarden.hubble import flow_pb2
from netwarden.ingest.selectors import (
    LabelSelector,
    Requirement,
    SelectorError,
    label_list,
    parse_filter_key,
    parse_label,
    parse_labels,
    parse_selector_key,
)
from netwarden.observer.filters import FilterError, compile_filters


# -- labels (Cilium ParseLabel) ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("k8s:app=cart", ("k8s", "app", "cart")),
        ("k8s:io.kubernetes.pod.namespace=shop", ("k8s", "io.kubernetes.pod.namespace", "shop")),
        ("k8s:a=b=c", ("k8s", "a", "b=c")),  # the value is everything after the first "="
        ("container:x:y=1", ("container", "x:y", "1")),  # the source ends at the first ":"
        ("reserved:world", ("reserved", "world", "")),
        ("$host", ("reserved", "host", "")),
        ("reserved.host", ("reserved", "host", "")),
        ("app=cart", ("unspec", "app", "cart")),
        (":app=cart", ("unspec", "app", "cart")),
        ("", ("unspec", "", "")),
    ],
)
def test_labels_parse_as_cilium(text: str, label: tuple[str, str, str]) -> None:
    assert parse_label(text) == label


def test_label_list_accepts_every_endpoint_form() -> None:
    assert label_list(["k8s:a=1"]) == ("k8s:a=1",)
    assert label_list(("k8s:a=1",)) == ("k8s:a=1",)
    assert label_list(msgspec.Raw(b'["k8s:a=1","reserved:host"]')) == ("k8s:a=1", "reserved:host")
    assert label_list(msgspec.Raw(b"")) == ()
    assert label_list(msgspec.Raw(b"{not json")) == ()
    assert label_list(None) == ()
    assert parse_labels(["k8s:a=1", "$host"]) == (("k8s", "a", "1"), ("reserved", "host", ""))


# -- keys: policy (ParseSource ':') and Hubble filter (translateKey) rules -----------------------
@pytest.mark.parametrize(
    ("key", "policy", "hubble"),
    [
        ("app", ("any", "app"), ("any", "app")),
        ("k8s:app", ("k8s", "app"), ("k8s", "app")),
        ("any:app", ("any", "app"), ("any", "app")),
        ("k8s:io.kubernetes.pod.namespace", ("k8s", "io.kubernetes.pod.namespace"), None),
        # a dotted key is an any-source key as a whole in both: no "k8s." source
        ("k8s.io.kubernetes.pod.namespace", ("any", "k8s.io.kubernetes.pod.namespace"), None),
        # policy keys know Cilium's reserved shortcuts; Hubble prefixes the key with "any." instead
        ("reserved.world", ("reserved", "world"), ("any", "reserved.world")),
        ("$host", ("reserved", "host"), ("any", "$host")),
        # a missing source or key: policy keeps the parts, a filter key is taken as written
        (":app", ("any", "app"), ("any", ":app")),
        ("k8s:", ("k8s", ""), ("any", "k8s:")),
    ],
)
def test_selector_keys_by_syntax(key: str, policy: tuple, hubble: tuple | None) -> None:
    assert parse_selector_key(key) == policy
    assert parse_filter_key(key) == (hubble or policy)


# -- requirements and lookup (LabelArray.Lookup) ------------------------------------------------
LABELS = parse_labels(["k8s:app=cart", "k8s:env=prod", "container:tier=web", "reserved:host"])


@pytest.mark.parametrize(
    ("requirement", "matches"),
    [
        (Requirement("any", "app", "In", frozenset({"cart", "web"})), True),
        (Requirement("k8s", "app", "In", frozenset({"cart"})), True),
        (Requirement("container", "app", "In", frozenset({"cart"})), False),  # source must match
        (Requirement("k8s", "tier", "Exists"), False),
        (Requirement("any", "tier", "Exists"), True),
        (Requirement("reserved", "host", "Exists"), True),
        (Requirement("any", "env", "NotIn", frozenset({"dev"})), True),
        (Requirement("any", "env", "NotIn", frozenset({"prod"})), False),
        (Requirement("any", "missing", "NotIn", frozenset({"x"})), True),  # absent satisfies NotIn
        (Requirement("any", "missing", "In", frozenset({"x"})), False),
        (Requirement("any", "missing", "DoesNotExist"), True),
        (Requirement("any", "env", "DoesNotExist"), False),
    ],
)
def test_requirement_operators(requirement: Requirement, matches: bool) -> None:
    assert requirement.matches(LABELS) is matches


def test_lookup_takes_the_first_label_with_the_key() -> None:
    """Cilium's LabelArray.Get: an any-source key reads the first matching label's value only."""
    labels = parse_labels(["container:app=web", "k8s:app=cart"])
    assert Requirement("any", "app", "In", frozenset({"web"})).matches(labels)
    assert not Requirement("any", "app", "In", frozenset({"cart"})).matches(labels)
    assert Requirement("any", "app", "NotIn", frozenset({"cart"})).matches(labels)
    assert Requirement("k8s", "app", "In", frozenset({"cart"})).matches(labels)


# -- policy selectors (matchLabels / matchExpressions) ------------------------------------------
def test_policy_selector_compiles_match_labels_and_expressions() -> None:
    sel = LabelSelector.from_dict(
        {
            "matchLabels": {"app": "cart", "k8s:flag": True, "reserved.host": None},
            "matchExpressions": [{"key": "k8s:env", "operator": "In", "values": ["prod", 1]}],
        }
    )
    assert sel.requirements == (
        Requirement("any", "app", "In", frozenset({"cart"})),
        Requirement("k8s", "flag", "In", frozenset({"true"})),  # YAML booleans as strings
        Requirement("reserved", "host", "In", frozenset({""})),
        Requirement("k8s", "env", "In", frozenset({"prod", "1"})),
    )
    assert str(sel) == "{any:app=cart, k8s:flag=true, reserved:host=, k8s:env In (1,prod)}"
    assert not sel.matches(LABELS)  # no k8s:flag
    assert LabelSelector.from_dict(None).matches(()) and LabelSelector.from_dict({}).matches(())
    assert str(LabelSelector()) == "{}"


@pytest.mark.parametrize(
    "spec",
    [
        ["app"],
        {"matchExpressions": [{"key": "a", "operator": "Is"}]},
        {"matchExpressions": [{"key": "a", "operator": "In"}]},
        {"matchExpressions": [{"key": "a", "operator": "NotIn", "values": []}]},
    ],
)
def test_policy_selector_errors(spec) -> None:
    with pytest.raises(SelectorError):
        LabelSelector.from_dict(spec)


def test_selector_helpers_for_defaulting() -> None:
    sel = LabelSelector.from_dict({"matchLabels": {"io.cilium.k8s.namespace.labels.team": "a"}})
    assert sel.has_key_prefix("any.io.cilium.k8s.namespace.labels")
    assert sel.has_key("any", "io.cilium.k8s.namespace.labels.team")
    assert not sel.has_key("k8s", "io.cilium.k8s.namespace.labels.team")
    pinned = sel.with_requirement(Requirement("any", "io.cilium.k8s.namespace.labels.team", "In"))
    assert len(pinned.requirements) == 1  # an In on the same key is replaced (AddMatch)
    both = sel.with_requirement(Requirement("k8s", "x", "Exists"))
    assert len(both.requirements) == 2
    assert LabelSelector.of(["reserved:world", "k8s:app=cart"]).requirements == (
        Requirement("reserved", "world", "In", frozenset({""})),
        Requirement("k8s", "app", "In", frozenset({"cart"})),
    )


# -- both syntaxes, one meaning -------------------------------------------------------------------
def _endpoint_flow(labels: list[str]) -> flow_pb2.Flow:
    flow = flow_pb2.Flow()
    flow.source.labels.extend(labels)
    return flow


def _filter_matches(selector: str, labels: list[str]) -> bool:
    return compile_filters([flow_pb2.FlowFilter(source_label=[selector])])(_endpoint_flow(labels))


@pytest.mark.parametrize(
    ("hubble", "policy"),
    [
        ("k8s:app=cart", {"matchLabels": {"k8s:app": "cart"}}),
        ("app==cart", {"matchLabels": {"app": "cart"}}),
        ("app!=cart", {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["cart"]}]}),
        ("env in (prod, dev)", {"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "dev"]}]}),
        ("env notin (prod)", {"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]}),
        ("k8s:tier", {"matchExpressions": [{"key": "k8s:tier", "operator": "Exists"}]}),
        ("!tier", {"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}),
        ("reserved:host", {"matchExpressions": [{"key": "reserved:host", "operator": "Exists"}]}),
        ("app=web,!missing", {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "missing", "operator": "DoesNotExist"}]}),
    ],
)  # fmt: skip
@pytest.mark.parametrize(
    "labels",
    [
        ["k8s:app=cart", "k8s:env=prod", "container:tier=web", "reserved:host"],
        ["container:app=web", "k8s:app=cart", "k8s:env=dev"],  # first label with the key wins
        ["$host", "app=cart"],  # Cilium's short and source-less label forms
        [],
    ],
)
def test_filter_and_policy_syntax_agree(hubble: str, policy: dict, labels: list[str]) -> None:
    expected = LabelSelector.from_dict(policy).matches(parse_labels(labels))
    assert _filter_matches(hubble, labels) is expected


def test_filter_syntax_errors_name_the_field() -> None:
    for bad in ("", "app in (a", "app in (a,)", "!app=x", "a=b c"):
        with pytest.raises(FilterError, match="source_label"):
            _filter_matches(bad, [])
