"""The kernel probes against real traffic between network namespaces (stand-in pods).

Privileged tests create their own namespaces (``nwtest-<random>-c`` / ``-s``) joined by a veth
pair with 10.x addresses that exist only inside them, run traffic in them with
``ip netns exec``, and check what the probes report for exactly those namespaces (by netns
inode). Namespaces are deleted even when a test fails. Without root they skip with the
preflight message; as root they run, and fail if the kernel cannot load the probes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from netwarden.bpf import btf as btfmod
from netwarden.bpf import preflight
from netwarden.bpf.dropreasons import (
    TracepointFormat,
    find_tracefs,
    load_drop_reasons,
    parse_drop_reasons,
    reason_name,
)
from netwarden.bpf.events import (
    ConnectionClosed,
    ConnectionOpened,
    KernelEvent,
    PacketDropped,
    TcpReset,
    UdpTraffic,
)
from tests.netns import Pods
from tests.netns import run as _run
from tests.netns import skip_unless_root as _skip_unless_root

ALL_CAPS = (1 << 41) - 1


# ---- the probes --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def probes() -> Iterator[object]:
    _skip_unless_root()
    from netwarden.bpf.loader import KernelProbes

    try:
        kp = KernelProbes(udp_flush_interval=0.5)
    except preflight.AgentUnavailable as exc:
        pytest.fail(f"running as root but the probes cannot load: {exc}")
    with kp:
        yield kp


def collect(
    kp, netns: set[int], done: Callable[[list[KernelEvent]], bool], timeout: float = 10.0
) -> list[KernelEvent]:
    """Poll until ``done(events of these namespaces)`` or the timeout; then flush UDP."""
    got: list[KernelEvent] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got += [e for e in kp.poll(100) if e.netns in netns]
        if done(got):
            break
    got += [e for e in kp.flush() if e.netns in netns]
    return got


def drain(kp) -> None:
    kp.poll(0)
    kp.flush()


def of(events: list[KernelEvent], kind: type, **attrs: object) -> list:
    return [
        e
        for e in events
        if isinstance(e, kind) and all(getattr(e, k) == v for k, v in attrs.items())
    ]


def cgroup_id() -> int | None:
    """The cgroup v2 id (inode of its directory) of this process, when cgroup2 is mounted."""
    rel = next(
        (
            line[3:]
            for line in Path("/proc/self/cgroup").read_text().splitlines()
            if line.startswith("0::")
        ),
        None,
    )
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        parts = line.split()
        fstype = parts[parts.index("-") + 1]
        if fstype == "cgroup2" and rel is not None:
            return os.stat(Path(parts[4]) / rel.lstrip("/")).st_ino
    return None


TCP_SERVER = """
    import json, os, socket, sys
    s = socket.socket(socket.{fam}); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("{ip}", {port})); s.listen()
    print(json.dumps({{"ready": True}}), flush=True)
    c, _ = s.accept(); n = 0
    while n < {expect}:
        b = c.recv(65536)
        if not b: break
        n += len(b)
    c.sendall(b"r" * {reply})
    c.recv(1)  # the client's close
    c.close()
    print(json.dumps({{"got": n, "comm": open("/proc/self/comm").read().strip()}}), flush=True)
"""
TCP_CLIENT = """
    import json, socket
    c = socket.create_connection(("{ip}", {port}), timeout=10)
    c.sendall(b"q" * {send}); n = 0
    while n < {reply}:
        b = c.recv(65536)
        if not b: break
        n += len(b)
    lport = c.getsockname()[1]
    c.close()
    print(json.dumps({{"got": n, "lport": lport, "comm": open("/proc/self/comm").read().strip()}}))
"""


@pytest.mark.privileged
@pytest.mark.slow
@pytest.mark.parametrize("family", [4, 6])
def test_tcp_connection_lifecycle(probes, pods: Pods, family: int) -> None:
    drain(probes)
    sip, cip = (
        (pods.server_ip, pods.client_ip) if family == 4 else (pods.server_ip6, pods.client_ip6)
    )
    fam = "AF_INET" if family == 4 else "AF_INET6"
    port, send, reply = 18080, 100_000, 5_000
    server = pods.spawn(
        pods.server, TCP_SERVER.format(fam=fam, ip=sip, port=port, expect=send, reply=reply)
    )
    assert json.loads(server.stdout.readline())["ready"]
    client = pods.run(pods.client, TCP_CLIENT.format(ip=sip, port=port, send=send, reply=reply))
    out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    srv = json.loads(out.strip().splitlines()[-1])
    assert client["got"] == reply and srv["got"] == send

    events = collect(
        probes,
        {pods.client_netns, pods.server_netns},
        lambda ev: len(of(ev, ConnectionClosed)) >= 2,
    )
    lport = client["lport"]
    # client end
    opened = of(events, ConnectionOpened, netns=pods.client_netns)
    closed = of(events, ConnectionClosed, netns=pods.client_netns)
    assert len(opened) == 1 and len(closed) == 1, events
    for ev in (opened[0], closed[0]):
        assert ev.role == "client"
        assert (ev.conn.protocol, ev.conn.family) == ("TCP", family)
        assert (ev.conn.local_addr, ev.conn.local_port) == (cip, lport)
        assert (ev.conn.remote_addr, ev.conn.remote_port) == (sip, port)
        assert ev.pid == client["pid"] and ev.comm == client["comm"]
        cg = cgroup_id()
        assert ev.cgroup_id == cg if cg is not None else ev.cgroup_id > 0
    c = closed[0]
    assert c.established and not c.reset and c.duration_ns > 0
    assert c.bytes_sent == pytest.approx(send, rel=0.01)
    assert c.bytes_received == pytest.approx(reply, rel=0.01)
    assert 0 < closed[0].time_ns - opened[0].time_ns < 30e9
    assert abs(closed[0].time_ns - time.time_ns()) < 60e9  # wall clock, not monotonic
    # server end: opened in softirq (no process), closed with the accepting process
    sopened = of(events, ConnectionOpened, netns=pods.server_netns)
    sclosed = of(events, ConnectionClosed, netns=pods.server_netns)
    assert len(sopened) == 1 and len(sclosed) == 1, events
    for ev in (sopened[0], sclosed[0]):
        assert ev.role == "server"
        assert (ev.conn.local_addr, ev.conn.local_port) == (sip, port)
        assert (ev.conn.remote_addr, ev.conn.remote_port) == (cip, lport)
    s = sclosed[0]
    assert s.pid == server.pid and s.comm == srv["comm"]
    assert s.established and s.duration_ns > 0
    assert s.bytes_sent == pytest.approx(reply, rel=0.01)
    assert s.bytes_received == pytest.approx(send, rel=0.01)
    assert not of(events, TcpReset)
    # clean traffic: no TCP drop (the FIN purge at teardown is not reported as one)
    assert not [d for d in of(events, PacketDropped) if d.protocol == 6]


UDP_SERVER = """
    import json, socket
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", {port}))  # dual-stack wildcard: local addresses must come from the packets
    print(json.dumps({{"ready": True}}), flush=True)
    for _ in range({count}):
        data, peer = s.recvfrom(65536)
        s.sendto(b"a" * {reply}, peer)
    print(json.dumps({{"done": True}}), flush=True)
"""
UDP_CLIENT = """
    import json, socket
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)      # unconnected: sendto/recvfrom
    for _ in range({n1}):
        u.sendto(b"u" * {size1}, ("{ip}", {port}))
        u.recvfrom(65536)
    k = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)      # connected: send/recv
    k.connect(("{ip}", {port}))
    for _ in range({n2}):
        k.send(b"k" * {size2})
        k.recv(65536)
    w = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)     # IPv6, unconnected
    for _ in range({n3}):
        w.sendto(b"w" * {size3}, ("{ip6}", {port}))
        w.recvfrom(65536)
    v = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)      # over a macvlan on the veth:
    v.connect(("{vip}", {port}))                              # one skb, two devices
    for _ in range({n4}):
        v.send(b"v" * {size4})
        v.recv(65536)
    z = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)      # unconnected, recv() without
    z.sendto(b"z", ("{ip}", {port}))                          # an address: sender unknown
    z.recv(65536)
    print(json.dumps({{n: s.getsockname()[1] for n, s in zip("ukwvz", (u, k, w, v, z))}}))
"""


@pytest.mark.privileged
@pytest.mark.slow
def test_udp_flows(probes, pods: Pods) -> None:
    drain(probes)
    port, reply = 15353, 50
    n1, size1, n2, size2, n3, size3, n4, size4 = 10, 100, 5, 200, 3, 300, 4, 400
    server = pods.spawn(
        pods.server, UDP_SERVER.format(port=port, count=n1 + n2 + n3 + n4 + 1, reply=reply)
    )
    assert json.loads(server.stdout.readline())["ready"]
    client = pods.run(
        pods.client,
        UDP_CLIENT.format(
            ip=pods.server_ip,
            ip6=pods.server_ip6,
            vip=pods.server_stacked_ip,
            port=port,
            n1=n1,
            size1=size1,
            n2=n2,
            size2=size2,
            n3=n3,
            size3=size3,
            n4=n4,
            size4=size4,
        ),
    )
    server.communicate(timeout=30)
    events = collect(probes, {pods.client_netns, pods.server_netns}, lambda ev: False, timeout=1.5)
    flows = of(events, UdpTraffic)

    def totals(netns: int, lport: int, rport: int) -> tuple[list[UdpTraffic], tuple]:
        sel = [
            f
            for f in flows
            if f.netns == netns and f.conn.local_port == lport and f.conn.remote_port == rport
        ]
        return sel, (
            sum(f.datagrams_sent for f in sel),
            sum(f.bytes_sent for f in sel),
            sum(f.datagrams_received for f in sel),
            sum(f.bytes_received for f in sel),
        )

    addrs = {
        "u": (pods.client_ip, pods.server_ip),
        "k": (pods.client_ip, pods.server_ip),
        "w": (pods.client_ip6, pods.server_ip6),
        "v": (pods.client_stacked_ip, pods.server_stacked_ip),
    }
    for name, n, size, fam in (
        ("u", n1, size1, 4),
        ("k", n2, size2, 4),
        ("w", n3, size3, 6),
        ("v", n4, size4, 4),
    ):
        cip, sip = addrs[name]
        sel, tot = totals(pods.client_netns, client[name], port)
        assert sel, (name, flows)
        assert tot == (n, n * size, n, n * reply), name
        assert {(f.conn.local_addr, f.conn.remote_addr, f.conn.family) for f in sel} == {
            (cip, sip, fam)
        }, name
        assert [f.first_report for f in sel].count(True) == 1
        assert all(f.pid == client["pid"] and f.comm for f in sel)
        # the server's dual-stack socket, from its side, for this peer (IPv4-mapped peers
        # are reported as IPv4)
        ssel, stot = totals(pods.server_netns, port, client[name])
        assert stot == (n, n * reply, n, n * size), name
        assert {(f.conn.local_addr, f.conn.remote_addr, f.conn.family) for f in ssel} == {
            (sip, cip, fam)
        }, name
        assert all(f.pid == server.pid for f in ssel)
        assert all(f.first_ns <= f.time_ns for f in ssel)
    # recv() on an unconnected socket: the datagram counts, its sender cannot be known
    sel, tot = totals(pods.client_netns, client["z"], port)
    assert tot == (1, 1, 0, 0)
    sel, tot = totals(pods.client_netns, client["z"], 0)
    assert tot == (0, 0, 1, reply) and sel[0].conn.remote_addr == "0.0.0.0"


LONG_SERVER = """
    import json, socket
    s = socket.socket(); s.bind(("{ip}", {port})); s.listen()
    print(json.dumps({{"ready": True}}), flush=True)
    c, _ = s.accept(); c.sendall(b"s" * 10)
    c.recv(1)  # the client's close
"""
LONG_CLIENT = """
    import json, socket, sys
    c = socket.create_connection(("{ip}", {port}), timeout=10); c.recv(10)
    print(json.dumps({{"lport": c.getsockname()[1]}}), flush=True)
    sys.stdin.readline()  # held open until the test says
    c.close()
"""


@pytest.mark.privileged
@pytest.mark.slow
def test_open_connection_reported_while_open_and_once(probes, pods: Pods) -> None:
    """A connection that outlives a report interval is reported open by the sweep of the
    connection table, with its process at both ends, and its close does not repeat it."""
    drain(probes)
    port = 18111
    server = pods.spawn(pods.server, LONG_SERVER.format(ip=pods.server_ip, port=port))
    assert json.loads(server.stdout.readline())["ready"]
    client = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            pods.client,
            sys.executable,
            "-c",
            textwrap.dedent(LONG_CLIENT.format(ip=pods.server_ip, port=port)),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        lport = json.loads(client.stdout.readline())["lport"]
        netns = {pods.client_netns, pods.server_netns}
        opened: list[KernelEvent] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(opened) < 2:
            opened += of([e for e in probes.poll(100) if e.netns in netns], ConnectionOpened)
        assert not of(opened, ConnectionClosed)
        (c,) = of(opened, ConnectionOpened, netns=pods.client_netns)
        (s,) = of(opened, ConnectionOpened, netns=pods.server_netns)
        assert (c.role, c.conn.local_port, c.conn.remote_port, c.pid) == (
            "client",
            lport,
            port,
            client.pid,
        )
        assert (s.role, s.conn.local_port, s.conn.remote_port) == ("server", port, lport)
        assert s.pid == server.pid and s.comm  # learned at its first send: the sweep has it
        client.stdin.write("\n")
        client.stdin.flush()
        client.wait(timeout=10)
        server.wait(timeout=10)
    finally:
        client.kill()
        server.kill()
    events = collect(probes, netns, lambda ev: len(of(ev, ConnectionClosed)) >= 2, timeout=5)
    assert not of(events, ConnectionOpened)
    closed = of(events, ConnectionClosed)
    assert sorted(e.role for e in closed) == ["client", "server"]
    assert all(e.established and e.duration_ns > 0 for e in closed)


CHURN = """
import socket, time
server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen(512)
deadline = time.monotonic() + {seconds}
while time.monotonic() < deadline:
    c = socket.create_connection(server.getsockname()); a, _ = server.accept()
    c.close(); a.close()
"""


@pytest.mark.privileged
@pytest.mark.slow
def test_sweep_while_connections_come_and_go(probes) -> None:
    """The sweep reads the connection table while the probes write it: slots claimed and
    freed between its steps are skipped or left to the next sweep, never an error (numpy's
    nonzero() over the live keys raised "number of non-zero array elements changed")."""
    drain(probes)
    churn = subprocess.Popen([sys.executable, "-c", CHURN.format(seconds=2)])
    sweeps = 0
    try:
        while churn.poll() is None:
            probes.sweep_tcp()
            probes.collect_closed()
            sweeps += 1
    finally:
        churn.kill()
        churn.wait()
    assert churn.returncode == 0 and sweeps > 100
    drain(probes)


@pytest.mark.privileged
@pytest.mark.slow
def test_connection_table_full_is_counted(pods: Pods) -> None:
    """With a table of one bucket (8 slots), connections beyond it are counted as lost,
    never reported half (no close without its open)."""
    from netwarden.bpf.loader import KernelProbes

    with KernelProbes(max_tcp=8) as kp:
        drain(kp)
        code = """
            import json, socket
            s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(64)
            pairs = []
            for _ in range(12):
                c = socket.create_connection(s.getsockname()); a, _ = s.accept()
                pairs.append((c, a))
            for c, a in pairs:
                c.close(); a.close()
            print(json.dumps({}))
        """
        pods.run(pods.client, code)
        events = collect(kp, {pods.client_netns}, lambda ev: False, timeout=1.0)
        closed = of(events, ConnectionClosed)
        opened = of(events, ConnectionOpened)
        assert len(closed) == len(opened) == 8
        assert kp.counters["tcp_table_full"] == 16 and kp.counters["tcp_tracked"] == 8
        assert kp.stats.lost >= 16


def _cgroup_programs(root: Path) -> str:
    return _run("bpftool", "cgroup", "show", str(root), check=False).stdout


@pytest.mark.privileged
@pytest.mark.slow
def test_udp_peer_hooks_detach_even_when_the_agent_is_killed(tmp_path: Path) -> None:
    """The cgroup hooks hang on bpf_links: a SIGKILLed agent leaves nothing attached."""
    _skip_unless_root()
    if shutil.which("bpftool") is None:
        pytest.skip("bpftool is not installed (it lists what is attached to the cgroup)")
    from netwarden.bpf.cgroups import find_cgroup2_mount

    root = find_cgroup2_mount()
    if root is None:
        pytest.skip("no cgroup v2 hierarchy")
    before = _cgroup_programs(root).count("on_udp")
    script = tmp_path / "load.py"
    script.write_text(
        textwrap.dedent("""
        import sys, time
        from netwarden.bpf.loader import KernelProbes
        kp = KernelProbes()
        print(",".join(kp.attached), flush=True)
        time.sleep(60)
    """)
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        attached = proc.stdout.readline().strip().split(",")
        assert {"cgroup/sendmsg4", "cgroup/recvmsg6"} <= set(attached)
        assert _cgroup_programs(root).count("on_udp") == before + 4
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10
    while _cgroup_programs(root).count("on_udp") != before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _cgroup_programs(root).count("on_udp") == before


@pytest.mark.privileged
@pytest.mark.slow
def test_without_udp_peer_hooks_unconnected_peers_are_unknown(pods: Pods) -> None:
    from netwarden.bpf.loader import KernelProbes

    with KernelProbes(udp_peers=False) as kp:
        assert not [a for a in kp.attached if a.startswith("cgroup/")]
        drain(kp)
        code = f"""
            import json, socket
            r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); r.bind(("{pods.client_ip}", 0))
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.sendto(b"x" * 5, r.getsockname()); r.recvfrom(100)
            print(json.dumps({{"r": r.getsockname()[1], "u": u.getsockname()[1]}}))
        """
        ports = pods.run(pods.client, code)
        flows = of(collect(kp, {pods.client_netns}, lambda ev: False, timeout=0.5), UdpTraffic)
        sent = [f for f in flows if f.conn.local_port == ports["u"]]
        got = [f for f in flows if f.conn.local_port == ports["r"]]
        assert [(f.conn.remote_addr, f.conn.remote_port, f.bytes_sent) for f in sent] == [
            ("0.0.0.0", 0, 5)
        ]
        assert [(f.conn.remote_addr, f.conn.remote_port, f.bytes_received) for f in got] == [
            ("0.0.0.0", 0, 5)
        ]
    with pytest.raises(preflight.AgentUnavailable, match="not a cgroup v2 directory"):
        KernelProbes(cgroup_root="/nonexistent-cgroup")


@pytest.mark.privileged
@pytest.mark.slow
def test_connect_to_closed_port(probes, pods: Pods) -> None:
    drain(probes)
    port = 18099  # nothing listens
    res = pods.run(
        pods.client,
        f"""
        import json, socket
        c = socket.socket()
        try:
            c.connect(("{pods.server_ip}", {port}))
            print(json.dumps({{"refused": False}}))
        except ConnectionRefusedError:
            print(json.dumps({{"refused": True, "lport": c.getsockname()[1]}}))
    """,
    )
    assert res["refused"]
    events = collect(
        probes,
        {pods.client_netns, pods.server_netns},
        lambda ev: bool(of(ev, ConnectionClosed)) and bool(of(ev, TcpReset, direction="sent")),
    )
    closed = of(events, ConnectionClosed, netns=pods.client_netns)
    assert len(closed) == 1, events
    c = closed[0]
    assert c.role == "client" and not c.established and c.reset
    assert (c.conn.remote_addr, c.conn.remote_port) == (pods.server_ip, port)
    assert c.bytes_sent == c.bytes_received == 0 and c.pid == res["pid"]
    assert (c.conn.local_addr, c.conn.local_port) == (pods.client_ip, res["lport"])
    assert not of(events, ConnectionOpened)
    received = of(events, TcpReset, netns=pods.client_netns, direction="received")
    assert len(received) == 1
    assert (
        received[0].conn.local_addr,
        received[0].conn.remote_addr,
        received[0].conn.remote_port,
    ) == (pods.client_ip, pods.server_ip, port)
    assert received[0].pid == res["pid"]
    sent = of(events, TcpReset, netns=pods.server_netns, direction="sent")
    assert len(sent) == 1
    assert (
        sent[0].conn.local_addr,
        sent[0].conn.local_port,
        sent[0].conn.remote_addr,
        sent[0].conn.remote_port,
    ) == (pods.server_ip, port, pods.client_ip, res["lport"])
    drops = of(events, PacketDropped, netns=pods.server_netns, reason="NO_SOCKET")
    assert drops and drops[0].conn is not None
    assert (drops[0].conn.local_addr, drops[0].conn.remote_port) == (pods.client_ip, port)


@pytest.mark.privileged
@pytest.mark.slow
def test_paused_probes_see_nothing_until_resumed(probes, pods: Pods) -> None:
    """pause()/resume() (the overhead benchmark's --toggle): detached, then attached again."""
    connect = f"""
        import json, socket
        c = socket.socket()
        try:
            c.connect(("{pods.server_ip}", 18098))
        except ConnectionRefusedError:
            print(json.dumps({{"lport": c.getsockname()[1]}}))
    """
    netns = {pods.client_netns, pods.server_netns}
    drain(probes)
    probes.pause()
    try:
        assert probes.paused
        unseen = pods.run(pods.client, connect)["lport"]
        time.sleep(0.2)
        # (IPv6 neighbour discovery may have dropped a packet before the pause: not TCP)
        unseen_events = [e for e in probes.poll(0) + probes.flush() if e.netns in netns]
        assert not of(unseen_events, ConnectionClosed) and not of(unseen_events, TcpReset)
    finally:
        probes.resume()
    assert not probes.paused
    seen = pods.run(pods.client, connect)["lport"]
    events = collect(probes, netns, lambda ev: bool(of(ev, ConnectionClosed)))
    assert [c.conn.local_port for c in of(events, ConnectionClosed)] == [seen]
    assert unseen != seen


@pytest.mark.privileged
@pytest.mark.slow
def test_nftables_drop(probes, pods: Pods) -> None:
    """Drops through the raw tracepoint skb:kfree_skb, where the kernel's is as expected."""
    assert "raw:kfree_skb" in probes.attached
    _check_nftables_drop(probes, pods, 18443, 15999)


@pytest.mark.privileged
@pytest.mark.slow
def test_nftables_drop_classic_tracepoint(pods: Pods) -> None:
    """The same through the classic tracepoint: the fallback for other raw arguments."""
    from netwarden.bpf.loader import KernelProbes

    with KernelProbes(udp_flush_interval=0.5, drop_hook="tracepoint") as kp:
        assert "skb:kfree_skb" in kp.attached and "raw:kfree_skb" not in kp.attached
        _check_nftables_drop(kp, pods, 18444, 15998)


def _check_nftables_drop(probes, pods: Pods, tcp_port: int, udp_port: int) -> None:
    if shutil.which("nft") is None:
        pytest.fail("nft (nftables) is required for this test")
    drain(probes)
    for cmd in (
        "add table inet nwtest",
        "add chain inet nwtest input { type filter hook input priority 0 ; }",
        f"add rule inet nwtest input tcp dport {tcp_port} drop",
        f"add rule inet nwtest input udp dport {udp_port} drop",
    ):
        _run("ip", "netns", "exec", pods.server, "nft", *cmd.split())
    try:
        _nftables_drops_reported(probes, pods, tcp_port, udp_port)
    finally:
        _run("ip", "netns", "exec", pods.server, "nft", "delete", "table", "inet", "nwtest")


def _nftables_drops_reported(probes, pods: Pods, tcp_port: int, udp_port: int) -> None:
    res = pods.run(
        pods.client,
        f"""
        import json, socket
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.sendto(b"x" * 10, ("{pods.server_ip}", {udp_port}))
        c = socket.socket(); c.settimeout(1.5)
        try:
            c.connect(("{pods.server_ip}", {tcp_port}))
        except (TimeoutError, socket.timeout):
            pass
        print(json.dumps({{"lport": c.getsockname()[1], "uport": u.getsockname()[1]}}))
    """,
    )
    events = collect(
        probes,
        {pods.client_netns, pods.server_netns},
        lambda ev: len(of(ev, PacketDropped, reason="NETFILTER_DROP")) >= 2,
    )
    drops = of(events, PacketDropped, netns=pods.server_netns, reason="NETFILTER_DROP")
    tcp = [d for d in drops if d.protocol == 6]
    udp = [d for d in drops if d.protocol == 17]
    assert tcp and udp, events
    for d, proto, lport, dport in (
        (tcp[0], "TCP", res["lport"], tcp_port),
        (udp[0], "UDP", res["uport"], udp_port),
    ):
        assert d.conn is not None
        assert (
            d.conn.protocol,
            d.conn.family,
            d.conn.local_addr,
            d.conn.local_port,
            d.conn.remote_addr,
            d.conn.remote_port,
        ) == (proto, 4, pods.client_ip, lport, pods.server_ip, dport)
        assert d.reason_code == {v: k for k, v in load_drop_reasons().items()}["NETFILTER_DROP"]
        assert d.location  # the kernel function that dropped it (nf_hook_slow)
    # the client gave up in SYN_SENT: closed, never established, no reset
    closed = of(events, ConnectionClosed, netns=pods.client_netns)
    assert len(closed) == 1 and not closed[0].established and not closed[0].reset
    # the dropped datagram still left the client
    sent = of(events, UdpTraffic, netns=pods.client_netns)
    assert sum(f.datagrams_sent for f in sent if f.conn.remote_port == udp_port) == 1


@pytest.mark.privileged
@pytest.mark.slow
def test_skipped_program_runs_are_read_from_the_kernel(probes) -> None:
    """Runs the kernel skipped (recursion_misses) count as lost: the offsets read in
    struct bpf_prog_info are checked against bpftool, with run statistics briefly on."""
    import ctypes
    import socket

    stats = Path("/proc/sys/kernel/bpf_stats_enabled")
    stats_were = stats.read_text().strip()
    stats.write_text("1")
    try:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        for _ in range(10):
            client = socket.create_connection(listener.getsockname())
            accepted, _ = listener.accept()
            client.close()
            accepted.close()
        listener.close()

        def info(fd: int) -> bytes:
            buf = (ctypes.c_uint8 * 256)()
            size = ctypes.c_uint32(256)
            assert probes._get_info(fd, buf, ctypes.byref(size)) == 0
            return bytes(buf)

        def u64(raw: bytes, offset: int) -> int:
            return int.from_bytes(raw[offset : offset + 8], "little")

        runs = {}
        # other traffic may run the programs meanwhile: before <= what bpftool shows <= after
        for fd in probes._prog_fds:
            before = info(fd)
            prog_id = int.from_bytes(before[4:8], "little")
            shown = json.loads(_run("bpftool", "-j", "prog", "show", "id", str(prog_id)).stdout)
            after = info(fd)
            assert before[64:80].rstrip(b"\0").decode() == shown["name"][:15]  # BPF_OBJ_NAME_LEN
            assert u64(before, 200) <= shown.get("run_cnt", 0) <= u64(after, 200)
            assert u64(before, 208) <= shown.get("recursion_misses", 0) <= u64(after, 208)
            runs[shown["name"][:15]] = u64(after, 200)
        assert runs["on_set_state"] >= 10 * 10  # ten state changes per connection
    finally:
        stats.write_text(stats_were)
    probes.flush()  # reads the programs' counts (poll does once an interval)
    assert probes.counters["program_misses"] == 0  # nothing preempted a probe here


@pytest.mark.privileged
@pytest.mark.slow
def test_tcp_retransmits(probes, pods: Pods) -> None:
    """The client's firewall drops every third large segment from the server: the server's
    connection reports retransmits, each drop is reported in the client's namespace."""
    drain(probes)
    port, send, reply = 18082, 1_000, 300_000
    for cmd in (
        "add table inet nwtest",
        "add chain inet nwtest input { type filter hook input priority 0 ; }",
        (
            f"add rule inet nwtest input tcp sport {port} meta length > 1000 "
            "numgen inc mod 3 == 0 drop"
        ),
    ):
        _run("ip", "netns", "exec", pods.client, "nft", *cmd.split())
    server = pods.spawn(
        pods.server,
        TCP_SERVER.format(fam="AF_INET", ip=pods.server_ip, port=port, expect=send, reply=reply),
    )
    assert json.loads(server.stdout.readline())["ready"]
    client = pods.run(
        pods.client,
        TCP_CLIENT.format(ip=pods.server_ip, port=port, send=send, reply=reply),
        timeout=60,
    )
    server.communicate(timeout=60)
    assert client["got"] == reply
    events = collect(
        probes,
        {pods.client_netns, pods.server_netns},
        lambda ev: len(of(ev, ConnectionClosed)) >= 2,
    )
    closed = of(events, ConnectionClosed, netns=pods.server_netns)
    assert len(closed) == 1
    assert closed[0].retransmits > 0 and closed[0].bytes_sent == reply
    assert of(events, ConnectionClosed, netns=pods.client_netns)[0].bytes_received == reply
    drops = of(events, PacketDropped, netns=pods.client_netns, reason="NETFILTER_DROP")
    assert drops and all(
        d.conn is not None
        and d.conn.local_addr == pods.server_ip
        and d.conn.local_port == port
        and d.conn.remote_port == client["lport"]
        for d in drops
    )


@pytest.mark.privileged
@pytest.mark.slow
def test_tcp_bytes_from_btf_and_lost_events_counted(pods: Pods) -> None:
    """The fallback for kernels without sock_*_length, and a ring buffer too small to keep
    up: losses are counted, never silent."""
    from netwarden.bpf.loader import KernelProbes

    with KernelProbes(tcp_bytes="btf", ring_pages=1, closed_slots=64) as kp:
        assert kp.tcp_bytes_source == "btf"
        server = pods.spawn(
            pods.server,
            TCP_SERVER.format(
                fam="AF_INET", ip=pods.server_ip, port=18081, expect=30_000, reply=700
            ),
        )
        assert json.loads(server.stdout.readline())["ready"]
        pods.run(
            pods.client, TCP_CLIENT.format(ip=pods.server_ip, port=18081, send=30_000, reply=700)
        )
        server.communicate(timeout=30)
        events = collect(kp, {pods.client_netns}, lambda ev: bool(of(ev, ConnectionClosed)))
        closed = of(events, ConnectionClosed, netns=pods.client_netns)
        assert len(closed) == 1
        # tcp_sock counts the SYN and FIN sequence numbers too
        assert 30_000 <= closed[0].bytes_sent <= 30_002
        assert 700 <= closed[0].bytes_received <= 702
        # 200 closed sockets, 64 slots per CPU for them, and nobody reading them
        pods.run(
            pods.client,
            """
            import json, socket
            s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(512)
            for _ in range(100):
                c = socket.create_connection(s.getsockname()); a, _ = s.accept()
                c.close(); a.close()
            print(json.dumps({}))
        """,
        )
        time.sleep(0.2)
        assert kp.closed_waiting()  # so poll() will not sleep before reading them
        closed = of(kp.poll(0), ConnectionClosed)
        assert not kp.closed_waiting()
        overwritten = kp.counters["closed_overwritten"]
        assert overwritten > 0 and kp.stats.lost == overwritten
        assert len(closed) + overwritten == 200  # each close either reported or counted
        assert len(closed) <= 64 * os.cpu_count()
        # 3 records per refused connection (a drop, a reset sent, one received), a 4 KiB ring
        # (39 records) and nobody reading it
        pods.run(
            pods.client,
            """
            import json, socket
            s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port))
                except ConnectionRefusedError:
                    pass
            print(json.dumps({}))
        """,
        )
        time.sleep(0.2)
        kp.poll(0)
        assert kp.counters["output_failed"] > 0
        assert kp.stats.lost == kp.counters["closed_overwritten"] + kp.counters["output_failed"]


@pytest.mark.privileged
@pytest.mark.slow
def test_perf_buffer_fallback(pods: Pods) -> None:
    """Kernels before 5.8 have no BPF ring buffer: the same records through a perf buffer."""
    from netwarden.bpf.loader import KernelProbes

    with KernelProbes(use_ringbuf=False) as kp:
        assert not kp.ringbuf
        res = pods.run(
            pods.client,
            """
            import json, socket
            s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
            c = socket.create_connection(s.getsockname()); a, _ = s.accept()
            c.sendall(b"p" * 1234); a.recv(4096); c.close(); a.close()
            print(json.dumps({"port": s.getsockname()[1]}))
        """,
        )
        events = collect(kp, {pods.client_netns}, lambda ev: len(of(ev, ConnectionClosed)) >= 2)
        closed = of(events, ConnectionClosed)
        assert sorted(c.role for c in closed) == ["client", "server"]
        client = next(c for c in closed if c.role == "client")
        assert client.bytes_sent == 1234 and client.conn.remote_port == res["port"]
        assert kp.stats.lost == 0


# ---- no traffic needed -------------------------------------------------------------------------


@pytest.mark.privileged
@pytest.mark.slow
def test_drop_reasons_match_the_running_kernel() -> None:
    _skip_unless_root()
    root = find_tracefs()
    assert root is not None
    text = (root / "events/skb/kfree_skb/format").read_text()
    table = load_drop_reasons(root)
    fmt = text[text.index("print fmt:") :]
    pairs = re.findall(
        r"\{\s*(\d+)\s*,\s*\"(\w+)\"\s*\}", fmt[fmt.index("__print_symbolic(REC->reason") :]
    )
    assert table == {int(n): name for n, name in pairs}
    assert {"NETFILTER_DROP", "NO_SOCKET", "NOT_SPECIFIED"} <= set(table.values())


def test_drop_reason_parsing() -> None:
    text = textwrap.dedent("""\
        name: kfree_skb
        ID: 1
        format:
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
        \tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
        \tfield:enum skb_drop_reason reason;\toffset:36;\tsize:4;\tsigned:0;

        print fmt: "skbaddr=%p reason: %s", REC->skbaddr, __print_symbolic(REC->reason, \
{ 2, "NOT_SPECIFIED" }, { 3, "NO_SOCKET" }, { 0x0c, "NETFILTER_DROP" }, \
{ SKB_DROP_REASON_X, "UNRESOLVED" })
        """)
    table = parse_drop_reasons(text)
    assert table == {2: "NOT_SPECIFIED", 3: "NO_SOCKET", 12: "NETFILTER_DROP"}
    assert reason_name(12, table) == "NETFILTER_DROP" and reason_name(99, table) == "REASON_99"
    fmt = TracepointFormat.parse(text)
    assert fmt.fields["reason"].offset == 36 and fmt.fields["skbaddr"].size == 8


def test_tracepoint_struct_layout() -> None:
    from netwarden.bpf.loader import tracepoint_struct

    fmt = TracepointFormat.parse(
        textwrap.dedent("""\
        name: x
        ID: 1
        format:
        \tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
        \tfield:int ret;\toffset:20;\tsize:4;\tsigned:1;
        \tfield:__u8 saddr[4];\toffset:24;\tsize:4;\tsigned:0;
        \tfield:enum sk_rst_reason reason;\toffset:28;\tsize:4;\tsigned:0;
        """)
    )
    c = tracepoint_struct("tp_x", fmt, ["skaddr", "ret", "saddr", "reason", "absent"])
    assert "u64 skaddr;" in c and "s32 ret;" in c and "u8 saddr[4];" in c
    assert "u32 reason;" in c and "enum" not in c and "u8 __pad1[4];" in c
    assert "__builtin_offsetof(struct tp_x, reason) == 28" in c


@pytest.mark.slow
def test_btf_offsets_match_bpftool() -> None:
    if not btfmod.DEFAULT_BTF.exists():
        pytest.skip("no kernel BTF")
    if shutil.which("bpftool") is None:
        pytest.skip("bpftool is not installed")
    dump = subprocess.run(
        ["bpftool", "btf", "dump", "file", str(btfmod.DEFAULT_BTF)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    b = btfmod.load()
    for struct_name in ("sock_common", "sk_buff", "net"):
        m = re.search(
            rf"^\[\d+\] STRUCT '{struct_name}' size=(\d+) vlen=(\d+)\n"
            rf"((?:\t.*\n)+)",
            dump,
            re.MULTILINE,
        )
        assert m, struct_name
        assert b.sizeof(struct_name) == int(m.group(1))
        theirs = [
            (name, int(bits))
            for name, bits in re.findall(
                r"^\t'([^']*)' type_id=\d+ bits_offset=(\d+)", m.group(3), re.MULTILINE
            )
        ]
        ours = [(mem.name or "(anon)", mem.bit_offset) for mem in b.members(struct_name)]
        assert ours == theirs and len(ours) == int(m.group(2))
    # paths through anonymous unions and nested structs
    assert b.offset_of("sock_common", "skc_dport") == b.offset_of("sock_common", "skc_portpair")
    assert b.offset_of("sock_common", "skc_net.net") == b.offset_of("sock_common", "skc_net")
    with pytest.raises(btfmod.BtfError, match="no member"):
        b.offset_of("sock_common", "no_such_member")
    assert b.raw_tracepoint_args("inet_sock_set_state") == ["struct sock *", "int", "int"]


def test_btf_missing_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(btfmod.BtfError, match="CONFIG_DEBUG_INFO_BTF"):
        btfmod.load(tmp_path / "vmlinux")
    (tmp_path / "junk").write_bytes(b"\0" * 64)
    with pytest.raises(btfmod.BtfError, match="not BTF"):
        btfmod.load(tmp_path / "junk")


def _check(**kw: object) -> preflight.AgentUnavailable:
    args = {"euid": 0, "caps": ALL_CAPS, **kw}
    with pytest.raises(preflight.AgentUnavailable) as exc:
        preflight.check(**args)
    return exc.value


def test_preflight_not_root() -> None:
    err = _check(euid=1000, caps=0)
    assert len(err.problems) == 1 and "needs root" in str(err)
    assert "\n" not in str(err)


def test_preflight_missing_pieces(tmp_path: Path) -> None:
    err = _check(
        btf_path=tmp_path / "vmlinux",
        modules_dir=tmp_path,
        kheaders=tmp_path / "kheaders.tar.xz",
        tracefs_candidates=(tmp_path / "t",),
        mount_tracefs=False,
        bcc_module="netwarden_no_such_bcc",
        release="9.9.9",
    )
    text = str(err)
    assert len(err.problems) == 4, text
    assert all("\n" not in p for p in err.problems)
    assert "BTF" in text and "CONFIG_DEBUG_INFO_BTF" in text
    assert f"{tmp_path}/9.9.9/build" in text and "linux-headers" in text
    assert "tracefs is not mounted" in text and "mount -t tracefs" in text
    assert "python3-bpfcc" in text and "unrelated" in text


def test_preflight_wrong_bcc_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "fakebcc.py").write_text("'''not BCC'''\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    err = _check(bcc_module="fakebcc", tracefs_candidates=(tmp_path / "t",), mount_tracefs=False)
    assert any("is not BCC" in p for p in err.problems), err.problems


def test_preflight_missing_tracepoint(tmp_path: Path) -> None:
    """A kernel without skb:kfree_skb's reason (older than 5.17) and without sock:*."""
    events = tmp_path / "events"
    (events / "skb/kfree_skb").mkdir(parents=True)
    (events / "skb/kfree_skb/format").write_text(
        "name: kfree_skb\nID: 1\nformat:\n"
        '\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;\n\nprint fmt: ""\n'
    )
    err = _check(tracefs_candidates=(tmp_path,), mount_tracefs=False, bcc_module="json")
    text = str(err)
    assert "sock:inet_sock_set_state" in text and "Linux >= 4.16" in text
    assert "skb:kfree_skb lacks field(s) location, protocol, reason" in text


def test_preflight_raw_tracepoint_arguments() -> None:
    """A raw tracepoint has no format file: its argument types come from BTF, and a kernel
    whose hooks take other arguments is refused; optional ones may be absent."""

    class FakeBtf:
        def __init__(self, args: dict[str, list[str]]) -> None:
            self.args = args

        def raw_tracepoint_args(self, name: str) -> list[str]:
            if name not in self.args:
                raise btfmod.BtfError(f"no btf_trace_{name}")
            return self.args[name]

    good = {
        "inet_sock_set_state": ["struct sock *", "int", "int"],
        "sock_send_length": ["struct sock *", "int", "int"],
        "sock_recv_length": ["struct sock *", "int", "int"],
    }
    assert preflight._check_raw_args(FakeBtf(good)) == []
    # kernels before 6.3 have no sock_*_length: not a problem
    assert (
        preflight._check_raw_args(FakeBtf({"inet_sock_set_state": good["inet_sock_set_state"]}))
        == []
    )
    changed = {**good, "inet_sock_set_state": ["struct sock *", "unsigned int"]}
    (problem,) = preflight._check_raw_args(FakeBtf(changed))
    assert "inet_sock_set_state has arguments (struct sock *, unsigned int)" in problem
    (problem,) = preflight._check_raw_args(FakeBtf({}))
    assert "btf_trace_inet_sock_set_state" in problem
