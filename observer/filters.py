"""Hubble ``FlowFilter`` lists compiled into one predicate over ``flow.Flow``.

Same meaning as Hubble's ``pkg/hubble/filters``: a flow is served when ANY whitelist filter
matches (or the whitelist is empty) and NO blacklist filter matches; within one filter every
set field must match (AND) and the values of one field are alternatives (OR). Filters are
compiled once per request, so a bad value (an unparsable CIDR, port or selector) fails the call
before any flow is read, not on every flow.

Every field Hubble defines is either implemented here with Hubble's semantics or refused with
:class:`FilterError` naming it (the server answers INVALID_ARGUMENT): silently ignoring a filter
would return flows the client asked not to see. Fields unknown to netwarden's ``flow.proto``
(a newer client) are refused the same way, by field number.

Label filters (``k8s:app=cart,tier in (a,b),!debug``) are parsed here into the selector engine
policy simulation also uses (:mod:`netwarden.ingest.selectors`, Cilium's ``LabelArray`` lookup).

Lost events and node-status events are not flows: the server passes them through unfiltered,
as Hubble does.

Regular expressions (``dns_query``, ``http_path``) use Python's ``re`` where Hubble uses Go's
RE2; ordinary patterns mean the same, and they are length-limited since ``re`` can backtrack.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from google.protobuf import unknown_fields

from netwarden.hubble import flow_pb2
from netwarden.ingest.selectors import (
    LabelSelector,
    Requirement,
    parse_filter_key,
    parse_labels,
)

__all__ = [
    "SUPPORTED_FIELDS",
    "UNSUPPORTED_FIELDS",
    "FilterError",
    "FlowPredicate",
    "build_filter",
    "compile_filters",
    "match_all",
]

FlowPredicate = Callable[[flow_pb2.Flow], bool]
#: Builds the predicate of one field from its values (and the whole filter, for cross-checks).
_Builder = Callable[[Any, flow_pb2.FlowFilter], FlowPredicate]
Flow = flow_pb2.Flow
Endpoint = flow_pb2.Endpoint

#: Longest regular expression accepted (Python's ``re`` is not linear-time like RE2).
MAX_PATTERN_CHARS = 1024
#: Hubble's cluster name for node names without one (``ciliumDefaults.ClusterName``).
DEFAULT_CLUSTER = "default"
#: ``event_type.type`` of L7 access-log events (``monitorAPI.MessageTypeAccessLog``).
_MESSAGE_TYPE_ACCESS_LOG = 129


class FilterError(ValueError):
    """A FlowFilter that cannot be applied: unsupported field or bad value. ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def match_all(flow: Flow) -> bool:
    """The predicate of an empty request: every flow."""
    return True


def compile_filters(
    whitelist: Sequence[flow_pb2.FlowFilter], blacklist: Sequence[flow_pb2.FlowFilter] = ()
) -> FlowPredicate:
    """One predicate: any whitelist filter matches (or there is none) and no blacklist one does.

    Raises :class:`FilterError` for a field that is not supported or a value that is invalid.
    """
    allow = [build_filter(f, where="whitelist") for f in whitelist]
    deny = [build_filter(f, where="blacklist") for f in blacklist]
    if not allow and not deny:
        return match_all
    if not deny:
        if len(allow) == 1:
            return allow[0]
        return lambda flow: any(p(flow) for p in allow)
    if not allow:
        return lambda flow: not any(p(flow) for p in deny)
    return lambda flow: any(p(flow) for p in allow) and not any(p(flow) for p in deny)


def build_filter(flow_filter: flow_pb2.FlowFilter, *, where: str = "filter") -> FlowPredicate:
    """The predicate of one FlowFilter: every set field matches. An empty filter matches all."""
    unknown = list(unknown_fields.UnknownFieldSet(flow_filter))
    if unknown:
        numbers = ", ".join(str(u.field_number) for u in unknown)
        raise FilterError(
            f"{where} field #{numbers}",
            "not a FlowFilter field netwarden knows (newer Hubble client?); "
            "refusing rather than ignoring it",
        )
    parts: list[FlowPredicate] = []
    for descriptor, value in flow_filter.ListFields():
        name = descriptor.name
        if name == "experimental":
            if value.cel_expression:
                raise FilterError(
                    "experimental.cel_expression",
                    "CEL filters are not supported by netwarden's observer",
                )
            continue  # an empty Experimental message asks for nothing
        builder = _BUILDERS.get(name)
        if builder is None:
            raise FilterError(
                name,
                "filtering on this field is not supported by netwarden's "
                "observer; supported: " + ", ".join(sorted(_BUILDERS)),
            )
        parts.append(builder(list(value), flow_filter))
    if not parts:
        return match_all
    if len(parts) == 1:
        return parts[0]
    return lambda flow: all(p(flow) for p in parts)


# -- pods and services: "[namespace/][name-prefix]" ---------------------------------------------
def _parse_namespaced(field: str, text: str) -> tuple[str, str]:
    """Hubble's ``k8s.ParseNamespaceName``: ``ns/prefix``, ``ns/`` (whole namespace), ``prefix``
    (namespace ``default``), ``/prefix`` (any namespace: what v1.19's flow.proto documents and
    ``hubble observe --all-namespaces --pod P`` sends; older agents compared it with the empty
    namespace), and ``/`` alone: any pod in any namespace, which is what ``hubble observe -A``
    sends (``source_pod: ["/"]`` OR ``destination_pod: ["/"]``: a flow with a pod on either
    side). Only the empty string, which names nothing, is refused."""
    parts = text.split("/")
    if len(parts) > 1:
        return parts[0], parts[1]
    if parts[0]:
        return "default", parts[0]
    raise FilterError(field, f"invalid filter, must be [namespace/][<name>], got {text!r}")


def _namespaced(field: str, get: Callable[[Flow], tuple[str, str]]) -> _Builder:
    def build(values: list[str], _ff: flow_pb2.FlowFilter) -> FlowPredicate:
        wanted = [_parse_namespaced(field, v) for v in values]

        def predicate(flow: Flow) -> bool:
            ns, name = get(flow)
            if not ns and not name:
                return False
            return any(
                (not w_ns or ns == w_ns) and (not w_prefix or name.startswith(w_prefix))
                for w_ns, w_prefix in wanted
            )

        return predicate

    return build


# -- IP addresses ---------------------------------------------------------------------------------
def _ips(field: str, get: Callable[[Flow], str]) -> _Builder:
    def build(values: list[str], _ff: flow_pb2.FlowFilter) -> FlowPredicate:
        addresses: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for value in values:
            try:
                if "/" in value:
                    networks.append(ipaddress.ip_network(value, strict=False))
                else:
                    addresses.add(ipaddress.ip_address(value))
            except ValueError:
                kind = "CIDR" if "/" in value else "IP address"
                raise FilterError(field, f"invalid {kind} in filter: {value!r}") from None

        def predicate(flow: Flow) -> bool:
            text = get(flow)
            if not text:
                return False
            try:
                ip = ipaddress.ip_address(text)
            except ValueError:
                return False
            return ip in addresses or any(ip in net for net in networks)

        return predicate

    return build


# -- labels: Kubernetes selector syntax with Cilium sources ---------------------------------------
_REQUIREMENT = re.compile(
    r"""^\s*(?P<neg>!)?\s*(?P<key>[^\s!=(),]+)\s*
        (?:(?P<op>==|=|!=)\s*(?P<value>[^\s,()]*)
          |\s(?P<setop>in|notin)\s*\((?P<set>[^()]*)\))?\s*$""",
    re.VERBOSE,
)
#: Kubernetes selector operators as the shared engine's.
_OPERATORS = {"=": "In", "==": "In", "!=": "NotIn", "in": "In", "notin": "NotIn"}


def _split_requirements(selector: str) -> list[str]:
    """Split on commas outside parentheses (``a in (x, y),b=c`` is two requirements)."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(selector):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(selector[start:i])
            start = i + 1
    parts.append(selector[start:])
    return parts


def _parse_selector(field: str, selector: str) -> LabelSelector:
    """A Kubernetes label selector (``=``, ``==``, ``!=``, ``in``, ``notin``, ``key``, ``!key``,
    joined by commas) whose keys may carry a Cilium source prefix such as ``k8s:``; matched by
    the engine policies use (:mod:`netwarden.ingest.selectors`)."""
    if not selector.strip():
        raise FilterError(field, "empty label selector")
    requirements: list[Requirement] = []
    for requirement in _split_requirements(selector):
        m = _REQUIREMENT.match(requirement)
        if m is None or (m["neg"] and (m["op"] or m["setop"])):
            raise FilterError(
                field, f"invalid label selector {selector!r} (at {requirement.strip()!r})"
            )
        source, key = parse_filter_key(m["key"])
        if m["setop"]:
            options = frozenset(v.strip() for v in m["set"].split(","))
            if "" in options:
                raise FilterError(field, f"invalid value set in label selector {selector!r}")
            requirements.append(Requirement(source, key, _OPERATORS[m["setop"]], options))
        elif m["op"]:
            values = frozenset({m["value"]})
            requirements.append(Requirement(source, key, _OPERATORS[m["op"]], values))
        else:
            requirements.append(Requirement(source, key, "DoesNotExist" if m["neg"] else "Exists"))
    return LabelSelector(tuple(requirements))


def _labels(field: str, get: Callable[[Flow], Endpoint]) -> _Builder:
    def build(values: list[str], _ff: flow_pb2.FlowFilter) -> FlowPredicate:
        selectors = [_parse_selector(field, v) for v in values]

        def predicate(flow: Flow) -> bool:
            labels = parse_labels(get(flow).labels)
            return any(s.matches(labels) for s in selectors)

        return predicate

    return build


# -- names with wildcards: node names and FQDNs (Hubble's patterns.go) --------------------------
_FQDN_RE = r"(?:[-0-9_a-z]+(?:\.[-0-9_a-z]+)*)"


def _fqdn_pattern_re(field: str, pattern: str) -> str:
    text = pattern.strip().lower()
    text = text.removesuffix(".")
    if not text:
        raise FilterError(field, f"empty pattern in {pattern!r}")
    if text.endswith("."):
        raise FilterError(field, f"multiple trailing dots in pattern {pattern!r}")
    out = []
    for char in text:
        if char == ".":
            out.append(r"\.")
        elif char == "*":
            out.append(r"[-.0-9a-z]*")
        elif char in "-_0123456789abcdefghijklmnopqrstuvwxyz":
            out.append(char)
        else:
            raise FilterError(field, f"invalid character {char!r} in pattern {pattern!r}")
    return "".join(out)


def _node_pattern_re(field: str, pattern: str) -> str:
    if not pattern:
        raise FilterError(field, "empty pattern")
    elems = pattern.split("/")
    if len(elems) > 2:
        raise FilterError(field, f"too many slashes in pattern {pattern!r}")
    cluster, node = ("", elems[0]) if len(elems) == 1 else (elems[0], elems[1])
    cluster_re = _fqdn_pattern_re(field, cluster) if cluster else _FQDN_RE
    node_re = _fqdn_pattern_re(field, node) if node else _FQDN_RE
    return f"{cluster_re}/{node_re}"


def _node_name(values: list[str], _ff: flow_pb2.FlowFilter) -> FlowPredicate:
    regex = re.compile(
        r"\A(?:" + "|".join(_node_pattern_re("node_name", v) for v in values) + r")\Z"
    )

    def predicate(flow: Flow) -> bool:
        name = flow.node_name
        if not name:
            return False
        if "/" not in name:
            name = f"{DEFAULT_CLUSTER}/{name}"
        return regex.match(name) is not None

    return predicate


def _fqdn(field: str, get: Callable[[Flow], Sequence[str]]) -> _Builder:
    def build(values: list[str], _ff: flow_pb2.FlowFilter) -> FlowPredicate:
        regex = re.compile(r"\A(?:" + "|".join(_fqdn_pattern_re(field, v) for v in values) + r")\Z")
        return lambda flow: any(regex.match(name) for name in get(flow))

    return build


def _regexes(field: str, values: list[str]) -> list[re.Pattern[str]]:
    out = []
    for value in values:
        if len(value) > MAX_PATTERN_CHARS:
            raise FilterError(field, f"pattern longer than {MAX_PATTERN_CHARS} characters")
        try:
            out.append(re.compile(value))
        except re.error as exc:
            raise FilterError(field, f"invalid regular expression {value!r}: {exc}") from None
    return out


# -- simple fields ---------------------------------------------------------------------------------
def _enum_in(get: Callable[[Flow], int]) -> _Builder:
    def build(values: list[int], _ff: flow_pb2.FlowFilter) -> FlowPredicate:
        wanted = frozenset(values)
        return lambda flow: get(flow) in wanted

    return build


def _uuid(values: list[str], _ff: flow_pb2.FlowFilter) -> FlowPredicate:
    # As Hubble (``slices.Contains(uuids, flow.UUID)``): "" is a value like any other, so
    # ``uuid: [""]`` selects the flows without a uuid (older agents, replayed captures).
    wanted = frozenset(values)
    return lambda flow: flow.uuid in wanted


def _drop_reason_desc(values: list[int], _ff: flow_pb2.FlowFilter) -> FlowPredicate:
    # As Hubble: a drop reason only means something on a dropped flow. Forwarded flows can
    # carry a stale or zero drop_reason_desc, and ``drop_reason_desc: [DROP_REASON_UNKNOWN]``
    # must not select every flow that was not dropped.
    wanted = frozenset(values)
    return lambda flow: flow.verdict == flow_pb2.DROPPED and flow.drop_reason_desc in wanted


def _identity(get: Callable[[Flow], Endpoint]) -> _Builder:
    def build(values: list[int], _ff: flow_pb2.FlowFilter) -> FlowPredicate:
        wanted = frozenset(values)
        return lambda flow: get(flow).identity in wanted

    return build


def _event_type(values: list[flow_pb2.EventTypeFilter], _ff: flow_pb2.FlowFilter) -> FlowPredicate:
    wanted = [(f.type, f.match_sub_type, f.sub_type) for f in values]

    def predicate(flow: Flow) -> bool:
        if not flow.HasField("event_type"):
            return False
        event = flow.event_type
        return any(
            (not t or event.type == t) and (not match_sub or event.sub_type == sub)
            for t, match_sub, sub in wanted
        )

    return predicate


#: ``protocol`` values and the ``Layer4`` oneof members they select. VRRP (keepalived, router
#: failover) and IGMP (multicast group membership) are Layer4 members Cilium decodes, so they
#: are filterable as in Hubble.
_L4_PROTOCOLS = {
    "tcp": ("TCP",),
    "udp": ("UDP",),
    "sctp": ("SCTP",),
    "icmp": ("ICMPv4", "ICMPv6"),
    "icmpv4": ("ICMPv4",),
    "icmpv6": ("ICMPv6",),
    "vrrp": ("VRRP",),
    "igmp": ("IGMP",),
}
_L7_PROTOCOLS = {"dns": "dns", "http": "http", "kafka": "kafka"}


def _protocol(values: list[str], _ff: flow_pb2.FlowFilter) -> FlowPredicate:
    l4: set[str] = set()
    l7: set[str] = set()
    for value in values:
        proto = value.lower()
        if proto in _L4_PROTOCOLS:
            l4.update(_L4_PROTOCOLS[proto])
        elif proto in _L7_PROTOCOLS:
            l7.add(_L7_PROTOCOLS[proto])
        else:
            raise FilterError(
                "protocol",
                f"unknown protocol: {value!r} (one of "
                + ", ".join([*_L4_PROTOCOLS, *_L7_PROTOCOLS])
                + ")",
            )

    def predicate(flow: Flow) -> bool:
        if l4 and flow.HasField("l4") and flow.l4.WhichOneof("protocol") in l4:
            return True
        return bool(l7) and flow.HasField("l7") and flow.l7.WhichOneof("record") in l7

    return predicate


def _l4_port(flow: Flow, which: str) -> int | None:
    if not flow.HasField("l4"):
        return None
    kind = flow.l4.WhichOneof("protocol")
    if kind not in ("TCP", "UDP", "SCTP"):
        return None
    return getattr(getattr(flow.l4, kind), which)  # type: ignore[no-any-return]


def _port(field: str, which: str) -> _Builder:
    def build(values: list[str], _ff: flow_pb2.FlowFilter) -> FlowPredicate:
        wanted = set()
        for value in values:
            if not value.isascii() or not value.isdigit() or int(value) > 65535:
                raise FilterError(field, f"invalid port {value!r}: expected 0-65535")
            wanted.add(int(value))
        return lambda flow: _l4_port(flow, which) in wanted

    return build


def _reply(values: list[bool], _ff: flow_pb2.FlowFilter) -> FlowPredicate:
    wanted = frozenset(values)

    def predicate(flow: Flow) -> bool:
        # As Hubble: an unknown is_reply only counts (as false) on dropped flows, for clients
        # that assume the deprecated `reply` field, where drops are always false.
        if not flow.HasField("is_reply"):
            if flow.verdict != flow_pb2.DROPPED:
                return False
            return False in wanted
        return flow.is_reply.value in wanted

    return predicate


def _tcp_flags(values: list[flow_pb2.TCPFlags], _ff: flow_pb2.FlowFilter) -> FlowPredicate:
    names = [d.name for d in flow_pb2.TCPFlags.DESCRIPTOR.fields]
    wanted = [[n for n in names if getattr(f, n)] for f in values]

    def predicate(flow: Flow) -> bool:
        if not (flow.HasField("l4") and flow.l4.HasField("TCP") and flow.l4.TCP.HasField("flags")):
            return False
        flags = flow.l4.TCP.flags
        return any(all(getattr(flags, n) for n in required) for required in wanted)

    return predicate


def _workload(get: Callable[[Flow], Endpoint]) -> _Builder:
    def build(values: list[flow_pb2.Workload], _ff: flow_pb2.FlowFilter) -> FlowPredicate:
        wanted = [(w.name, w.kind) for w in values]
        return lambda flow: any(
            (not name or name == w.name) and (not kind or kind == w.kind)
            for w in get(flow).workloads
            for name, kind in wanted
        )

    return build


def _dns_query(values: list[str], _ff: flow_pb2.FlowFilter) -> FlowPredicate:
    regexes = _regexes("dns_query", values)

    def predicate(flow: Flow) -> bool:
        if not (flow.HasField("l7") and flow.l7.HasField("dns")):
            return False
        query = flow.l7.dns.query
        return any(r.search(query) for r in regexes)

    return predicate


def _require_l7_events(field: str, ff: flow_pb2.FlowFilter) -> None:
    """Hubble refuses HTTP filters combined with event types that cannot be L7 events."""
    types = list(ff.event_type)
    if types and not any(t.type == _MESSAGE_TYPE_ACCESS_LOG for t in types):
        raise FilterError(
            field,
            "filtering by http fields requires the event type filter to only match 'l7' events",
        )


def _http(flow: Flow) -> flow_pb2.HTTP | None:
    if flow.HasField("l7") and flow.l7.HasField("http"):
        return flow.l7.http
    return None


_STATUS_FULL = re.compile(r"^[1-5][0-9]{2}$")
_STATUS_PREFIX = re.compile(r"^[1-5][0-9]?\+$")


def _http_status_code(values: list[str], ff: flow_pb2.FlowFilter) -> FlowPredicate:
    _require_l7_events("http_status_code", ff)
    full, prefixes = set(), []
    for value in values:
        if _STATUS_FULL.match(value):
            full.add(value)
        elif _STATUS_PREFIX.match(value):
            prefixes.append(value[:-1])
        else:
            raise FilterError(
                "http_status_code", f"invalid status code prefix: {value!r} (e.g. '404' or '5+')"
            )

    def predicate(flow: Flow) -> bool:
        http = _http(flow)
        if http is None or not http.code:
            return False
        code = f"{http.code:03d}"
        return code in full or any(code.startswith(p) for p in prefixes)

    return predicate


def _http_method(values: list[str], ff: flow_pb2.FlowFilter) -> FlowPredicate:
    _require_l7_events("http_method", ff)
    wanted = {v.casefold() for v in values}

    def predicate(flow: Flow) -> bool:
        http = _http(flow)
        return http is not None and bool(http.method) and http.method.casefold() in wanted

    return predicate


def _http_path(values: list[str], ff: flow_pb2.FlowFilter) -> FlowPredicate:
    _require_l7_events("http_path", ff)
    regexes = _regexes("http_path", values)

    def predicate(flow: Flow) -> bool:
        http = _http(flow)
        if http is None or not http.url:
            return False
        try:
            path = urlsplit(http.url).path
        except ValueError:
            return False
        return any(r.search(path) for r in regexes)

    return predicate


def _ip_version(values: list[int], _ff: flow_pb2.FlowFilter) -> FlowPredicate:
    wanted = frozenset(values)
    return lambda flow: flow.HasField("IP") and flow.IP.ipVersion in wanted


_BUILDERS: dict[str, _Builder] = {
    "uuid": _uuid,
    "source_ip": _ips("source_ip", lambda f: f.IP.source),
    "source_ip_xlated": _ips("source_ip_xlated", lambda f: f.IP.source_xlated),
    "destination_ip": _ips("destination_ip", lambda f: f.IP.destination),
    "source_pod": _namespaced("source_pod", lambda f: (f.source.namespace, f.source.pod_name)),
    "destination_pod": _namespaced(
        "destination_pod", lambda f: (f.destination.namespace, f.destination.pod_name)
    ),
    "source_service": _namespaced(
        "source_service", lambda f: (f.source_service.namespace, f.source_service.name)
    ),
    "destination_service": _namespaced(
        "destination_service",
        lambda f: (f.destination_service.namespace, f.destination_service.name),
    ),
    "source_label": _labels("source_label", lambda f: f.source),
    "destination_label": _labels("destination_label", lambda f: f.destination),
    "source_identity": _identity(lambda f: f.source),
    "destination_identity": _identity(lambda f: f.destination),
    "source_workload": _workload(lambda f: f.source),
    "destination_workload": _workload(lambda f: f.destination),
    "source_fqdn": _fqdn("source_fqdn", lambda f: f.source_names),
    "destination_fqdn": _fqdn("destination_fqdn", lambda f: f.destination_names),
    "verdict": _enum_in(lambda f: f.verdict),
    "drop_reason_desc": _drop_reason_desc,
    "traffic_direction": _enum_in(lambda f: f.traffic_direction),
    "event_type": _event_type,
    "protocol": _protocol,
    "source_port": _port("source_port", "source_port"),
    "destination_port": _port("destination_port", "destination_port"),
    "reply": _reply,
    "tcp_flags": _tcp_flags,
    "node_name": _node_name,
    "ip_version": _ip_version,
    "dns_query": _dns_query,
    "http_status_code": _http_status_code,
    "http_method": _http_method,
    "http_path": _http_path,
}

#: FlowFilter fields this module implements.
SUPPORTED_FIELDS = frozenset(_BUILDERS)
#: FlowFilter fields of netwarden's flow.proto that are refused (INVALID_ARGUMENT).
UNSUPPORTED_FIELDS = (
    frozenset(f.name for f in flow_pb2.FlowFilter.DESCRIPTOR.fields) - SUPPORTED_FIELDS
)
