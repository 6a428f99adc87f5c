"""Filling in the local address of UDP sockets bound to none (bpf/localaddr.py)."""

from __future__ import annotations

from pathlib import Path

from netwarden.bpf.localaddr import LocalAddresses, closest

FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 5
     +-- 10.1.2.0/24 2 0 2
        |-- 10.1.2.7
           /32 host LOCAL
     +-- 10.9.0.0/24 2 0 2
        |-- 10.9.0.7
           /32 host LOCAL
     |-- 127.0.0.1
        /32 host LOCAL
Local:
"""
IF_INET6 = (
    "fd000000000000000000000000000007 02 40 00 80     eth0\n"
    "fe800000000000000000000000000007 02 40 20 80     eth0\n"
    "00000000000000000000000000000001 01 80 10 80       lo\n"
)


def _proc(tmp_path: Path, pid: int, fib: str = FIB_TRIE, inet6: str = IF_INET6) -> Path:
    net = tmp_path / str(pid) / "net"
    net.mkdir(parents=True)
    (net / "fib_trie").write_text(fib)
    (net / "if_inet6").write_text(inet6)
    return tmp_path


def test_closest_takes_the_peers_subnet_and_refuses_ties() -> None:
    both = frozenset({"10.1.2.7", "10.9.0.7", "fd00::7"})
    assert closest(both, "10.1.2.200") == "10.1.2.7"
    assert closest(both, "10.9.0.1") == "10.9.0.7"
    assert closest(both, "fd00::1") == "fd00::7"
    assert closest(frozenset({"10.1.2.7"}), "8.8.8.8") == "10.1.2.7"  # the only one
    assert closest(frozenset({"10.0.0.4", "10.0.0.5"}), "10.0.0.0") is None  # 29 bits each
    assert closest(frozenset({"fd00::7"}), "10.1.2.1") is None  # no address of that family


def test_fill_only_touches_unspecified_addresses(tmp_path: Path) -> None:
    la = LocalAddresses(proc=_proc(tmp_path, 42), run_netns=tmp_path / "none")
    assert la.fill("10.5.5.5", 4, "10.1.2.1", netns=1, pid=42) == "10.5.5.5"
    assert la.fill("0.0.0.0", 4, "10.1.2.1", netns=1, pid=42) == "10.1.2.7"
    assert la.fill("::", 6, "fd00::99", netns=1, pid=42) == "fd00::7"
    assert la.fill("0.0.0.0", 4, "127.0.0.9", netns=1, pid=42) == "127.0.0.1"
    assert la.fill("::", 6, "::1", netns=1, pid=42) == "::1"
    # the peer unknown too (recv() without an address): nothing to go by
    assert la.fill("0.0.0.0", 4, "0.0.0.0", netns=1, pid=42) == "0.0.0.0"
    # no process: nothing to read
    assert la.fill("0.0.0.0", 4, "10.1.2.1", netns=2, pid=0) == "0.0.0.0"


def test_fill_keeps_a_namespace_after_its_process_is_gone(tmp_path: Path) -> None:
    now = [0.0]
    proc = _proc(tmp_path, 42)
    la = LocalAddresses(proc=proc, run_netns=tmp_path / "none", ttl=5, clock=lambda: now[0])
    assert la.fill("0.0.0.0", 4, "10.9.0.1", netns=7, pid=42) == "10.9.0.7"
    for f in (proc / "42" / "net").iterdir():
        f.unlink()
    now[0] = 10.0  # expired, the process gone: what we knew stays
    assert la.fill("0.0.0.0", 4, "10.9.0.1", netns=7, pid=42) == "10.9.0.7"
    # another namespace we never saw: unspecified stays
    assert la.fill("0.0.0.0", 4, "10.9.0.1", netns=8, pid=43) == "0.0.0.0"
