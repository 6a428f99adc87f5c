"""deploy/chart/netwarden rendered by Helm's own engine and checked without a cluster.

The chart is rendered and linted by Helm v4's Go SDK (the ``helm-python-sdk`` wheel bundles
it as a library: no helm binary is published on a registry this project can reach) with several
value sets, and every rendered object is checked against what it must agree with: Kubernetes'
published OpenAPI schemas (``kubernetes-validate``, strict: an unknown or misspelt field fails)
at the oldest and the newest Kubernetes the chart supports; the Prometheus Operator's CRD schemas
for the ServiceMonitor and PrometheusRule (``tests/data/prometheus-operator/``); netwarden's own
command-line parser for every container's args; netwarden's own configuration loader for the
detector's configuration file and environment; the API's real probe routes and metrics; and
``promtool`` for the alert rules, which are also run against synthetic series.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes.client
import kubernetes_validate
import pytest
import yaml
from croniter import croniter
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from netwarden.api.routes.health import PUBLIC_PATHS
from netwarden.cli.main import _build_parser
from netwarden.cluster.partials import server_mappings
from netwarden.commands.cluster import owned_partitions
from netwarden.config import load_config
from netwarden.detector.alerts.alerting import AlertMetrics
from netwarden.detector.live import DetectorMetrics
from netwarden.ingest.sources.hubble import target
from netwarden.remediation.apply import Forbidden, PolicyApplier
from tests.k8s_standin import K8sStandIn, Token
from tests.policyfactory import cnp
from tests.servers import require

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "deploy" / "chart" / "netwarden"
DATA = Path(__file__).resolve().parent / "data" / "prometheus-operator"
RELEASE, NAMESPACE = "nw", "netwarden"
#: the oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas
KUBE_VERSIONS = ("1.30", "1.37")
#: what kubelet fills in for the downward API fields, for $(VAR) expansion
FIELD_VALUES = {
    "spec.nodeName": "node-1",
    "status.hostIP": "192.0.2.11",
    "metadata.name": "nw-netwarden-shard-1",
}
TOKENS = "ops:admin:" + hashlib.sha256(b"token").hexdigest()
#: placeholder contents of the Secrets the value sets name, by the variable they feed
SECRET_VALUES = {
    "NETWARDEN_STORE__URL": "postgresql+psycopg://netwarden:pw@postgres.db.svc:5432/netwarden",
    "NETWARDEN_API_TOKENS": TOKENS,
    "NETWARDEN_ALERTS__SLACK_WEBHOOK_URL": "https://hooks.slack.example/services/T0/B0/x",
}
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection", "*"})

CLUSTER: dict[str, Any] = {
    "cluster": {
        "enabled": True,
        "models": {"existingClaim": "netwarden-models"},
        "history": {"existingClaim": "netwarden-history"},
    },
    "nats": {"url": "nats://nats.nats.svc.cluster.local:4222"},
    "store": {"existingSecret": "netwarden-store"},
    "models": {"signingKey": {"existingSecret": "netwarden-signing"}},
}

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "ebpf": {"flows": {"source": "ebpf"}},
    "ebpf-no-udp-peers": {
        "flows": {"source": "ebpf"},
        "agent": {"udpPeers": False, "extraArgs": ["--max-flows", "16383"]},
    },
    "hubble-socket": {"flows": {"source": "hubble-socket", "hubbleSocket": {"groupId": 998}}},
    "generator": {"flows": {"source": "generator"}},
    "apply": {"remediation": {"apply": True}},
    "apply-namespaces": {
        "remediation": {"apply": True, "namespaces": ["shop", "data"], "clusterwide": True}
    },
    "cronjob-off": {"retrain": {"enabled": False}},
    "monitoring": {
        "monitoring": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "kps"}},
            "prometheusRule": {"enabled": True},
        }
    },
    "secrets": {
        "store": {"existingSecret": "netwarden-store"},
        "api": {
            "tokens": {"existingSecret": "netwarden-tokens"},
            "publicUrl": "https://nw.example",
        },
        "models": {"signingKey": {"existingSecret": "netwarden-signing"}},
        "flows": {
            "namespaces": ["shop"],
            "hubbleRelay": {
                "address": "hubble-relay.kube-system.svc:443",
                "tls": {
                    "enabled": True,
                    "existingSecret": "relay-tls",
                    "clientCertificate": True,
                    "serverName": "ui.hubble-relay.cilium.io",
                },
            },
        },
        "detector": {
            "config": {
                "alerts": {"alertmanager_url": "http://alertmanager.monitoring:9093"},
                "api": {"port": 1},  # the chart's api.port wins over this one
            },
            "extraEnv": [
                {
                    "name": "NETWARDEN_ALERTS__SLACK_WEBHOOK_URL",
                    "valueFrom": {"secretKeyRef": {"name": "slack", "key": "url"}},
                }
            ],
            "persistence": {"storageClassName": "fast", "size": "50Gi"},
        },
        "retrain": {"timeZone": "Etc/UTC"},
        "nats": {"url": "nats://nats.nats.svc.cluster.local:4222"},
    },
    # cluster mode: what it needs (NATS, the shared store, the signing key, the models' claim)
    "cluster": CLUSTER,
    "cluster-ebpf-monitoring": {
        **CLUSTER,
        "flows": {"source": "ebpf"},
        "cluster": {
            **CLUSTER["cluster"],
            "partitions": 8,
            "shards": 3,
            "metricsPort": 9400,
            "shard": {"lateness": 60, "ackWait": 120},
            "models": {"existingClaim": "netwarden-models", "subPath": "models"},
            "history": {"existingClaim": "netwarden-history", "subPath": "history"},
        },
        "detector": {
            "config": {"windows": {"seconds": 30, "lateness": 5}, "history": {"retention_days": 14}}
        },
        "monitoring": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
    },
    # leases, and their alert (NetwardenShardLeasesLost) in the PrometheusRule
    "cluster-leases": {
        **CLUSTER,
        "cluster": {
            **CLUSTER["cluster"],
            "shards": 3,
            "shard": {"leases": True, "leaseTTL": 20},
            "api": {"replicas": 3},
        },
        "monitoring": {"prometheusRule": {"enabled": True}},
    },
    # the API Deployment applies approved policies; no history: none kept, no retraining job
    "cluster-apply-no-history": {
        **CLUSTER,
        "cluster": {**CLUSTER["cluster"], "history": {}, "api": {"replicas": 0}},
        "remediation": {"apply": True, "namespaces": ["shop"]},
        "api": {"tokens": {"existingSecret": "netwarden-tokens"}},
    },
    "cluster-socket-namespaces": {
        **CLUSTER,
        "flows": {
            "source": "hubble-socket",
            "hubbleSocket": {"groupId": 998},
            "namespaces": ["shop"],
        },
    },
}


# --------------------------------------------------------------------------- rendering


def render(values: dict[str, Any]) -> dict[str, str]:
    """Template path -> rendered text, as `helm template` renders them (schema checked)."""
    with helm.Chart.load(CHART) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE)


def objects(rendered: dict[str, str]) -> list[dict[str, Any]]:
    docs = []
    for path, text in sorted(rendered.items()):
        if path.endswith(".yaml"):
            docs.extend(d for d in yaml.safe_load_all(text) if d is not None)
    return docs


@pytest.fixture(scope="module")
def rendered_sets() -> dict[str, list[dict[str, Any]]]:
    return {name: objects(render(values)) for name, values in VALUE_SETS.items()}


@pytest.fixture(params=sorted(VALUE_SETS))
def docs(
    request: pytest.FixtureRequest, rendered_sets: dict[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    return rendered_sets[request.param]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    if workload["kind"] == "CronJob":
        return workload["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return workload["spec"]["template"]["spec"]


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    if workload["kind"] == "CronJob":
        return workload["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    return workload["spec"]["template"]["metadata"]["labels"]


WORKLOADS = ("StatefulSet", "DaemonSet", "CronJob", "Deployment")


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in WORKLOADS]


def containers(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for w in workloads(docs):
        spec = pod_spec(w)
        for c in [*spec.get("initContainers", ()), *spec["containers"]]:
            yield w, c


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet builds it: downward API fields, Secret
    placeholders, and $(VAR) references to earlier variables expanded."""
    env: dict[str, str] = {}
    for var in container.get("env") or ():
        source = var.get("valueFrom") or {}
        if "value" in var:
            env[var["name"]] = expand(var["value"], env)
        elif "fieldRef" in source:
            env[var["name"]] = FIELD_VALUES[source["fieldRef"]["fieldPath"]]
        else:
            assert "secretKeyRef" in source, var
            env[var["name"]] = SECRET_VALUES[var["name"]]
    return env


def expand(text: str, env: dict[str, str]) -> str:
    def one_ref(m: re.Match[str]) -> str:
        if m[0] == "$$":
            return "$"
        assert m[1] in env, f"{text!r}: $({m[1]}) is not an earlier env variable"
        return env[m[1]]

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", one_ref, str(text))


def parse_args(container: dict[str, Any]) -> argparse.Namespace:
    """The container's args (the images' entrypoint is `netwarden`) through netwarden's own
    parser: an unknown command or flag, or a bad value, fails."""
    env = container_env(container)
    argv = [expand(a, env) for a in container.get("args") or ()]
    assert "command" not in container, "the images' entrypoint runs netwarden"
    try:
        return _build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"`netwarden {' '.join(argv)}` is refused by the CLI (exit {exc.code})")


def mounts(
    workload: dict[str, Any], container: dict[str, Any]
) -> dict[PurePosixPath, tuple[dict, dict]]:
    """mountPath -> (volumeMount, volume)."""
    volumes = {v["name"]: v for v in pod_spec(workload).get("volumes") or ()}
    if workload["kind"] == "StatefulSet":
        for claim in workload["spec"].get("volumeClaimTemplates") or ():
            volumes[claim["metadata"]["name"]] = {"name": claim["metadata"]["name"], "claim": claim}
    return {
        PurePosixPath(m["mountPath"]): (m, volumes[m["name"]])
        for m in container.get("volumeMounts") or ()
    }


def mounted(
    path: str | Path, table: dict[PurePosixPath, tuple[dict, dict]]
) -> tuple[dict, dict] | None:
    """The deepest mount holding ``path``."""
    path = PurePosixPath(path)
    best = [m for m in table if m == path or m in path.parents]
    return table[max(best, key=lambda m: len(m.parts))] if best else None


def part(docs: list[dict[str, Any]], kind: str, component: str) -> list[dict[str, Any]]:
    """The objects of ``kind`` of one component (app.kubernetes.io/component)."""
    return [
        d
        for d in of_kind(docs, kind)
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]


def detector(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The workload running `netwarden serve` and its container: the detector StatefulSet, or
    in cluster mode the API Deployment (never both)."""
    (w,) = [*part(docs, "StatefulSet", "detector"), *part(docs, "Deployment", "api")]
    (c,) = pod_spec(w)["containers"]
    return w, c


def detector_config_map(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The ConfigMap the serving workload mounts its configuration file from."""
    w, _ = detector(docs)
    (name,) = [v["configMap"]["name"] for v in pod_spec(w)["volumes"] if "configMap" in v]
    (config_map,) = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"] == name]
    return config_map


def clustered(name: str) -> bool:
    return bool(VALUE_SETS[name].get("cluster", {}).get("enabled"))


def detector_config(
    docs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Any:
    """The detector's configuration as `netwarden serve` loads it: the ConfigMap's file plus
    the container's NETWARDEN_* environment (which wins)."""
    sts, c = detector(docs)
    assert c["args"][:2] == ["serve", "--config"]
    path = PurePosixPath(c["args"][2])
    mount, volume = mounted(path, mounts(sts, c)) or pytest.fail(f"{path} is not mounted")
    config_map = detector_config_map(docs)
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert mount["subPath"] in config_map["data"] and PurePosixPath(mount["mountPath"]) == path
    file = tmp_path / "netwarden.yaml"
    file.write_text(config_map["data"][mount["subPath"]])
    for name in [n for n in os.environ if n.startswith("NETWARDEN_")]:
        monkeypatch.delenv(name)
    for name, value in container_env(c).items():
        monkeypatch.setenv(name, value)
    return load_config(file)


# --------------------------------------------------------------------------- Helm itself


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_lint_passes_with_every_value_set(name: str) -> None:
    report = helm.lint(CHART, VALUE_SETS[name], strict=True, namespace=NAMESPACE)
    serious = [m for m in report["messages"] if m["severity"] >= 2]  # warnings and errors
    assert not serious and not report["errors"], report


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"detector": {"replicas": 2}}, "/detector/replicas"),
        ({"flows": {"source": "relay"}}, "/flows/source"),
        ({"flows": {"hubbleRelay": {"adress": "x:80"}}}, "adress"),
        ({"agent": {"seccompProfile": "Localhost"}}, "/agent/seccompProfile"),
        ({"remediation": {"apply": "yes"}}, "/remediation/apply"),
        ({"api": {"port": 80}}, "/api/port"),
        ({"monitoring": {"prometheusRule": {"noFlowsFor": "ten minutes"}}}, "noFlowsFor"),
        ({"cluster": {"partitions": 0}}, "/cluster/partitions"),
        ({"cluster": {"shards": "two"}}, "/cluster/shards"),
        ({"cluster": {"shard": {"ackWait": 0}}}, "/cluster/shard/ackWait"),
        ({"cluster": {"models": {"subPath": "../x"}}}, "/cluster/models/subPath"),
        ({"cluster": {"history": {"subPath": "/abs"}}}, "/cluster/history/subPath"),
        ({"cluster": {"api": {"replicas": -1}}}, "/cluster/api/replicas"),
    ],
)
def test_the_values_schema_refuses_bad_values(values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=re.escape(complaint)):
        render(values)


def test_every_value_is_documented_by_a_comment() -> None:
    """Each key of values.yaml has a comment right above it, or is a plain Kubernetes
    resources field (requests/limits, cpu/memory) inside a commented block."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    self_explanatory = {"requests", "limits", "cpu", "memory"}
    missing = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z][\w]*):", line)
        if not m or m[2] in self_explanatory:
            continue
        above = lines[i - 1].strip() if i else ""
        if not above.startswith("#"):
            missing.append(f"values.yaml:{i + 1}: {m[2]}")
    assert not missing, missing
    # and the schema knows every key the defaults have (additionalProperties: false throughout)
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(chart.values)


# --------------------------------------------------------------------------- schemas


def test_every_manifest_matches_the_kubernetes_schemas(docs: list[dict[str, Any]]) -> None:
    problems = []
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # CRDs: the next test
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = "/".join(str(p) for p in exc.path)
                problems.append(
                    f"{doc['kind']} {doc['metadata']['name']} ({version}) at "
                    f"{where}: {str(exc).splitlines()[0]}"
                )
    assert not problems, "\n".join(problems)


def strict_schema(schema: Any) -> Any:
    """A CRD's structural schema with unknown fields refused, as the API server's strict field
    validation does (it would otherwise prune them silently)."""
    if isinstance(schema, dict):
        out = {k: strict_schema(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict_schema(v) for v in schema]
    return schema


def crd_schema(kind: str, version: str) -> dict[str, Any]:
    for path in DATA.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["kind"] == kind:
            for v in crd["spec"]["versions"]:
                if v["name"] == version:
                    return strict_schema(v["schema"]["openAPIV3Schema"])
    raise LookupError(f"no CRD for {kind} {version} in {DATA}")


def test_monitoring_objects_match_the_prometheus_operator_crds(
    rendered_sets: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered_sets["monitoring"]
    checked = 0
    for doc in docs:
        group, _, version = doc["apiVersion"].partition("/")
        if group != "monitoring.coreos.com":
            continue
        schema = crd_schema(doc["kind"], version)
        body = {k: v for k, v in doc.items() if k != "metadata"}  # metadata: ObjectMeta's own
        errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(body), key=str)
        assert not errors, [
            f"{doc['kind']}: {'/'.join(map(str, e.path))}: {e.message}" for e in errors
        ]
        checked += 1
    assert checked == 2
    # the strict schema is strict: a misspelt field fails
    rule = copy.deepcopy(one(docs, "PrometheusRule"))
    rule["spec"]["groups"][0]["rules"][0]["expresion"] = "up"
    body = {k: v for k, v in rule.items() if k != "metadata"}
    assert list(jsonschema.Draft7Validator(crd_schema("PrometheusRule", "v1")).iter_errors(body))


def test_monitoring_objects_only_when_asked(rendered_sets: dict[str, list[dict[str, Any]]]) -> None:
    for name, docs in rendered_sets.items():
        asked = VALUE_SETS[name].get("monitoring", {})
        for kind, key in (
            ("ServiceMonitor", "serviceMonitor"),
            ("PrometheusRule", "prometheusRule"),
        ):
            assert bool(of_kind(docs, kind)) == asked.get(key, {}).get("enabled", False), name


# --------------------------------------------------------------------------- privileges


def rules_granted(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for d in docs if d["kind"] in ("Role", "ClusterRole") for r in d.get("rules", ())]


def writes_policies(rule: dict[str, Any]) -> bool:
    return (
        bool({"cilium.io", "*"} & set(rule.get("apiGroups", ())))
        and bool(
            {"ciliumnetworkpolicies", "ciliumclusterwidenetworkpolicies", "*"}
            & set(rule.get("resources", ()))
        )
        and bool(WRITE_VERBS & set(rule.get("verbs", ())))
    )


def test_policies_are_writable_only_when_apply_is_enabled(
    rendered_sets: dict[str, list[dict[str, Any]]],
) -> None:
    for name, docs in rendered_sets.items():
        apply = VALUE_SETS[name].get("remediation", {}).get("apply", False)
        writers = [r for r in rules_granted(docs) if writes_policies(r)]
        assert bool(writers) == apply, name
        sts, _ = detector(docs)
        # without apply the detector holds no Kubernetes token at all
        assert pod_spec(sts)["automountServiceAccountToken"] is apply, name
        sa = [
            d
            for d in of_kind(docs, "ServiceAccount")
            if d["metadata"]["name"] == pod_spec(sts)["serviceAccountName"]
        ]
        assert len(sa) == 1 and sa[0]["automountServiceAccountToken"] is apply, name
        config = yaml.safe_load(detector_config_map(docs)["data"]["netwarden.yaml"])
        assert config["remediation"]["kubernetes"] == ("in-cluster" if apply else "off"), name
        if apply:  # bound to the account of `netwarden serve` (cluster mode: the API's)
            token = detector_token(docs)
            assert "create" in token.verbs and "ciliumnetworkpolicies" in token.resources, name
        # nobody but the apply roles writes anything, and no rule grants everything
        for rule in rules_granted(docs):
            assert "*" not in rule.get("verbs", ()) and "*" not in rule.get("resources", ())
            if WRITE_VERBS & set(rule["verbs"]):
                assert writes_policies(rule), (name, rule)


def test_apply_grants_exactly_what_the_applier_calls(
    rendered_sets: dict[str, list[dict[str, Any]]],
) -> None:
    """remediation/apply.py reads, creates, patches (server-side apply), replaces and deletes
    single policies, and reads kube-system/cilium-config; no list, no watch."""
    docs = rendered_sets["apply"]
    (cluster_role,) = [
        d for d in of_kind(docs, "ClusterRole") if any(map(writes_policies, d["rules"]))
    ]
    assert cluster_role["rules"] == [
        {
            "apiGroups": ["cilium.io"],
            "resources": ["ciliumnetworkpolicies"],
            "verbs": ["get", "create", "patch", "update", "delete"],
        }
    ]
    (config_role,) = [
        d for d in of_kind(docs, "Role") if d["metadata"]["namespace"] == "kube-system"
    ]
    assert config_role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["cilium-config"],
            "verbs": ["get"],
        }
    ]
    # listed namespaces: a Role in each, and the cluster-wide kind only by a ClusterRole
    docs = rendered_sets["apply-namespaces"]
    roles = {d["metadata"]["namespace"]: d for d in of_kind(docs, "Role")}
    assert set(roles) == {"shop", "data", "kube-system"}
    for ns in ("shop", "data"):
        assert [set(r["resources"]) for r in roles[ns]["rules"]] == [{"ciliumnetworkpolicies"}]
    (cluster_role,) = of_kind(docs, "ClusterRole")
    assert [r["resources"] for r in cluster_role["rules"]] == [["ciliumclusterwidenetworkpolicies"]]


#: HTTP method -> the RBAC verb it needs (single objects: the applier never lists)
METHOD_VERBS = {
    "GET": "get",
    "POST": "create",
    "PATCH": "patch",
    "PUT": "update",
    "DELETE": "delete",
}


def detector_token(docs: list[dict[str, Any]], drop: str | None = None) -> Token:
    """The stand-in's token for what the rendered roles bound to the detector grant (the
    stand-in grants verbs x resources: the rules' union, which the assertions keep exact)."""
    sts, _ = detector(docs)
    account = pod_spec(sts)["serviceAccountName"]
    roles = []
    for binding in [*of_kind(docs, "RoleBinding"), *of_kind(docs, "ClusterRoleBinding")]:
        if any(s["name"] == account for s in binding["subjects"]):
            ref = binding["roleRef"]
            roles += [d for d in of_kind(docs, ref["kind"]) if d["metadata"]["name"] == ref["name"]]
    rules = [r for role in roles for r in role["rules"]]
    verbs = {v for r in rules for v in r["verbs"]} - {drop}
    return Token(
        f"system:serviceaccount:{NAMESPACE}:{account}",
        frozenset(verbs),
        frozenset(res for r in rules for res in r["resources"]),
    )


def test_the_applier_works_with_exactly_the_rendered_grants(
    rendered_sets: dict[str, list[dict[str, Any]]],
) -> None:
    """remediation's own PolicyApplier against the Kubernetes stand-in, authenticated with a
    token holding only what the chart grants the detector: a dry-run, a create, an update, an
    audit-mode check, and both kinds of rollback go through, and every verb granted is used."""
    docs = rendered_sets["apply"]
    with K8sStandIn(tokens={"detector": detector_token(docs)}) as server:
        server.put_configmap("kube-system", "cilium-config", {"policy-audit-mode": "true"})
        config = kubernetes.client.Configuration(host=server.url)
        config.api_key = {"BearerToken": "detector"}
        config.api_key_prefix = {"BearerToken": "Bearer"}
        applier = PolicyApplier(kubernetes.client.ApiClient(config), timeout=5)
        web = cnp(
            {"app": "web"},
            name="web",
            ingress=[{"fromEndpoints": [{"matchLabels": {"app": "frontend"}}]}],
        )
        created = applier.apply(web, audit=True)  # reads cilium-config, dry-run, create
        changed = copy.deepcopy(web)
        changed["spec"]["ingress"][0]["fromEndpoints"][0]["matchLabels"]["app"] = "checkout"
        updated = applier.apply(changed)  # server-side apply over our own object
        applier.rollback(updated)  # restore the previous spec
        applier.rollback(created)  # delete what we created
        assert server.stored("ciliumnetworkpolicies", "shop", "web") is None
        used = {METHOD_VERBS[r.method] for r in server.requests}
    granted = detector_token(docs).verbs
    assert used == granted, f"granted but never used: {granted - used}; used: {used - granted}"
    # the grant is what lets it through: without delete, the rollback of a create is refused
    with K8sStandIn(tokens={"detector": detector_token(docs, drop="delete")}) as server:
        config = kubernetes.client.Configuration(host=server.url)
        config.api_key = {"BearerToken": "detector"}
        config.api_key_prefix = {"BearerToken": "Bearer"}
        applier = PolicyApplier(kubernetes.client.ApiClient(config), timeout=5)
        with pytest.raises(Forbidden):
            applier.rollback(applier.apply(web))


def test_every_binding_binds_a_rendered_role_to_a_rendered_account(
    docs: list[dict[str, Any]],
) -> None:
    accounts = {
        (d["metadata"]["namespace"], d["metadata"]["name"]) for d in of_kind(docs, "ServiceAccount")
    }
    for binding in [*of_kind(docs, "RoleBinding"), *of_kind(docs, "ClusterRoleBinding")]:
        ref = binding["roleRef"]
        targets = [
            d
            for d in of_kind(docs, ref["kind"])
            if d["metadata"]["name"] == ref["name"]
            and d["metadata"].get("namespace") == binding["metadata"].get("namespace")
        ]
        assert len(targets) == 1, binding["metadata"]
        for subject in binding["subjects"]:
            assert (subject["namespace"], subject["name"]) in accounts, subject
    for w in workloads(docs):
        assert (NAMESPACE, pod_spec(w)["serviceAccountName"]) in accounts


def walk(value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield k, v
            yield from walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from walk(v)


def test_nothing_is_privileged(docs: list[dict[str, Any]]) -> None:
    assert not [v for k, v in walk(docs) if k == "privileged" and v is not False]
    assert not [v for k, v in walk(docs) if k == "allowPrivilegeEscalation" and v is True]


def test_every_container_has_resources_and_a_security_context(docs: list[dict[str, Any]]) -> None:
    for w, c in containers(docs):
        where = f"{w['kind']} {c['name']}"
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= c["resources"][kind].keys(), where
        sc = c["securityContext"]
        assert sc["privileged"] is False and sc["capabilities"]["drop"] == ["ALL"], where
        pod = pod_spec(w)
        seccomp = sc.get("seccompProfile") or pod["securityContext"]["seccompProfile"]
        assert seccomp["type"] in ("RuntimeDefault", "Unconfined"), where
        if w["kind"] != "DaemonSet":  # the service image's user, nothing added
            assert pod["securityContext"]["runAsNonRoot"] is True, where
            assert sc["readOnlyRootFilesystem"] is True and "add" not in sc["capabilities"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert not pod.get("hostNetwork") and not pod.get("hostPID"), where


def test_the_ebpf_agent_has_its_capabilities_and_read_only_host_paths(
    rendered_sets: dict[str, list[dict[str, Any]]],
) -> None:
    for name, docs in rendered_sets.items():
        agents = part(docs, "DaemonSet", "agent")
        assert bool(agents) == (VALUE_SETS[name].get("flows", {}).get("source") == "ebpf"), name
        for ds in agents:
            (c,) = pod_spec(ds)["containers"]
            caps = c["securityContext"]["capabilities"]
            assert set(caps["add"]) == {
                "BPF",
                "PERFMON",
                "NET_ADMIN",
                "SYS_RESOURCE",
                "SYS_ADMIN",
                "SYS_PTRACE",
            }
            for mount, volume in mounts(ds, c).values():
                if "hostPath" in volume:
                    assert mount.get("readOnly") is True, mount
            args = parse_args(c)
            assert args.command == "agent" and args.kubernetes == "auto"
            assert args.node_name == FIELD_VALUES["spec.nodeName"]
            if args.cgroup_root is not None:  # the host's cgroup v2 root, mounted from the host
                _, volume = mounted(args.cgroup_root, mounts(ds, c))
                assert volume["hostPath"]["path"] == "/sys/fs/cgroup"
            else:
                assert args.no_udp_peers


def test_the_charts_agent_is_deploy_agent_yaml_without_privileged(
    rendered_sets: dict[str, list[dict[str, Any]]],
) -> None:
    """deploy/agent.yaml is checked against the agent's code and its watches run with its
    ClusterRole (tests/test_deploy_manifests.py): the chart's agent must match it in everything
    but the security context (capabilities instead of privileged)."""
    reference = [d for d in yaml.safe_load_all((ROOT / "deploy" / "agent.yaml").read_text()) if d]
    (ref_ds,) = of_kind(reference, "DaemonSet")
    (ds,) = of_kind(rendered_sets["ebpf"], "DaemonSet")
    (ref_c,), (c,) = pod_spec(ref_ds)["containers"], pod_spec(ds)["containers"]
    assert vars(parse_args(c)) == vars(parse_args(ref_c))
    for key in ("hostPID", "hostNetwork", "dnsPolicy", "tolerations"):
        assert pod_spec(ds)[key] == pod_spec(ref_ds)[key], key
    for key in ("ports", "readinessProbe", "livenessProbe", "resources", "env"):
        assert c[key] == ref_c[key], key

    def host_mounts(w: dict[str, Any], container: dict[str, Any]) -> set[tuple[Any, ...]]:
        return {
            (
                path,
                v["hostPath"]["path"],
                v["hostPath"].get("type"),
                m.get("readOnly"),
                m.get("mountPropagation"),
            )
            for path, (m, v) in mounts(w, container).items()
        }

    assert host_mounts(ds, c) == host_mounts(ref_ds, ref_c)
    (ref_role,) = of_kind(reference, "ClusterRole")
    (role,) = of_kind(rendered_sets["ebpf"], "ClusterRole")
    assert role["rules"] == ref_role["rules"]
    assert (
        ref_c["securityContext"] == {"privileged": True} and not c["securityContext"]["privileged"]
    )


def test_the_hubble_socket_is_the_only_host_path_of_a_socket_reading_detector(
    rendered_sets: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered_sets["hubble-socket"]
    sts, c = detector(docs)
    host = [(m, v) for m, v in mounts(sts, c).values() if "hostPath" in v]
    assert len(host) == 1
    mount, volume = host[0]
    assert volume["hostPath"] == {"path": "/var/run/cilium/hubble.sock", "type": "Socket"}
    assert mount["readOnly"] is True and mount["mountPath"] == "/var/run/cilium/hubble.sock"
    assert pod_spec(sts)["securityContext"]["supplementalGroups"] == [998]
    for other in set(VALUE_SETS) - {"hubble-socket"}:
        sts, c = detector(rendered_sets[other])
        assert not [v for _, v in mounts(sts, c).values() if "hostPath" in v], other


# --------------------------------------------------------------------------- the detector


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_the_detector_config_loads_and_names_mounted_paths(
    name: str,
    rendered_sets: dict[str, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    docs = rendered_sets[name]
    config = detector_config(docs, monkeypatch, tmp_path)
    sts, c = detector(docs)
    table = mounts(sts, c)
    source = VALUE_SETS[name].get("flows", {}).get("source", "hubble-relay")
    expected = {
        "hubble-relay": VALUE_SETS[name]
        .get("flows", {})
        .get("hubbleRelay", {})
        .get("address", "hubble-relay.kube-system.svc.cluster.local:80"),
        "hubble-socket": "unix:///var/run/cilium/hubble.sock",
        "ebpf": f"{FIELD_VALUES['status.hostIP']}:4244",  # the agent on the detector's node
    }
    if clustered(name):  # the shards read the flows; the detector serves the API over the store
        assert config.source.spec == "file:/dev/null" and "hubble" not in c.get("args", ())
    else:
        assert config.source.spec == ("generator" if source == "generator" else "hubble")
    if source != "generator" and not clustered(name):
        assert config.hubble.server == expected[source]
        target(config.hubble.server)  # an address the Hubble source accepts
    # the data folder is the volume claim (cluster mode: scratch, the store is PostgreSQL), and
    # every file the service reads is mounted
    data = mounted(config.data_dir, table)
    if clustered(name):
        assert data is not None and "emptyDir" in data[1]
        # the shards' models claim, read-write: the API promotes and rolls back versions there
        mount, models = mounted(config.model_dir, table)
        assert PurePosixPath(mount["mountPath"]) == PurePosixPath(config.model_dir)
        assert models["persistentVolumeClaim"] == {
            "claimName": VALUE_SETS[name]["cluster"]["models"]["existingClaim"]
        }
        assert not mount.get("readOnly")
        subpath = VALUE_SETS[name]["cluster"]["models"].get("subPath", "")
        assert mount.get("subPath", "") == subpath
    else:
        assert data is not None and data[1]["claim"]["metadata"]["name"] == "data"
    paths = [
        config.model_dir,
        config.model_signing_key_file,
        config.hubble.tls_ca,
        config.hubble.tls_cert,
        config.hubble.tls_key,
    ]
    for path in [p for p in paths if p is not None]:
        assert mounted(path, table) is not None, path
    if source == "hubble-socket" and not clustered(name):
        _, volume = mounted(config.hubble.server.removeprefix("unix://"), table)
        assert volume["hostPath"]["type"] == "Socket"
    # the API listens where the Service and the probes send requests
    assert config.api.host == "0.0.0.0"
    (port,) = c["ports"]
    assert port["containerPort"] == config.api.port and port["name"] == "http"
    assert config.public_url().startswith(("http://", "https://"))
    secrets = VALUE_SETS[name].get("store", {}).get("existingSecret")
    assert config.store_url == (
        SECRET_VALUES["NETWARDEN_STORE__URL"] if secrets else "sqlite:////data/netwarden.db"
    )
    tokens = VALUE_SETS[name].get("api", {}).get("tokens", {}).get("existingSecret")
    assert config.api_tokens == (TOKENS if tokens else "")


def test_the_probes_ask_the_apis_health_routes(docs: list[dict[str, Any]]) -> None:
    _, c = detector(docs)
    ports = {p["name"] for p in c["ports"]}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"  # never restarts for a model
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = c[probe]["httpGet"]
        assert get["path"] in PUBLIC_PATHS and get["port"] in ports, (
            probe
        )  # answered without a token


def test_services_select_the_detector_and_name_its_port(docs: list[dict[str, Any]]) -> None:
    sts, c = detector(docs)
    labels = pod_labels(sts)
    assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert "app.kubernetes.io/version" not in sts["spec"]["selector"]["matchLabels"]
    services = {s["metadata"]["name"]: s for s in of_kind(docs, "Service")}
    api = services[f"{RELEASE}-netwarden-api"]
    assert api["spec"]["selector"].items() <= labels.items()  # the API is `netwarden serve`'s
    if sts["kind"] == "StatefulSet":
        assert sts["spec"]["serviceName"] in services
        assert services[sts["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"
    else:  # cluster mode's API Deployment: no headless Service of its own
        assert not [s for s in services if s.startswith(f"{RELEASE}-netwarden-detector")]
    component = labels["app.kubernetes.io/component"]
    for svc in services.values():
        if svc["spec"]["selector"]["app.kubernetes.io/component"] != component:
            continue  # cluster mode's publishers and shards: the next test
        assert svc["spec"]["selector"].items() <= labels.items()
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= {p["name"] for p in c["ports"]}
        assert svc["spec"]["publishNotReadyAddresses"] is True  # /readyz's reasons stay reachable
    for monitor in of_kind(docs, "ServiceMonitor"):
        (target,) = [
            s
            for s in services.values()
            if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
        ]
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {
            p["name"] for p in target["spec"]["ports"]
        }
        assert [e["path"] for e in monitor["spec"]["endpoints"]] == ["/metrics"]


def test_serve_runs_once_or_as_a_rolling_api_deployment(
    rendered_sets: dict[str, list[dict[str, Any]]],
) -> None:
    """The detector StatefulSet runs one `netwarden serve` at most (each replica would read the
    whole stream). In cluster mode the API Deployment runs cluster.api.replicas (default 2) and
    rolls them one at a time, a new pod ready before an old one stops: every replica runs the
    alerter over the shared outbox (tests/test_outbox_shared.py, tests/test_cluster_api.py)."""
    for name, docs in rendered_sets.items():
        w, c = detector(docs)
        args = parse_args(c)
        assert args.command == "serve"
        if clustered(name):
            assert w["kind"] == "Deployment" and w["metadata"]["name"] == f"{RELEASE}-netwarden-api"
            replicas = VALUE_SETS[name]["cluster"].get("api", {}).get("replicas", 2)
            assert w["spec"]["replicas"] == replicas
            assert w["spec"]["strategy"] == {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            }
            # spread over nodes where possible: a node drain leaves the others serving
            (spread,) = pod_spec(w)["topologySpreadConstraints"]
            assert spread["topologyKey"] == "kubernetes.io/hostname"
            assert spread["whenUnsatisfiable"] == "ScheduleAnyway"
            assert spread["labelSelector"]["matchLabels"] == w["spec"]["selector"]["matchLabels"]
            assert not part(docs, "StatefulSet", "detector")
            assert not [d for d in of_kind(docs, "PersistentVolumeClaim") if "detector" in str(d)]
        else:
            assert w["kind"] == "StatefulSet" and w["spec"]["replicas"] == 1
            assert not of_kind(docs, "Deployment")
    # the schema has no upper bound on the API's replicas
    many = copy.deepcopy(CLUSTER)
    many["cluster"]["api"] = {"replicas": 5}
    (deployment,) = of_kind(objects(render(many)), "Deployment")
    assert deployment["spec"]["replicas"] == 5


def test_the_api_deployment_runs_serve_as_the_detector_did(
    rendered_sets: dict[str, list[dict[str, Any]]],
) -> None:
    """Cluster mode's API Deployment has the detector's container but for the volumes: same
    image, args, probes, security contexts, environment (the store URL and tokens from their
    Secrets), resources and grace period; the signing key from its Secret."""
    reference, ref_c = detector(rendered_sets["secrets"])
    for name in CLUSTER_SETS:
        docs = rendered_sets[name]
        w, c = detector(docs)
        for key in ("args", "ports", "startupProbe", "livenessProbe", "readinessProbe"):
            assert c[key] == ref_c[key], (name, key)
        for key in ("securityContext", "resources", "image", "imagePullPolicy"):
            assert c[key] == ref_c[key], (name, key)
        for key in ("securityContext", "terminationGracePeriodSeconds"):
            assert pod_spec(w)[key] == pod_spec(reference)[key], (name, key)
        env = {e["name"]: e.get("valueFrom") for e in c["env"]}
        ref_env = {e["name"]: e.get("valueFrom") for e in ref_c["env"]}
        assert env["NETWARDEN_STORE__URL"] == ref_env["NETWARDEN_STORE__URL"], name
        tokens = VALUE_SETS[name].get("api", {}).get("tokens", {}).get("existingSecret")
        assert ("NETWARDEN_API_TOKENS" in env) == bool(tokens), name
        if tokens:
            assert env["NETWARDEN_API_TOKENS"]["secretKeyRef"]["name"] == tokens
        volumes = {v["name"]: v for v in pod_spec(w)["volumes"]}
        assert volumes["signing-key"]["secret"]["secretName"] == "netwarden-signing"
        assert not [v for v in volumes.values() if "hostPath" in v], name
        checksum = pod_labels(w) and w["spec"]["template"]["metadata"]["annotations"]
        assert "checksum/config" in checksum


def test_every_service_selects_one_workload_and_its_named_ports(
    docs: list[dict[str, Any]],
) -> None:
    for svc in of_kind(docs, "Service"):
        selector = svc["spec"]["selector"].items()
        (w,) = [w for w in workloads(docs) if selector <= pod_labels(w).items()]
        named = {p["name"] for _, c in containers([w]) for p in c.get("ports", ())}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= named, svc["metadata"]["name"]


# --------------------------------------------------------------------------- cluster mode

CLUSTER_SETS = sorted(n for n in VALUE_SETS if clustered(n))


@pytest.mark.parametrize("name", CLUSTER_SETS)
def test_api_replicas_do_nothing_that_must_happen_once(
    name: str,
    rendered_sets: dict[str, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Several `netwarden serve` over one store and one models claim: no retraining in the
    service (the CronJob's), no model bootstrapped into the shared claim, no admin token made in
    each pod's scratch /data (the tokens are api.tokens.existingSecret's, or none), no window
    history of their own (the shards write it)."""
    config = detector_config(rendered_sets[name], monkeypatch, tmp_path)
    assert config.retrain.schedule is None
    assert config.models.bootstrap is False
    assert config.api.tokens_file == Path("/dev/null")
    assert config.history.enabled is False  # the shards keep the window history
    tokens = VALUE_SETS[name].get("api", {}).get("tokens", {}).get("existingSecret")
    assert config.api_tokens == (TOKENS if tokens else "")
    # the service's own token loading: exactly the Secret's tokens, nothing written to /data
    from netwarden.service import _tokens

    config = config.model_copy(update={"data_dir": tmp_path / "data"})
    table = _tokens(config, Console(quiet=True))
    assert not (tmp_path / "data").exists()
    assert bool(table.authenticate("token")) == bool(tokens)


def test_cluster_mode_only_when_enabled(rendered_sets: dict[str, list[dict[str, Any]]]) -> None:
    for name, docs in rendered_sets.items():
        shards, publishers = part(docs, "StatefulSet", "shard"), part(docs, "DaemonSet", "partials")
        assert len(shards) == len(publishers) == int(clustered(name)), name
        assert len(part(docs, "ConfigMap", "shard")) == int(clustered(name)), name


@pytest.mark.parametrize("name", CLUSTER_SETS)
def test_every_node_publishes_its_own_flows_as_partials(
    name: str, rendered_sets: dict[str, list[dict[str, Any]]]
) -> None:
    """The DaemonSet runs `netwarden partials publish` on the node's own flows (its Hubble
    socket, or the eBPF agent on the node), in the model's windows, to the NATS of nats.url,
    its metrics on the port its Service names; as the image's user, no capability, no token."""
    values, docs = VALUE_SETS[name], rendered_sets[name]
    (ds,) = part(docs, "DaemonSet", "partials")
    (c,) = pod_spec(ds)["containers"]
    args = parse_args(c)
    assert (args.command, args.partials_command) == ("partials", "publish")
    assert args.flows is None and args.nats == values["nats"]["url"]
    assert args.node == FIELD_VALUES["spec.nodeName"]
    windows = values.get("detector", {}).get("config", {}).get("windows", {})
    assert (args.window, args.lateness) == (windows.get("seconds", 60), windows.get("lateness", 15))
    kind, _, address = args.source.partition(":")
    assert kind == "hubble"
    target(address)  # an address the Hubble source accepts
    table = mounts(ds, c)
    if values.get("flows", {}).get("source") == "ebpf":  # the agent of this node, on its address
        assert address == f"{FIELD_VALUES['status.hostIP']}:4244" and not table
        (agent,) = part(docs, "DaemonSet", "agent")
        assert pod_spec(agent)["hostNetwork"] is True
        assert pod_spec(ds).get("hostNetwork") is not True
    else:  # the node's Hubble socket, the only host path, read-only
        socket_path = values.get("flows", {}).get("hubbleSocket", {}).get("path", "")
        socket_path = socket_path or "/var/run/cilium/hubble.sock"
        assert address == f"unix://{socket_path}"
        ((mount, volume),) = table.values()
        assert volume["hostPath"] == {"path": socket_path, "type": "Socket"}
        assert mount["readOnly"] is True
        group = values.get("flows", {}).get("hubbleSocket", {}).get("groupId", 0)
        assert pod_spec(ds)["securityContext"]["supplementalGroups"] == [group]
    port = values["cluster"].get("metricsPort", 9091)
    assert args.metrics_listen == f":{port}"
    assert c["ports"] == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
    assert pod_spec(ds)["automountServiceAccountToken"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod_spec(ds)["securityContext"]["runAsNonRoot"] is True
    # it publishes its open windows on SIGTERM and waits for their acknowledgements
    assert pod_spec(ds)["terminationGracePeriodSeconds"] > args.flush_timeout


@pytest.mark.parametrize("name", CLUSTER_SETS)
def test_the_shards_own_every_partition_once_and_score_into_the_shared_store(
    name: str, rendered_sets: dict[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    values, docs = VALUE_SETS[name], rendered_sets[name]
    (sts,) = part(docs, "StatefulSet", "shard")
    (c,) = pod_spec(sts)["containers"]
    args = parse_args(c)
    partitions = values["cluster"].get("partitions", 16)
    shards = values["cluster"].get("shards", 2)
    assert args.command == "shard" and sts["spec"]["replicas"] == shards
    assert args.nats == values["nats"]["url"]
    leases = values["cluster"].get("shard", {}).get("leases", False)
    if leases:  # ownership by leases among the live shards (tests/test_nats_partials.py)
        assert args.leases and args.lease_ttl == values["cluster"]["shard"]["leaseTTL"]
        assert (args.partitions, args.ordinal) == (partitions, None)
    else:
        assert (args.partitions, args.replicas, args.ordinal) == (partitions, shards, "auto")
        # each pod's ordinal comes from its name: together they own each partition exactly once
        owners: list[int] = []
        for k in range(shards):
            pod = f"{sts['metadata']['name']}-{k}"
            monkeypatch.setattr(
                "netwarden.commands.cluster.socket.gethostname", lambda pod=pod: pod
            )
            owners += owned_partitions(args.partitions, args.ordinal, args.replicas, args.owns)
        assert sorted(owners) == list(range(partitions))
    # scored with the model's windows, the model versions of the claim verified with the key,
    # into the detector's own store (the same Secret): the API lists what the shards found
    windows = values.get("detector", {}).get("config", {}).get("windows", {})
    assert args.window == windows.get("seconds", 60)
    table = mounts(sts, c)
    mount, volume = mounted(args.model_dir, table)
    assert volume["persistentVolumeClaim"] == {
        "claimName": values["cluster"]["models"]["existingClaim"],
        "readOnly": True,
    }
    assert mount["readOnly"] is True
    assert mount.get("subPath", "") == values["cluster"]["models"].get("subPath", "")
    _, key_volume = mounted(args.signing_key, table)
    assert key_volume["secret"]["secretName"] == values["models"]["signingKey"]["existingSecret"]
    assert args.store == SECRET_VALUES["NETWARDEN_STORE__URL"]
    _, d = detector(docs)
    store_ref = {e["name"]: e.get("valueFrom") for e in d["env"]}["NETWARDEN_STORE__URL"]
    assert {e["name"]: e.get("valueFrom") for e in c["env"]}["NETWARDEN_STORE__URL"] == store_ref
    port = values["cluster"].get("metricsPort", 9091)
    assert args.metrics_listen == f":{port}"
    assert pod_spec(sts)["automountServiceAccountToken"] is False
    assert "volumeClaimTemplates" not in sts["spec"]  # the state is in NATS and the store
    # the window history: every shard adds the windows it scored to the history claim,
    # read-write (tests/test_shard_history.py); without the claim, none is kept
    history = values["cluster"].get("history", {})
    if history.get("existingClaim"):
        assert args.history == PurePosixPath("/data/history")
        days = values.get("detector", {}).get("config", {}).get("history", {})
        assert args.history_days == days.get("retention_days", 30)
        mount, volume = mounted(args.history, table)
        assert PurePosixPath(mount["mountPath"]) == args.history
        assert volume["persistentVolumeClaim"] == {"claimName": history["existingClaim"]}
        assert not mount.get("readOnly")
        assert mount.get("subPath", "") == history.get("subPath", "")
        # the image's user owns what it writes there
        security = pod_spec(sts)["securityContext"]
        assert (security["runAsUser"], security["fsGroup"]) == (10001, 10001)
    else:
        assert args.history is None
        assert not [v for v in pod_spec(sts)["volumes"] if v["name"] == "history"]
    (headless,) = [
        s for s in of_kind(docs, "Service") if s["metadata"]["name"] == sts["spec"]["serviceName"]
    ]
    assert headless["spec"]["clusterIP"] == "None"


@pytest.mark.parametrize("name", CLUSTER_SETS)
def test_the_nats_mapping_is_what_partials_mapping_prints(
    name: str, rendered_sets: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    (config_map,) = part(rendered_sets[name], "ConfigMap", "shard")
    partitions = VALUE_SETS[name]["cluster"].get("partitions", 16)
    assert config_map["data"] == {"mappings.conf": server_mappings(partitions)}


def test_cluster_monitoring_scrapes_publishers_and_shards(
    rendered_sets: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered_sets["cluster-ebpf-monitoring"]
    monitors = {
        m["metadata"]["labels"]["app.kubernetes.io/component"]: m
        for m in of_kind(docs, "ServiceMonitor")
    }
    assert set(monitors) == {"detector", "partials", "shard"}
    for component in ("partials", "shard"):
        selector = monitors[component]["spec"]["selector"]["matchLabels"].items()
        (svc,) = [
            s for s in of_kind(docs, "Service") if selector <= s["metadata"]["labels"].items()
        ]
        assert svc["spec"]["selector"]["app.kubernetes.io/component"] == component
        assert [e["port"] for e in monitors[component]["spec"]["endpoints"]] == ["metrics"]
        schema = crd_schema("ServiceMonitor", "v1")
        body = {k: v for k, v in monitors[component].items() if k != "metadata"}
        assert not list(jsonschema.Draft7Validator(schema).iter_errors(body))


@pytest.mark.parametrize(
    ("drop", "complaint"),
    [
        ("nats", "needs nats.url"),
        ("store", "needs store.existingSecret"),
        ("models", "needs models.signingKey.existingSecret"),
        ("claim", "needs cluster.models.existingClaim"),
        ("shards", "cluster.shards (17) is more than cluster.partitions (16)"),
        ("generator", "not the generator"),
        ("schedule", "detector.config.retrain.schedule would retrain in every API replica"),
    ],
)
def test_cluster_mode_refuses_to_render_without_what_it_needs(drop: str, complaint: str) -> None:
    values = copy.deepcopy(CLUSTER)
    if drop == "claim":
        values["cluster"]["models"] = {}
    elif drop == "shards":
        values["cluster"]["shards"] = 17
    elif drop == "generator":
        values["flows"] = {"source": "generator"}
    elif drop == "schedule":  # retraining is the CronJob's, not every API replica's
        values["detector"] = {"config": {"retrain": {"schedule": "0 3 * * *"}}}
    else:
        del values[drop]
    with pytest.raises(helm.HelmRenderError, match=re.escape(complaint)):
        render(values)


# --------------------------------------------------------------------------- retraining


def test_the_retraining_job_runs_retrain_on_the_detectors_volume(
    rendered_sets: dict[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, docs in rendered_sets.items():
        jobs = of_kind(docs, "CronJob")
        wanted = VALUE_SETS[name].get("retrain", {}).get("enabled", True)
        if clustered(name):  # the windows come from a history claim: no claim, no job
            history = VALUE_SETS[name]["cluster"].get("history", {}).get("existingClaim")
            wanted = wanted and bool(history)
        assert bool(jobs) == wanted, name
        for job in jobs:
            assert croniter.is_valid(job["spec"]["schedule"])
            assert job["spec"]["concurrencyPolicy"] == "Forbid"
            (c,) = pod_spec(job)["containers"]
            args = parse_args(c)
            assert args.command == "retrain"
            config = detector_config(docs, monkeypatch, tmp_path)
            # the detector's model folder, history and signing key
            assert str(args.model_dir) == str(config.model_dir)
            assert str(args.history) == str(config.data_dir / "history")
            assert str(args.signing_key) == str(config.model_signing_key_file)
            # the people's verdicts: from the detector's store when it is PostgreSQL, its URL
            # from the same Secret (never in the pod spec); else the history's labels
            if VALUE_SETS[name].get("store", {}).get("existingSecret"):
                assert args.store == config.store_url == SECRET_VALUES["NETWARDEN_STORE__URL"]
                assert "$(NETWARDEN_STORE__URL)" in c["args"]
                _, d = detector(docs)
                secret = {e["name"]: e.get("valueFrom") for e in d["env"]}["NETWARDEN_STORE__URL"]
                assert c["env"] == [{"name": "NETWARDEN_STORE__URL", "valueFrom": secret}]
            else:
                assert args.store is None and "env" not in c
            table = mounts(job, c)
            assert mounted(args.signing_key, table) is not None
            assert pod_spec(job)["automountServiceAccountToken"] is False
            if clustered(name):
                # new versions go to the shards' models claim, read-write, where the shards and
                # the API read them; the windows from the history claim, read-only
                values = VALUE_SETS[name]["cluster"]
                mount, models = mounted(args.model_dir, table)
                assert PurePosixPath(mount["mountPath"]) == args.model_dir
                assert models["persistentVolumeClaim"] == {
                    "claimName": values["models"]["existingClaim"]
                }
                assert not mount.get("readOnly")
                assert mount.get("subPath", "") == values["models"].get("subPath", "")
                (shards,) = part(docs, "StatefulSet", "shard")
                _, shard_models = mounted(
                    "/models", mounts(shards, pod_spec(shards)["containers"][0])
                )
                assert (
                    shard_models["persistentVolumeClaim"]["claimName"]
                    == (models["persistentVolumeClaim"]["claimName"])
                )
                # the windows the shards keep: the same claim and folder they write, read-only
                mount, history = mounted(args.history, table)
                assert PurePosixPath(mount["mountPath"]) == args.history
                assert history["persistentVolumeClaim"] == {
                    "claimName": values["history"]["existingClaim"],
                    "readOnly": True,
                }
                assert mount["readOnly"] is True
                shard_c = pod_spec(shards)["containers"][0]
                shard_mount, shard_history = mounted(
                    parse_args(shard_c).history, mounts(shards, shard_c)
                )
                assert (
                    shard_history["persistentVolumeClaim"]["claimName"]
                    == (history["persistentVolumeClaim"]["claimName"])
                )
                assert shard_mount.get("subPath") == mount.get("subPath")
                assert "affinity" not in pod_spec(job)  # ReadWriteMany: any node
                assert not [v for v in pod_spec(job)["volumes"] if "detector" in str(v)]
                continue
            _, data = mounted(args.model_dir, table)
            sts, _ = detector(docs)
            claim = sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
            assert (
                data["persistentVolumeClaim"]["claimName"] == f"{claim}-{sts['metadata']['name']}-0"
            )
            assert mounted(args.signing_key, table) is not None
            # on the node of the pod whose claim it mounts (ReadWriteOnce)
            (term,) = pod_spec(job)["affinity"]["podAffinity"][
                "requiredDuringSchedulingIgnoredDuringExecution"
            ]
            selector = term["labelSelector"]["matchLabels"]
            assert (
                selector.pop("statefulset.kubernetes.io/pod-name") == f"{sts['metadata']['name']}-0"
            )
            assert selector.items() <= pod_labels(sts).items()
            assert term["topologyKey"] == "kubernetes.io/hostname"
            assert pod_spec(job)["automountServiceAccountToken"] is False


# --------------------------------------------------------------------------- alert rules


def exported_metric_names() -> set[str]:
    """Sample names the detector really exports, from its own metric classes."""
    registry = CollectorRegistry()
    detector = DetectorMetrics(registry, "hubble")
    detector.flows.labels(source="hubble", verdict="FORWARDED").inc()  # labelled: made on use
    AlertMetrics(registry, ["alertmanager", "slack"])
    text = generate_latest(registry).decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples} | {"up"}


def test_alert_rules_use_metrics_that_exist(rendered_sets: dict[str, list[dict[str, Any]]]) -> None:
    rule = one(rendered_sets["monitoring"], "PrometheusRule")
    names = exported_metric_names()
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    assert {a["alert"] for a in alerts} == {
        "NetwardenDown",
        "NetwardenFlowsNotArriving",
        "NetwardenAlertDeliveriesFailing",
    }
    for alert in alerts:
        used = set(re.findall(r"\b(netwarden_\w+|up)\s*\{", alert["expr"]))
        assert used and used <= names, (alert["alert"], used - names)


def test_promtool_checks_and_runs_the_alert_rules(
    rendered_sets: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """The rules through promtool: valid PromQL, then each alert fired by the series that
    should fire it and kept quiet by healthy ones."""
    promtool = require("promtool", "prometheus")
    rule = one(rendered_sets["monitoring"], "PrometheusRule")
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    check = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    annotations = {r["alert"]: r["annotations"] for g in rule["spec"]["groups"] for r in g["rules"]}

    def expect(alert: str, labels: dict[str, str]) -> dict[str, Any]:
        texts = {
            k: v.replace("{{ $labels.sink }}", labels.get("sink", ""))
            for k, v in annotations[alert].items()
        }
        return {"exp_labels": labels, "exp_annotations": texts}

    job = f'job="{RELEASE}-netwarden-api", namespace="{NAMESPACE}"'
    flows = f'netwarden_flows_total{{{job}, source="hubble", verdict="FORWARDED"}}'
    delivered = f'netwarden_alert_deliveries_total{{{job}, sink="slack", outcome="success"}}'
    failed = f'netwarden_alert_deliveries_total{{{job}, sink="slack", outcome="failure"}}'
    up = f"up{{{job}}}"
    ns = {"namespace": NAMESPACE}

    def case(series: dict[str, str], alert: str, fired: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in series.items()],
            "alert_rule_test": [{"eval_time": "40m", "alertname": alert, "exp_alerts": fired}],
        }

    healthy = {up: "1x60", flows: "0+50x60", delivered: "0+1x60", failed: "0x60"}
    tests = [
        case(
            {up: "0x60", flows: "0+50x60"},
            "NetwardenDown",
            [expect("NetwardenDown", {"severity": "critical"})],
        ),
        case(
            {}, "NetwardenDown", [expect("NetwardenDown", {"severity": "critical"})]
        ),  # never scraped
        case(healthy, "NetwardenDown", []),
        case(
            {up: "1x60", flows: "100x60"},
            "NetwardenFlowsNotArriving",
            [expect("NetwardenFlowsNotArriving", {**ns, "severity": "warning"})],
        ),
        case(
            {up: "1x60"},
            "NetwardenFlowsNotArriving",  # up, but not one flow counted ever
            [expect("NetwardenFlowsNotArriving", {**ns, "severity": "warning"})],
        ),
        case(healthy, "NetwardenFlowsNotArriving", []),
        case(
            {up: "1x60", flows: "0+50x60", delivered: "3x60", failed: "0+2x60"},
            "NetwardenAlertDeliveriesFailing",
            [
                expect(
                    "NetwardenAlertDeliveriesFailing",
                    {**ns, "sink": "slack", "severity": "warning"},
                )
            ],
        ),
        # failures that the retries get through: no alert
        case(
            {up: "1x60", flows: "0+50x60", delivered: "0+1x60", failed: "0+2x60"},
            "NetwardenAlertDeliveriesFailing",
            [],
        ),
        case(healthy, "NetwardenAlertDeliveriesFailing", []),
    ]
    _promtool_test_rules(promtool, tmp_path, rules, tests)


def test_cluster_alert_rules_use_the_publishers_and_shards_metrics_and_fire(
    rendered_sets: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """In cluster mode flows are counted by the publishers (the detector reads none), and the
    publishers' and shards' failures alert: every metric named is one they export, the rules
    match the CRD and pass promtool, and each cluster alert fires on the series that should
    fire it and stays quiet on healthy ones."""
    from netwarden.cluster.metrics import PublisherCollector, ShardCollector
    from netwarden.cluster.publisher import PartialPublisher
    from netwarden.cluster.shard import DetectorShard, ShardConfig
    from netwarden.ingest.metrics import IngestMetrics

    docs = rendered_sets["cluster-ebpf-monitoring"]
    rule = one(docs, "PrometheusRule")
    body = {k: v for k, v in rule.items() if k != "metadata"}
    assert not list(
        jsonschema.Draft7Validator(crd_schema("PrometheusRule", "v1")).iter_errors(body)
    )
    registry = CollectorRegistry()
    IngestMetrics(registry)
    registry.register(PublisherCollector(PartialPublisher("nats://127.0.0.1:1", "n")))
    registry.register(ShardCollector(DetectorShard("nats://127.0.0.1:1", ShardConfig((0,)), None)))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    names = exported_metric_names()
    names |= {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    cluster_alerts = {
        "NetwardenShardsDown",
        "NetwardenPartialsDropped",
        "NetwardenShardHandoffFailing",
        "NetwardenLatePartials",
    }
    assert set(alerts) == cluster_alerts | {
        "NetwardenDown",
        "NetwardenFlowsNotArriving",
        "NetwardenAlertDeliveriesFailing",
    }
    for name, alert in alerts.items():
        used = set(re.findall(r"\b(netwarden_\w+|up)\s*\{", alert["expr"]))
        assert used and used <= names, (name, used - names)
    assert "netwarden_flows_total" not in alerts["NetwardenFlowsNotArriving"]["expr"]

    promtool = require("promtool", "prometheus")
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    check = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    def job(name: str, pod: str = "") -> str:
        extra = f', pod="{pod}"' if pod else ""
        return f'job="{RELEASE}-netwarden-{name}", namespace="{NAMESPACE}"{extra}'

    def expect(alert: str, labels: dict[str, str]) -> dict[str, Any]:
        texts = {
            k: v.replace("{{ $labels.pod }}", labels.get("pod", ""))
            for k, v in alerts[alert]["annotations"].items()
        }
        return {"exp_labels": labels, "exp_annotations": texts}

    pod, shard = "nw-netwarden-partials-x1", "nw-netwarden-shard-1"
    ns = {"namespace": NAMESPACE}
    up_shards = {
        f"up{{{job('shard-headless', f'nw-netwarden-shard-{k}')}}}": "1x60" for k in range(3)
    }
    flows = f"netwarden_ingest_flows_total{{{job('partials', pod)}}}"
    healthy = {
        **up_shards,
        f"up{{{job('partials', pod)}}}": "1x60",
        flows: "0+50x60",
        f"netwarden_partials_dropped_total{{{job('partials', pod)}}}": "0x60",
        f"netwarden_shard_handoff_failures_total{{{job('shard-headless', shard)}}}": "0x60",
        f"netwarden_shard_late_partials_total{{{job('shard-headless', shard)}}}": "0x60",
    }

    def case(series: dict[str, str], alert: str, fired: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "interval": "1m",
            "input_series": [{"series": k, "values": v} for k, v in series.items()],
            "alert_rule_test": [{"eval_time": "40m", "alertname": alert, "exp_alerts": fired}],
        }

    tests = [
        case(healthy, alert, []) for alert in [*sorted(cluster_alerts), "NetwardenFlowsNotArriving"]
    ]
    tests += [
        case(
            {**healthy, f"up{{{job('shard-headless', 'nw-netwarden-shard-2')}}}": "0x60"},
            "NetwardenShardsDown",
            [expect("NetwardenShardsDown", {**ns, "severity": "critical"})],
        ),
        case(
            {**healthy, f"netwarden_partials_dropped_total{{{job('partials', pod)}}}": "0+3x60"},
            "NetwardenPartialsDropped",
            [expect("NetwardenPartialsDropped", {**ns, "pod": pod, "severity": "warning"})],
        ),
        case(
            {
                **healthy,
                f"netwarden_shard_handoff_failures_total{{{job('shard-headless', shard)}}}": "0+1x60",
            },
            "NetwardenShardHandoffFailing",
            [expect("NetwardenShardHandoffFailing", {**ns, "pod": shard, "severity": "warning"})],
        ),
        case(
            {
                **healthy,
                f"netwarden_shard_late_partials_total{{{job('shard-headless', shard)}}}": "0+1x60",
            },
            "NetwardenLatePartials",
            [expect("NetwardenLatePartials", {**ns, "severity": "info"})],
        ),
        case(
            {**healthy, flows: "100x60"},
            "NetwardenFlowsNotArriving",
            [expect("NetwardenFlowsNotArriving", {**ns, "severity": "warning"})],
        ),
    ]
    _promtool_test_rules(promtool, tmp_path, rules, tests)


def test_a_shard_losing_its_leases_alerts_only_with_leases(
    rendered_sets: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """With cluster.shard.leases, NetwardenShardLeasesLost fires when a shard's leases are taken
    over (its renewals were late: starved of CPU or cut off from NATS), on the metric the shard
    really exports with leases; a rebalance, which gives leases up, does not fire it. Without
    leases the alert is not rendered."""
    from netwarden.cluster.leases import LeaseConfig
    from netwarden.cluster.metrics import ShardCollector
    from netwarden.cluster.shard import DetectorShard, ShardConfig

    for name in ("cluster-ebpf-monitoring", "monitoring"):  # static ownership, or no cluster
        (other,) = of_kind(rendered_sets[name], "PrometheusRule")
        assert "NetwardenShardLeasesLost" not in str(other), name
    docs = rendered_sets["cluster-leases"]
    rule = one(docs, "PrometheusRule")
    body = {k: v for k, v in rule.items() if k != "metadata"}
    assert not list(
        jsonschema.Draft7Validator(crd_schema("PrometheusRule", "v1")).iter_errors(body)
    )
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    lost = alerts["NetwardenShardLeasesLost"]
    config = ShardConfig(partitions=(), leases=LeaseConfig("shard-0", partitions=4), name="s0")
    registry = CollectorRegistry()
    registry.register(ShardCollector(DetectorShard("nats://127.0.0.1:1", config, None)))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    exported = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    used = set(re.findall(r"\b(netwarden_\w+)\s*\{", lost["expr"]))
    assert used == {"netwarden_shard_leases_lost_total"} <= exported
    assert "20 s" in lost["annotations"]["description"]  # cluster.shard.leaseTTL of the set

    promtool = require("promtool", "prometheus")
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    check = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    def series(metric: str, pod: str) -> str:
        return (
            f'{metric}{{job="{RELEASE}-netwarden-shard-headless", namespace="{NAMESPACE}", '
            f'pod="{pod}"}}'
        )

    shard = "nw-netwarden-shard-1"
    steady = {
        series("netwarden_shard_leases_lost_total", shard): "0x60",
        series("netwarden_shard_leases_taken_total", shard): "4x60",
        series("netwarden_shard_leases_given_up_total", shard): "0x60",
    }
    # a rebalance: a shard joined, this one gave two partitions up and took one
    rebalanced = {
        **steady,
        series("netwarden_shard_leases_taken_total", shard): "4x30 5x30",
        series("netwarden_shard_leases_given_up_total", shard): "0x30 2x30",
    }
    # at minute 35 two leases were taken over by another shard, and it took others back later
    starved = {
        **steady,
        series("netwarden_shard_leases_lost_total", shard): "0x34 2x26",
        series("netwarden_shard_leases_taken_total", shard): "4x36 6x24",
    }
    texts = {k: v.replace("{{ $labels.pod }}", shard) for k, v in lost["annotations"].items()}
    fired = [
        {
            "exp_labels": {"namespace": NAMESPACE, "pod": shard, "severity": "warning"},
            "exp_annotations": texts,
        }
    ]

    def case(values: dict[str, str], at: str, expected: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "interval": "1m",
            "input_series": [{"series": k, "values": v} for k, v in values.items()],
            "alert_rule_test": [
                {"eval_time": at, "alertname": "NetwardenShardLeasesLost", "exp_alerts": expected}
            ],
        }

    tests = [
        case(steady, "40m", []),
        case(rebalanced, "40m", []),
        case(starved, "33m", []),  # before the loss
        case(starved, "40m", fired),
        case(starved, "50m", []),  # 10 minutes on, and nothing lost since
    ]
    _promtool_test_rules(promtool, tmp_path, rules, tests)


def _promtool_test_rules(promtool: str, folder: Path, rules: Path, tests: list[dict]) -> None:
    """Run ``tests`` (promtool's rule unit tests) against the rule file ``rules`` in
    ``folder``: every expected alert fires, and no other."""
    spec = folder / "rules_test.yaml"
    spec.write_text(
        yaml.safe_dump(
            {"rule_files": [rules.name], "evaluation_interval": "1m", "tests": tests},
            sort_keys=False,
        )
    )
    run = subprocess.run(
        [promtool, "test", "rules", str(spec)], capture_output=True, text=True, cwd=folder
    )
    assert run.returncode == 0, run.stdout + run.stderr
