"""A Kubernetes API server stand-in for Cilium policy objects, served on 127.0.0.1 in a thread.

No real API server can run in the test environment, so this models the part of one that
``remediation.apply`` depends on, with the API server's own wire formats (paths, query
parameters, ``Status`` bodies, ``managedFields`` in FieldsV1), so the official ``kubernetes``
client talks to it unchanged:

* ``cilium.io/v2`` ``ciliumnetworkpolicies`` (namespaced, also listed across namespaces) and
  ``ciliumclusterwidenetworkpolicies``: GET, LIST (equality ``labelSelector``), POST, PUT, PATCH
  (``application/apply-patch+yaml`` server-side apply, ``application/merge-patch+json``), DELETE
  (with ``preconditions``); ``dryRun=All`` on every write; ``GET`` of a ConfigMap (for
  ``cilium-config``).
* Server-side apply: ownership per field manager and operation, tracked per leaf field (maps are
  walked, lists are atomic, as every list in the Cilium CRD is); a field another manager owns
  with a different value is a 409 with ``FieldManagerConflict`` causes unless ``force=true``;
  fields a manager applied before and omits now are removed when nobody else owns them.
* ``resourceVersion`` from one increasing counter; a PUT (or an apply whose body carries one)
  with a stale ``resourceVersion`` is a 409; a PUT without one is a 422, as for custom resources.
* Bodies are checked with ``remediation.schema.validate_policy`` (422 ``Invalid`` with causes);
  unknown fields are refused (``fieldValidation=Strict`` behaviour, whatever was asked).
* Optional bearer-token RBAC: 401 for an unknown token, 403 for a verb or a resource the token
  lacks.

* core/v1 ``pods`` (for the bpf agent's pod watch): GET, LIST (all namespaces or one;
  equality ``labelSelector``; ``fieldSelector`` on ``spec.nodeName``, ``metadata.name``,
  ``metadata.namespace``, ``status.phase``; ``limit``/``continue`` paging), WATCH (chunked
  JSON event stream from a ``resourceVersion``, ``timeoutSeconds``, ``BOOKMARK`` events when
  ``bookmark_interval`` is set, objects entering/leaving a field selector as ADDED/DELETED,
  ``410 Expired`` ERROR events for versions older than the last :meth:`K8sStandIn.compact`),
  POST (status reset to Pending, as the API server does), PATCH of the pod and of its
  ``/status`` (merge patch; a strategic merge patch is applied as a merge patch, so lists are
  replaced), DELETE (immediate, as with ``gracePeriodSeconds=0``).
* core/v1 ``namespaces`` and ``nodes`` (cluster-scoped; for the agent's namespace and node
  watches): GET, LIST and WATCH as for pods (``fieldSelector`` on ``metadata.name``, and
  ``status.phase`` of namespaces or ``spec.unschedulable`` of nodes), PATCH of labels and
  annotations (merge patch), DELETE (immediate: no Terminating phase); POST of namespaces. Every
  namespace carries ``kubernetes.io/metadata.name=<name>``, as the API server enforces.
* One ``resourceVersion`` counter for everything; the change history that watches read is kept
  per resource. Test helpers play the kubelet, etcd and the network:
  :meth:`K8sStandIn.put_pod`, :meth:`K8sStandIn.put_namespace`, :meth:`K8sStandIn.put_node`
  (and their ``delete_*``), :meth:`K8sStandIn.compact`, :meth:`K8sStandIn.drop_watches`.

Not modelled: watch of anything but pods, namespaces and nodes, discovery, other resources
(node and namespace status subresources included), admission webhooks,
pruning of unknown fields and ``Warning`` headers, finalizers and graceful deletion,
``x-kubernetes-map-type: atomic`` maps (walked like any map), CEL rules other than the one
``validate_policy`` checks, JSON patch, and strategic-merge patch (but on pods, as said).
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import random
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import yaml

from netwarden.remediation.schema import validate_policy

__all__ = ["ApiError", "K8sStandIn", "Request", "Token"]

GROUP, VERSION = "cilium.io", "v2"
API_VERSION = f"{GROUP}/{VERSION}"
#: plural -> (kind, namespaced)
RESOURCES: Mapping[str, tuple[str, bool]] = {
    "ciliumnetworkpolicies": ("CiliumNetworkPolicy", True),
    "ciliumclusterwidenetworkpolicies": ("CiliumClusterwideNetworkPolicy", False),
}
_ALL_VERBS = frozenset({"get", "list", "watch", "create", "update", "patch", "delete"})
_SERVER_METADATA = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields",
                    "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds")  # fmt: skip
_COLLECTION = re.compile(
    rf"^/apis/{GROUP}/{VERSION}(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[a-z]+)(?:/(?P<name>[^/]+))?$"
)
_CONFIGMAP = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/configmaps/(?P<name>[^/]+)$")
#: core/v1 pods (namespaced), namespaces and nodes (cluster-scoped), one object or a collection
_CORE = re.compile(
    r"^/api/v1(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>pods|namespaces|nodes)"
    r"(?:/(?P<name>[^/]+)(?P<status>/status)?)?$"
)

Path = tuple[str, ...]


@dataclass(frozen=True)
class Request:
    """One request as the stand-in saw it (for assertions such as "nothing was sent")."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any


@dataclass(frozen=True)
class Token:
    """A bearer token: who it is, which verbs it may use, and on which resources (plural names,
    e.g. ``pods``; None: every resource)."""

    user: str
    verbs: frozenset[str] = _ALL_VERBS
    resources: frozenset[str] | None = None


class ApiError(Exception):
    """An API error answered as a Kubernetes ``Status`` object."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None) -> None:
        super().__init__(message)
        self.status = {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code,
        }  # fmt: skip
        if details is not None:
            self.status["details"] = details


@dataclass
class _Stored:
    obj: dict[str, Any]
    #: (manager, operation) -> owned leaf paths
    owners: dict[tuple[str, str], set[Path]] = field(default_factory=dict)
    #: when it was last written (managedFields[].time; per object, not per manager, here)
    time: str = ""


# --------------------------------------------------------------------------- field sets


def _leaves(obj: Any, prefix: Path = ()) -> Iterator[Path]:
    """Field paths of an object as SSA tracks them here: maps walked, lists and scalars leaves."""
    if isinstance(obj, dict) and obj:
        for key, value in obj.items():
            yield from _leaves(value, (*prefix, key))
    elif prefix:
        yield prefix


def _tracked(obj: Mapping[str, Any]) -> set[Path]:
    """The fields ownership is tracked for: everything but identity and server metadata."""
    paths = set()
    for key, value in obj.items():
        if key in ("apiVersion", "kind"):
            continue
        if key == "metadata":
            for sub in ("labels", "annotations"):
                if isinstance(value, dict) and sub in value:
                    paths |= set(_leaves(value[sub], ("metadata", sub)))
            continue
        paths |= set(_leaves(value, (key,)))
    return paths


def _get(obj: Any, path: Path) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return _MISSING
        obj = obj[key]
    return obj


def _remove(obj: dict[str, Any], path: Path) -> None:
    """Remove a leaf and the maps it leaves empty."""
    parents = [obj]
    for key in path[:-1]:
        nxt = parents[-1].get(key)
        if not isinstance(nxt, dict):
            return
        parents.append(nxt)
    parents[-1].pop(path[-1], None)
    for depth in range(len(path) - 1, 0, -1):
        if not parents[depth]:
            parents[depth - 1].pop(path[depth - 1], None)


_MISSING = object()


def _fields_v1(paths: set[Path]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for key in path:
            node = node.setdefault(f"f:{key}", {})
    return tree


def _from_fields_v1(tree: Mapping[str, Any], prefix: Path = ()) -> set[Path]:
    paths = set()
    for key, sub in tree.items():
        if not key.startswith("f:"):
            continue
        path = (*prefix, key[2:])
        paths |= _from_fields_v1(sub, path) if sub else {path}
    return paths


def _field_string(path: Path) -> str:
    return "".join(f".{key}" for key in path)


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge_patch(out.get(key), value)
    return out


def _apply_merge(target: dict[str, Any], applied: Mapping[str, Any]) -> dict[str, Any]:
    """Set every leaf of ``applied`` in a copy of ``target`` (lists replace as a whole)."""
    out = copy.deepcopy(target)
    for path in _leaves(applied):
        node = out
        for key in path[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[path[-1]] = copy.deepcopy(_get(applied, path))
    return out


# --------------------------------------------------------------------------- the store


class _Store:
    """Objects, ownership and the resourceVersion counter; every method holds the lock.

    The lock is reentrant, so a test can hold it around several helper calls to make them one
    atomic change (nothing is served, no watcher sees anything, in between)."""

    def __init__(self, *, schema_version: str) -> None:
        self.schema_version = schema_version
        self.lock = threading.RLock()
        self.objects: dict[tuple[str, str | None, str], _Stored] = {}
        self.configmaps: dict[tuple[str, str], dict[str, str]] = {}
        self.revision = 0

    # ----------------------------------------------------------------- reads

    def get(self, plural: str, ns: str | None, name: str) -> dict[str, Any]:
        return self._render(self._require(plural, ns, name))

    def list(self, plural: str, ns: str | None, selector: str | None) -> dict[str, Any]:
        wanted = dict(part.split("=", 1) for part in selector.split(",")) if selector else {}
        items = [
            self._render(stored)
            for (p, n, _), stored in sorted(self.objects.items(), key=lambda kv: str(kv[0]))
            if p == plural and (ns is None or n == ns)
            and all(stored.obj["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())
        ]  # fmt: skip
        kind = RESOURCES[plural][0]
        return {"apiVersion": API_VERSION, "kind": f"{kind}List",
                "metadata": {"resourceVersion": str(self.revision)}, "items": items}  # fmt: skip

    # ----------------------------------------------------------------- writes

    def create(self, plural: str, ns: str | None, body: Any, q: _Query) -> tuple[int, dict]:
        body = self._check_body(plural, ns, body, name=None)
        name = body["metadata"]["name"]
        if (plural, ns, name) in self.objects:
            raise _already_exists(plural, name)
        self._validate(body)
        stored = self._new(body)
        stored.owners[(q.manager, "Update")] = _tracked(body)
        return 201, self._commit(plural, ns, name, stored, q.dry_run)

    def replace(self, plural: str, ns: str | None, name: str, body: Any, q: _Query) -> dict:
        body = self._check_body(plural, ns, body, name=name)
        current = self._require(plural, ns, name)
        rv = body["metadata"].get("resourceVersion")
        if not rv:
            raise _invalid(plural, name, [("FieldValueRequired", "metadata.resourceVersion",
                                           "must be specified for an update")])  # fmt: skip
        if rv != current.obj["metadata"]["resourceVersion"]:
            raise _stale(plural, name)
        self._validate(body)
        owners = (
            {}
            if "managedFields" in body["metadata"] and not body["metadata"]["managedFields"]
            else _decode_owners(body["metadata"].get("managedFields")) or current.owners
        )
        updated = self._updated(current, body, owners, q.manager)
        return self._commit(plural, ns, name, updated, q.dry_run)

    def merge_patch(self, plural: str, ns: str | None, name: str, patch: Any, q: _Query) -> dict:
        current = self._require(plural, ns, name)
        if not isinstance(patch, dict):
            raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
        merged = _merge_patch(self._render(current), patch)
        merged = self._check_body(plural, ns, merged, name=name)
        rv = (patch.get("metadata") or {}).get("resourceVersion")
        if rv and rv != current.obj["metadata"]["resourceVersion"]:
            raise _stale(plural, name)
        self._validate(merged)
        updated = self._updated(current, merged, current.owners, q.manager)
        return self._commit(plural, ns, name, updated, q.dry_run)

    def apply(
        self, plural: str, ns: str | None, name: str, applied: Any, q: _Query
    ) -> tuple[int, dict]:
        """Server-side apply, as the API server's field manager does it (at leaf granularity)."""
        if not q.manager:
            raise ApiError(422, "Invalid", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: "
                           "Required value: is required for apply patch")  # fmt: skip
        applied = self._check_body(plural, ns, applied, name=name)
        current = self.objects.get((plural, ns, name))
        applied_meta = applied["metadata"]
        rv = applied_meta.pop("resourceVersion", None)
        for key in _SERVER_METADATA:
            applied_meta.pop(key, None)
        applied_fields = _tracked(applied)
        key = (q.manager, "Apply")
        if current is None:
            if rv:
                raise _not_found(plural, name)
            stored = self._new(applied)
            stored.owners[key] = applied_fields
            self._validate(stored.obj)
            return 201, self._commit(plural, ns, name, stored, q.dry_run)
        if rv and rv != current.obj["metadata"]["resourceVersion"]:
            raise _stale(plural, name)
        owners = {k: set(v) for k, v in current.owners.items()}
        conflicts: dict[str, list[Path]] = {}
        for other, paths in owners.items():
            if other == key:
                continue
            for path in sorted(paths & applied_fields):
                if _get(current.obj, path) != _get(applied, path):
                    conflicts.setdefault(other[0], []).append(path)
        if conflicts and not q.force:
            raise _field_conflict(conflicts)
        if q.force:
            for other, paths in owners.items():
                if other != key:
                    paths -= {p for p in paths if _get(current.obj, p) != _get(applied, p)}
        obj = _apply_merge(current.obj, {k: v for k, v in applied.items() if k != "metadata"})
        meta_applied = {k: v for k, v in applied_meta.items() if k in ("labels", "annotations")}
        obj["metadata"] = _apply_merge(obj["metadata"], meta_applied)
        others = set().union(*(p for k, p in owners.items() if k != key))
        for dropped in owners.get(key, set()) - applied_fields - others:
            _remove(obj, dropped)
        owners[key] = applied_fields
        self._validate(obj)
        updated = _Stored(obj, {k: v for k, v in owners.items() if v})
        self._bump_generation(current.obj, updated.obj)
        return 200, self._commit(plural, ns, name, updated, q.dry_run)

    def delete(self, plural: str, ns: str | None, name: str, body: Any, q: _Query) -> dict:
        current = self._require(plural, ns, name)
        pre = (body or {}).get("preconditions") or {}
        meta = current.obj["metadata"]
        if pre.get("uid") and pre["uid"] != meta["uid"]:
            raise ApiError(409, "Conflict", f"Precondition failed: UID in precondition: {pre['uid']}"
                           f", UID in object meta: {meta['uid']}")  # fmt: skip
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
            raise ApiError(409, "Conflict", "Precondition failed: ResourceVersion in precondition: "
                           f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                           f"{meta['resourceVersion']}")  # fmt: skip
        if not q.dry_run:
            del self.objects[(plural, ns, name)]
            self.revision += 1
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": name, "group": GROUP, "kind": plural, "uid": meta["uid"]}}  # fmt: skip

    # ----------------------------------------------------------------- helpers

    def _require(self, plural: str, ns: str | None, name: str) -> _Stored:
        stored = self.objects.get((plural, ns, name))
        if stored is None:
            raise _not_found(plural, name)
        return stored

    def _check_body(self, plural: str, ns: str | None, body: Any, *, name: str | None) -> dict:
        kind = RESOURCES[plural][0]
        if not isinstance(body, dict) or not isinstance(body.get("metadata"), dict):
            raise ApiError(400, "BadRequest", "the body must be an object with metadata")
        body = copy.deepcopy(body)
        if body.get("kind") != kind or body.get("apiVersion") != API_VERSION:
            raise ApiError(400, "BadRequest", f"the API version in the data ({body.get('apiVersion')}) "
                           f"and kind ({body.get('kind')}) do not match {API_VERSION} {kind}")  # fmt: skip
        meta = body["metadata"]
        if name is not None and meta.get("name", name) != name:
            raise ApiError(400, "BadRequest", "the name of the object "
                           f"({meta.get('name')}) does not match the name on the URL ({name})")  # fmt: skip
        if name is not None:
            meta["name"] = name
        if ns is not None:
            if meta.get("namespace", ns) != ns:
                raise ApiError(400, "BadRequest", "the namespace of the provided object does not "
                               "match the namespace sent on the request")  # fmt: skip
            meta["namespace"] = ns
        elif "namespace" in meta:
            meta.pop("namespace")  # cluster-scoped: the API server clears it
        if not meta.get("name"):
            required = ("FieldValueRequired", "metadata.name", "name or generateName is required")
            raise _invalid(plural, "", [required])
        return body

    def _validate(self, obj: dict[str, Any]) -> None:
        problems = validate_policy(obj, schema_version=self.schema_version)
        if problems:
            causes = [
                ("FieldValueRequired" if p.message.startswith("required") else "FieldValueInvalid",
                 p.path, p.message)
                for p in problems
            ]  # fmt: skip
            plural = next(p for p, (k, _) in RESOURCES.items() if k == obj["kind"])
            raise _invalid(plural, obj["metadata"].get("name", ""), causes)

    def _new(self, body: dict[str, Any]) -> _Stored:
        obj = copy.deepcopy(body)
        meta = obj["metadata"]
        for key in _SERVER_METADATA:
            meta.pop(key, None)
        meta.update(uid=str(uuid.uuid4()), generation=1,
                    creationTimestamp=_now())  # fmt: skip
        return _Stored(obj)

    def _updated(self, current: _Stored, body: dict, owners: dict, manager: str) -> _Stored:
        """An Update operation: the manager takes the fields it changed from everyone."""
        obj = copy.deepcopy(body)
        meta = obj["metadata"]
        for key in _SERVER_METADATA:
            meta.pop(key, None)
        for key in ("uid", "creationTimestamp", "generation"):
            meta[key] = current.obj["metadata"][key]
        old, new = current.obj, obj
        changed = {p for p in _tracked(old) | _tracked(new) if _get(old, p) != _get(new, p)}
        present = _tracked(new)
        owners = {k: (set(v) - changed) & present for k, v in owners.items()}
        key = (manager, "Update")
        owners[key] = owners.get(key, set()) | (changed & present)
        self._bump_generation(old, new)
        return _Stored(obj, {k: v for k, v in owners.items() if v})

    @staticmethod
    def _bump_generation(old: dict, new: dict) -> None:
        def strip(o):
            return {k: v for k, v in o.items() if k != "metadata"}

        generation = old["metadata"]["generation"]
        new["metadata"]["generation"] = generation + (strip(old) != strip(new))

    def _commit(
        self, plural: str, ns: str | None, name: str, stored: _Stored, dry_run: bool
    ) -> dict:
        stored = _Stored(copy.deepcopy(stored.obj), {k: set(v) for k, v in stored.owners.items()})
        if dry_run:
            stored.obj["metadata"].setdefault(
                "resourceVersion",
                (self.objects.get((plural, ns, name)) or stored)
                .obj["metadata"]
                .get("resourceVersion", ""),
            )
            return self._render(stored)
        self.revision += 1
        stored.obj["metadata"]["resourceVersion"] = str(self.revision)
        stored.time = _now()
        self.objects[(plural, ns, name)] = stored
        return self._render(stored)

    @staticmethod
    def _render(stored: _Stored) -> dict[str, Any]:
        obj = copy.deepcopy(stored.obj)
        obj["metadata"]["managedFields"] = [
            {"manager": manager, "operation": operation, "apiVersion": API_VERSION,
             "time": stored.time or _now(), "fieldsType": "FieldsV1",
             "fieldsV1": _fields_v1(paths)}
            for (manager, operation), paths in sorted(stored.owners.items())
        ]  # fmt: skip
        return obj


def _decode_owners(entries: Any) -> dict[tuple[str, str], set[Path]]:
    if not isinstance(entries, list):
        return {}
    return {
        (e.get("manager", ""), e.get("operation", "Update")): _from_fields_v1(
            e.get("fieldsV1") or {}
        )
        for e in entries
        if isinstance(e, dict)
    }


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _not_found(plural: str, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{plural}.{GROUP} "{name}" not found',
                    {"name": name, "group": GROUP, "kind": plural})  # fmt: skip


def _already_exists(plural: str, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{plural}.{GROUP} "{name}" already exists',
                    {"name": name, "group": GROUP, "kind": plural})  # fmt: skip


def _stale(plural: str, name: str) -> ApiError:
    return ApiError(
        409, "Conflict",
        f'Operation cannot be fulfilled on {plural}.{GROUP} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        {"name": name, "group": GROUP, "kind": plural},
    )  # fmt: skip


def _invalid(plural: str, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    kind = RESOURCES[plural][0]
    listed = ", ".join(f"{f}: {m}" for _, f, m in causes)
    return ApiError(
        422, "Invalid", f'{kind}.{GROUP} "{name}" is invalid: [{listed}]',
        {"name": name, "group": GROUP, "kind": kind,
         "causes": [{"reason": r, "message": m, "field": f} for r, f, m in causes]},
    )  # fmt: skip


def _field_conflict(conflicts: dict[str, list[Path]]) -> ApiError:
    causes = [
        {"reason": "FieldManagerConflict",
         "message": f'conflict with "{manager}" using {API_VERSION}',
         "field": _field_string(path)}
        for manager, paths in sorted(conflicts.items()) for path in paths
    ]  # fmt: skip
    count = len(causes)
    if count == 1:
        text = f"{causes[0]['message']}: {causes[0]['field']}"
    else:
        text = "\n".join(f"{c['message']}: {c['field']}" for c in causes)
    return ApiError(409, "Conflict", f"Apply failed with {count} conflict{'s' * (count > 1)}: {text}",
                    {"causes": causes})  # fmt: skip


# --------------------------------------------------------------------------- core/v1: pods, namespaces, nodes

Getter = Callable[[Mapping[str, Any]], str]
#: field selector keys the stand-in serves per resource (the API server has a few more)
_POD_FIELDS: Mapping[str, Getter] = {
    "spec.nodeName": lambda p: (p.get("spec") or {}).get("nodeName") or "",
    "metadata.name": lambda p: p["metadata"]["name"],
    "metadata.namespace": lambda p: p["metadata"]["namespace"],
    "status.phase": lambda p: (p.get("status") or {}).get("phase") or "",
}
_NAMESPACE_FIELDS: Mapping[str, Getter] = {
    "metadata.name": lambda n: n["metadata"]["name"],
    "status.phase": lambda n: (n.get("status") or {}).get("phase") or "",
}
_NODE_FIELDS: Mapping[str, Getter] = {
    "metadata.name": lambda n: n["metadata"]["name"],
    "spec.unschedulable": lambda n: str(bool((n.get("spec") or {}).get("unschedulable"))).lower(),
}
_POD_SERVER_METADATA = ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp",
                        "deletionGracePeriodSeconds", "generation", "managedFields", "selfLink")  # fmt: skip
_NAME_SUFFIX = "bcdfghjklmnpqrstvwxz2456789"
#: the label the API server puts on every namespace (Kubernetes 1.21+), and keeps there
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class _Filter:
    """Which objects a list or watch wants: namespace, field and label selectors."""

    ns: str | None
    fields: tuple[tuple[Getter, str, bool], ...]  # (field getter, value, equal)
    labels: tuple[tuple[str, str], ...]

    @classmethod
    def parse(
        cls, ns: str | None, params: Mapping[str, str], known: Mapping[str, Getter]
    ) -> _Filter:
        fields = []
        for term in filter(None, params.get("fieldSelector", "").split(",")):
            m = re.match(r"^([^!=]+)(==|!=|=)(.*)$", term)
            if not m:
                raise ApiError(400, "BadRequest", f'invalid field selector: "{term}"')
            if m[1] not in known:
                raise ApiError(400, "BadRequest", f'field label not supported: "{m[1]}"')
            fields.append((known[m[1]], m[3], m[2] != "!="))
        labels = []
        for term in filter(None, params.get("labelSelector", "").split(",")):
            key, sep, value = term.partition("=")
            if not sep:
                raise ApiError(
                    400, "BadRequest", f'the stand-in takes equality label selectors only: "{term}"'
                )
            labels.append((key, value.removeprefix("=")))
        return cls(ns, tuple(fields), tuple(labels))

    def __call__(self, obj: Mapping[str, Any] | None) -> bool:
        if obj is None or (self.ns is not None and obj["metadata"].get("namespace") != self.ns):
            return False
        have = obj["metadata"].get("labels") or {}
        return all((get(obj) == v) == eq for get, v, eq in self.fields) and all(
            have.get(k) == v for k, v in self.labels
        )


@dataclass(frozen=True)
class _Event:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    old: dict[str, Any] | None
    new: dict[str, Any]  # for DELETED: the last state, with the deletion's resourceVersion


class _Collection:
    """The objects of one core/v1 resource and their change log, which lists and watches read.
    Every method runs with the store lock held. Cluster-scoped objects are keyed by namespace
    "" here."""

    kind: str = ""
    plural: str = ""
    namespaced: bool = True
    fields: Mapping[str, Getter] = {}

    def __init__(self, store: _Store, history: int = 10_000) -> None:
        self.store = store
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.log: deque[_Event] = deque()
        self.history = history
        #: watches from a resourceVersion older than this get 410 Expired
        self.compacted = 0
        self.changed = threading.Condition(store.lock)
        self.epoch = 0  # drop_watches() bumps it; watches of an older epoch are cut
        self.closed = False

    def filter(self, ns: str | None, params: Mapping[str, str]) -> _Filter:
        return _Filter.parse(ns, params, self.fields)

    def record(self, kind: str, old: dict[str, Any] | None, new: dict[str, Any]) -> None:
        self.store.revision += 1
        new["metadata"]["resourceVersion"] = str(self.store.revision)
        self.log.append(_Event(self.store.revision, kind, copy.deepcopy(old), copy.deepcopy(new)))
        while len(self.log) > self.history:
            self.compacted = self.log.popleft().rv
        self.changed.notify_all()

    def list(self, flt: _Filter, limit: int, token: str | None) -> dict[str, Any]:
        """A page of matching objects. Later pages show the current state (no real snapshot)."""
        snapshot, start = self.store.revision, 0
        if token:
            try:
                snapshot, start = json.loads(base64.urlsafe_b64decode(token))
            except (ValueError, TypeError) as exc:
                raise ApiError(400, "BadRequest", f"invalid continue token: {exc}") from None
            if snapshot < self.compacted:
                raise ApiError(410, "Expired", "The provided continue parameter is too old to display a "
                               "consistent list result. You can start a new list without the continue "
                               "parameter.")  # fmt: skip
        items = [copy.deepcopy(o) for _, o in sorted(self.objects.items()) if flt(o)]
        end = start + limit if limit else len(items)
        meta: dict[str, Any] = {"resourceVersion": str(snapshot)}
        if end < len(items):
            meta["continue"] = base64.urlsafe_b64encode(
                json.dumps([snapshot, end]).encode()
            ).decode()
        return {
            "apiVersion": "v1",
            "kind": f"{self.kind}List",
            "metadata": meta,
            "items": items[start:end],
        }

    def get(self, ns: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self._require(ns, name))

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store an object as given (status, uid and all), as the controllers and kubelets that
        own it would leave it; watchers see ADDED or MODIFIED."""
        obj = self._normalize(copy.deepcopy(obj))
        obj.setdefault("apiVersion", "v1")
        obj.setdefault("kind", self.kind)
        meta = obj["metadata"]
        if self.namespaced:
            meta.setdefault("namespace", "default")
        key = (meta.get("namespace", ""), meta["name"])
        current = self.objects.get(key)
        meta.setdefault("uid", current["metadata"]["uid"] if current else str(uuid.uuid4()))
        meta.setdefault(
            "creationTimestamp", current["metadata"]["creationTimestamp"] if current else _now()
        )
        self.objects[key] = obj
        self.record("MODIFIED" if current else "ADDED", current, obj)
        return copy.deepcopy(obj)

    def delete(self, ns: str, name: str, body: Any) -> dict[str, Any]:
        """Delete at once (no graceful deletion, no finalizers); returns the last state."""
        current = self._require(ns, name)
        pre = (body or {}).get("preconditions") or {}
        meta = current["metadata"]
        if pre.get("uid") and pre["uid"] != meta["uid"]:
            raise ApiError(409, "Conflict", f"Precondition failed: UID in precondition: {pre['uid']}, "
                           f"UID in object meta: {meta['uid']}")  # fmt: skip
        del self.objects[(ns, name)]
        gone = copy.deepcopy(current)
        self.record("DELETED", current, gone)
        return copy.deepcopy(gone)

    def patch_metadata(self, ns: str, name: str, patch: Any) -> dict[str, Any]:
        """A merge patch that may change labels and annotations only (what the stand-in models
        of updates to namespaces and nodes, and of pods outside their status)."""
        current = self._patch_target(ns, name, patch)
        merged = _merge_patch(current, patch)
        if merged.get("spec") != current.get("spec"):
            raise ApiError(422, "Invalid", f'{self.kind} "{name}" is invalid: spec: Forbidden: updates may '
                           "not change fields other than those the stand-in models",
                           {"name": name, "kind": self.kind})  # fmt: skip
        new = copy.deepcopy(current)
        for key in ("labels", "annotations"):
            if (value := merged["metadata"].get(key)) is not None:
                new["metadata"][key] = value
            else:
                new["metadata"].pop(key, None)
        new = self._normalize(new)
        self.objects[(ns, name)] = new
        self.record("MODIFIED", current, new)
        return copy.deepcopy(new)

    def _normalize(self, obj: dict[str, Any]) -> dict[str, Any]:
        """What the API server enforces on every write of this resource."""
        return obj

    def _patch_target(self, ns: str, name: str, patch: Any) -> dict[str, Any]:
        """The object a merge patch applies to; 400 for a patch that is not an object, 409 when
        it names another resourceVersion (optimistic concurrency, as the API server does)."""
        current = self._require(ns, name)
        if not isinstance(patch, dict):
            raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
        rv = (patch.get("metadata") or {}).get("resourceVersion")
        if rv and rv != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {self.plural} "{name}": the '
                           "object has been modified; please apply your changes to the latest version "
                           "and try again", {"name": name, "kind": self.plural})  # fmt: skip
        return current

    def _require(self, ns: str, name: str) -> dict[str, Any]:
        obj = self.objects.get((ns, name))
        if obj is None:
            raise ApiError(
                404,
                "NotFound",
                f'{self.plural} "{name}" not found',
                {"name": name, "kind": self.plural},
            )
        return obj


class _Pods(_Collection):
    """Pods: created through the API (status Pending) or put as the kubelet leaves them."""

    kind, plural, namespaced, fields = "Pod", "pods", True, _POD_FIELDS

    def create(self, ns: str, body: Any) -> dict[str, Any]:
        pod = self._check(ns, body, name=None)
        meta = pod["metadata"]
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ApiError(422, "Invalid", 'Pod "" is invalid: metadata.name: Required value: name or '
                               "generateName is required",
                               {"name": "", "kind": "Pod", "causes": [
                                   {"reason": "FieldValueRequired", "field": "metadata.name",
                                    "message": "Required value: name or generateName is required"}]})  # fmt: skip
            meta["name"] = meta["generateName"] + "".join(random.choices(_NAME_SUFFIX, k=5))
        if (ns, meta["name"]) in self.objects:
            raise ApiError(409, "AlreadyExists", f'pods "{meta["name"]}" already exists',
                           {"name": meta["name"], "kind": "pods"})  # fmt: skip
        if not (pod.get("spec") or {}).get("containers"):
            raise ApiError(422, "Invalid", f'Pod "{meta["name"]}" is invalid: spec.containers: Required value',
                           {"name": meta["name"], "kind": "Pod", "causes": [
                               {"reason": "FieldValueRequired", "field": "spec.containers",
                                "message": "Required value"}]})  # fmt: skip
        for key in _POD_SERVER_METADATA:
            meta.pop(key, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now())
        pod["spec"].setdefault("serviceAccountName", "default")
        pod["status"] = {
            "phase": "Pending",
            "qosClass": "BestEffort",
        }  # the kubelet reports the rest
        self.objects[(ns, meta["name"])] = pod
        self.record("ADDED", None, pod)
        return copy.deepcopy(pod)

    def patch(self, ns: str, name: str, patch: Any, *, status: bool) -> dict[str, Any]:
        if not status:
            return self.patch_metadata(ns, name, patch)
        current = self._patch_target(ns, name, patch)
        new = copy.deepcopy(current)
        new["status"] = (
            _merge_patch(current, patch).get("status") or {}
        )  # the status subresource: status only
        self.objects[(ns, name)] = new
        self.record("MODIFIED", current, new)
        return copy.deepcopy(new)

    @staticmethod
    def _check(ns: str, body: Any, *, name: str | None) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("metadata"), dict):
            raise ApiError(400, "BadRequest", "the body must be an object with metadata")
        body = copy.deepcopy(body)
        if body.setdefault("apiVersion", "v1") != "v1" or body.setdefault("kind", "Pod") != "Pod":
            raise ApiError(400, "BadRequest", f"the API version in the data ({body['apiVersion']}) and "
                           f"kind ({body['kind']}) do not match v1 Pod")  # fmt: skip
        meta = body["metadata"]
        if meta.get("namespace", ns) != ns:
            raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the "
                           "namespace sent on the request")  # fmt: skip
        meta["namespace"] = ns
        body.setdefault("spec", {})
        return body


class _Namespaces(_Collection):
    """Namespaces: created through the API or put; always labelled with their name."""

    kind, plural, namespaced, fields = "Namespace", "namespaces", False, _NAMESPACE_FIELDS

    def create(self, body: Any) -> dict[str, Any]:
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("metadata"), dict)
            or not body["metadata"].get("name")
        ):
            raise ApiError(422, "Invalid", 'Namespace "" is invalid: metadata.name: Required value',
                           {"name": "", "kind": "Namespace"})  # fmt: skip
        name = body["metadata"]["name"]
        if ("", name) in self.objects:
            raise ApiError(409, "AlreadyExists", f'namespaces "{name}" already exists',
                           {"name": name, "kind": "namespaces"})  # fmt: skip
        namespace = copy.deepcopy(body)
        for key in _POD_SERVER_METADATA:
            namespace["metadata"].pop(key, None)
        namespace["status"] = {"phase": "Active"}
        return self.put(namespace)

    def _normalize(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj["metadata"].pop("namespace", None)
        labels = obj["metadata"].setdefault("labels", {})
        labels[NAMESPACE_NAME_LABEL] = obj["metadata"]["name"]
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj.setdefault("status", {"phase": "Active"})
        return obj


class _Nodes(_Collection):
    """Nodes: put as the kubelet registers and updates them."""

    kind, plural, namespaced, fields = "Node", "nodes", False, _NODE_FIELDS

    def _normalize(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj["metadata"].pop("namespace", None)
        return obj


def _watch_event(flt: _Filter, event: _Event) -> dict[str, Any] | None:
    """An event as a watcher with this filter sees it: entering the selection is ADDED, leaving
    it DELETED, as the API server's watch cache does."""
    was, now = flt(event.old), flt(event.new)
    if event.type == "DELETED":
        kind = "DELETED" if was else None
    elif was and now:
        kind = "MODIFIED"
    else:
        kind = "ADDED" if now else "DELETED" if was else None
    return None if kind is None else {"type": kind, "object": event.new}


def _expired(rv: int, oldest: int) -> dict[str, Any]:
    return {"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f"too old resource version: {rv} ({oldest})", "reason": "Expired", "code": 410}}  # fmt: skip


# --------------------------------------------------------------------------- HTTP


@dataclass(frozen=True)
class _Query:
    manager: str
    dry_run: bool
    force: bool


def _query(raw: str, user_agent: str, *, apply: bool = False) -> _Query:
    params = {k: v[-1] for k, v in parse_qs(raw).items()}
    dry_run = params.get("dryRun")
    if dry_run not in (None, "All"):
        raise ApiError(400, "BadRequest", f'dryRun: Unsupported value: "{dry_run}": '
                       'supported values: "All"')  # fmt: skip
    force = params.get("force", "false").lower() == "true"
    if force and not apply:
        raise ApiError(422, "Invalid", "force: Forbidden: may not be specified for non-apply patch")
    # Without fieldManager the API server names the manager after the client's user agent.
    manager = params.get("fieldManager") or ("" if apply else user_agent.split("/")[0])
    return _Query(manager=manager, dry_run=dry_run == "All", force=force)


class K8sStandIn:
    """The stand-in server. Use as a context manager; ``url`` is its base URL."""

    def __init__(self, *, schema_version: str = "1.19",
                 tokens: Mapping[str, Token] | None = None) -> None:  # fmt: skip
        self.store = _Store(schema_version=schema_version)
        self.tokens = dict(tokens) if tokens is not None else None
        self.requests: list[Request] = []
        #: called with each request before it is served (under the store lock): lets a test
        #: play a concurrent writer, e.g. modify the object between a client's read and write
        self.before: Callable[[Request], None] | None = None
        #: called with each request before the store lock is taken (so it may block, e.g. on a
        #: barrier, while other requests are served): lets a test line up concurrent clients
        self.arrive: Callable[[Request], None] | None = None
        self.pods = _Pods(self.store)
        self.namespaces = _Namespaces(self.store)
        self.nodes = _Nodes(self.store)
        #: plural -> the core/v1 collection served (and watched)
        self.core: dict[str, _Collection] = {
            c.plural: c for c in (self.pods, self.namespaces, self.nodes)
        }
        #: idle time after which a watch that asked for bookmarks gets one (None: never)
        self.bookmark_interval: float | None = None
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self.store.lock:
            for collection in self.core.values():
                collection.closed = True
                collection.changed.notify_all()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- test helpers

    def put_configmap(self, namespace: str, name: str, data: dict[str, str]) -> None:
        with self.store.lock:
            self.store.configmaps[(namespace, name)] = dict(data)

    def stored(self, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The stored object as a GET would return it, or None."""
        with self.store.lock:
            stored = self.store.objects.get((plural, namespace, name))
            return None if stored is None else self.store._render(stored)

    def put_pod(self, pod: dict[str, Any]) -> dict[str, Any]:
        """Create or replace a pod exactly as given (uid, nodeName and status included), as the
        scheduler and kubelet would leave it; watchers see ADDED or MODIFIED."""
        with self.store.lock:
            return self.pods.put(pod)

    def delete_pod(self, namespace: str, name: str) -> None:
        with self.store.lock:
            self.pods.delete(namespace, name, None)

    def put_namespace(self, name: str, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Create a namespace, or replace its labels (the API server adds
        ``kubernetes.io/metadata.name``); watchers see ADDED or MODIFIED."""
        with self.store.lock:
            current = self.namespaces.objects.get(("", name))
            namespace = copy.deepcopy(current) if current else {"metadata": {"name": name}}
            namespace["metadata"]["labels"] = dict(labels or {})
            return self.namespaces.put(namespace)

    def delete_namespace(self, name: str) -> None:
        """Delete a namespace at once (the stand-in has no Terminating phase)."""
        with self.store.lock:
            self.namespaces.delete("", name, None)

    def put_node(self, name: str, addresses: Mapping[str, str] | list[tuple[str, str]],
                 **status: Any) -> dict[str, Any]:  # fmt: skip
        """Register or update a node as its kubelet would: ``addresses`` are (type, address)
        pairs in ``status.addresses`` order (a mapping for one address per type); other
        ``status`` fields as given. Watchers see ADDED or MODIFIED."""
        pairs = list(addresses.items()) if isinstance(addresses, Mapping) else list(addresses)
        node = {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                "spec": {}, "status": {"addresses": [{"type": t, "address": a} for t, a in pairs], **status}}  # fmt: skip
        with self.store.lock:
            return self.nodes.put(node)

    def delete_node(self, name: str) -> None:
        with self.store.lock:
            self.nodes.delete("", name, None)

    def compact(self) -> int:
        """Forget the change history up to now, as etcd compaction does: a watch from an older
        resourceVersion gets 410 Expired. Returns the current resourceVersion."""
        with self.store.lock:
            for collection in self.core.values():
                collection.log.clear()
                collection.compacted = self.store.revision
            return self.store.revision

    def drop_watches(self) -> None:
        """Cut every open watch connection mid-stream (no terminating chunk), as a network
        failure or an API server restart would."""
        with self.store.lock:
            for collection in self.core.values():
                collection.epoch += 1
                collection.changed.notify_all()

    def watch_requests(self) -> list[Request]:
        return [r for r in self.requests if r.query.get("watch") in ("true", "1")]

    def writes(self) -> list[Request]:
        return [r for r in self.requests if r.method != "GET"]

    def touch(self, plural: str, namespace: str | None, name: str, patch: dict[str, Any],
              manager: str = "someone-else") -> None:  # fmt: skip
        """Merge-patch a stored object as another client would (call with the lock held, i.e.
        from ``before``, or from the test thread when no request is in flight)."""
        self.store.merge_patch(plural, namespace, name, patch, _Query(manager, False, False))

    # ----------------------------------------------------------------- dispatch

    def handle(
        self, method: str, url: str, headers: Mapping[str, str], raw: bytes
    ) -> tuple[int, Any]:
        split = urlsplit(url)
        content_type = headers.get("Content-Type", "").split(";")[0].strip()
        try:
            body = self._decode(content_type, raw)
        except ApiError as exc:
            return exc.status["code"], exc.status
        self.requests.append(Request(method, split.path, {k: v[-1] for k, v in parse_qs(split.query).items()},
                                     content_type, body))  # fmt: skip
        if self.arrive is not None:
            self.arrive(self.requests[-1])
        try:
            with self.store.lock:
                if self.before is not None:
                    self.before(self.requests[-1])
                return self._route(method, split.path, split.query, headers, content_type, body)
        except ApiError as exc:
            return exc.status["code"], exc.status

    @staticmethod
    def _decode(content_type: str, raw: bytes) -> Any:
        if not raw:
            return None
        try:
            if content_type.endswith("yaml"):
                return yaml.safe_load(raw.decode())
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as exc:
            raise ApiError(400, "BadRequest", f"error decoding the body: {exc}") from exc

    def _authorize(self, headers: Mapping[str, str], verb: str, resource: str, name: str | None,
                   ns: str | None) -> None:  # fmt: skip
        if self.tokens is None:
            return
        auth = headers.get("Authorization", "")
        token = (
            self.tokens.get(auth.removeprefix("Bearer ").strip())
            if auth.startswith("Bearer ")
            else None
        )
        if token is None:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        if verb not in token.verbs or (token.resources is not None
                                        and resource.partition(".")[0] not in token.resources):  # fmt: skip
            shown = resource.removesuffix(".")  # "pods" for the core group, "x.cilium.io" otherwise
            what = f'{shown} "{name}" is forbidden' if name else f"{shown} is forbidden"
            where = f' in the namespace "{ns}"' if ns else " at the cluster scope"
            group = resource.partition(".")[2]
            raise ApiError(403, "Forbidden", f'{what}: User "{token.user}" cannot {verb} resource '
                           f'"{resource.partition(".")[0]}" in API group "{group}"{where}',
                           {"name": name or "", "group": group, "kind": resource.partition(".")[0]})  # fmt: skip

    def _route(self, method: str, path: str, raw_query: str, headers: Mapping[str, str],
               content_type: str, body: Any) -> tuple[int, Any]:  # fmt: skip
        agent = headers.get("User-Agent", "unknown")
        if m := _CONFIGMAP.match(path):
            if method != "GET":
                raise ApiError(405, "MethodNotAllowed", "the stand-in serves ConfigMaps read-only")
            self._authorize(headers, "get", "configmaps.", m["name"], m["ns"])
            data = self.store.configmaps.get((m["ns"], m["name"]))
            if data is None:
                raise ApiError(404, "NotFound", f'configmaps "{m["name"]}" not found',
                               {"name": m["name"], "kind": "configmaps"})  # fmt: skip
            return 200, {"apiVersion": "v1", "kind": "ConfigMap", "data": data,
                         "metadata": {"name": m["name"], "namespace": m["ns"]}}  # fmt: skip
        if m := _CORE.match(path):
            return self._route_core(method, m, raw_query, headers, content_type, body)
        m = _COLLECTION.match(path)
        if not m or m["plural"] not in RESOURCES:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        plural, ns, name = m["plural"], m["ns"], m["name"]
        if ns is not None and not RESOURCES[plural][1]:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if (ns is None and RESOURCES[plural][1] and method != "GET") or (
            ns is None and name and RESOURCES[plural][1]
        ):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        resource = f"{plural}.{GROUP}"
        store = self.store
        if name is None:
            if method == "GET":
                self._authorize(headers, "list", resource, None, ns)
                selector = parse_qs(raw_query).get("labelSelector", [None])[-1]
                return 200, store.list(plural, ns, selector)
            if method == "POST":
                self._authorize(headers, "create", resource, None, ns)
                return store.create(plural, ns, body, _query(raw_query, agent))
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on a collection")
        if method == "GET":
            self._authorize(headers, "get", resource, name, ns)
            return 200, store.get(plural, ns, name)
        if method == "PUT":
            self._authorize(headers, "update", resource, name, ns)
            return 200, store.replace(plural, ns, name, body, _query(raw_query, agent))
        if method == "DELETE":
            self._authorize(headers, "delete", resource, name, ns)
            return 200, store.delete(plural, ns, name, body, _query(raw_query, agent))
        if method == "PATCH":
            self._authorize(headers, "patch", resource, name, ns)
            if content_type == "application/apply-patch+yaml":
                return store.apply(plural, ns, name, body, _query(raw_query, agent, apply=True))
            if content_type == "application/merge-patch+json":
                return 200, store.merge_patch(plural, ns, name, body, _query(raw_query, agent))
            raise ApiError(415, "UnsupportedMediaType",
                           f"the body of the request was in an unknown format: {content_type}")  # fmt: skip
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported")

    def _route_core(self, method: str, m: re.Match[str], raw_query: str, headers: Mapping[str, str],
                    content_type: str, body: Any) -> tuple[int, Any]:  # fmt: skip
        """core/v1 pods, namespaces and nodes (``/status`` of pods only)."""
        collection = self.core[m["plural"]]
        ns, name, status = m["ns"], m["name"], bool(m["status"])
        if (ns is not None and not collection.namespaced) or (
            status and collection is not self.pods
        ):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        resource = f"{collection.plural}."
        params = {k: v[-1] for k, v in parse_qs(raw_query).items()}
        if name is None:
            if method == "GET":
                self._authorize(headers, "list", resource, None, ns)
                limit = int(params.get("limit") or 0)
                return 200, collection.list(
                    collection.filter(ns, params), limit, params.get("continue")
                )
            if method == "POST" and collection is self.pods and ns is not None:
                self._authorize(headers, "create", resource, None, ns)
                return 201, self.pods.create(ns, body)
            if method == "POST" and collection is self.namespaces:
                self._authorize(headers, "create", resource, None, None)
                return 201, self.namespaces.create(body)
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on a collection")
        if collection.namespaced and ns is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        key_ns = ns or ""
        if method == "GET":
            self._authorize(headers, "get", resource, name, ns)
            return 200, collection.get(key_ns, name)
        if method == "PATCH":
            self._authorize(headers, "patch", resource, name, ns)
            if content_type not in (
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
            ):
                raise ApiError(415, "UnsupportedMediaType",
                               f"the stand-in does not model {content_type} for {collection.plural}")  # fmt: skip
            if collection is self.pods:
                return 200, self.pods.patch(key_ns, name, body, status=status)
            return 200, collection.patch_metadata(key_ns, name, body)
        if method == "DELETE" and not status:
            self._authorize(headers, "delete", resource, name, ns)
            return 200, collection.delete(key_ns, name, body)
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported")

    # ----------------------------------------------------------------- core/v1 watch (streaming)

    def is_watch(self, method: str, url: str) -> bool:
        split = urlsplit(url)
        params = parse_qs(split.query)
        return (method == "GET" and params.get("watch", [""])[-1] in ("true", "1")
                and bool(m := _CORE.match(split.path)) and m["name"] is None)  # fmt: skip

    def serve_watch(self, handler: BaseHTTPRequestHandler, url: str) -> None:
        """Stream watch events of pods, namespaces or nodes as the API server does: one JSON
        object per chunk."""
        split = urlsplit(url)
        params = {k: v[-1] for k, v in parse_qs(split.query).items()}
        self.requests.append(Request("GET", split.path, params, "", None))
        m = _CORE.match(split.path)
        assert m is not None  # is_watch() said so
        ns, collection = m["ns"], self.core[m["plural"]]
        try:
            with self.store.lock:
                if ns is not None and not collection.namespaced:
                    raise ApiError(
                        404, "NotFound", "the server could not find the requested resource"
                    )
                self._authorize(handler.headers, "watch", f"{collection.plural}.", None, ns)
                flt = collection.filter(ns, params)
                raw_rv = params.get("resourceVersion", "")
                try:
                    last = int(raw_rv) if raw_rv not in ("", "0") else self.store.revision
                except ValueError:
                    raise ApiError(
                        400, "BadRequest", f'invalid resource version: "{raw_rv}"'
                    ) from None
                pending: list[dict[str, Any]] = []
                if raw_rv in ("", "0"):  # "get state and start at most recent": synthetic ADDEDs
                    pending = [{"type": "ADDED", "object": copy.deepcopy(p)}
                               for _, p in sorted(collection.objects.items()) if flt(p)]  # fmt: skip
                epoch = collection.epoch
        except ApiError as exc:
            _send_json(handler, exc.status["code"], exc.status)
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        now = time.monotonic()
        deadline = now + float(params.get("timeoutSeconds") or 1800)
        bookmarks = params.get("allowWatchBookmarks") in ("true", "1") and self.bookmark_interval
        try:
            while True:
                if pending:
                    for event in pending:
                        data = json.dumps(event).encode() + b"\n"
                        handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    if pending[-1]["type"] == "ERROR":
                        break
                    pending = []
                now = time.monotonic()
                if now >= deadline:
                    break
                bookmark_at = now + self.bookmark_interval if bookmarks else deadline
                with collection.changed:
                    while (not collection.closed and collection.epoch == epoch and last >= collection.compacted
                           and not (collection.log and collection.log[-1].rv > last)
                           and (now := time.monotonic()) < min(deadline, bookmark_at)):  # fmt: skip
                        collection.changed.wait(min(deadline, bookmark_at) - now)
                    if collection.closed or collection.epoch != epoch:
                        handler.close_connection = True
                        handler.connection.shutdown(socket.SHUT_RDWR)  # cut: no terminating chunk
                        return
                    if last < collection.compacted:
                        pending = [_expired(last, collection.compacted)]
                        continue
                    new = [e for e in collection.log if e.rv > last]
                    if new:
                        last = new[-1].rv
                    pending = [ev for e in new if (ev := _watch_event(flt, e)) is not None]
                    if not new and bookmarks and time.monotonic() >= bookmark_at:
                        pending = [{"type": "BOOKMARK", "object": {"kind": collection.kind, "apiVersion": "v1",
                                    "metadata": {"resourceVersion": str(self.store.revision)}}}]  # fmt: skip
                        last = self.store.revision
            handler.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True


def _send_json(handler: BaseHTTPRequestHandler, code: int, payload: Any) -> None:
    data = json.dumps(payload).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def _handler_for(standin: K8sStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are separate writes

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if standin.is_watch(self.command, self.path):
                standin.serve_watch(self, self.path)
                return
            code, payload = standin.handle(self.command, self.path, self.headers, raw)
            _send_json(self, code, payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output quiet

    return Handler
