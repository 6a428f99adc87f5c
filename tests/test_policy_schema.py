"""Policies are checked against the real Cilium CRD schema, like the API server would."""

from __future__ import annotations

import copy
import hashlib
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from netwarden.remediation.schema import (
    DEFAULT_SCHEMA_VERSION,
    KINDS,
    SCHEMA_VERSIONS,
    InvalidPolicy,
    PolicyFileError,
    PolicyProblem,
    check_policy,
    crd_file,
    load_policies,
    validate_policy,
)
from tests.conftest import DATA

EXAMPLES = DATA / "cnp-examples"
VALID_FILES = sorted(EXAMPLES.glob("*.yaml"))
INVALID_FILES = sorted((EXAMPLES / "invalid").glob("*.yaml"))
#: The reference CRDs (the project's shared data, taken from Cilium's catalog: see
#: remediation/crds/README.md) by their SHA-256, recorded in tests/data/crds.sha256 so that the
#: packaged copies are checked without a second copy of 1.4 MB in the repository.
REFERENCE_CRD_DIRS = {"1.19": "main-2026-01-16", "main-2026-05-29": "main-2026-05-29"}
REFERENCE_CRD_SHA256 = {
    name: digest
    for digest, name in (
        line.split() for line in (DATA / "crds.sha256").read_text().splitlines() if line.strip()
    )
}
# Upstream's Kafka example carries a top-level `description` outside spec: the schema accepts
# everything else, strict field validation refuses that one field (cnp-examples/README.md).
KNOWN_UNKNOWN_FIELDS = {"l7-kafka.yaml": ["description"]}


def _paths(problems: list[PolicyProblem]) -> list[str]:
    return [problem.path for problem in problems]


def _policy(**spec: Any) -> dict[str, Any]:
    """A small valid CNP; keyword arguments replace keys of its spec."""
    policy = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "allow-dns", "namespace": "shop"},
        "spec": {
            "endpointSelector": {"matchLabels": {"k8s:app": "cart"}},
            "egress": [
                {
                    "toEndpoints": [
                        {"matchLabels": {"k8s:io.kubernetes.pod.namespace": "kube-system"}}
                    ],
                    "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}]}],
                }
            ],
        },
    }
    policy["spec"].update(spec)
    return policy


# --------------------------------------------------------------------------- packaged schema


@pytest.mark.parametrize("version", list(SCHEMA_VERSIONS))
@pytest.mark.parametrize("kind", list(KINDS))
def test_packaged_crd_equals_the_reference_one(kind: str, version: str) -> None:
    reference = f"{REFERENCE_CRD_DIRS[version]}/{KINDS[kind][0]}.yaml"
    packaged = crd_file(kind, version)
    assert packaged.is_file(), f"{packaged} is not installed with the package (package-data)"
    assert hashlib.sha256(packaged.read_bytes()).hexdigest() == REFERENCE_CRD_SHA256[reference]


def test_unknown_schema_version_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="schema_version.*1.19"):
        validate_policy(_policy(), schema_version="1.12")


def test_every_pattern_in_the_crds_compiles() -> None:
    """Patterns are Go regexps (one uses \\PC); each must work with the translator."""
    from netwarden.remediation.schema import _go_regex

    def patterns(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
            return found + [p for value in node.values() for p in patterns(value)]
        if isinstance(node, list):
            return [p for value in node for p in patterns(value)]
        return []

    for kind in KINDS:
        for version in SCHEMA_VERSIONS:
            crd = yaml.load(crd_file(kind, version).read_text(), Loader=yaml.CSafeLoader)
            for pattern in set(patterns(crd)):
                _go_regex(pattern)


# --------------------------------------------------------------------------- reference examples


@pytest.mark.parametrize("path", VALID_FILES, ids=lambda p: p.name)
def test_upstream_examples_pass(path: Path) -> None:
    policies = load_policies(path)
    assert policies
    for policy in policies:
        assert validate_policy(policy, strict=False) == []
        strict = validate_policy(policy)
        assert _paths(strict) == KNOWN_UNKNOWN_FIELDS.get(path.name, [])
        if not strict:
            check_policy(policy)


@pytest.mark.parametrize("path", INVALID_FILES, ids=lambda p: p.name)
@pytest.mark.parametrize("version", list(SCHEMA_VERSIONS))
def test_upstream_invalid_examples_fail(path: Path, version: str) -> None:
    expected = {
        "malformed-podselector.yaml": {"description", "spec", "spec.podSelector", "spec.egress"},
        "l7-http-uppercase-key.yaml": {
            "spec.ingress[0].toPorts[0].rules",
            "spec.ingress[0].toPorts[0].rules.HTTP",
        },
    }[path.name]
    (policy,) = load_policies(path)
    problems = validate_policy(policy, schema_version=version)
    assert set(_paths(problems)) == expected
    with pytest.raises(InvalidPolicy) as raised:
        check_policy(policy, schema_version=version)
    assert raised.value.problems == tuple(problems)


def test_newer_schema_drops_kafka_rules() -> None:
    (policy,) = load_policies(EXAMPLES / "l7-kafka.yaml")
    assert validate_policy(policy, strict=False) == []
    problems = validate_policy(policy, schema_version="main-2026-05-29", strict=False)
    assert _paths(problems) == ["spec.ingress[0].toPorts[0].rules"]
    assert "exactly one of http, dns" in problems[0].message


def test_uppercase_rule_key_suggests_the_right_one() -> None:
    spec = _policy()["spec"]
    spec["egress"][0]["toPorts"][0]["rules"] = {"HTTP": [{"method": "GET"}]}
    problems = validate_policy(_policy(**spec))
    (unknown,) = [p for p in problems if p.path.endswith("rules.HTTP")]
    assert "did you mean 'http'" in unknown.message


# --------------------------------------------------------------------------- hand-made policies


def test_small_policy_is_valid() -> None:
    assert validate_policy(_policy()) == []
    check_policy(_policy())


def test_unknown_field_is_rejected_with_its_path() -> None:
    policy = _policy()
    policy["spec"]["egress"][0]["toPort"] = policy["spec"]["egress"][0].pop("toPorts")
    (problem,) = validate_policy(policy)
    assert problem.path == "spec.egress[0].toPort"
    assert "unknown field" in problem.message and "did you mean 'toPorts'" in problem.message
    assert validate_policy(policy, strict=False) == []


def test_wrong_type_names_the_field() -> None:
    policy = _policy(egress={"toEntities": ["world"]})
    (problem,) = validate_policy(policy)
    assert problem.path == "spec.egress"
    assert problem.message.startswith("must be a list, got a mapping")


def test_bad_protocol_enum_lists_the_choices() -> None:
    policy = _policy()
    policy["spec"]["egress"][0]["toPorts"][0]["ports"][0]["protocol"] = "HTTP"
    (problem,) = validate_policy(policy)
    assert problem.path == "spec.egress[0].toPorts[0].ports[0].protocol"
    assert "TCP, UDP, SCTP" in problem.message and "'HTTP'" in problem.message


def test_newer_schema_knows_more_protocols() -> None:
    policy = _policy()
    policy["spec"]["egress"][0]["toPorts"][0]["ports"][0]["protocol"] = "GRE"
    assert _paths(validate_policy(policy)) == ["spec.egress[0].toPorts[0].ports[0].protocol"]
    assert validate_policy(policy, schema_version="main-2026-05-29") == []


def test_both_selectors_are_rejected() -> None:
    (problem,) = validate_policy(_policy(nodeSelector={"matchLabels": {"role": "edge"}}))
    assert problem.path == "spec"
    assert "exactly one of endpointSelector, nodeSelector" in problem.message
    assert "found endpointSelector and nodeSelector" in problem.message


def test_rule_without_direction_is_rejected() -> None:
    policy = _policy()
    del policy["spec"]["egress"]
    (problem,) = validate_policy(policy)
    assert problem.path == "spec"
    assert "at least one of ingress, ingressDeny, egress, egressDeny" in problem.message


def test_missing_name_is_reported() -> None:
    policy = _policy()
    del policy["metadata"]["name"]
    (problem,) = validate_policy(policy)
    assert problem.path == "metadata.name"
    assert "needs a name" in problem.message


def test_missing_metadata_is_reported_once() -> None:
    policy = _policy()
    del policy["metadata"]
    assert _paths(validate_policy(policy)) == ["metadata"]


@pytest.mark.parametrize("port", ["http_80", "*", "-1", ""])
def test_port_that_is_neither_number_nor_name_is_rejected(port: str) -> None:
    policy = _policy()
    policy["spec"]["egress"][0]["toPorts"][0]["ports"][0]["port"] = port
    (problem,) = validate_policy(policy)
    assert problem.path == "spec.egress[0].toPorts[0].ports[0].port"
    assert (
        "does not match the pattern" in problem.message
        and "Port can be an L4 port number" in problem.message
    )


@pytest.mark.parametrize("port", ["0", "65535", "8080", "dns", "http-alt"])
def test_port_numbers_and_names_are_accepted(port: str) -> None:
    policy = _policy()
    policy["spec"]["egress"][0]["toPorts"][0]["ports"][0]["port"] = port
    assert validate_policy(policy) == []


def test_unquoted_port_number_must_be_quoted() -> None:
    policy = _policy()
    policy["spec"]["egress"][0]["toPorts"][0]["ports"][0]["port"] = 53
    (problem,) = validate_policy(policy)
    assert problem.path == "spec.egress[0].toPorts[0].ports[0].port"
    assert "must be a string" in problem.message and "quote it" in problem.message


def test_invalid_label_value_in_match_labels() -> None:
    """The schema checks matchLabels values (not keys: Cilium's `source:key` syntax is free)."""
    policy = _policy(
        endpointSelector={"matchLabels": {"k8s:app": "cart service!", "any:weird key": "ok"}}
    )
    (problem,) = validate_policy(policy)
    assert problem.path == "spec.endpointSelector.matchLabels['k8s:app']"
    assert "does not match the pattern" in problem.message


def test_null_is_rejected_where_not_nullable() -> None:
    (problem,) = validate_policy(_policy(description=None))
    assert problem.path == "spec.description"
    assert "must not be null" in problem.message


def test_cidr_format_is_checked() -> None:
    policy = _policy(egress=[{"toCIDR": ["10.0.0.0/8", "10.1.2.3/33", "10.0.0.1"]}])
    assert _paths(validate_policy(policy)) == [
        "spec.egress[0].toCIDR[1]",
        "spec.egress[0].toCIDR[2]",
    ]


def test_icmp_type_is_int_or_string() -> None:
    fields = [{"type": 8}, {"type": "EchoRequest"}, {"type": True}]
    policy = _policy(egress=[{"icmps": [{"fields": fields}]}])
    (problem,) = validate_policy(policy)
    assert problem.path == "spec.egress[0].icmps[0].fields[2].type"
    assert "an integer or a string" in problem.message


def test_log_value_allows_printable_unicode_only() -> None:
    """`^\\PC*$` is a Go Unicode class; translated, not ignored."""
    assert validate_policy(_policy(log={"value": "quarantine é"})) == []
    (problem,) = validate_policy(_policy(log={"value": "bell\a"}))
    assert problem.path == "spec.log.value"


def test_go_dollar_does_not_match_before_a_trailing_newline() -> None:
    (problem,) = validate_policy(_policy(endpointSelector={"matchLabels": {"app": "cart\n"}}))
    assert problem.path == "spec.endpointSelector.matchLabels.app"


def test_spec_or_specs_must_be_provided() -> None:
    policy = _policy()
    del policy["spec"]
    assert validate_policy(policy) == [PolicyProblem("spec", "spec or specs must be provided")]


def test_specs_list_is_validated_per_rule() -> None:
    policy = _policy()
    rule = policy.pop("spec")
    bad = copy.deepcopy(rule)
    del bad["endpointSelector"]
    policy["specs"] = [rule, bad]
    assert _paths(validate_policy(policy)) == ["specs[1]"]


def test_header_is_checked() -> None:
    policy = _policy()
    policy["apiVersion"] = "cilium.io/v1"
    policy["kind"] = "NetworkPolicy"
    problems = validate_policy(policy)
    assert _paths(problems) == ["apiVersion", "kind"]
    assert (
        "cilium.io/v2" in problems[0].message
        and "CiliumClusterwideNetworkPolicy" in problems[1].message
    )


def test_not_a_mapping() -> None:
    assert _paths(validate_policy(["not", "a", "policy"])) == [""]
    assert _paths(validate_policy({"apiVersion": "cilium.io/v2", "kind": ["x"]})) == ["kind"]


def test_namespace_rules_follow_the_scope() -> None:
    ccnp = _policy()
    ccnp["kind"] = "CiliumClusterwideNetworkPolicy"
    (problem,) = validate_policy(ccnp)
    assert problem.path == "metadata.namespace" and "cluster-scoped" in problem.message
    del ccnp["metadata"]["namespace"]
    assert validate_policy(ccnp) == []

    cnp = _policy()
    cnp["metadata"]["namespace"] = "Shop_Floor"
    assert _paths(validate_policy(cnp)) == ["metadata.namespace"]
    del cnp["metadata"]["namespace"]
    assert validate_policy(cnp) == []  # namespace comes from kubectl's context


def test_metadata_is_checked_like_object_meta() -> None:
    policy = _policy()
    policy["metadata"].update(
        name="Allow_DNS",
        labels={"app.kubernetes.io/managed-by": "netwarden", "bad key": "x"},
        owner="me",
    )
    assert _paths(validate_policy(policy)) == [
        "metadata.labels['bad key']",
        "metadata.name",
        "metadata.owner",
    ]


def test_invalid_policy_lists_every_problem() -> None:
    policy = _policy(nodeSelector={})
    policy["spec"]["egress"][0]["toPorts"][0]["ports"][0]["protocol"] = "HTTP"
    with pytest.raises(InvalidPolicy) as raised:
        check_policy(policy)
    error = raised.value
    assert isinstance(error, ValueError)
    assert len(error.problems) == 2
    text = str(error)
    assert text.startswith("CiliumNetworkPolicy shop/allow-dns is invalid (2 problems)")
    assert "spec.egress[0].toPorts[0].ports[0].protocol: must be one of" in text


def test_validating_hundreds_of_policies_is_fast() -> None:
    policies = [_policy() for _ in range(300)]
    validate_policy(policies[0])  # builds the validator once
    start = time.perf_counter()
    for policy in policies:
        assert validate_policy(policy) == []
    assert time.perf_counter() - start < 1.5


# --------------------------------------------------------------------------- YAML files


def test_load_policies_reads_every_document(tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    path.write_text(
        yaml.safe_dump(_policy())
        + "---\n"
        + yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [_policy()]})
        + "---\n"
    )
    policies = load_policies(path)
    assert policies == [_policy(), _policy()]
    assert load_policies(tmp_path) == policies


def test_load_policies_keeps_timestamps_as_strings(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("metadata:\n  creationTimestamp: 2026-01-16T10:00:00Z\n")
    assert load_policies(path) == [{"metadata": {"creationTimestamp": "2026-01-16T10:00:00Z"}}]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("spec: [unclosed\n", r"bad\.yaml: invalid YAML at line 2"),
        (
            "kind: A\nkind: B\n",
            r"bad\.yaml: invalid YAML at line 2, column 1: .*duplicate key 'kind'",
        ),
        ("- just\n- a list\n", r"bad\.yaml: document 1 is a list, expected a mapping"),
    ],
)
def test_load_policies_errors_name_file_and_place(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(PolicyFileError, match=match):
        load_policies(path)


def test_load_policies_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="policy file not found"):
        load_policies(tmp_path / "nope.yaml")


def test_default_schema_is_the_cluster_version() -> None:
    assert DEFAULT_SCHEMA_VERSION == "1.19"
