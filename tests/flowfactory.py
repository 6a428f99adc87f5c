"""Build Hubble JSON flow lines for tests, in the shape Hubble 1.20 prints."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from netwarden.ingest.compact import CompactFlow
from netwarden.ingest.reader import FlowReader

T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)


def pod(
    namespace: str, app: str, identity: int, ip: str, replica: str = "7d9f8b6c5d-x2k4q"
) -> dict[str, Any]:
    return {
        "endpoint": {
            "ID": 100 + identity % 1000,
            "identity": identity,
            "cluster_name": "prod",
            "namespace": namespace,
            "labels": sorted(
                [
                    f"k8s:app={app}",
                    f"k8s:io.kubernetes.pod.namespace={namespace}",
                    "k8s:io.cilium.k8s.policy.cluster=prod",
                ]
            ),
            "pod_name": f"{app}-{replica}",
            "workloads": [{"name": app, "kind": "Deployment"}],
        },
        "ip": ip,
    }


def world(ip: str) -> dict[str, Any]:
    return {"endpoint": {"identity": 2, "labels": ["reserved:world"]}, "ip": ip}


def reserved(name: str, identity: int, ip: str) -> dict[str, Any]:
    return {"endpoint": {"identity": identity, "labels": [f"reserved:{name}"]}, "ip": ip}


def flow(
    src: dict[str, Any],
    dst: dict[str, Any],
    *,
    seconds: float = 0.0,
    proto: str = "TCP",
    sport: int = 40000,
    dport: int = 80,
    flags: tuple[str, ...] = ("SYN",),
    direction: str = "EGRESS",
    point: str = "FROM_ENDPOINT",
    reply: bool = False,
    verdict: str = "FORWARDED",
    drop_reason: str | None = None,
    event_type: int = 4,
    l7: dict[str, Any] | None = None,
    destination_names: list[str] | None = None,
    node: str = "prod/worker-1",
) -> dict[str, Any]:
    """One flow event; ``reply`` flows go from ``src`` (the responder) to ``dst``."""
    t = (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    body: dict[str, Any] = {
        "time": t,
        "uuid": f"u-{seconds}-{sport}-{dport}",
        "verdict": verdict,
        "IP": {"source": src["ip"], "destination": dst["ip"], "ipVersion": "IPv4"},
        "source": src["endpoint"],
        "destination": dst["endpoint"],
        "Type": "L7" if l7 else "L3_L4",
        "node_name": node,
        "event_type": {"type": event_type} if event_type != 1 else {"type": 1, "sub_type": 133},
        "traffic_direction": direction,
        "is_reply": reply,
    }
    if not l7:
        body["trace_observation_point"] = point
    if proto == "TCP":
        body["l4"] = {
            "TCP": {
                "source_port": sport,
                "destination_port": dport,
                "flags": dict.fromkeys(flags, True),
            }
        }
    elif proto == "UDP":
        body["l4"] = {"UDP": {"source_port": sport, "destination_port": dport}}
    elif proto == "ICMPv4":
        body["l4"] = {"ICMPv4": {"type": 8}}
    if drop_reason:
        body["drop_reason_desc"] = drop_reason
    if l7:
        body["l7"] = l7
    if destination_names:
        body["destination_names"] = destination_names
    return {"flow": body, "node_name": node, "time": t}


def connection(
    client: dict[str, Any],
    server: dict[str, Any],
    *,
    seconds: float,
    dport: int = 80,
    sport: int = 40000,
    both_ends: bool = True,
) -> list[dict[str, Any]]:
    """A TCP connection as Hubble reports it: request and reply at the client, and at the server."""
    out = [
        flow(client, server, seconds=seconds, sport=sport, dport=dport, flags=("SYN",)),
        flow(
            server,
            client,
            seconds=seconds + 0.001,
            sport=dport,
            dport=sport,
            flags=("SYN", "ACK"),
            reply=True,
            point="TO_ENDPOINT",
        ),
        flow(
            client, server, seconds=seconds + 0.002, sport=sport, dport=dport, flags=("ACK", "PSH")
        ),
    ]
    if both_ends:
        out += [
            flow(
                client,
                server,
                seconds=seconds + 0.0005,
                sport=sport,
                dport=dport,
                flags=("SYN",),
                direction="INGRESS",
                point="TO_ENDPOINT",
                node="prod/worker-2",
            ),
            flow(
                server,
                client,
                seconds=seconds + 0.0008,
                sport=dport,
                dport=sport,
                flags=("SYN", "ACK"),
                reply=True,
                direction="INGRESS",
                point="FROM_ENDPOINT",
                node="prod/worker-2",
            ),
            flow(
                client,
                server,
                seconds=seconds + 0.0025,
                sport=sport,
                dport=dport,
                flags=("ACK", "PSH"),
                direction="INGRESS",
                point="TO_ENDPOINT",
                node="prod/worker-2",
            ),
        ]
    return out


def decode(lines: list[dict[str, Any]], flow_type: type = CompactFlow) -> list[Any]:
    data = b"\n".join(orjson.dumps(x) for x in lines)
    rd = FlowReader(flow_type=flow_type)
    flows = [f for batch in rd.read_stream(io.BytesIO(data)) for f in batch]
    assert rd.stats.error_lines == 0, rd.stats.examples
    return flows
