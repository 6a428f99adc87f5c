"""deploy/agent.yaml, the eBPF agent's DaemonSet, kept honest without a cluster.

The manifests are read as YAML and checked against what they must agree with: Kubernetes' own
object schema (the official client's models: no unknown or misspelt field, no missing required
one), the agent's real command line (its args parsed by ``netwarden``'s own parser, so a flag
that does not exist fails here and not in a crash-looping pod), the paths the agent reads (each
mounted from the host), and the API calls its watches make (the ClusterRole, read-only, granting
exactly those; then the watches themselves run against the Kubernetes stand-in with a token
that has only what the ClusterRole grants).
"""

from __future__ import annotations

import argparse
import inspect
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes.client
import pytest
import yaml

from netwarden.bpf import preflight
from netwarden.bpf.btf import DEFAULT_BTF
from netwarden.bpf.dropreasons import DEFAULT_TRACEFS
from netwarden.bpf.identity import netns_names, open_resolver
from netwarden.bpf.k8swatch import ListWatch
from netwarden.cli.main import _build_parser
from netwarden.cli.serving import _cmd_agent, _serving_tls
from netwarden.observer.server import parse_listen
from tests.k8s_standin import K8sStandIn, Token

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "deploy" / "agent.yaml"
NAMESPACE = "netwarden"

#: kind -> (apiVersion, the client model that describes it)
KINDS = {
    "Namespace": ("v1", "V1Namespace"),
    "ServiceAccount": ("v1", "V1ServiceAccount"),
    "ClusterRole": ("rbac.authorization.k8s.io/v1", "V1ClusterRole"),
    "ClusterRoleBinding": ("rbac.authorization.k8s.io/v1", "V1ClusterRoleBinding"),
    "DaemonSet": ("apps/v1", "V1DaemonSet"),
}
READ_VERBS = frozenset({"get", "list", "watch"})
#: what kubelet fills in for the downward API fields the manifest may use (for $(VAR) expansion)
FIELD_VALUES = {"spec.nodeName": "node-1", "metadata.name": "netwarden-agent-x7k2p",
                "metadata.namespace": NAMESPACE, "status.podIP": "192.0.2.11",
                "status.hostIP": "192.0.2.11"}  # fmt: skip


# --------------------------------------------------------------------------- loading


def _documents() -> list[dict[str, Any]]:
    with MANIFEST.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return _documents()


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind} in {MANIFEST.name}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def daemonset(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return _one(docs, "DaemonSet")


@pytest.fixture(scope="module")
def pod(daemonset: dict[str, Any]) -> dict[str, Any]:
    return daemonset["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def container(pod: dict[str, Any]) -> dict[str, Any]:
    containers = pod["containers"]
    assert len(containers) == 1 and not pod.get("initContainers"), "one container: the agent"
    return containers[0]


@pytest.fixture(scope="module")
def agent_args(container: dict[str, Any]) -> argparse.Namespace:
    return _parse(_expand(container))


def _expand(container: dict[str, Any]) -> list[str]:
    """The container's args with ``$(VAR)`` references expanded as the kubelet does; a
    reference to a variable the container does not define would reach the agent verbatim."""
    values: dict[str, str] = {}
    for var in container.get("env") or ():
        if "value" in var:
            values[var["name"]] = str(var["value"])
        elif field := (var.get("valueFrom") or {}).get("fieldRef"):
            values[var["name"]] = FIELD_VALUES[field["fieldPath"]]

    def expand(text: str) -> str:
        def one(m: re.Match[str]) -> str:
            if m[0] == "$$":
                return "$"
            assert m[1] in values, f"{text!r}: $({m[1]}) is not an env variable of the container"
            return values[m[1]]

        return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", one, text)

    return [expand(str(a)) for a in container.get("args") or ()]


def _parse(argv: list[str]) -> argparse.Namespace:
    """The args through ``netwarden``'s own parser: unknown flags and bad values fail."""
    try:
        return _build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed the reason on stderr
        pytest.fail(f"`netwarden {' '.join(argv)}` is refused by the CLI (exit {exc.code}); "
                    "see the captured stderr")  # fmt: skip


# --------------------------------------------------------------------------- schema


def test_every_document_is_a_known_kind_with_its_api_version(docs: list[dict[str, Any]]) -> None:
    assert sorted(d["kind"] for d in docs) == sorted(KINDS)
    for doc in docs:
        assert doc["apiVersion"] == KINDS[doc["kind"]][0], doc["kind"]
        meta = doc["metadata"]
        assert meta.get("name"), doc["kind"]
        namespaced = doc["kind"] in ("ServiceAccount", "DaemonSet")
        assert meta.get("namespace") == (NAMESPACE if namespaced else None), doc["kind"]
    assert _one(docs, "Namespace")["metadata"]["name"] == NAMESPACE


_LIST = re.compile(r"^[Ll]ist\[(?P<item>.+)\]$")
_DICT = re.compile(r"^(?:[Dd]ict\[str, (?P<new>.+)\]|dict\(str, (?P<old>.+)\))$")
_SCALARS: dict[str, type | tuple[type, ...]] = {
    "str": str, "bool": bool, "int": int, "float": (int, float), "object": object, "datetime": str,
}  # fmt: skip
_QUANTITY = re.compile(r"\.(?:limits|requests)\.[^.]+$")  # numbers are quantities too


def _schema_problems(value: Any, type_name: str, where: str) -> Iterator[str]:
    """Fields the Kubernetes schema does not have, values of the wrong type, and missing
    required fields, from the official client's models (what ``kubectl apply`` would refuse)."""
    if m := _LIST.match(type_name):
        if not isinstance(value, list):
            yield f"{where}: expected a list, got {value!r}"
            return
        for i, item in enumerate(value):
            yield from _schema_problems(item, m["item"], f"{where}[{i}]")
        return
    if m := _DICT.match(type_name):
        if not isinstance(value, dict):
            yield f"{where}: expected a map, got {value!r}"
            return
        for key, item in value.items():
            yield from _schema_problems(item, m["new"] or m["old"], f"{where}.{key}")
        return
    if type_name in _SCALARS:
        expected = _SCALARS[type_name]
        if type_name == "str" and _QUANTITY.search(where):
            expected = (str, int, float)
        if not isinstance(value, expected) or (type_name == "int" and isinstance(value, bool)):
            yield f"{where}: expected {type_name}, got {value!r}"
        return
    model = getattr(kubernetes.client, type_name)
    if not isinstance(value, dict):
        yield f"{where}: expected a {type_name} object, got {value!r}"
        return
    attribute = {json_name: attr for attr, json_name in model.attribute_map.items()}
    known = {}
    for key, item in value.items():
        if key not in attribute:
            yield f"{where}.{key}: {type_name} has no field {key!r}"
            continue
        known[attribute[key]] = item
        yield from _schema_problems(item, model.openapi_types[attribute[key]], f"{where}.{key}")
    fields = getattr(model, "model_fields", None)
    if fields is not None:  # pydantic models (newer clients)
        for attr in sorted(n for n, f in fields.items() if f.is_required() and n not in known):
            yield f"{where}: {type_name} requires {model.attribute_map[attr]!r}"
        return
    try:
        model(**known)  # older clients: the model's setters refuse a missing required field
    except ValueError as exc:
        yield f"{where}: {exc}"


def test_every_document_matches_the_kubernetes_schema(docs: list[dict[str, Any]]) -> None:
    problems = [
        p for doc in docs for p in _schema_problems(doc, KINDS[doc["kind"]][1], doc["kind"])
    ]
    assert problems == []


def test_the_schema_check_catches_mistakes() -> None:
    """The check above is not vacuous: a misspelt field, a wrong type, a missing name."""
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "x"},
          "spec": {"selector": {}, "template": {"spec": {
              "hostPid": True, "hostNetwork": "yes",
              "containers": [{"image": "i", "volumeMounts": [{"name": "v", "mountPath": "/v",
                                                              "mountPropogation": "None"}]}]}}}}  # fmt: skip
    problems = "\n".join(_schema_problems(ds, "V1DaemonSet", "DaemonSet"))
    assert "DaemonSet.spec.template.spec.hostPid: V1PodSpec has no field 'hostPid'" in problems
    assert "hostNetwork: expected bool" in problems
    assert "mountPropogation" in problems
    assert re.search(r"containers\[0\]: .*\bname\b", problems), problems


# --------------------------------------------------------------------------- RBAC


def _watched_resources() -> set[str]:
    """The resources the agent's watches read: every ListWatch of netwarden's agent."""
    return {
        cls.resource
        for cls in _subclasses(ListWatch)
        if cls.__module__.startswith("netwarden.bpf.")
    }


def _subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _grants(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) triples of a ClusterRole; no wildcards, no names, no URLs."""
    granted = set()
    for rule in role.get("rules") or ():
        assert not rule.get("resourceNames") and not rule.get("nonResourceURLs"), rule
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule.get(field, ()), f"wildcard in {field}: {rule}"
        granted |= {
            (g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
        }
    return granted


def test_the_cluster_role_grants_exactly_what_the_watches_read(docs: list[dict[str, Any]]) -> None:
    watched = _watched_resources()
    assert watched == {"pods", "namespaces", "nodes"}  # a new watch must be added to the role
    role = _one(docs, "ClusterRole")
    assert _grants(role) == {("", r, v) for r in watched for v in READ_VERBS}
    assert "aggregationRule" not in role


def test_the_binding_names_the_daemonsets_service_account(docs: list[dict[str, Any]],
                                                          daemonset: dict[str, Any]) -> None:  # fmt: skip
    binding, role, account = (
        _one(docs, k) for k in ("ClusterRoleBinding", "ClusterRole", "ServiceAccount")
    )
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": role["metadata"]["name"]}  # fmt: skip
    name = daemonset["spec"]["template"]["spec"]["serviceAccountName"]
    assert name == account["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name,
                                    "namespace": daemonset["metadata"]["namespace"]}]  # fmt: skip
    assert daemonset["spec"]["template"]["spec"].get("automountServiceAccountToken", True)


def _token_of(role: dict[str, Any]) -> Token:
    """The stand-in's token for a ClusterRole. The stand-in grants verbs x resources, so the
    role's core-group grants must be such a product (they are: one rule)."""
    grants = _grants(role)
    verbs = frozenset(v for _, _, v in grants)
    resources = frozenset(r for _, r, _ in grants)
    assert grants == {("", r, v) for r in resources for v in verbs}, (
        "not a product: extend this test"
    )
    return Token("system:serviceaccount:netwarden:netwarden-agent", verbs, resources)


def _wait_for(check: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {check.__name__}"
        time.sleep(0.02)


def test_the_agents_watches_run_with_only_the_cluster_roles_grants(docs: list[dict[str, Any]],
                                                                   tmp_path: Path) -> None:  # fmt: skip
    """The agent's own resolver (pod watch limited to its node, namespace and node watches)
    against the stand-in API server, authenticated with a token that may do exactly what the
    ClusterRole grants: every list and every watch is allowed, and changes arrive."""
    with K8sStandIn(tokens={"agent": _token_of(_one(docs, "ClusterRole"))}) as server:
        server.put_pod(_pod_json("web-0", "node-1"))
        server.put_namespace("shop", {"team": "payments"})
        server.put_node("node-1", {"InternalIP": "192.0.2.11"})
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "standin",
            "clusters": [{"name": "standin", "cluster": {"server": server.url}}],
            "users": [{"name": "agent", "user": {"token": "agent"}}],
            "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "agent"}}],
        }))  # fmt: skip
        lines: list[str] = []
        resolver = open_resolver(kubernetes=str(kubeconfig), node_name="node-1", log=lines.append)
        try:
            assert {w.resource for w in resolver.watches} == _watched_resources()
            assert all(w.synced and not w.denied for w in resolver.watches), lines
            # watches (not only lists) are allowed: changes made now reach the indexes
            server.put_pod(_pod_json("web-1", "node-1"))
            server.put_namespace("data")
            server.put_node("node-2", {"InternalIP": "192.0.2.12"})
            for watch in resolver.watches:

                def grown(w: ListWatch[Any] = watch) -> bool:
                    return len(w.index) == 2

                _wait_for(grown)
            assert all(w.stats.denied == 0 for w in resolver.watches)
            assert not [line for line in lines if "refuses" in line], lines
        finally:
            resolver.close()
        pod_requests = [r for r in server.requests if r.path == "/api/v1/pods"]
        assert pod_requests and all(r.query.get("fieldSelector") == "spec.nodeName=node-1"
                                    for r in pod_requests)  # fmt: skip
        assert not server.writes()


def _pod_json(name: str, node: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "uid": str(uuid.uuid4()), "labels": {"app": "web"}},
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "example/app:1"}]},
        "status": {"phase": "Running", "hostIP": "192.0.2.11", "podIP": "10.244.1.7",
                   "podIPs": [{"ip": "10.244.1.7"}]},
    }  # fmt: skip


# --------------------------------------------------------------------------- the DaemonSet


def test_the_daemonset_runs_on_every_node_in_the_hosts_namespaces(daemonset: dict[str, Any],
                                                                  pod: dict[str, Any],
                                                                  container: dict[str, Any],
                                                                  docs: list[dict[str, Any]]) -> None:  # fmt: skip
    template_labels = daemonset["spec"]["template"]["metadata"]["labels"]
    assert daemonset["spec"]["selector"]["matchLabels"].items() <= template_labels.items()
    assert pod["hostPID"] is True and pod["hostNetwork"] is True
    assert pod.get("dnsPolicy") == "ClusterFirstWithHostNet"  # cluster DNS from the host network
    # a toleration without key and with operator Exists tolerates every taint
    assert any(t.get("operator") == "Exists" and not t.get("key") and not t.get("effect")
               for t in pod.get("tolerations") or ())  # fmt: skip
    assert container["securityContext"]["privileged"] is True
    # privileged pods are refused by the baseline and restricted Pod Security levels
    labels = _one(docs, "Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"
    resources = container["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys() and "memory" in resources["limits"]


def test_the_image_is_the_agent_target_of_the_dockerfile(container: dict[str, Any],
                                                         agent_args: argparse.Namespace) -> None:  # fmt: skip
    assert container["image"].rpartition("/")[2].partition(":")[0] == "netwarden-agent"
    # args only: the agent target's entrypoint prepares the host, then runs `netwarden "$@"`
    assert "command" not in container
    stage = re.search(r"^FROM \S+ AS agent$(.*?)(?=^FROM |\Z)", (ROOT / "Dockerfile").read_text(),
                      re.MULTILINE | re.DOTALL)  # fmt: skip
    assert stage is not None, "the Dockerfile has no `agent` target"
    assert re.search(r'^ENTRYPOINT .*exec netwarden \\"\$@\\"', stage[1], re.MULTILINE)
    port = parse_listen(agent_args.observer_listen).port
    assert re.search(rf"^EXPOSE .*\b{port}\b", stage[1], re.MULTILINE)


def test_the_args_are_the_agents_real_command_line(container: dict[str, Any]) -> None:
    agent_args = _parse(_expand(container))
    assert agent_args.command == "agent" and agent_args.handler is _cmd_agent
    _serving_tls(
        agent_args
    )  # --max-flows, --max-streams and the TLS flags as the agent checks them
    assert agent_args.kubernetes == "auto"  # in-cluster: the service account above
    assert agent_args.identity_map is None


def test_an_unknown_flag_fails_the_parse(container: dict[str, Any]) -> None:
    """The parse above is real: a flag the CLI does not have is refused."""
    with pytest.raises(pytest.fail.Exception, match="refused by the CLI"):
        _parse([*_expand(container), "--host-cgroupns"])


def test_node_name_comes_from_the_downward_api(container: dict[str, Any],
                                               agent_args: argparse.Namespace) -> None:  # fmt: skip
    args = [str(a) for a in container["args"]]
    assert args[args.index("--node-name") + 1] == "$(NODE_NAME)"
    env = {var["name"]: var for var in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert agent_args.node_name == FIELD_VALUES["spec.nodeName"]


def test_the_observer_port_is_declared_and_probed(container: dict[str, Any],
                                                  agent_args: argparse.Namespace) -> None:  # fmt: skip
    listen = parse_listen(agent_args.observer_listen)
    assert listen.unix_path is None and listen.host in ("", "0.0.0.0", "::"), (
        "every address of the node"
    )
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert listen.port in ports.values()
    for probe in ("readinessProbe", "livenessProbe"):
        target = container[probe]["tcpSocket"]["port"]
        assert ports.get(target, target) == listen.port, probe


# --------------------------------------------------------------------------- mounts


def _mounts(
    pod: dict[str, Any], container: dict[str, Any]
) -> dict[PurePosixPath, tuple[dict, dict]]:
    """mountPath -> (volumeMount, volume)."""
    volumes = {v["name"]: v for v in pod.get("volumes") or ()}
    return {
        PurePosixPath(m["mountPath"]): (m, volumes[m["name"]])
        for m in container.get("volumeMounts") or ()
    }


def _host_path(
    pod: dict[str, Any], container: dict[str, Any], path: str | Path
) -> PurePosixPath | None:
    """The host path a container path reaches through a hostPath mount (None: not mounted)."""
    path = PurePosixPath(path)
    best = None
    for mount_path, (_, volume) in _mounts(pod, container).items():
        inside = path == mount_path or mount_path in path.parents
        if (
            inside
            and "hostPath" in volume
            and (best is None or len(mount_path.parts) > len(best[0].parts))
        ):
            best = (mount_path, PurePosixPath(volume["hostPath"]["path"]))
    return None if best is None else best[1] / path.relative_to(best[0])


def test_every_volume_mount_has_its_volume_and_every_volume_is_mounted(pod: dict[str, Any],
                                                                      container: dict[str, Any]) -> None:  # fmt: skip
    volumes = [v["name"] for v in pod["volumes"]]
    mounts = [m["name"] for m in container["volumeMounts"]]
    assert len(set(volumes)) == len(volumes) and set(mounts) <= set(volumes)
    assert set(volumes) <= set(mounts), "a volume nothing mounts"
    paths = [m["mountPath"] for m in container["volumeMounts"]]
    assert len(set(paths)) == len(paths)


def test_host_paths_are_mounted_read_only(pod: dict[str, Any], container: dict[str, Any]) -> None:
    for mount, volume in _mounts(pod, container).values():
        if "hostPath" in volume:
            assert mount.get("readOnly") is True, mount["name"]


def test_what_the_agent_reads_at_fixed_paths_is_the_hosts(
    pod: dict[str, Any], container: dict[str, Any]
) -> None:
    """BTF, tracefs, kernel headers and named network namespaces are read where the code looks
    for them; each must be the host's, mounted at the same path."""
    fixed = {
        DEFAULT_BTF.parent,  # /sys/kernel/btf
        DEFAULT_TRACEFS[0],  # /sys/kernel/tracing
        inspect.signature(preflight.check).parameters["modules_dir"].default,  # /lib/modules
        Path("/usr/src"),  # where /lib/modules/<release>/build points (bpf/setup-host.sh)
        Path(inspect.signature(netns_names).parameters["run_dir"].default),  # /run/netns
    }
    for path in fixed:
        assert _host_path(pod, container, path) == PurePosixPath(path), f"{path} is not the host's"
    mounts = _mounts(pod, container)
    run_netns = mounts[PurePosixPath("/run/netns")][0]
    assert run_netns.get("mountPropagation") == "HostToContainer", (
        "namespaces named after the start"
    )


def test_path_options_name_mounted_paths(pod: dict[str, Any], container: dict[str, Any],
                                         agent_args: argparse.Namespace) -> None:  # fmt: skip
    """Every file or folder option (--cgroup-root, --tls-*, --identity-map, --out) is inside a
    volume, not the image's own file system."""
    mounts = _mounts(pod, container)
    paths = [v for v in vars(agent_args).values() if isinstance(v, Path)]
    if agent_args.out not in (None, "-"):
        paths.append(Path(agent_args.out))
    for path in paths:
        assert any(PurePosixPath(path) == m or m in PurePosixPath(path).parents for m in mounts), (
            path
        )


def test_the_cgroup_root_is_the_hosts_cgroup2_hierarchy(pod: dict[str, Any], container: dict[str, Any],
                                                        agent_args: argparse.Namespace) -> None:  # fmt: skip
    """The UDP peer hooks attach to --cgroup-root; only the host's root sees every pod."""
    if agent_args.no_udp_peers and agent_args.cgroup_root is None:
        return  # no hooks, no root (cgroup v1-only nodes)
    assert agent_args.cgroup_root is not None, "--cgroup-root: the host's cgroup v2 root"
    assert _host_path(pod, container, agent_args.cgroup_root) in (
        PurePosixPath("/sys/fs/cgroup"),
        PurePosixPath("/sys/fs/cgroup/unified"),
    )
