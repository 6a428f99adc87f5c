"""`netwarden serve` applies approved proposals: ``remediation.kubernetes`` builds the cluster's
client, and a proposal goes from review to the cluster and back through the service's HTTP API
(against the Kubernetes API stand-in, tests/k8s_standin.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from netwarden.api.auth import new_token
from netwarden.config import ServiceConfig, load_config
from netwarden.errors import UserError
from netwarden.remediation.proposals import ProposalStore
from netwarden.service import kubernetes_client
from tests.k8s_standin import K8sStandIn
from tests.policyfactory import cnp

CNPS = "ciliumnetworkpolicies"


def kubeconfig(path: Path, url: str, *, context: str = "standin", token: str = "t") -> Path:
    """A kubeconfig with one cluster at ``url`` and a bearer token, as kind or kubeadm write."""
    path.write_text(
        textwrap.dedent(f"""\
        apiVersion: v1
        kind: Config
        clusters: [{{name: standin, cluster: {{server: "{url}"}}}}]
        users: [{{name: netwarden, user: {{token: {token}}}}}]
        contexts: [{{name: {context}, context: {{cluster: standin, user: netwarden}}}}]
        current-context: {context}
        """)
    )
    return path


# --------------------------------------------------------------------------- the setting


def test_off_by_default_and_read_from_file_and_environment(tmp_path, monkeypatch) -> None:
    assert ServiceConfig().remediation.kubernetes == "off"
    assert kubernetes_client("off") is None
    path = tmp_path / "netwarden.yaml"
    path.write_text("remediation:\n  kubernetes: /etc/kube/config\n  kubernetes_context: prod\n")
    config = load_config(path)
    assert config.remediation.kubernetes == "/etc/kube/config"
    assert config.remediation.kubernetes_context == "prod"
    monkeypatch.setenv("NETWARDEN_REMEDIATION__KUBERNETES", "in-cluster")
    assert load_config(path).remediation.kubernetes == "in-cluster"
    monkeypatch.setenv("NETWARDEN_REMEDIATION__KUBERNETES", " ")
    with pytest.raises(ValueError, match="remediation.kubernetes"):
        load_config(path)
    monkeypatch.delenv("NETWARDEN_REMEDIATION__KUBERNETES")
    path.write_text("remediation:\n  kubernetes: off\n")  # YAML 1.1 reads it as false
    assert load_config(path).remediation.kubernetes == "off"


def test_a_kubeconfig_and_its_context(tmp_path) -> None:
    """The file's current-context, or the one remediation.kubernetes_context names."""
    path = kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:1", token="t1")
    text = yaml.safe_load(path.read_text())
    text["clusters"].append({"name": "prod", "cluster": {"server": "https://192.0.2.1:6443"}})
    text["users"].append({"name": "prod", "user": {"token": "t2"}})
    text["contexts"].append({"name": "prod", "context": {"cluster": "prod", "user": "prod"}})
    path.write_text(yaml.safe_dump(text))
    before = path.read_text()
    for context, host, token in [
        (None, "http://127.0.0.1:1", "t1"),
        ("prod", "https://192.0.2.1:6443", "t2"),
    ]:
        api = kubernetes_client(str(path), context)
        assert api is not None and api.configuration.host == host
        assert api.configuration.auth_settings()["BearerToken"]["value"] == f"Bearer {token}"
        api.close()
    assert path.read_text() == before  # never written back


@pytest.mark.parametrize(
    ("content", "context", "message"),
    [
        (None, None, "kubeconfig {path} not found (expected off, in-cluster or the path"),
        ("clusters: [1, 2\n", None, "cannot be used: while parsing a flow sequence"),
        ("apiVersion: v1\nkind: Config\n", None, "Expected key current-context"),
        ("just text\n", None, "cannot be used: "),
        ("VALID", "nope", "Expected object with name nope"),
    ],
)
def test_a_bad_kubeconfig_is_one_clear_line(
    tmp_path: Path, content: str | None, context: str | None, message: str
) -> None:
    path = tmp_path / "kubeconfig"
    if content == "VALID":
        kubeconfig(path, "http://127.0.0.1:1")
    elif content is not None:
        path.write_text(content)
    with pytest.raises(UserError) as info:
        kubernetes_client(str(path), context)
    text = str(info.value)
    assert text.startswith("remediation.kubernetes: kubeconfig ") and "\n" not in text
    assert message.format(path=path) in text


def test_in_cluster_outside_a_pod_says_so(monkeypatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    with pytest.raises(UserError, match=r"in-cluster: .*not running in a Kubernetes pod"):
        kubernetes_client("in-cluster")


def test_in_cluster_uses_the_service_account(tmp_path, monkeypatch) -> None:
    """The pod's environment and mounted service account: API server from
    KUBERNETES_SERVICE_HOST/PORT, the token and CA from their files (their standard paths,
    /var/run/secrets/kubernetes.io/serviceaccount, moved into tmp_path here)."""
    from kubernetes.config import incluster_config

    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("sa-token")  # the kubelet writes no newline
    (account / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nnot checked here\n")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(account / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(account / "ca.crt"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    api = kubernetes_client("in-cluster")
    assert api is not None
    assert api.configuration.host == "https://10.96.0.1:443"
    assert api.configuration.ssl_ca_cert == str(account / "ca.crt")
    assert api.configuration.auth_settings()["BearerToken"]["value"] == "bearer sa-token"
    api.close()


# ------------------------------------------------------------------- through the service


def start_serve(tmp_path: Path, config: dict[str, Any], env: dict[str, str]) -> tuple[Any, str]:
    """``netwarden serve --config FILE`` with ``api.port: 0``; returns the process and the base
    URL it printed (the bound port), once /healthz answers."""
    path = tmp_path / "netwarden.yaml"
    path.write_text(yaml.safe_dump({"api": {"port": 0}, **config}))
    log_path = tmp_path / "serve.log"
    log = log_path.open("wb")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NETWARDEN_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "netwarden", "serve", "--config", str(path)],
        env={**environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    deadline = time.monotonic() + 120
    base = ""
    while time.monotonic() < deadline:
        output = log_path.read_text()
        assert proc.poll() is None, output
        if not base:
            for line in output.splitlines():
                if line.startswith("netwarden is serving "):
                    base = line.rsplit(" on ", 1)[1].strip()
        if base:
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    return proc, base
            except httpx.HTTPError:
                pass
        time.sleep(0.1)
    stop_serve(proc)
    pytest.fail(f"netwarden serve not up after 120 s:\n{log_path.read_text()}")


def stop_serve(proc: Any, timeout: float = 60) -> int:
    """SIGTERM, as Kubernetes stops a pod; the exit code."""
    proc.send_signal(signal.SIGTERM)
    try:
        return int(proc.wait(timeout=timeout))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


@pytest.fixture
def standin() -> Iterator[K8sStandIn]:
    with K8sStandIn() as server:
        yield server


def test_apply_and_roll_back_through_the_running_service(tmp_path, standin) -> None:
    """remediation.kubernetes = a kubeconfig of the cluster: a proposal a reviewer made, another
    approved and an admin applied through `netwarden serve`'s API reaches the cluster (dry-run,
    then server-side apply), and its rollback deletes it again."""
    tokens, entries = {}, []
    for name, role in [("rita", "reviewer"), ("victor", "reviewer"), ("ada", "admin")]:
        tokens[name], entry = new_token(name, role)
        entries.append(entry.line)
    flows = tmp_path / "flows.jsonl"
    flows.touch()
    proc, base = start_serve(
        tmp_path,
        {
            "data_dir": str(tmp_path / "data"),
            "source": {"spec": str(flows)},
            "models": {"bootstrap": False},
            "remediation": {"kubernetes": str(kubeconfig(tmp_path / "kubeconfig", standin.url))},
        },
        {"NETWARDEN_API_TOKENS": ",".join(entries)},
    )
    policy = cnp(
        {"k8s:app": "cart"},
        name="cart-baseline",
        namespace="shop",
        ingress=[{"fromEndpoints": [{"matchLabels": {"k8s:app": "frontend"}}]}],
    )
    try:
        with httpx.Client(base_url=base, timeout=30) as http:

            def post(path: str, who: str, **kwargs: Any) -> httpx.Response:
                headers = {"Authorization": f"Bearer {tokens[who]}"}
                return http.post(f"/api/v1/proposals{path}", headers=headers, **kwargs)

            r = post("", "rita", json={"identity": "shop/cart", "policy": policy})
            assert r.status_code == 201, r.text
            pid = r.json()["id"]
            r = post(f"/{pid}/approve", "victor", json={"note": "matches its traffic"})
            assert r.status_code == 200 and r.json()["state"] == "approved", r.text
            assert standin.stored(CNPS, "shop", "cart-baseline") is None
            r = post(f"/{pid}/apply", "ada")
            assert r.status_code == 200, r.text
            assert r.json()["state"] == "applied" and r.json()["dry_run"]["passed"] is True
            live = standin.stored(CNPS, "shop", "cart-baseline")
            assert live is not None and live["spec"] == policy["spec"]
            managers = {m["manager"] for m in live["metadata"]["managedFields"]}
            assert managers == {"netwarden"}
            assert any(w.query.get("dryRun") == "All" for w in standin.writes())
            r = post(f"/{pid}/rollback", "ada", json={"note": "false alarm"})
            assert r.status_code == 200 and r.json()["state"] == "rolled_back", r.text
            assert standin.stored(CNPS, "shop", "cart-baseline") is None  # it created it
    finally:
        code = stop_serve(proc)
    output = (tmp_path / "serve.log").read_text()
    assert code == 0, output
    # one Kubernetes client, the API process's: the pipeline process applies nothing
    assert output.count(f"applied to the cluster at {standin.url}") == 1, output


def test_stuck_claims_are_logged_at_start_and_counted(tmp_path) -> None:
    """An apply whose process died leaves its proposal claimed: once the claim is older than
    remediation.claim_grace_seconds (here from the environment), `netwarden serve` names it in
    one start-up line with the recover route, and netwarden_proposals_stuck counts it; a
    younger claim (maybe still at work) is neither."""
    data = tmp_path / "data"
    data.mkdir()
    url = f"sqlite:///{data / 'netwarden.db'}"
    policy = cnp(
        {"k8s:app": "cart"},
        name="cart-baseline",
        namespace="shop",
        ingress=[{"fromEndpoints": [{"matchLabels": {"k8s:app": "frontend"}}]}],
    )
    an_hour_ago = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    ids = []
    for clock in (lambda: an_hour_ago, lambda: datetime.now(UTC)):
        with ProposalStore(url, now=clock) as store:
            p = store.create(kind="baseline", identity="shop/cart", policy=policy, actor="rita")
            store.approve(p.id, actor="victor")
            store.claim(p.id, "apply", actor="ada")
            ids.append(p.id)
    flows = tmp_path / "flows.jsonl"
    flows.touch()
    proc, base = start_serve(
        tmp_path,
        {"data_dir": str(data), "source": {"spec": str(flows)}, "models": {"bootstrap": False}},
        {"NETWARDEN_REMEDIATION__CLAIM_GRACE_SECONDS": "600"},
    )
    try:
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
    finally:
        code = stop_serve(proc)
    output = (tmp_path / "serve.log").read_text()
    assert code == 0, output
    assert "netwarden_proposals_stuck 1.0" in metrics
    assert [line for line in output.splitlines() if " is stuck " in line] == [
        f"proposal {ids[0]} is stuck applying since {an_hour_ago:%Y-%m-%d %H:%M:%S} UTC (its "
        "process presumably died): an admin finishes it from what the cluster holds with "
        f"POST /api/v1/proposals/{ids[0]}/recover"
    ]
