"""Checks before the kernel probes are loaded, each failure one actionable line.

Why: a bcc compile or attach failure surfaces as a clang error page or an ``EPERM`` deep inside
bcc; an operator needs "run as root" or "install the kernel headers" instead. Everything the
loader depends on is checked here first: privileges, the kernel's BTF (struct offsets come from
it), kernel headers (bcc's compile environment only, never struct layouts), a mounted tracefs
(mounted here when absent and we are root), an importable BCC (Debian's ``python3-bpfcc``; the
PyPI package named ``bcc`` is an unrelated library), and the tracepoints with the fields the
probes read (from their format files).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

from .btf import DEFAULT_BTF, Btf, BtfError, load_cached
from .dropreasons import DEFAULT_TRACEFS, TracepointFormat, find_tracefs

__all__ = [
    "BTF_MEMBERS",
    "OPTIONAL_TRACEPOINTS",
    "RAW_TRACEPOINT_ARGS",
    "REQUIRED_TRACEPOINTS",
    "AgentUnavailable",
    "Environment",
    "check",
    "privileged",
]

_CAP_SYS_ADMIN, _CAP_PERFMON, _CAP_BPF = 21, 38, 39

#: (system, event): (fields the probes read, the kernel that introduced them)
REQUIRED_TRACEPOINTS: dict[tuple[str, str], tuple[tuple[str, ...], str]] = {
    ("sock", "inet_sock_set_state"): (("skaddr", "oldstate", "newstate"), "4.16"),
    ("tcp", "tcp_retransmit_skb"): (("skaddr",), "4.15"),
    ("tcp", "tcp_receive_reset"): (
        ("skaddr", "sport", "dport", "family", "saddr", "daddr", "saddr_v6", "daddr_v6"),
        "4.15",
    ),
    ("tcp", "tcp_send_reset"): (("skbaddr", "skaddr", "saddr", "daddr"), "4.15"),
    ("skb", "kfree_skb"): (("skbaddr", "location", "protocol", "reason"), "5.17"),
}
#: Optional: without them the loader degrades and says how (Environment.missing_optional).
OPTIONAL_TRACEPOINTS: dict[tuple[str, str], tuple[tuple[str, ...], str]] = {
    ("sock", "sock_send_length"): (("sk", "family", "protocol", "ret", "flags"), "6.3"),
    ("sock", "sock_recv_length"): (("sk", "family", "protocol", "ret", "flags"), "6.3"),
}
#: Raw tracepoints the probes attach to -> the argument types they expect (checked against the
#: kernel's ``btf_trace_<name>`` typedef: a raw tracepoint has no format file to tell them).
#: Those of OPTIONAL_TRACEPOINTS are checked only where the kernel has them.
RAW_TRACEPOINT_ARGS: dict[str, tuple[str, ...]] = {
    "inet_sock_set_state": ("struct sock *", "int", "int"),
    "sock_send_length": ("struct sock *", "int", "int"),
    "sock_recv_length": ("struct sock *", "int", "int"),
}
#: Struct members read with bpf_probe_read_kernel at offsets from BTF.
BTF_MEMBERS: tuple[tuple[str, str], ...] = (
    ("sock_common", "skc_net.net"),
    ("sock_common", "skc_daddr"),
    ("sock_common", "skc_rcv_saddr"),
    ("sock_common", "skc_dport"),
    ("sock_common", "skc_num"),
    ("sock_common", "skc_family"),
    ("sock_common", "skc_v6_daddr"),
    ("sock_common", "skc_v6_rcv_saddr"),
    ("sock", "sk_protocol"),
    ("net", "ns.inum"),
    ("net_device", "nd_net.net"),
    ("sk_buff", "head"),
    ("sk_buff", "network_header"),
    ("sk_buff", "transport_header"),
    ("sk_buff", "dev"),
    ("sk_buff", "sk"),
    ("tcp_sock", "bytes_acked"),
    ("tcp_sock", "bytes_received"),
)


class AgentUnavailable(RuntimeError):
    """The kernel probes cannot run here; ``problems`` holds one actionable line each."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = tuple([problems] if isinstance(problems, str) else problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class Environment:
    """What the checks found, for the loader."""

    kernel_release: str
    tracefs: Path
    btf: Btf
    headers: Path | None  # None when bcc will use /sys/kernel/kheaders.tar.xz
    ringbuf: bool
    formats: dict[tuple[str, str], TracepointFormat] = field(default_factory=dict)
    missing_optional: tuple[str, ...] = ()


def _cap_eff() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def _initial_userns() -> bool:
    """Capabilities count for BPF only in the host's user namespace (uid_map 0 0 4294967295)."""
    try:
        return Path("/proc/self/uid_map").read_text().split() == ["0", "0", "4294967295"]
    except OSError:
        return True


def _privileged(caps: int) -> bool:
    """Loading tracing programs needs CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON (5.8+)."""

    def has(c: int) -> bool:
        return bool(caps >> c & 1)

    return has(_CAP_SYS_ADMIN) or (has(_CAP_BPF) and has(_CAP_PERFMON))


def _mount_tracefs(target: Path) -> str | None:
    """Mount tracefs at ``target``; an error text, or None on success."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.mount(b"nodev", str(target).encode(), b"tracefs", 0, None) != 0:
        return os.strerror(ctypes.get_errno())
    return None


def _check_tracepoints(
    root: Path,
    table: dict[tuple[str, str], tuple[tuple[str, ...], str]],
    formats: dict[tuple[str, str], TracepointFormat],
) -> list[str]:
    missing = []
    for (system, event), (fields, since) in table.items():
        try:
            fmt = TracepointFormat.read(system, event, root)
        except OSError:
            missing.append(
                f"the kernel has no tracepoint {system}:{event} (Linux >= {since}; "
                f"not in {root}/events)"
            )
            continue
        absent = [f for f in fields if f not in fmt.fields]
        if absent:
            missing.append(
                f"tracepoint {system}:{event} lacks field(s) {', '.join(absent)} "
                f"(expected since Linux {since})"
            )
            continue
        formats[(system, event)] = fmt
    return missing


def privileged() -> bool:
    """Whether this process may load tracing BPF programs (root in the host's user namespace,
    or CAP_BPF with CAP_PERFMON)."""
    return _initial_userns() and _privileged(_cap_eff())


def _check_raw_args(btf: Btf) -> list[str]:
    """One problem per raw tracepoint whose arguments are not what probes.c reads."""
    optional = {event for _, event in OPTIONAL_TRACEPOINTS}
    problems = []
    for name, want in RAW_TRACEPOINT_ARGS.items():
        try:
            args = btf.raw_tracepoint_args(name)
        except BtfError as exc:
            if name not in optional:
                problems.append(str(exc))
            continue
        if tuple(args[: len(want)]) != want:
            problems.append(
                f"raw tracepoint {name} has arguments ({', '.join(args)}), expected "
                f"({', '.join(want)}): this kernel is not supported"
            )
    return problems


def _require_privileges(euid: int | None, caps: int | None) -> None:
    """Stop at once without privileges: every other check needs them even to look (tracefs is
    root-only), so their failures would only hide this one."""
    euid = os.geteuid() if euid is None else euid
    if caps is None:
        caps = _cap_eff() if _initial_userns() else 0
    if not _privileged(caps):
        who = (
            "root without CAP_SYS_ADMIN in the host's user namespace"
            if euid == 0
            else f"uid {euid}"
        )
        raise AgentUnavailable(
            f"the eBPF agent needs root (or CAP_BPF and CAP_PERFMON), running as {who}: run it "
            "with sudo, or in Kubernetes as a privileged DaemonSet (securityContext.privileged: "
            "true)"
        )


def _check_btf(btf_path: Path) -> tuple[Btf | None, list[str]]:
    """The kernel's BTF, where struct offsets come from, with every member and raw tracepoint
    the probes read looked up in it; and what is missing."""
    problems: list[str] = []
    btf: Btf | None = None
    try:
        btf = load_cached(btf_path)
        for struct_name, path in BTF_MEMBERS:
            btf.member(struct_name, path)
    except BtfError as exc:
        problems.append(str(exc))
    if btf is not None:
        problems += _check_raw_args(btf)
    return btf, problems


def _check_headers(build: Path, kheaders: Path, release: str) -> tuple[Path | None, list[str]]:
    """The kernel headers bcc compiles with (None: bcc uses the kheaders module's archive),
    and the problem when there are neither."""
    if (build / "include").is_dir():
        return build, []
    if kheaders.exists():
        return None, []
    return None, [
        f"kernel headers for bcc not found at {build}: install them (Debian: apt-get "
        f"install linux-headers-{release} or linux-headers-amd64 and link its build "
        f"directory there), or load the kheaders module (modprobe kheaders); they are "
        f"bcc's compile environment only, struct layouts come from BTF"
    ]


def _check_tracefs(
    tracefs_candidates: tuple[Path, ...], mount_tracefs: bool
) -> tuple[Path | None, list[str]]:
    """Where tracefs is (mounted at the first candidate if it is nowhere and we may), and the
    problem when it is not mounted: the tracepoints' format files are read from it."""
    root = find_tracefs(tracefs_candidates)
    if root is None and mount_tracefs and tracefs_candidates:
        target = tracefs_candidates[0]
        err = _mount_tracefs(target)
        root = find_tracefs(tracefs_candidates)
        if root is None:
            return None, [
                f"tracefs is not mounted and mounting it at {target} failed "
                f"({err or 'no events directory'}): mount -t tracefs nodev {target}"
            ]
    elif root is None:
        return None, [
            f"tracefs is not mounted (looked in "
            f"{', '.join(map(str, tracefs_candidates))}): "
            f"mount -t tracefs nodev /sys/kernel/tracing"
        ]
    return root, []


def _check_bcc(bcc_module: str) -> list[str]:
    """Whether BCC is importable, and is BCC (the PyPI package named ``bcc`` is not)."""
    try:
        mod = importlib.import_module(bcc_module)
        if not hasattr(mod, "BPF"):
            return [
                f"the python module {bcc_module!r} at "
                f"{getattr(mod, '__file__', '?')} is not BCC (the PyPI package "
                f"named 'bcc' is unrelated): pip uninstall bcc, then apt-get "
                f"install python3-bpfcc"
            ]
    except Exception as exc:
        return [
            f"BCC is not importable ({type(exc).__name__}: {exc}): install Debian's "
            f"python3-bpfcc (apt-get install python3-bpfcc) and make "
            f"/usr/lib/python3/dist-packages/bcc visible to this interpreter "
            f"(never 'pip install bcc': that is an unrelated package)"
        ]
    return []


def check(
    *,
    btf_path: Path = DEFAULT_BTF,
    tracefs_candidates: tuple[Path, ...] = DEFAULT_TRACEFS,
    modules_dir: Path = Path("/lib/modules"),
    kheaders: Path = Path("/sys/kernel/kheaders.tar.xz"),
    release: str | None = None,
    euid: int | None = None,
    caps: int | None = None,
    mount_tracefs: bool = True,
    bcc_module: str = "bcc",
) -> Environment:
    """Run every check; raise :class:`AgentUnavailable` listing all failures.

    The keyword arguments exist so tests can point a check elsewhere (a missing BTF file,
    an empty tracefs, another uid) without changing the machine.
    """
    release = release or platform.release()
    _require_privileges(euid, caps)
    btf, problems = _check_btf(btf_path)
    headers, found = _check_headers(modules_dir / release / "build", kheaders, release)
    problems += found
    root, found = _check_tracefs(tracefs_candidates, mount_tracefs)
    problems += found
    problems += _check_bcc(bcc_module)
    formats: dict[tuple[str, str], TracepointFormat] = {}
    missing_optional: list[str] = []
    if root is not None:
        problems += _check_tracepoints(root, REQUIRED_TRACEPOINTS, formats)
        missing_optional = _check_tracepoints(root, OPTIONAL_TRACEPOINTS, formats)

    if problems:
        raise AgentUnavailable(problems)
    assert btf is not None and root is not None
    ringbuf = btf.has_member("bpf_ringbuf", "consumer_pos")  # BPF ring buffer: Linux >= 5.8
    return Environment(release, root, btf, headers, ringbuf, formats, tuple(missing_optional))
