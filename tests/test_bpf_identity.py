"""Identity for the bpf agent: cgroups, the identity map, the pod watch and the resolver.

Unit tests use real-looking cgroup paths and fake /proc, /run/netns and cgroup trees under
tmp_path. The pod watch runs against the Kubernetes API stand-in (tests/k8s_standin.py) over
real HTTP with the official client. Tests marked ``privileged`` create real cgroups under the
cgroup v2 mount and real network namespaces (``ip netns add nwid-<random>``), and remove them.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import secrets
import shutil
import subprocess
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from netwarden.bpf import identitymap as identitymap_module
from netwarden.bpf.cgroups import (
    CgroupPaths,
    ContainerRef,
    find_cgroup2_mount,
    parse_cgroup_path,
    pid_cgroup_path,
)
from netwarden.bpf.identity import (
    HOST,
    REMOTE_NODE,
    UNKNOWN,
    WORLD,
    EndpointInfo,
    EndpointResolver,
    IdentityResolver,
    host_netns_inode,
    identity_relevant,
    local_addresses,
    netns_addresses,
    netns_endpoint,
    netns_inode,
    open_resolver,
    pod_endpoint,
    pod_labels,
)
from netwarden.bpf.identitymap import IdentityMap, IdentityMapError
from netwarden.bpf.nodewatch import NodeIndex, NodeInfo, NodeWatch
from netwarden.bpf.nswatch import NamespaceIndex, NamespaceInfo, NamespaceWatch
from netwarden.bpf.podwatch import (
    PodIndex,
    PodInfo,
    PodWatch,
    api_client_from_environment,
    workload_of,
)
from netwarden.ingest.flow import Endpoint, Workload
from netwarden.ingest.identity import IdentityResolver as SubjectResolver
from tests.k8s_standin import K8sStandIn, Token
from tests.servers import free_port

CID = "4f8a2b6c" * 8  # a 64-hex container id
UID = "0b9f5a4e-2c1d-4f7a-9e3b-6a8d7c5b4e21"
UID_ = UID.replace("-", "_")
STATIC = "6b3e1f0a9c8d7e6f5a4b3c2d1e0f9a8b"  # a static pod's manifest hash
HOST_NS = 4026531840  # the host's network namespace in the fake-host tests


def wait_for(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {getattr(check, '__name__', 'condition')}")


def pod_json(name: str, *, ns: str = "shop", uid: str | None = None, node: str = "node-1",
             ip: str | None = None, labels: dict[str, str] | None = None, host_network: bool = False,
             phase: str = "Running", host_ip: str = "192.168.0.11", **meta: Any) -> dict[str, Any]:  # fmt: skip
    status: dict[str, Any] = {"phase": phase, "hostIP": host_ip}
    if ip:
        status |= {"podIP": ip, "podIPs": [{"ip": ip}]}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": uid or str(uuid.uuid4()),
                     "labels": labels or {}, "resourceVersion": "7", **meta},
        "spec": {"nodeName": node, "hostNetwork": host_network, "serviceAccountName": "default",
                 "containers": [{"name": "main", "image": "example/app:1"}]},
        "status": status,
    }  # fmt: skip


def web_pod(uid: str = UID, ip: str = "10.244.1.7") -> PodInfo:
    return PodInfo.from_dict(pod_json(
        "web-7d9f8b6c5d-x2k4q", uid=uid, ip=ip,
        labels={"app": "web", "pod-template-hash": "7d9f8b6c5d"}, generateName="web-7d9f8b6c5d-",
        ownerReferences=[{"kind": "ReplicaSet", "name": "web-7d9f8b6c5d", "controller": True}],
    ))  # fmt: skip


# =========================================================================== cgroups


@pytest.mark.parametrize(("path", "expected"), [
    # systemd driver (containerd), the three QoS classes
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{CID}.scope",
     ContainerRef(CID, UID, "containerd", "burstable")),
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope",
     ContainerRef(CID, UID, "containerd", "besteffort")),
    (f"/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope",
     ContainerRef(CID, UID, "containerd", "guaranteed")),
    # CRI-O and Docker (cri-dockerd) under systemd
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-{CID}.scope",
     ContainerRef(CID, UID, "crio", "burstable")),
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/docker-{CID}.scope",
     ContainerRef(CID, UID, "docker", "besteffort")),
    # cgroupfs driver
    (f"/kubepods/burstable/pod{UID}/{CID}", ContainerRef(CID, UID, "", "burstable")),
    (f"/kubepods/besteffort/pod{UID}/{CID}", ContainerRef(CID, UID, "", "besteffort")),
    (f"/kubepods/pod{UID}/{CID}", ContainerRef(CID, UID, "", "guaranteed")),
    (f"/kubepods/burstable/pod{UID}/crio-{CID}", ContainerRef(CID, UID, "crio", "burstable")),
    # kind / nested kubelet under a node container, and a cgroup the container made below itself
    ((f"/system.slice/docker-{'e' * 64}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort"
      f".slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope"),
     ContainerRef(CID, UID, "containerd", "besteffort")),
    (f"/kubepods/burstable/pod{UID}/{CID}/init.scope", ContainerRef(CID, UID, "", "burstable")),
    # the pod's own cgroup, the sandbox's conmon: a pod, no container
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice",
     ContainerRef(None, UID, "", "burstable")),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-conmon-{CID}.scope",
     ContainerRef(None, UID, "", "burstable")),
    # a static pod: named by its manifest hash, not a UUID
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC}.slice/cri-containerd-{CID}.scope",
     ContainerRef(CID, STATIC, "containerd", "burstable")),
    # containers outside Kubernetes
    (f"/system.slice/docker-{CID}.scope", ContainerRef(CID, None, "docker", None)),
    (f"/docker/{CID}", ContainerRef(CID, None, "docker", None)),
    (f"/machine.slice/libpod-{CID}.scope/container", ContainerRef(CID, None, "podman", None)),
    # not containers
    ("/system.slice/sshd.service", None),
    ("/user.slice/user-1000.slice/session-3.scope", None),
    ("/", None),
    (f"/pod{UID}/{CID}", None),  # a pod-looking name outside kubepods
])  # fmt: skip
def test_parse_cgroup_path(path: str, expected: ContainerRef | None) -> None:
    assert parse_cgroup_path(path) == expected


def test_pid_cgroup_path_reads_the_unified_line(tmp_path: Path) -> None:
    for pid, text in {
        10: "0::/kubepods/besteffort/podx/abc\n",
        11: "12:memory:/docker/x\n1:name=systemd:/init.scope\n0::/system.slice/sshd.service\n",  # hybrid
        12: "4:memory:/\n1:cpu:/\n",  # cgroup v1 only
        13: "0::/gone.scope (deleted)\n",
    }.items():
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cgroup").write_text(text)
    assert pid_cgroup_path(10, tmp_path) == "/kubepods/besteffort/podx/abc"
    assert pid_cgroup_path(11, tmp_path) == "/system.slice/sshd.service"
    assert pid_cgroup_path(12, tmp_path) is None
    assert pid_cgroup_path(13, tmp_path) == "/gone.scope"
    assert pid_cgroup_path(99, tmp_path) is None  # exited


def test_pid_cgroup_path_of_this_process() -> None:
    path = pid_cgroup_path(os.getpid())
    if find_cgroup2_mount() is None:
        assert path is None
    else:
        assert path is not None and path.startswith("/")


@pytest.mark.parametrize(("lines", "expected"), [
    (["25 1 0:23 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw"], "/sys/fs/cgroup"),
    (["31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw", "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu",
      "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw"], "/sys/fs/cgroup/unified"),
    (["32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu"], None),
    (["41 31 0:38 / /mnt/my\\040cgroups rw shared:5 - cgroup2 none rw"], "/mnt/my cgroups"),
])  # fmt: skip
def test_find_cgroup2_mount(tmp_path: Path, lines: list[str], expected: str | None) -> None:
    (tmp_path / "mountinfo").write_text("\n".join(lines) + "\n")
    found = find_cgroup2_mount(tmp_path / "mountinfo")
    assert (str(found) if found else None) == expected


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_cgroup_paths_rescans_on_miss_rate_limited_and_bounded(tmp_path: Path) -> None:
    pod_dir = tmp_path / "kubepods" / "besteffort" / f"pod{UID}"
    (pod_dir / CID).mkdir(parents=True)
    clock = FakeClock()
    paths = CgroupPaths(tmp_path, min_rescan_interval=1.0, clock=clock)
    cid = os.stat(pod_dir / CID).st_ino
    assert paths.path(cid) == f"/kubepods/besteffort/pod{UID}/{CID}"
    assert paths.path(os.stat(tmp_path).st_ino) == "/"
    assert paths.id_of(f"/kubepods/besteffort/pod{UID}/{CID}") == cid
    assert paths.id_of("/nope") is None
    assert paths.scans == 1

    (pod_dir / ("b" * 64)).mkdir()
    new = os.stat(pod_dir / ("b" * 64)).st_ino
    assert paths.path(new) is None and paths.scans == 1  # within the interval: no walk
    assert paths.path(new) is None and paths.scans == 1
    clock.now += 1.0
    assert paths.path(new) == f"/kubepods/besteffort/pod{UID}/{'b' * 64}" and paths.scans == 2
    assert paths.path(cid) is not None and paths.scans == 2  # hits never walk

    (pod_dir / CID).rmdir()
    clock.now += 1.0
    paths.rescan()
    assert paths.path(cid) is None  # removed cgroups are forgotten
    assert paths.path(0) is None

    small = CgroupPaths(tmp_path, max_entries=3, clock=clock)
    assert small.rescan() == 3 and small.truncated


def test_cgroup_paths_needs_a_hierarchy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from netwarden.bpf import cgroups

    monkeypatch.setattr(cgroups, "find_cgroup2_mount", lambda: None)
    with pytest.raises(FileNotFoundError, match="no cgroup v2"):
        cgroups.CgroupPaths()


def _cgroup2_root() -> Path:
    if os.geteuid() != 0:
        pytest.skip("needs root to create cgroups")
    root = find_cgroup2_mount()
    if root is None or not (root / "cgroup.procs").exists():
        pytest.skip("no cgroup v2 hierarchy mounted")
    return root


@pytest.fixture
def real_cgroup() -> Iterator[tuple[Path, str]]:
    """A real cgroup tree shaped like the kubelet's (systemd driver), removed afterwards."""
    root = _cgroup2_root()
    top = f"nwid-{secrets.token_hex(4)}"
    rel = (f"/{top}/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/"
           f"cri-containerd-{CID}.scope")  # fmt: skip
    leaf = root / rel.lstrip("/")
    try:
        leaf.mkdir(parents=True)
    except OSError as exc:
        pytest.skip(f"cannot create a cgroup under {root}: {exc}")
    try:
        yield root, rel
    finally:
        for directory in sorted(
            (p for p in (root / top).rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)
        ):
            directory.rmdir()
        (root / top).rmdir()


@pytest.mark.privileged
def test_real_cgroup_id_is_its_inode_and_resolves_to_the_pod(real_cgroup: tuple[Path, str]) -> None:
    root, rel = real_cgroup
    paths = CgroupPaths(root)
    cgroup_id = os.stat(root / rel.lstrip("/")).st_ino
    assert paths.path(cgroup_id) == rel
    assert paths.id_of(rel) == cgroup_id
    # a process moved into it sees the same path in /proc/PID/cgroup
    child = subprocess.Popen(["sleep", "30"])
    try:
        (root / rel.lstrip("/") / "cgroup.procs").write_text(str(child.pid))
        assert pid_cgroup_path(child.pid) == rel
        index = PodIndex()
        index.upsert(web_pod())
        resolver = IdentityResolver(pods=index, cgroups=paths, host_netns=host_netns_inode())
        expected = pod_endpoint(web_pod())
        assert resolver.local(4026532999, cgroup_id, child.pid) == expected
        assert resolver.local(4026532999, 0, child.pid) == expected  # by pid alone
    finally:
        child.kill()
        child.wait()
    # removed (the fixture tolerates that): a rescan forgets it
    (root / rel.lstrip("/")).rmdir()
    paths.rescan()
    assert paths.path(cgroup_id) is None and paths.id_of(rel) is None


# =========================================================================== identity map


def _docstring_example() -> str:
    doc = identitymap_module.__doc__ or ""
    block = doc.split("Format (YAML)::", 1)[1].split("\nAn entry needs", 1)[0]
    return textwrap.dedent(block)


def test_documented_example_is_valid() -> None:
    m = IdentityMap.parse(_docstring_example(), "docstring")
    assert len(m) == 3
    web = m.by_netns(4026532177, "blue")
    assert web is not None and web.pod == "web-0"
    assert web.hubble_labels == (
        "k8s:app=web",
        "k8s:io.kubernetes.pod.namespace=shop",
        "k8s:tier=frontend",
    )
    assert m.by_cgroup("/system.slice/postgresql.service").namespace == "data"
    assert m.by_ip("10.0.6.200").pod == "warehouse"
    assert m.by_ip("fd00:5::9").pod == "warehouse"
    assert m.netns_names == {"blue"}


def test_map_lookups_prefer_the_most_specific(tmp_path: Path) -> None:
    path = tmp_path / "identities.yaml"
    path.write_text(
        textwrap.dedent("""
        entries:
          - {name: slice, cgroup: /system.slice, namespace: host-services, labels: {app: system}}
          - {name: pg, cgroup: /system.slice/postgresql.service, namespace: data, labels: {app: pg}}
          - {name: lan, ips: [10.0.0.0/8], namespace: lan}
          - {name: db, ips: [10.0.5.17, "fd00::17"], namespace: data, pod: db-0,
             workload: {name: db, kind: StatefulSet}}
          - {name: ns-by-inode, netns: 4026532001, namespace: vms}
          - {name: ns-by-text-inode, netns: "4026532002", namespace: vms}
          - {name: all, ips: [0.0.0.0/0], namespace: elsewhere}
    """)
    )
    m = IdentityMap.load(path)
    assert m.by_cgroup("/system.slice/postgresql.service/pg-worker").name == "pg"
    assert m.by_cgroup("/system.slice/postgresql.service").name == "pg"
    assert m.by_cgroup("/system.slice/postgresql.service2").name == "slice"  # whole components only
    assert m.by_cgroup("/user.slice") is None
    assert m.by_ip("10.0.5.17").name == "db"
    assert m.by_ip(ipaddress.ip_address("10.0.5.18")).name == "lan"
    assert m.by_ip("8.8.8.8").name == "all"
    assert m.by_ip("fd00::17").name == "db" and m.by_ip("fd00::18") is None
    assert m.by_ip("not an address") is None
    assert m.by_netns(4026532001).name == "ns-by-inode"
    assert m.by_netns(4026532002).name == "ns-by-text-inode"
    assert m.by_netns(1, "x") is None


def test_label_sources_and_empty_values() -> None:
    entry = IdentityMap.from_data({"entries": [
        {"ips": ["10.1.1.1"], "namespace": "x", "labels": {"container:role": "db", "app.kubernetes.io/name": "db",
                                                            "canary": ""}}]}).entries[0]  # fmt: skip
    assert entry.hubble_labels == ("container:role=db", "k8s:app.kubernetes.io/name=db", "k8s:canary",
                                   "k8s:io.kubernetes.pod.namespace=x")  # fmt: skip


@pytest.mark.parametrize(("text", "message"), [
    ("entries: [{namespace: shop}]", "entry 1: needs at least one of netns, cgroup, ips"),
    ("entries: [{name: web, netns: blue, namespace: shop, podname: x}]", "entry 1 (web): podname: unknown field"),
    ("entries: [{pod: web-0, netns: blue, namespace: Shop}]", "entry 1 (web-0): namespace: 'Shop' is not a Kubernetes"),
    ("entries: [{netns: blue, namespace: shop, labels: {'-app': web}}]", "labels: label '-app'"),
    ("entries: [{netns: blue, namespace: shop, labels: {app: 'a b'}}]", "value 'a b' is not a label value"),
    ("entries: [{netns: blue, namespace: shop, labels: {'Bad_Src:app': x}}]", "is not a label source"),
    ("entries: [{netns: a/b, namespace: shop}]", "netns: 'a/b' is not a name under /run/netns"),
    ("entries: [{netns: 0, namespace: shop}]", "a namespace inode is a positive number"),
    ("entries: [{cgroup: system.slice, namespace: shop}]", "cgroup: 'system.slice' is not a cgroup path"),
    ("entries: [{ips: [10.0.0.1/8], namespace: shop}]", "ips.0: '10.0.0.1/8' is not an address or CIDR"),
    ("entries: [{ips: [db.example.com], namespace: shop}]", "ips.0: 'db.example.com' is not an address"),
    ("entries: [{ips: [10.0.0.1], namespace: a}, {name: two, ips: [10.0.0.1/32], namespace: b}]",
     "entry 2 (two): address 10.0.0.1/32 is already claimed by entry 1"),
    ("entries: [{netns: blue, namespace: a}, {netns: blue, namespace: b}]", "netns 'blue' is already claimed"),
    ("entries: [{pod: web, netns: blue, namespace: a, workload: {kind: Deployment}}]", "workload.name: Field required"),
    ("entries: [42]", "entry 1: Input should be a valid dictionary"),
    ("entries: {a: 1}", "'entries' must be a list"),
    ("- {netns: blue, namespace: a}", "expected a mapping with one key, 'entries'"),
    ("entries: [{netns: blue", "not valid YAML"),
])  # fmt: skip
def test_map_errors_name_the_entry_and_field(text: str, message: str) -> None:
    with pytest.raises(IdentityMapError) as info:
        IdentityMap.parse(text, "identities.yaml")
    assert str(info.value).startswith("identities.yaml: ")
    assert message in str(info.value)


def test_map_file_errors(tmp_path: Path) -> None:
    with pytest.raises(IdentityMapError, match="identity map .*missing.yaml: No such file"):
        IdentityMap.load(tmp_path / "missing.yaml")
    (tmp_path / "empty.yaml").write_text("")
    assert len(IdentityMap.load(tmp_path / "empty.yaml")) == 0


# =========================================================================== pods: index


@pytest.mark.parametrize(("meta", "expected"), [
    ({"generateName": "web-7d9f8b6c5d-", "labels": {"pod-template-hash": "7d9f8b6c5d"},
      "ownerReferences": [{"kind": "ReplicaSet", "name": "web-7d9f8b6c5d", "controller": True}]},
     ("web", "Deployment")),
    ({"generateName": "rs-", "ownerReferences": [{"kind": "ReplicaSet", "name": "rs", "controller": True}]},
     ("rs", "ReplicaSet")),
    ({"generateName": "backup-28391040-", "ownerReferences": [{"kind": "Job", "name": "backup-28391040",
                                                                 "controller": True}]}, ("backup", "CronJob")),
    ({"generateName": "migrate-", "ownerReferences": [{"kind": "Job", "name": "migrate", "controller": True}]},
     ("migrate", "Job")),
    ({"generateName": "pg-", "ownerReferences": [{"kind": "StatefulSet", "name": "pg", "controller": True}]},
     ("pg", "StatefulSet")),
    ({"generateName": "agent-", "ownerReferences": [{"kind": "DaemonSet", "name": "agent", "controller": True}]},
     ("agent", "DaemonSet")),
    ({"generateName": "x-", "ownerReferences": [{"kind": "Node", "name": "n1"}]}, None),  # not a controller
    ({"ownerReferences": [{"kind": "Node", "name": "n1", "controller": True}]}, None),  # static: no generateName
    ({}, None),  # a bare pod
])  # fmt: skip
def test_workload_heuristics_follow_cilium(
    meta: dict[str, Any], expected: tuple[str, str] | None
) -> None:
    assert workload_of({"metadata": meta}) == expected


def test_pod_info_from_api_json() -> None:
    raw = pod_json("dns-0", ip=None, annotations={"kubernetes.io/config.mirror": STATIC},
                   deletionTimestamp="2026-01-01T00:00:00Z")  # fmt: skip
    raw["status"] |= {
        "podIP": "10.244.1.9",
        "podIPs": [{"ip": "10.244.1.9"}, {"ip": "FD00:10:244::0009"}],
    }
    pod = PodInfo.from_dict(raw)
    assert pod.ips == ("10.244.1.9", "fd00:10:244::9")  # canonical spelling
    assert pod.static_uid == STATIC and pod.deleting and pod.service_account == "default"
    legacy = pod_json("old")
    legacy["status"]["podIP"] = "10.244.1.10"  # only podIP (older API servers)
    assert PodInfo.from_dict(legacy).ips == ("10.244.1.10",)


def test_pod_index_ips_host_network_terminal_and_reuse() -> None:
    index = PodIndex()
    web = web_pod()
    index.upsert(web)
    host_pod = PodInfo.from_dict(
        pod_json("node-exporter-abcde", ip="192.168.0.11", host_network=True)
    )
    done = PodInfo.from_dict(pod_json("job-xyz", ip="10.244.1.50", phase="Succeeded"))
    for pod in (host_pod, done):
        index.upsert(pod)
    assert index.by_ip("10.244.1.7") == web
    assert index.by_ip("192.168.0.11") is None  # host network: that IP is the node's
    assert index.by_ip("10.244.1.50") is None  # finished pods give their IP back
    assert index.by_uid(host_pod.uid) == host_pod
    assert index.host_ips() == {"192.168.0.11"}

    # the IP moves to a new pod while the old one terminates
    successor = PodInfo.from_dict(pod_json("web-7d9f8b6c5d-q9w8e", ip="10.244.1.7"))
    index.upsert(successor)
    terminating = PodInfo.from_dict(pod_json(web.name, uid=web.uid, ip="10.244.1.7",
                                             deletionTimestamp="2026-01-01T00:00:00Z"))  # fmt: skip
    index.upsert(terminating)
    assert index.by_ip("10.244.1.7") == successor
    index.remove(web.uid)
    assert index.by_ip("10.244.1.7") == successor  # the old pod's deletion leaves it alone
    generation = index.generation
    index.remove(successor.uid)
    assert index.by_ip("10.244.1.7") is None and index.generation > generation

    index.replace([web])
    assert (
        len(index) == 1
        and index.host_ips() == {"192.168.0.11"}
        and index.by_ip("10.244.1.7") == web
    )


def test_pod_index_static_pods_and_bound() -> None:
    index = PodIndex(max_pods=2)
    mirror = PodInfo.from_dict(pod_json("etcd-node-1", ns="kube-system",
                                        annotations={"kubernetes.io/config.mirror": STATIC}))  # fmt: skip
    index.upsert(mirror)
    assert index.by_uid(STATIC) == mirror  # the cgroup names the static pod by its hash
    index.upsert(web_pod())
    index.upsert(PodInfo.from_dict(pod_json("third")))
    assert len(index) == 2 and index.dropped == 1
    index.upsert(web_pod(ip="10.244.1.8"))  # updates of known pods still apply
    assert index.by_ip("10.244.1.8") is not None


# =========================================================================== pods: watch


def _api(url: str) -> k8s.ApiClient:
    config = k8s.Configuration(host=url)
    config.retries = 0
    return k8s.ApiClient(config)


@pytest.fixture
def server() -> Iterator[K8sStandIn]:
    with K8sStandIn() as standin:
        yield standin


def _create(core: k8s.CoreV1Api, name: str, node: str, ns: str = "shop", **labels: str) -> str:
    spec = {"nodeName": node, "containers": [{"name": "c", "image": "x"}]}
    pod = core.create_namespaced_pod(
        ns, {"metadata": {"name": name, "labels": labels}, "spec": spec}
    )
    return pod.metadata.uid


def _running(core: k8s.CoreV1Api, name: str, ip: str, ns: str = "shop") -> None:
    """What the kubelet reports once the sandbox is up."""
    core.patch_namespaced_pod_status(name, ns, {"status": {
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "192.168.0.11"}})  # fmt: skip


def _names(index: PodIndex) -> set[str]:
    return {p.name for p in index.pods()}


def test_watch_follows_this_nodes_pods(server: K8sStandIn) -> None:
    core = k8s.CoreV1Api(_api(server.url))
    _create(core, "web-a", "node-1", app="web")
    _create(core, "web-b", "node-2", app="web")
    with PodWatch(_api(server.url), node_name="node-1", watch_timeout=30) as watch:
        assert watch.wait_synced(5)
        assert _names(watch.index) == {"web-a"}
        listed = [r for r in server.requests if r.path == "/api/v1/pods" and "watch" not in r.query]
        assert listed[0].query["fieldSelector"] == "spec.nodeName=node-1"

        uid = _create(core, "db-0", "node-1", ns="data", app="db")
        wait_for(lambda: watch.index.by_uid(uid))
        _create(core, "other", "node-2")
        _running(core, "db-0", "10.244.1.20", ns="data")
        pod = wait_for(lambda: watch.index.by_ip("10.244.1.20"))
        assert pod.name == "db-0" and pod.namespace == "data" and dict(pod.labels) == {"app": "db"}

        core.delete_namespaced_pod("db-0", "data")
        wait_for(lambda: watch.index.by_uid(uid) is None)
        assert watch.index.by_ip("10.244.1.20") is None
        assert _names(watch.index) == {"web-a"}  # node-2's pods never arrive
        assert watch.stats.lists == 1 and watch.stats.expired == 0
        watches = server.watch_requests()
        assert watches and watches[0].query["resourceVersion"] == watch.stats.history[0].split()[-1]
        assert watches[0].query["allowWatchBookmarks"] == "true"


def test_watch_resumes_after_a_dropped_connection_without_relisting(server: K8sStandIn) -> None:
    core = k8s.CoreV1Api(_api(server.url))
    _create(core, "web-a", "node-1")
    with PodWatch(_api(server.url), node_name="node-1", backoff_initial=0.05) as watch:
        assert watch.wait_synced(5)
        _create(core, "web-b", "node-1")
        wait_for(lambda: "web-b" in _names(watch.index))
        seen = watch.stats.resource_version
        server.drop_watches()
        wait_for(lambda: watch.stats.errors >= 1)
        _create(core, "web-c", "node-1")
        wait_for(lambda: "web-c" in _names(watch.index))
        assert watch.stats.lists == 1 and watch.stats.reconnects >= 1
        assert server.watch_requests()[-1].query["resourceVersion"] == seen


def test_watch_relists_after_410_gone(server: K8sStandIn) -> None:
    core = k8s.CoreV1Api(_api(server.url))
    _create(core, "web-a", "node-1")
    _create(core, "web-b", "node-1")
    with PodWatch(_api(server.url), node_name="node-1", backoff_initial=0.05) as watch:
        assert watch.wait_synced(5)
        assert _names(watch.index) == {"web-a", "web-b"}
        # While the watch is cut, a pod goes and another comes, and the history is compacted:
        # resuming from the last version seen is impossible.
        with server.store.lock:
            server.drop_watches()
            server.delete_pod("shop", "web-a")
            server.put_pod(pod_json("web-c", ip="10.244.1.30"))
            server.compact()
        wait_for(lambda: watch.stats.lists == 2)
        assert watch.stats.expired == 1
        wait_for(lambda: _names(watch.index) == {"web-b", "web-c"})  # the deletion is not missed
        assert watch.index.by_ip("10.244.1.30").name == "web-c"
        assert any(
            step.startswith("expired: too old resource version") for step in watch.stats.history
        )


def test_bookmarks_keep_the_resume_point_fresh(server: K8sStandIn) -> None:
    server.bookmark_interval = 0.1
    core = k8s.CoreV1Api(_api(server.url))
    _create(core, "web-a", "node-1")
    with PodWatch(_api(server.url), node_name="node-1", backoff_initial=0.05) as watch:
        assert watch.wait_synced(5)
        for i in range(3):
            _create(core, f"elsewhere-{i}", "node-2")  # changes this watch does not select
        latest = server.store.revision
        wait_for(lambda: int(watch.stats.resource_version) >= latest)  # learned from a BOOKMARK
        with server.store.lock:
            server.compact()
            server.drop_watches()
        wait_for(lambda: watch.stats.reconnects >= 1 and len(server.watch_requests()) >= 2)
        time.sleep(0.2)
        assert watch.stats.lists == 1 and watch.stats.expired == 0


def test_paged_list_and_server_side_timeout(server: K8sStandIn) -> None:
    for i in range(5):
        server.put_pod(pod_json(f"web-{i}", ip=f"10.244.1.{i + 1}"))
    with PodWatch(_api(server.url), page_size=2, watch_timeout=1) as watch:  # every node
        assert watch.wait_synced(5)
        assert len(watch.index) == 5 and watch.index.by_ip("10.244.1.5").name == "web-4"
        pages = [r for r in server.requests if r.path == "/api/v1/pods" and "watch" not in r.query]
        assert len(pages) == 3 and "continue" in pages[1].query
        assert "fieldSelector" not in pages[0].query
        wait_for(lambda: watch.stats.reconnects >= 1, timeout=5)  # the server ended the watch
        assert watch.stats.lists == 1 and watch.stats.errors == 0


def test_watch_backs_off_while_the_server_is_down() -> None:
    watch = PodWatch(_api(f"http://127.0.0.1:{free_port()}"), backoff_initial=0.05, backoff_max=0.2,
                     connect_timeout=1).start()  # fmt: skip
    try:
        wait_for(lambda: watch.stats.errors >= 3)
        assert not watch.synced and watch.stats.lists == 0 and watch.stats.last_error
    finally:
        started = time.monotonic()
        watch.stop()
        assert time.monotonic() - started < 2


def test_stop_interrupts_a_quiet_watch(server: K8sStandIn) -> None:
    watch = PodWatch(_api(server.url), watch_timeout=300).start()
    assert watch.wait_synced(5)
    wait_for(lambda: server.watch_requests())
    time.sleep(0.1)
    started = time.monotonic()
    watch.stop()
    assert time.monotonic() - started < 2
    assert watch._thread is not None and not watch._thread.is_alive()


def test_kubeconfig_client_and_the_whole_chain(server: K8sStandIn, tmp_path: Path) -> None:
    """cgroup id -> cgroup path -> pod UID -> pod from a live watch, and back on deletion."""
    kubeconfig = _kubeconfig(tmp_path, server.url)
    cgroup = tmp_path / "cg" / "kubepods" / "burstable" / f"pod{UID}" / CID
    cgroup.mkdir(parents=True)
    server.put_pod(pod_json("web-0", uid=UID, ip="10.244.1.7", labels={"app": "web"}))
    with PodWatch(api_client_from_environment(str(kubeconfig)), node_name="node-1") as watch:
        assert watch.wait_synced(5)
        resolver = IdentityResolver(
            pods=watch.index, cgroups=CgroupPaths(tmp_path / "cg"), host_netns=HOST_NS
        )
        endpoint = resolver.local(4026532500, os.stat(cgroup).st_ino, 0)
        assert (endpoint.namespace, endpoint.pod_name) == ("shop", "web-0")
        assert "k8s:app=web" in endpoint.labels
        assert resolver.remote("10.244.1.7") == endpoint
        server.delete_pod("shop", "web-0")
        wait_for(lambda: resolver.remote("10.244.1.7") == UNKNOWN)
        assert resolver.local(4026532500, os.stat(cgroup).st_ino, 0) == netns_endpoint(4026532500)


def _kubeconfig(tmp_path: Path, url: str, token: str = "not-checked") -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        textwrap.dedent(f"""
        apiVersion: v1
        kind: Config
        clusters: [{{name: standin, cluster: {{server: "{url}"}}}}]
        users: [{{name: agent, user: {{token: {token}}}}}]
        contexts: [{{name: standin, context: {{cluster: standin, user: agent}}}}]
        current-context: standin
    """)
    )
    return path


def test_open_resolver_wires_map_watches_and_host(server: K8sStandIn, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    server.put_pod(pod_json("web-0", ip="10.244.1.7", labels={"app": "web"}))
    server.put_namespace("shop", {"team": "payments"})
    server.put_node("node-1", {"InternalIP": "192.0.2.11", "ExternalIP": "198.51.100.11"})
    server.put_node("node-2", {"InternalIP": "192.0.2.12"})
    (tmp_path / "map.yaml").write_text(
        "entries: [{ips: [203.0.113.0/24], namespace: partners, pod: api}]\n"
    )
    lines: list[str] = []
    resolver = open_resolver(identity_map=tmp_path / "map.yaml", kubernetes=str(_kubeconfig(tmp_path, server.url)),
                             node_name="node-1", log=lines.append)  # fmt: skip
    try:
        assert resolver.watch is not None and resolver.watch.synced
        assert [w.resource for w in resolver.watches] == ["pods", "namespaces", "nodes"]
        web = resolver.remote("10.244.1.7")
        assert (
            web.pod_name == "web-0"
            and "k8s:io.cilium.k8s.namespace.labels.team=payments" in web.labels
        )
        assert resolver.remote("203.0.113.5").pod_name == "api"
        assert resolver.remote("198.51.100.11") == HOST  # this node's ExternalIP
        assert resolver.remote("192.0.2.12") == REMOTE_NODE
        assert resolver.local(host_netns_inode(), 0, 0) == HOST
        assert lines == ["netwarden agent: watching pods of node node-1: 1 now",
                         "netwarden agent: watching namespaces: 1 now",
                         "netwarden agent: watching nodes: 2 now"]  # fmt: skip
    finally:
        resolver.close()
    assert not any(w._thread.is_alive() for w in resolver.watches)  # type: ignore[union-attr]

    lines.clear()
    resolver = open_resolver(kubernetes=str(_kubeconfig(tmp_path, server.url)), node_name="node-1",
                             namespace_labels=False, node_identities=False, log=lines.append)  # fmt: skip
    try:
        assert [w.resource for w in resolver.watches] == ["pods"]
        assert resolver.namespaces is None and resolver.nodes is None and len(lines) == 1
        web = resolver.remote("10.244.1.7")
        assert "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=shop" in web.labels
        assert not any("team=" in label for label in web.labels)
    finally:
        resolver.close()

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    lines.clear()
    assert open_resolver(log=lines.append).watch is None
    assert "no pod identities" in lines[0]
    assert open_resolver(kubernetes="off", log=lines.append).pods is None
    with pytest.raises(ValueError, match="expected auto, off or a kubeconfig file"):
        open_resolver(kubernetes=str(tmp_path / "missing"))
    with pytest.raises(IdentityMapError):
        open_resolver(identity_map=tmp_path / "missing.yaml", kubernetes="off")


# =========================================================================== endpoints


def test_identity_relevant_labels_follow_ciliums_default_filter() -> None:
    """Cilium's own test of its default filter (pkg/labelsfilter TestDefaultFilterLabels): the
    same keys kept, the same dropped; patterns match at the start of a key only, and an
    include that matches more of a key than an ignore wins."""
    dropped = [
        "io.kubernetes.container.hash",
        "io.kubernetes.container.name",
        "io.kubernetes.container.restartCount",
        "io.kubernetes.pod.name",
        "io.kubernetes.pod.terminationGracePeriod",
        "io.kubernetes.pod.uid",
        "kubernetes.io.foo",
        "beta.kubernetes.io.foo",
        "annotation.kubectl.kubernetes.io",
        "annotation.hello",
        "annotation.kubernetes.io/config.seen",
        "controller-revision-hash",
        "pod-template-hash",
        "statefulset.kubernetes.io/pod-name",
        "apps.kubernetes.io/pod-index",
        "batch.kubernetes.io/job-completion-index",
        "node.beta.kubernetes.io/instance-type",
        "k8s.io/x",
        "etcd_node",
    ]
    kept = [
        "io.kubernetes.pod.namespace",
        "app.kubernetes.io",
        "app.kubernetes.io/name",
        "ioXkubernetes",
        "ignore",
        "ignorE",
        "id.lizards",
        "app",
        "version",
        "topology.kubernetes.io/zone",
        "sigs.k8s.io/x",
        "my-annotation",
        "pod-template",
    ]
    assert [k for k in dropped if identity_relevant(k)] == []
    assert [k for k in kept if not identity_relevant(k)] == []


def test_pod_labels_match_a_real_hubble_flow() -> None:
    """bookinfo's productpage in the hubble-otel capture: same labels, same order."""
    pod = PodInfo.from_dict(pod_json(
        "productpage-v1-6b746f74dc-9rcxx", ns="bookinfo",
        labels={"app": "productpage", "version": "v1", "pod-template-hash": "6b746f74dc",
                "sidecar.opentelemetry.io/injected": "bookinfo.otelcol-bookinfo",
                "kubernetes.io/hostname": "a",
                "controller-revision-hash": "x", "statefulset.kubernetes.io/pod-name": "p"},
        generateName="productpage-v1-6b746f74dc-",
        ownerReferences=[{"kind": "ReplicaSet", "name": "productpage-v1-6b746f74dc", "controller": True}],
    ))  # fmt: skip
    pod = dataclasses.replace(pod, service_account="bookinfo-productpage")
    labels = pod_labels(pod, cluster_name="kind-kind")
    assert labels == (
        "k8s:app=productpage",
        "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=bookinfo",
        "k8s:io.cilium.k8s.policy.cluster=kind-kind",
        "k8s:io.cilium.k8s.policy.serviceaccount=bookinfo-productpage",
        "k8s:io.kubernetes.pod.namespace=bookinfo",
        "k8s:sidecar.opentelemetry.io/injected=bookinfo.otelcol-bookinfo",
        "k8s:version=v1",
    )
    endpoint = pod_endpoint(pod, "kind-kind")
    assert endpoint.workloads == (("productpage-v1", "Deployment"),)
    # and downstream identity resolution reads it as the workload it is
    flow_endpoint = Endpoint(identity=endpoint.identity, namespace=endpoint.namespace, pod_name=endpoint.pod_name,
                             labels=endpoint.labels,
                             workloads=tuple(Workload(name=n, kind=k) for n, k in endpoint.workloads))  # fmt: skip
    subject, _ = SubjectResolver().resolve(flow_endpoint, "10.244.1.7")
    assert subject is not None and subject.id == "bookinfo/productpage-v1"


def test_app_kubernetes_io_labels_are_kept() -> None:
    pod = PodInfo.from_dict(
        pod_json("x", labels={"app.kubernetes.io/name": "cart", "kubernetes.io/os": "linux"})
    )
    assert "k8s:app.kubernetes.io/name=cart" in pod_labels(pod)
    assert not any("kubernetes.io/os" in label for label in pod_labels(pod))


def test_reserved_and_fallback_endpoints() -> None:
    assert EndpointInfo(1, "", "", ("reserved:host",)) == HOST
    assert WORLD.identity == 2 and WORLD.labels == ("reserved:world",)
    assert REMOTE_NODE.identity == 6 and EndpointInfo() == UNKNOWN
    assert netns_endpoint(4026532177) == EndpointInfo(
        0,
        "netns",
        "netns-4026532177",
        ("k8s:io.kubernetes.pod.namespace=netns", "netwarden:netns=4026532177"),
    )
    named = netns_endpoint(4026532177, "blue")
    assert named.pod_name == "blue" and "netwarden:netns-name=blue" in named.labels
    with pytest.raises(AttributeError):
        HOST.identity = 5  # type: ignore[misc]


# =========================================================================== the resolver


@pytest.fixture
def fake_host(tmp_path: Path) -> dict[str, Any]:
    """A cgroup tree, a /proc and a /run/netns made of plain files (inodes are real)."""
    cg = tmp_path / "cgroup"
    rel = f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{CID}.scope"
    container = cg / rel
    container.mkdir(parents=True)
    (cg / "system.slice" / "postgresql.service").mkdir(parents=True)
    proc = tmp_path / "proc"
    (proc / "4242").mkdir(parents=True)
    (proc / "4242" / "cgroup").write_text(f"0::/{rel}\n")
    run = tmp_path / "netns"
    run.mkdir()
    (run / "blue").touch()
    return {
        "cg": cg,
        "proc": proc,
        "run": run,
        "container": os.stat(container).st_ino,
        "pg": os.stat(cg / "system.slice" / "postgresql.service").st_ino,
        "blue": os.stat(run / "blue").st_ino,
    }


def _resolver(fake_host: dict[str, Any], **kwargs: Any) -> IdentityResolver:
    kwargs.setdefault("cgroups", CgroupPaths(fake_host["cg"]))
    return IdentityResolver(host_netns=HOST_NS, netns_dir=fake_host["run"], proc=fake_host["proc"],
                            host_addresses=["192.168.0.11", "fd00::11"], **kwargs)  # fmt: skip


def test_local_cgroup_to_pod_then_fallbacks(fake_host: dict[str, Any]) -> None:
    index = PodIndex()
    resolver = _resolver(fake_host, pods=index)
    pod_ns = 4026532500
    # the pod is not known yet: the netns is all there is
    assert resolver.local(pod_ns, fake_host["container"], 0) == netns_endpoint(pod_ns)
    index.upsert(web_pod())  # the watch delivers it: cached answers are recomputed
    assert resolver.local(pod_ns, fake_host["container"], 0) == pod_endpoint(web_pod())
    assert resolver.local(pod_ns, 0, 4242) == pod_endpoint(
        web_pod()
    )  # by pid (cgroup id not reported)
    # a host-network pod's socket is the host's, as Hubble shows it (Cilium gives it no endpoint)
    index.upsert(dataclasses.replace(web_pod(), host_network=True))
    assert resolver.local(HOST_NS, fake_host["container"], 0) == HOST
    assert resolver.local(HOST_NS, 0, 4242) == HOST
    index.remove(UID)
    assert resolver.local(HOST_NS, fake_host["container"], 0) == HOST
    # an unknown cgroup id: netns decides
    assert resolver.local(HOST_NS, 999_999_999, 0) == HOST
    assert resolver.local(fake_host["blue"], 0, 0) == netns_endpoint(fake_host["blue"], "blue")
    assert resolver.local(0, 0, 0) == UNKNOWN


def test_for_host_walks_the_cgroup_root_it_is_given(fake_host: dict[str, Any]) -> None:
    """In a container the agent's own /sys/fs/cgroup shows only its own cgroup: the host's,
    mounted elsewhere and named by --cgroup-root, is where pods' cgroups are found."""
    index = PodIndex()
    index.upsert(web_pod())
    pod_ns = 4026532500
    own = IdentityResolver.for_host(pods=index)
    assert own.local(pod_ns, fake_host["container"], 0) == netns_endpoint(pod_ns)
    host = IdentityResolver.for_host(pods=index, cgroup_root=fake_host["cg"])
    assert host.local(pod_ns, fake_host["container"], 0) == pod_endpoint(web_pod())


def test_local_identity_map_by_cgroup_and_netns(fake_host: dict[str, Any]) -> None:
    m = IdentityMap.from_data({"entries": [
        {"cgroup": "/system.slice/postgresql.service", "namespace": "data", "pod": "pg",
         "labels": {"app": "postgres"}, "workload": {"name": "postgres", "kind": "Service"}},
        {"netns": "blue", "namespace": "shop", "pod": "web-blue", "labels": {"app": "web"}},
        {"netns": 4026532777, "namespace": "shop", "pod": "by-inode"},
    ]})  # fmt: skip
    resolver = _resolver(fake_host, identity_map=m)
    pg = resolver.local(HOST_NS, fake_host["pg"], 0)
    assert pg == EndpointInfo(0, "data", "pg", ("k8s:app=postgres", "k8s:io.kubernetes.pod.namespace=data"),
                              (("postgres", "Service"),))  # fmt: skip
    assert (
        resolver.local(fake_host["blue"], 0, 0).pod_name == "web-blue"
    )  # by name under /run/netns
    assert resolver.local(4026532777, 0, 0).pod_name == "by-inode"


def test_remote_order_of_sources(fake_host: dict[str, Any]) -> None:
    index = PodIndex()
    index.upsert(web_pod())
    index.upsert(PodInfo.from_dict(pod_json("exporter-abcde", host_network=True, ip="192.168.0.12",
                                            host_ip="192.168.0.12", node="node-2")))  # fmt: skip
    m = IdentityMap.from_data({"entries": [
        {"ips": ["203.0.113.0/24"], "namespace": "partners", "pod": "billing-api"},
    ]})  # fmt: skip
    resolver = _resolver(fake_host, pods=index, identity_map=m)
    assert resolver.remote("10.244.1.7") == pod_endpoint(web_pod())
    assert resolver.remote("::ffff:10.244.1.7") == pod_endpoint(web_pod())  # dual-stack socket view
    assert resolver.remote("203.0.113.9").pod_name == "billing-api"
    assert resolver.remote("192.168.0.11") == HOST
    assert resolver.remote("fd00:0:0::11") == HOST
    assert resolver.remote("192.168.0.12") == REMOTE_NODE  # another node, seen as a pod's hostIP
    assert resolver.remote("8.8.8.8") == WORLD
    assert resolver.remote("2001:4860:4860::8888") == WORLD
    for private in ("10.96.0.10", "172.16.0.1", "127.0.0.1", "fe80::1", "100.64.0.1"):
        assert resolver.remote(private) == UNKNOWN, private
    assert resolver.remote("garbage") == UNKNOWN
    index.remove(UID)  # the pod is gone: its IP is nobody's now
    assert resolver.remote("10.244.1.7") == UNKNOWN


def test_remote_addresses_of_known_namespaces(fake_host: dict[str, Any]) -> None:
    """A peer inside a namespace that local() has seen (through one of its pids)."""
    proc_net = fake_host["proc"] / "777" / "net"
    proc_net.mkdir(parents=True)
    (proc_net / "fib_trie").write_text(textwrap.dedent("""\
        Main:
          +-- 0.0.0.0/0 3 0 5
             |-- 10.200.0.0
                /24 link UNICAST
             |-- 10.200.0.5
                /32 host LOCAL
             |-- 127.0.0.1
                /32 host LOCAL
        """))  # fmt: skip
    (proc_net / "if_inet6").write_text(
        "fd000000000000000000000000c80005 02 40 00 80     eth0\n"
        "fe800000000000000000000000000001 02 40 20 80     eth0\n"
        "00000000000000000000000000000001 01 80 10 80       lo\n")  # fmt: skip
    (fake_host["proc"] / "777" / "ns").mkdir()
    (fake_host["proc"] / "777" / "ns" / "net").touch()
    inode = os.stat(fake_host["proc"] / "777" / "ns" / "net").st_ino  # as the kernel would report
    resolver = _resolver(fake_host)
    assert resolver.remote("10.200.0.5") == UNKNOWN  # not seen yet
    expected = resolver.local(inode, 0, 777)
    assert expected == netns_endpoint(inode)
    assert resolver.remote("10.200.0.5") == expected
    assert resolver.remote("fd00::c8:5") == expected
    assert resolver.remote("127.0.0.1") == UNKNOWN and resolver.remote("fe80::1") == UNKNOWN


def test_names_are_learned_on_refresh_rate_limited(fake_host: dict[str, Any]) -> None:
    clock = FakeClock()
    resolver = _resolver(fake_host, refresh_interval=5.0, clock=clock)
    assert resolver.local(fake_host["blue"], 0, 0).pod_name == "blue"
    (fake_host["run"] / "green").touch()
    green = os.stat(fake_host["run"] / "green").st_ino
    assert resolver.local(green, 0, 0).pod_name == f"netns-{green}"  # refreshed <5 s ago
    clock.now += 5.0
    assert resolver.local(green, 0, 0).pod_name == "green"


def test_caches_are_bounded_and_protocol_holds(fake_host: dict[str, Any]) -> None:
    resolver = _resolver(fake_host, cache_size=8)
    assert isinstance(resolver, EndpointResolver)
    for i in range(50):
        resolver.remote(f"8.8.{i}.1")
        resolver.local(4026540000 + i, 0, 0)
    assert resolver.cache_sizes() == (8, 8)


def test_resolver_without_any_source() -> None:
    resolver = IdentityResolver()
    assert resolver.local(4026532177, 0, 0) == netns_endpoint(4026532177)
    assert resolver.remote("1.1.1.1") == WORLD and resolver.remote("10.0.0.1") == UNKNOWN


def test_for_host_knows_this_hosts_namespace_and_addresses() -> None:
    resolver = IdentityResolver.for_host()
    assert resolver.host_netns == host_netns_inode()
    assert resolver.local(host_netns_inode(), 0, 0) == HOST
    for address in local_addresses("/proc/self/net"):
        assert not address.startswith("127.")
        assert resolver.remote(address) == HOST


# =========================================================================== namespace labels

NS_LABEL = "k8s:io.cilium.k8s.namespace.labels."


def test_pod_labels_carry_the_namespace_labels_as_cilium_does() -> None:
    """SanitizePodLabels: every namespace label under io.cilium.k8s.namespace.labels.<key>; pod
    labels under Cilium's own prefix are dropped (a pod cannot claim its namespace's labels)."""
    pod = PodInfo.from_dict(
        pod_json(
            "web-0",
            labels={
                "app": "web",
                "io.cilium.k8s.namespace.labels.team": "spoofed",
                "io.cilium.k8s.policy.cluster": "x",
            },
        )
    )
    namespace = (("kubernetes.io/metadata.name", "shop"), ("pci", ""), ("team", "payments"))
    assert pod_labels(pod, "kind-kind", namespace) == (
        "k8s:app=web",
        f"{NS_LABEL}kubernetes.io/metadata.name=shop",
        f"{NS_LABEL}pci",  # an empty value: no "="
        f"{NS_LABEL}team=payments",
        "k8s:io.cilium.k8s.policy.cluster=kind-kind",
        "k8s:io.cilium.k8s.policy.serviceaccount=default",
        "k8s:io.kubernetes.pod.namespace=shop",
    )
    # namespace not known (no watch, or not listed yet): the label every namespace has
    assert [label for label in pod_labels(pod) if label.startswith(NS_LABEL)] == [
        f"{NS_LABEL}kubernetes.io/metadata.name=shop"
    ]
    assert pod_endpoint(pod, "default", namespace).labels == pod_labels(pod, "default", namespace)


def test_namespace_index_moves_only_when_labels_do() -> None:
    index = NamespaceIndex(max_namespaces=2)
    shop = NamespaceInfo.from_dict({"metadata": {"name": "shop", "labels": {"team": "a", "kubernetes.io/metadata.name": "shop"},
                                                 "annotations": {"x": "1"}}, "status": {"phase": "Active"}})  # fmt: skip
    assert shop.labels == (("kubernetes.io/metadata.name", "shop"), ("team", "a"))
    index.replace([shop, NamespaceInfo("data", ())])
    generation = index.generation
    index.upsert(NamespaceInfo("shop", shop.labels))  # an annotation or status change
    index.replace([NamespaceInfo("data", ()), shop])  # a relist that finds nothing new
    assert index.generation == generation
    index.upsert(NamespaceInfo("shop", (("team", "b"),)))
    assert index.labels("shop") == (("team", "b"),) and index.generation == generation + 1
    index.upsert(NamespaceInfo("third", ()))  # over the bound
    assert index.labels("third") is None and index.dropped == 1
    index.remove("data")
    index.remove("data")
    assert index.labels("data") is None and index.generation == generation + 2 and len(index) == 1


def test_namespace_labels_reach_endpoints_and_renew_the_cache(fake_host: dict[str, Any]) -> None:
    pods = PodIndex()
    pods.upsert(web_pod())
    namespaces = NamespaceIndex()
    resolver = _resolver(fake_host, pods=pods, namespaces=namespaces)
    pod_ns = 4026532500
    before = resolver.remote("10.244.1.7")
    assert f"{NS_LABEL}kubernetes.io/metadata.name=shop" in before.labels  # not listed yet
    assert resolver.remote("10.244.1.7") is before  # cached
    namespaces.replace(
        [NamespaceInfo("shop", (("kubernetes.io/metadata.name", "shop"), ("team", "payments")))]
    )
    listed = resolver.remote("10.244.1.7")
    assert f"{NS_LABEL}team=payments" in listed.labels
    assert resolver.local(pod_ns, fake_host["container"], 0) == listed
    namespaces.upsert(
        NamespaceInfo("shop", (("kubernetes.io/metadata.name", "shop"), ("team", "checkout")))
    )
    for endpoint in (
        resolver.remote("10.244.1.7"),
        resolver.local(pod_ns, fake_host["container"], 0),
    ):
        assert (
            f"{NS_LABEL}team=checkout" in endpoint.labels
            and f"{NS_LABEL}team=payments" not in endpoint.labels
        )
    namespaces.remove("shop")  # pods of a deleted namespace are going too: back to the fallback
    assert resolver.remote("10.244.1.7") == before


def test_namespace_watch_label_change_reaches_the_next_resolution(server: K8sStandIn,
                                                                  fake_host: dict[str, Any]) -> None:  # fmt: skip
    core = k8s.CoreV1Api(_api(server.url))
    core.create_namespace({"metadata": {"name": "shop", "labels": {"team": "payments"}}})
    server.put_namespace("data")
    server.put_pod(pod_json("web-0", ip="10.244.1.7", labels={"app": "web"}))
    with (PodWatch(_api(server.url), node_name="node-1", backoff_initial=0.05) as pods,
          NamespaceWatch(_api(server.url), backoff_initial=0.05) as namespaces):  # fmt: skip
        assert pods.wait_synced(5) and namespaces.wait_synced(5)
        assert len(namespaces.index) == 2
        resolver = _resolver(fake_host, pods=pods.index, namespaces=namespaces.index)
        labels = resolver.remote("10.244.1.7").labels
        assert (
            f"{NS_LABEL}team=payments" in labels
            and f"{NS_LABEL}kubernetes.io/metadata.name=shop" in labels
        )

        core.patch_namespace("shop", {"metadata": {"labels": {"team": "checkout", "tier": "web"}}})
        wait_for(lambda: f"{NS_LABEL}team=checkout" in resolver.remote("10.244.1.7").labels)
        assert f"{NS_LABEL}tier=web" in resolver.remote("10.244.1.7").labels
        assert namespaces.stats.lists == 1 and namespaces.stats.events >= 1
        watches = [r for r in server.watch_requests() if r.path == "/api/v1/namespaces"]
        assert watches and watches[0].query["allowWatchBookmarks"] == "true"

        # While the watches are cut, a namespace goes, another changes and the history is
        # compacted: resuming is impossible, the relist must not miss either change.
        with server.store.lock:
            server.drop_watches()
            server.delete_namespace("data")
            server.put_namespace("shop", {"team": "payments"})
            server.compact()
        wait_for(lambda: namespaces.stats.lists == 2)
        assert namespaces.stats.expired == 1
        wait_for(lambda: namespaces.index.labels("data") is None)
        wait_for(lambda: f"{NS_LABEL}team=payments" in resolver.remote("10.244.1.7").labels)
        assert f"{NS_LABEL}tier=web" not in resolver.remote("10.244.1.7").labels


# =========================================================================== nodes


def test_node_addresses_are_the_ones_cilium_takes() -> None:
    """ParseNode: InternalIP and ExternalIP only, the first of each type per family."""
    node = NodeInfo.from_dict({"metadata": {"name": "node-2"}, "status": {"addresses": [
        {"type": "Hostname", "address": "node-2"},
        {"type": "InternalIP", "address": "192.0.2.12"},
        {"type": "InternalIP", "address": "192.0.2.99"},  # a second one of the family: ignored
        {"type": "InternalIP", "address": "FD00:0::12"},
        {"type": "ExternalIP", "address": "198.51.100.12"},
        {"type": "ExternalIP", "address": ""},
        {"type": "InternalDNS", "address": "node-2.internal"},
        {"type": "ExternalIP", "address": "not-an-ip"},
    ]}})  # fmt: skip
    assert node == NodeInfo("node-2", ("192.0.2.12", "fd00::12", "198.51.100.12"))
    assert NodeInfo.from_dict({"metadata": {"name": "new"}}).addresses == ()


def test_node_index_moves_only_when_addresses_do() -> None:
    index = NodeIndex()
    index.replace(
        [NodeInfo("node-1", ("192.0.2.11",)), NodeInfo("node-2", ("192.0.2.12", "fd00::12"))]
    )
    generation = index.generation
    assert index.by_address("fd00::12").name == "node-2" and index.by_address("192.0.2.13") is None
    index.upsert(NodeInfo("node-2", ("192.0.2.12", "fd00::12")))  # a status heartbeat
    index.replace(index.nodes())
    assert index.generation == generation
    index.upsert(NodeInfo("node-2", ("192.0.2.22",)))  # readdressed
    assert (
        index.by_address("192.0.2.12") is None and index.by_address("192.0.2.22").name == "node-2"
    )
    index.remove("node-2")
    index.remove("node-2")
    assert index.get("node-2") is None and index.generation == generation + 2 and len(index) == 1


def test_remote_nodes_and_this_node_from_the_node_index(fake_host: dict[str, Any]) -> None:
    nodes = NodeIndex()
    nodes.replace([NodeInfo("node-1", ("192.168.0.11", "35.200.0.11")),
                   NodeInfo("node-2", ("192.168.0.12", "35.200.0.12", "fd00::12"))])  # fmt: skip
    resolver = _resolver(fake_host, nodes=nodes, node_name="node-1")
    assert resolver.remote("35.200.0.11") == HOST  # this node's ExternalIP, on no local interface
    assert resolver.remote("192.168.0.12") == REMOTE_NODE
    assert resolver.remote("35.200.0.12") == REMOTE_NODE  # a global address, and still a node
    assert resolver.remote("::ffff:192.168.0.12") == REMOTE_NODE
    assert resolver.remote("fd00::12") == REMOTE_NODE
    nodes.remove("node-2")  # the node leaves: its addresses are nobody's
    assert resolver.remote("35.200.0.12") == WORLD and resolver.remote("192.168.0.12") == UNKNOWN
    nodes.upsert(NodeInfo("node-3", ("192.168.0.12",)))  # and a new node takes one
    assert resolver.remote("192.168.0.12") == REMOTE_NODE
    # without a node name, this node is the one that has one of the host's addresses
    unnamed = _resolver(fake_host, nodes=nodes)
    assert unnamed.remote("35.200.0.11") == HOST and unnamed.remote("192.168.0.12") == REMOTE_NODE


def test_node_watch_remote_nodes_come_and_go(server: K8sStandIn, fake_host: dict[str, Any]) -> None:
    server.put_node(
        "node-1", {"InternalIP": "192.0.2.11", "ExternalIP": "198.51.100.11", "Hostname": "node-1"}
    )
    server.put_node(
        "node-2",
        [("InternalIP", "192.0.2.12"), ("InternalIP", "192.0.2.99"), ("InternalIP", "fd00::12")],
    )
    with NodeWatch(_api(server.url), backoff_initial=0.05) as watch:
        assert watch.wait_synced(5)
        assert watch.index.get("node-2") == NodeInfo("node-2", ("192.0.2.12", "fd00::12"))
        resolver = _resolver(fake_host, nodes=watch.index, node_name="node-1")
        assert resolver.remote("198.51.100.11") == HOST and resolver.remote("192.0.2.11") == HOST
        assert (
            resolver.remote("192.0.2.12") == REMOTE_NODE
            and resolver.remote("fd00::12") == REMOTE_NODE
        )
        assert (
            resolver.remote("192.0.2.99") == UNKNOWN
        )  # Cilium does not take a second InternalIP either

        server.put_node("node-3", {"InternalIP": "192.0.2.13"})  # a node joins
        wait_for(lambda: resolver.remote("192.0.2.13") == REMOTE_NODE)
        generation, events = watch.index.generation, watch.stats.events
        server.put_node(
            "node-3", {"InternalIP": "192.0.2.13"}, conditions=[{"type": "Ready", "status": "True"}]
        )
        wait_for(lambda: watch.stats.events > events)
        assert watch.index.generation == generation  # a heartbeat: cached answers stay valid
        server.delete_node("node-2")  # a node leaves
        wait_for(lambda: resolver.remote("192.0.2.12") == UNKNOWN)
        assert resolver.remote("fd00::12") == UNKNOWN

        with server.store.lock:  # a node leaves while the watch is cut and history is compacted
            server.drop_watches()
            server.delete_node("node-3")
            server.compact()
        wait_for(lambda: watch.stats.lists == 2)
        wait_for(lambda: resolver.remote("192.0.2.13") == UNKNOWN)
        assert watch.stats.expired == 1 and resolver.remote("192.0.2.11") == HOST


# =========================================================================== host-network pods


def test_pod_index_knows_node_addresses_from_pods() -> None:
    index = PodIndex()
    dual = pod_json(
        "exporter-bbbbb", node="node-2", host_network=True, ip="192.0.2.12", host_ip="192.0.2.12"
    )
    dual["status"] |= {"podIPs": [{"ip": "192.0.2.12"}, {"ip": "fd00::12"}],
                       "hostIPs": [{"ip": "192.0.2.12"}, {"ip": "fd00::12"}]}  # fmt: skip
    exporter = PodInfo.from_dict(dual)
    assert exporter.host_ips == ("192.0.2.12", "fd00::12")
    assert exporter.node_addresses() == {"192.0.2.12", "fd00::12"}
    index.upsert(exporter)
    index.upsert(web_pod())  # on node-1, hostIP 192.168.0.11
    assert (
        index.node_of_address("fd00::12") == "node-2"
        and index.node_of_address("192.168.0.11") == "node-1"
    )
    assert index.by_ip("192.0.2.12") is None and index.node_of_address("10.244.1.7") is None
    index.remove(exporter.uid)
    assert index.node_of_address("192.0.2.12") is None and index.host_ips() == {"192.168.0.11"}


def test_host_network_pods_resolve_to_their_node(fake_host: dict[str, Any]) -> None:
    """Cilium's "host" entity includes host-network containers of this node, "remote-node" those
    of the others; never the pod's own identity."""
    index = PodIndex()
    here = PodInfo.from_dict(pod_json("exporter-aaaaa", uid=UID, node="node-1", host_network=True,
                                      ip="192.168.0.50", host_ip="192.168.0.50", labels={"app": "exporter"}))  # fmt: skip
    there = PodInfo.from_dict(pod_json("exporter-bbbbb", node="node-2", host_network=True,
                                       ip="192.168.0.12", host_ip="192.168.0.12", labels={"app": "exporter"}))  # fmt: skip
    index.upsert(here)
    index.upsert(there)
    resolver = _resolver(fake_host, pods=index, node_name="node-1")
    assert resolver.remote("192.168.0.50") == HOST  # this node's, though on no interface we read
    assert resolver.remote("192.168.0.12") == REMOTE_NODE
    assert resolver.local(HOST_NS, fake_host["container"], 0) == HOST  # its own socket: the host
    # a node the node watch knows says the same
    nodes = NodeIndex()
    nodes.replace([NodeInfo("node-2", ("192.168.0.12",))])
    assert (
        _resolver(fake_host, pods=index, nodes=nodes, node_name="node-1").remote("192.168.0.12")
        == REMOTE_NODE
    )
    # seen from node-2's agent, the same pods swap roles
    seen_from_2 = _resolver(fake_host, pods=index, node_name="node-2")
    assert (
        seen_from_2.remote("192.168.0.50") == REMOTE_NODE
        and seen_from_2.remote("192.168.0.12") == HOST
    )
    assert seen_from_2.remote("192.168.0.11") == HOST  # the fake host's own address still is


def test_host_network_pod_watch_updates(server: K8sStandIn, fake_host: dict[str, Any]) -> None:
    """Every pod watched (no node selector): host-network pods here and elsewhere come and go."""
    server.put_pod(
        pod_json(
            "exporter-aaaaa",
            node="node-1",
            host_network=True,
            ip="192.0.2.11",
            host_ip="192.0.2.11",
        )
    )
    with PodWatch(_api(server.url), backoff_initial=0.05) as watch:
        assert watch.wait_synced(5)
        resolver = _resolver(fake_host, pods=watch.index, node_name="node-1")
        assert resolver.remote("192.0.2.11") == HOST
        assert resolver.remote("192.0.2.12") == UNKNOWN
        server.put_pod(pod_json("exporter-bbbbb", node="node-2", host_network=True, ip="192.0.2.12",
                                host_ip="192.0.2.12", labels={"app": "exporter"}))  # fmt: skip
        wait_for(lambda: resolver.remote("192.0.2.12") == REMOTE_NODE)
        assert resolver.remote("192.0.2.12").pod_name == ""
        server.delete_pod("shop", "exporter-bbbbb")  # the last pod that told of node-2
        wait_for(lambda: resolver.remote("192.0.2.12") == UNKNOWN)


# =========================================================================== RBAC


def test_refused_namespaces_and_nodes_leave_pods_working(tmp_path: Path) -> None:
    """An agent whose ClusterRole covers only pods: one warning per refused resource, no wait."""
    tokens = {
        "agent-token": Token("system:serviceaccount:netwarden:agent", resources=frozenset({"pods"}))
    }
    with K8sStandIn(tokens=tokens) as server:
        server.put_namespace("shop", {"team": "payments"})
        server.put_node("node-2", {"InternalIP": "192.0.2.12"})
        server.put_pod(pod_json("web-0", ip="10.244.1.7", labels={"app": "web"}))
        lines: list[str] = []
        started = time.monotonic()
        resolver = open_resolver(kubernetes=str(_kubeconfig(tmp_path, server.url, token="agent-token")),
                                 node_name="node-1", log=lines.append)  # fmt: skip
        try:
            assert time.monotonic() - started < 5  # a refusal is not waited out
            web = resolver.remote("10.244.1.7")
            assert (
                web.pod_name == "web-0"
                and f"{NS_LABEL}kubernetes.io/metadata.name=shop" in web.labels
            )
            assert not any("team=" in label for label in web.labels)
            assert resolver.remote("192.0.2.12") == UNKNOWN
            assert "netwarden agent: watching pods of node node-1: 1 now" in lines
            refusals = sorted(line for line in lines if "refuses" in line)
            assert len(refusals) == 2 and len(lines) == 3, lines
            assert refusals[0].startswith("netwarden agent: the API server refuses namespaces to this agent "
                                          "(403 Forbidden: namespaces is forbidden: User")  # fmt: skip
            assert "get, list and watch on namespaces" in refusals[0]
            assert "going on without node addresses" in refusals[1]
            assert all(w.denied and not w.synced for w in resolver.watches[1:])
        finally:
            resolver.close()


def test_a_refused_watch_warns_once_and_recovers_when_granted(tmp_path: Path) -> None:
    tokens = {"t": Token("agent", resources=frozenset({"pods"}))}
    with K8sStandIn(tokens=tokens) as server:
        server.put_namespace("shop", {"team": "payments"})
        lines: list[str] = []
        api = api_client_from_environment(str(_kubeconfig(tmp_path, server.url, token="t")))
        with NamespaceWatch(
            api, backoff_initial=0.02, backoff_max=0.05, warn=lines.append
        ) as watch:
            assert not watch.wait_synced(5) and watch.denied
            wait_for(lambda: watch.stats.denied >= 3)
            assert len(lines) == 1 and 'cannot list resource "namespaces"' in lines[0]
            assert watch.stats.errors == 0 and watch.stats.last_error.startswith("403 Forbidden")
            server.tokens["t"] = Token("agent")  # the ClusterRole is fixed: no restart needed
            wait_for(lambda: watch.synced)
            assert not watch.denied and len(lines) == 1
            assert watch.index.labels("shop") == (
                ("kubernetes.io/metadata.name", "shop"),
                ("team", "payments"),
            )


def test_a_watch_refused_after_an_allowed_list_warns_once(tmp_path: Path) -> None:
    """A ClusterRole with list but no watch: the listed state is kept, one warning, no relists."""
    with K8sStandIn(tokens={"t": Token("agent", frozenset({"get", "list"}))}) as server:
        server.put_node("node-2", {"InternalIP": "192.0.2.12"})
        lines: list[str] = []
        api = api_client_from_environment(str(_kubeconfig(tmp_path, server.url, token="t")))
        with NodeWatch(api, backoff_initial=0.02, backoff_max=0.05, warn=lines.append) as watch:
            assert watch.wait_synced(5)
            wait_for(lambda: watch.stats.denied >= 3)
            assert (
                watch.denied
                and watch.stats.lists == 1
                and watch.index.by_address("192.0.2.12") is not None
            )
            assert len(lines) == 1 and 'cannot watch resource "nodes"' in lines[0]


def test_standin_serves_namespaces_and_nodes(server: K8sStandIn) -> None:
    core = k8s.CoreV1Api(_api(server.url))
    created = core.create_namespace({"metadata": {"name": "shop", "labels": {"team": "payments"}}})
    assert created.metadata.labels == {"team": "payments", "kubernetes.io/metadata.name": "shop"}
    assert created.status.phase == "Active"
    core.patch_namespace("shop", {"metadata": {"labels": {"team": None, "tier": "web",
                                                          "kubernetes.io/metadata.name": None}}})  # fmt: skip
    assert core.read_namespace("shop").metadata.labels == {
        "tier": "web",
        "kubernetes.io/metadata.name": "shop",
    }
    with pytest.raises(k8s.ApiException) as refused:
        core.patch_namespace("shop", {"spec": {"finalizers": []}})
    assert refused.value.status == 422
    server.put_node("node-1", {"InternalIP": "192.0.2.11"})
    server.put_node("node-2", {"InternalIP": "192.0.2.12"})
    listed = core.list_node(field_selector="metadata.name=node-2")
    assert [n.metadata.name for n in listed.items] == [
        "node-2"
    ] and listed.metadata.resource_version
    assert core.read_node("node-1").status.addresses[0].address == "192.0.2.11"
    with pytest.raises(k8s.ApiException) as missing:
        core.read_node("node-9")
    assert missing.value.status == 404
    core.delete_namespace("shop")
    assert core.list_namespace().items == [] and len(core.list_node(limit=1).items) == 1


# =========================================================================== real namespaces


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def real_netns() -> Iterator[tuple[str, str]]:
    """A named network namespace with an address on a veth, deleted afterwards."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2")
    name = f"nwid-{secrets.token_hex(3)}"
    host_if, ns_if = f"nwh{secrets.token_hex(2)}", f"nwn{secrets.token_hex(2)}"
    address = f"10.{secrets.randbelow(50) + 150}.{secrets.randbelow(250)}.5"
    try:
        _ip("netns", "add", name)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot create network namespaces: {exc.stderr.strip()}")
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", name)
        _ip("-n", name, "addr", "add", f"{address}/24", "dev", ns_if)
        _ip("-n", name, "link", "set", ns_if, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        yield name, address
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)  # takes the veth pair with it


@pytest.mark.privileged
def test_real_named_netns(real_netns: tuple[str, str]) -> None:
    name, address = real_netns
    inode = netns_inode(name)
    assert inode == os.stat(f"/run/netns/{name}").st_ino and inode != host_netns_inode()
    assert netns_inode("nwid-does-not-exist") is None
    assert address in netns_addresses(f"/run/netns/{name}")
    resolver = IdentityResolver.for_host()
    endpoint = resolver.local(inode, 0, 0)
    assert endpoint == netns_endpoint(inode, name)
    assert resolver.remote(address) == endpoint  # read by entering the namespace
    assert resolver.local(host_netns_inode(), 0, 0) == HOST

    mapped = IdentityResolver.for_host(identity_map=IdentityMap.from_data(
        {"entries": [{"netns": name, "namespace": "shop", "pod": "web-0", "labels": {"app": "web"}}]}))  # fmt: skip
    assert mapped.local(inode, 0, 0).pod_name == "web-0"
    assert mapped.remote(address).pod_name == "web-0"


@pytest.mark.privileged
def test_real_unnamed_netns_through_a_pid() -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root, unshare and iproute2")
    address = f"10.{secrets.randbelow(50) + 150}.{secrets.randbelow(250)}.9"
    child = subprocess.Popen(["unshare", "--net", "sh", "-c",
                              f"ip link set lo up && ip addr add {address}/32 dev lo && exec sleep 30"])  # fmt: skip
    try:
        wait_for(lambda: address in local_addresses(f"/proc/{child.pid}/net"))
        inode = os.stat(f"/proc/{child.pid}/ns/net").st_ino
        resolver = IdentityResolver.for_host()
        assert resolver.remote(address) == UNKNOWN
        endpoint = resolver.local(inode, 0, child.pid)
        assert (
            endpoint.pod_name == f"netns-{inode}" and f"netwarden:netns={inode}" in endpoint.labels
        )
        assert resolver.remote(address) == endpoint
    finally:
        child.kill()
        child.wait()
