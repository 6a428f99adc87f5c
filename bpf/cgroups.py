"""cgroup v2 ids and paths, and what a path says about the container and pod behind it.

The probes report ``bpf_get_current_cgroup_id()``: the id of the task's cgroup in the unified
(v2) hierarchy, which is the inode number of that cgroup's directory in cgroupfs (kernfs, 64-bit
kernels). The path of that directory is what names the pod: the kubelet puts every container in
``.../kubepods[-<qos>]-pod<uid>.slice/<runtime>-<container id>.scope`` (systemd driver) or
``/kubepods/<qos>/pod<uid>/<container id>`` (cgroupfs driver). So identity resolution needs
id -> path (:class:`CgroupPaths`, a walk of the hierarchy cached by id) and path -> pod UID
(:func:`parse_cgroup_path`). Processes seen by pid instead go through ``/proc/PID/cgroup``
(:func:`pid_cgroup_path`).

Paths are relative to the cgroup2 mount point (``/`` is the root cgroup), as ``/proc/PID/cgroup``
shows them to a process in the root cgroup namespace (the agent runs with the host's).
On hybrid hosts (v1 controllers, v2 at ``/sys/fs/cgroup/unified``) the v2 mount is found through
``/proc/self/mountinfo``; ``bpf_get_current_cgroup_id()`` reports that hierarchy there too.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

__all__ = [
    "CgroupPaths",
    "ContainerRef",
    "find_cgroup2_mount",
    "parse_cgroup_path",
    "pid_cgroup_path",
]

log = logging.getLogger(__name__)

Runtime = Literal["containerd", "crio", "docker", "podman", ""]
QosClass = Literal["guaranteed", "burstable", "besteffort"]

_UUID: Final = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"
# Static pods are named by the 32-hex hash of their manifest instead of a UUID.
_POD: Final = re.compile(rf"^(?:.*-)?pod(?P<uid>{_UUID}|[0-9a-f]{{32}})(?:\.slice)?$")
_CONTAINER: Final = re.compile(
    r"^(?:(?P<prefix>cri-containerd|crio|cri-o|docker|libpod)-)?(?P<id>[0-9a-f]{64})(?:\.scope)?$"
)
_RUNTIMES: Final[dict[str | None, Runtime]] = {
    "cri-containerd": "containerd", "crio": "crio", "cri-o": "crio", "docker": "docker",
    "libpod": "podman", None: "",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ContainerRef:
    """What a cgroup path names: a container, a pod, or both.

    ``pod_uid`` is written with dashes, as in ``metadata.uid`` (for a static pod: the hash the
    kubelet uses, which the mirror pod carries in its ``kubernetes.io/config.mirror``
    annotation). ``runtime`` is "" when the path does not say (cgroupfs driver).
    """

    container_id: str | None
    pod_uid: str | None
    runtime: Runtime
    qos: QosClass | None


def parse_cgroup_path(path: str) -> ContainerRef | None:
    """The container and pod a cgroup path belongs to, or None for a non-container cgroup.

    ``/kubepods/besteffort/pod<uid>/<64 hex>`` gives that container id, that pod UID and QoS
    class besteffort; a path below the container (a nested cgroup it made) gives the same.
    """
    parts = [p for p in path.split("/") if p]
    pod_at = None
    for i, part in enumerate(parts):
        if (m := _POD.match(part)) and any("kubepods" in p for p in parts[:i]):
            pod_at, uid = i, m["uid"].replace("_", "-")
            break
    if pod_at is None:
        # A container outside Kubernetes (docker run, podman): the last container-looking part.
        for i in range(len(parts) - 1, -1, -1):
            if not (c := _CONTAINER.match(parts[i])):
                continue
            if c["prefix"]:
                return ContainerRef(c["id"], None, _RUNTIMES[c["prefix"]], None)
            if i and parts[i - 1] == "docker":  # docker's cgroupfs driver: /docker/<id>
                return ContainerRef(c["id"], None, "docker", None)
        return None
    container_id, runtime = None, ""
    if pod_at + 1 < len(parts) and (c := _CONTAINER.match(parts[pod_at + 1])):
        container_id, runtime = c["id"], _RUNTIMES[c["prefix"]]
    return ContainerRef(container_id, uid, runtime, _qos(parts[pod_at - 1]))


def _qos(parent: str) -> QosClass:
    """Guaranteed pods sit directly under kubepods; the others under a QoS-class level."""
    name = parent.removesuffix(".slice")
    if name.endswith("burstable"):
        return "burstable"
    if name.endswith("besteffort"):
        return "besteffort"
    return "guaranteed"


def pid_cgroup_path(pid: int, proc: str | Path = "/proc") -> str | None:
    """The v2 cgroup path of a process (the ``0::`` line of /proc/PID/cgroup), or None.

    None when the process is gone or the host has no unified hierarchy.
    """
    try:
        text = Path(proc, str(pid), "cgroup").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    for line in text.splitlines():
        if line.startswith("0::"):
            # A cgroup removed while the process lives on reads "/path (deleted)".
            return line[3:].removesuffix(" (deleted)") or "/"
    return None


def find_cgroup2_mount(mountinfo: str | Path = "/proc/self/mountinfo") -> Path | None:
    """Where the cgroup v2 hierarchy is mounted: /sys/fs/cgroup if it is v2, else the first
    cgroup2 mount (``/sys/fs/cgroup/unified`` on hybrid hosts), else None (v1 only)."""
    try:
        lines = Path(mountinfo).read_text().splitlines()
    except OSError:
        return None
    found: list[str] = []
    for line in lines:
        # "<id> <parent> <maj:min> <root> <mount point> <options> <optional...> - <fstype> ..."
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if sep and right.split()[:1] == ["cgroup2"] and len(fields) >= 5:
            found.append(_unescape(fields[4]))
    if "/sys/fs/cgroup" in found:
        return Path("/sys/fs/cgroup")
    return Path(found[0]) if found else None


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


class CgroupPaths:
    """cgroup id -> path, from a walk of the v2 hierarchy, rescanned when an id is not known.

    Rescans are rate-limited (``min_rescan_interval``), so a burst of events from a cgroup
    that is already gone costs one walk, not one per event; an id still unknown after the
    latest walk is answered None until the next one is allowed. A walk records at most
    ``max_entries`` cgroups (a node has a few thousand), which bounds memory.
    """

    def __init__(self, root: str | Path | None = None, *, max_entries: int = 1 << 17,
                 min_rescan_interval: float = 0.5,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        resolved = Path(root) if root is not None else find_cgroup2_mount()
        if resolved is None:
            raise FileNotFoundError("no cgroup v2 hierarchy is mounted (see /proc/self/mountinfo)")
        self.root = resolved
        self.max_entries = max_entries
        self.min_rescan_interval = min_rescan_interval
        self._clock = clock
        self._paths: dict[int, str] = {}
        self._last_scan: float | None = None
        self.scans = 0
        self.truncated = False  # the last walk stopped at max_entries

    def path(self, cgroup_id: int) -> str | None:
        """The path of a cgroup id, or None when no cgroup has it (any more)."""
        if not cgroup_id:
            return None
        found = self._paths.get(cgroup_id)
        if found is None and self._may_rescan():
            self.rescan()
            found = self._paths.get(cgroup_id)
        return found

    def id_of(self, path: str) -> int | None:
        """The id of a cgroup path (the inode of its directory), or None when it does not exist."""
        try:
            return os.stat(self.root / path.lstrip("/")).st_ino
        except (FileNotFoundError, NotADirectoryError):
            return None

    def rescan(self) -> int:
        """Walk the hierarchy again (forgetting removed cgroups); returns the number recorded."""
        paths: dict[int, str] = {os.stat(self.root).st_ino: "/"}
        stack = [(str(self.root), "")]
        truncated = False
        while stack and not truncated:
            directory, rel = stack.pop()
            try:
                entries = list(os.scandir(directory))
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                continue  # removed or unreadable while walking
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                if len(paths) >= self.max_entries:
                    truncated = True
                    break
                child = f"{rel}/{entry.name}"
                # kernfs reports the node id as d_ino: no stat per cgroup needed
                paths[entry.inode()] = child
                stack.append((entry.path, child))
        if truncated and not self.truncated:
            log.warning(
                "cgroup walk of %s stopped at %d cgroups (max_entries)", self.root, self.max_entries
            )
        self.truncated = truncated
        self._paths = paths
        self._last_scan = self._clock()
        self.scans += 1
        return len(paths)

    def _may_rescan(self) -> bool:
        return (
            self._last_scan is None or self._clock() - self._last_scan >= self.min_rescan_interval
        )
