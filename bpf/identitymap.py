"""The identity map: who the endpoints are on hosts without Kubernetes, and in tests.

Without a pod watch the agent only knows network namespaces, cgroups and addresses. The map
names them, so flows carry a namespace, a pod name, labels and a workload as if Kubernetes had
been there, and windows, baselines and proposed policies work unchanged. With Kubernetes it
fills gaps (a VM, a systemd service on the node, an external database by address).

Format (YAML)::

    entries:
      - name: web-blue            # optional; names the entry in errors
        netns: blue               # a name under /run/netns, or a namespace inode (4026532177)
        namespace: shop           # required: Kubernetes namespace rules (DNS-1123 label)
        pod: web-0                # optional, no whitespace
        labels: {app: web, tier: frontend}   # Kubernetes label rules; source k8s unless the
                                             # key says one ("container:role": db)
        workload: {name: web, kind: StatefulSet}   # optional; kind optional
      - cgroup: /system.slice/postgresql.service   # cgroup v2 path prefix (whole components)
        namespace: data
        labels: {app: postgres}
      - ips: [10.0.5.17, 10.0.6.0/24, "fd00:5::/64"]   # addresses or CIDRs, for remote peers
        namespace: data
        pod: warehouse
        workload: {name: warehouse, kind: VirtualMachine}

An entry needs at least one of ``netns``, ``cgroup`` and ``ips``; each is another way to
recognise the same endpoint: ``netns``/``cgroup`` for the socket's own end, ``ips`` (and the
addresses of a mapped netns, learned at run time) for the peer. When several entries match,
the longest cgroup prefix and the longest CIDR win. A netns, cgroup prefix or CIDR may appear
in one entry only. Errors name the entry (its ``name``, else its position) and the field.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Final

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

__all__ = ["IdentityMap", "IdentityMapError", "MapEntry", "MapWorkload"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_DNS_LABEL: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME: Final = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DNS_SUBDOMAIN: Final = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_SOURCE: Final = re.compile(r"^[a-z][a-z0-9-]*$")


class IdentityMapError(ValueError):
    """The identity map file cannot be used; the message says where and why."""


def _network(value: Any) -> Network:
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected an address or CIDR as text, got {value!r}")
    try:
        return ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an address or CIDR ({exc})") from None


class MapWorkload(BaseModel):
    """The workload an entry belongs to (Hubble's ``workloads[0]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1)]
    kind: str = ""


class MapEntry(BaseModel):
    """One endpoint of the map: how to recognise it, and who it is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    netns: int | str | None = None
    cgroup: str | None = None
    ips: tuple[Annotated[Network, BeforeValidator(_network)], ...] = ()
    namespace: str
    pod: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    workload: MapWorkload | None = None

    @field_validator("netns")
    @classmethod
    def _check_netns(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int):
            if value <= 0:
                raise ValueError("a namespace inode is a positive number")
            return value
        if isinstance(value, str):
            if value.isdigit():
                return int(value)
            if not value or "/" in value or value in (".", "..") or "\0" in value:
                raise ValueError(f"{value!r} is not a name under /run/netns")
        return value

    @field_validator("cgroup")
    @classmethod
    def _check_cgroup(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith("/"):
            raise ValueError(f"{value!r} is not a cgroup path (they start with /)")
        return value.rstrip("/") or "/"

    @field_validator("namespace")
    @classmethod
    def _check_namespace(cls, value: str) -> str:
        if len(value) > 63 or not _DNS_LABEL.match(value):
            raise ValueError(f"{value!r} is not a Kubernetes namespace name (lower-case letters, "
                             "digits and '-', at most 63)")  # fmt: skip
        return value

    @field_validator("pod")
    @classmethod
    def _check_pod(cls, value: str) -> str:
        if any(ch.isspace() for ch in value) or "/" in value:
            raise ValueError(f"{value!r}: a pod name has no whitespace or '/'")
        return value

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, val in value.items():
            _check_label(key, val)
        return value

    @model_validator(mode="after")
    def _check_recognisable(self) -> MapEntry:
        if self.netns is None and self.cgroup is None and not self.ips:
            raise ValueError("needs at least one of netns, cgroup, ips to be recognised by")
        return self

    @property
    def hubble_labels(self) -> tuple[str, ...]:
        """Labels as a Hubble flow shows them: ``k8s:key=value`` (or the key's own source),
        with the pod-namespace label, sorted."""
        out = {f"k8s:io.kubernetes.pod.namespace={self.namespace}"}
        for key, val in self.labels.items():
            qualified = key if ":" in key else f"k8s:{key}"
            out.add(f"{qualified}={val}" if val else qualified)
        return tuple(sorted(out))


def _check_label(key: str, value: str) -> None:
    source, _, rest = key.rpartition(":")
    if source and not _SOURCE.match(source):
        raise ValueError(f"label {key!r}: {source!r} is not a label source (such as k8s)")
    prefix, _, name = rest.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        raise ValueError(f"label {key!r}: prefix {prefix!r} is not a DNS subdomain")
    if len(name) > 63 or not _LABEL_NAME.match(name):
        raise ValueError(f"label {key!r}: {name!r} is not a label name (letters, digits, '-', '_', "
                         "'.', starting and ending alphanumeric, at most 63)")  # fmt: skip
    if not isinstance(value, str) or (value and (len(value) > 63 or not _LABEL_NAME.match(value))):
        raise ValueError(f"label {key!r}: value {value!r} is not a label value (at most 63 of "
                         "letters, digits, '-', '_', '.', starting and ending alphanumeric)")  # fmt: skip


class IdentityMap:
    """Validated map entries with lookups by cgroup prefix, netns and address."""

    def __init__(self, entries: Iterable[MapEntry] = (), source: str = "<identity map>") -> None:
        self.entries: tuple[MapEntry, ...] = tuple(entries)
        self.source = source
        self._netns: dict[int | str, MapEntry] = {}
        self._cgroups: dict[str, MapEntry] = {}
        #: (version, prefix length) -> network address as int -> entry; probed longest first
        self._nets: dict[tuple[int, int], dict[int, MapEntry]] = {}
        for index, entry in enumerate(self.entries):
            where = _describe(index, entry.name or entry.pod or None)
            if entry.netns is not None:
                self._claim(self._netns, entry.netns, entry, where, f"netns {entry.netns!r}")
            if entry.cgroup is not None:
                self._claim(self._cgroups, entry.cgroup, entry, where, f"cgroup {entry.cgroup!r}")
            for net in entry.ips:
                table = self._nets.setdefault((net.version, net.prefixlen), {})
                self._claim(table, int(net.network_address), entry, where, f"address {net}")
        self._prefix_order = sorted(self._nets, key=lambda k: -k[1])

    def _claim(
        self, table: dict[Any, MapEntry], key: Any, entry: MapEntry, where: str, what: str
    ) -> None:
        if key in table:
            first = self.entries.index(table[key])
            raise IdentityMapError(f"{self.source}: {where}: {what} is already claimed by "
                                   f"{_describe(first, table[key].name or table[key].pod or None)}")  # fmt: skip
        table[key] = entry

    # ----------------------------------------------------------------- loading

    @classmethod
    def load(cls, path: str | Path) -> IdentityMap:
        """Read and validate a map file."""
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise IdentityMapError(f"identity map {path}: {exc.strerror or exc}") from exc
        return cls.parse(text, source=str(path))

    @classmethod
    def parse(cls, text: str, source: str = "<identity map>") -> IdentityMap:
        """Validate a map given as YAML text."""
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise IdentityMapError(f"{source}: not valid YAML: {exc}") from exc
        return cls.from_data(data, source)

    @classmethod
    def from_data(cls, data: Any, source: str = "<identity map>") -> IdentityMap:
        """Validate a map already decoded (``{"entries": [...]}``; None is an empty map)."""
        if data is None:
            return cls((), source)
        if not isinstance(data, Mapping) or set(data) - {"entries"}:
            raise IdentityMapError(f"{source}: expected a mapping with one key, 'entries' (a list)")
        raw_entries = data.get("entries") or []
        if not isinstance(raw_entries, Sequence) or isinstance(raw_entries, str):
            raise IdentityMapError(f"{source}: 'entries' must be a list")
        entries = []
        for index, raw in enumerate(raw_entries):
            name = raw.get("name") or raw.get("pod") if isinstance(raw, Mapping) else None
            try:
                entries.append(MapEntry.model_validate(raw))
            except ValidationError as exc:
                raise IdentityMapError(
                    f"{source}: {_describe(index, name)}: {_explain(exc)}"
                ) from None
        return cls(entries, source)

    # ----------------------------------------------------------------- lookups

    def by_cgroup(self, path: str) -> MapEntry | None:
        """The entry with the longest cgroup prefix of ``path`` (whole components)."""
        if not self._cgroups:
            return None
        probe = path.rstrip("/") or "/"
        while True:
            if (entry := self._cgroups.get(probe)) is not None:
                return entry
            if probe == "/":
                return None
            probe = probe.rsplit("/", 1)[0] or "/"

    def by_netns(self, inode: int, name: str | None = None) -> MapEntry | None:
        """The entry for a network namespace, by inode or by its name under /run/netns."""
        entry = self._netns.get(inode)
        if entry is None and name is not None:
            entry = self._netns.get(name)
        return entry

    def by_ip(self, ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> MapEntry | None:
        """The entry with the longest CIDR containing ``ip`` (None for a malformed address)."""
        if not self._nets:
            return None
        try:
            addr = ip if not isinstance(ip, str) else ipaddress.ip_address(ip)
        except ValueError:
            return None
        value, bits = int(addr), addr.max_prefixlen
        for version, prefixlen in self._prefix_order:
            if version == addr.version:
                masked = value >> (bits - prefixlen) << (bits - prefixlen)
                if (entry := self._nets[(version, prefixlen)].get(masked)) is not None:
                    return entry
        return None

    @property
    def netns_names(self) -> frozenset[str]:
        """Namespace names (under /run/netns) the map refers to."""
        return frozenset(k for k in self._netns if isinstance(k, str))

    def __len__(self) -> int:
        return len(self.entries)


def _describe(index: int, name: Any) -> str:
    return f"entry {index + 1} ({name})" if isinstance(name, str) and name else f"entry {index + 1}"


def _explain(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)
