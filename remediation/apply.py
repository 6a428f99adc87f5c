"""Apply an approved CiliumNetworkPolicy to a cluster, and roll it back.

Applying a network policy can cut a workload off, so every step here is conservative:

* the policy is checked with :func:`~netwarden.remediation.schema.check_policy` first; an invalid
  policy is never sent;
* every write is conditional on what was read, so that two writers never both "win":

  - a policy that is not there is **created** (``POST``): if someone created it meanwhile the API
    server answers 409 ``AlreadyExists``, never a server-side apply over an object that appeared;
  - a policy that is there is **updated** by server-side apply (``PATCH``,
    ``application/apply-patch+yaml``) as field manager ``netwarden`` with ``force=False`` and the
    ``resourceVersion`` of the object read: if anyone wrote in between, a 409 :class:`Conflict`
    (``stale``), reported and never retried over their change; fields another manager owns are a
    :class:`Conflict` naming that manager and those fields, never taken over. Kubernetes keys
    ownership by (manager, operation) (kubernetes/kubernetes#107417), so fields netwarden itself
    wrote with a create or a rollback (operation ``Update``) would conflict with its own apply:
    those, and only those, are forced (the ``resourceVersion`` still pins the object);

  ``fieldValidation=Strict`` so the API server refuses unknown fields instead of silently dropping
  part of a security policy;
* a ``dryRun=All`` request runs the API server's validation and admission first, then the real one
  against the same ``resourceVersion``;
* the object as it was before (or its absence) is recorded in :class:`AppliedChange`: exactly what
  was replaced. :meth:`PolicyApplier.rollback` puts back its spec, labels and annotations (or
  deletes the object when netwarden created it, with ``uid`` and ``resourceVersion``
  preconditions), and refuses with :class:`ChangedSinceApply` when the object's content is no
  longer what netwarden applied (someone wrote after it, or deleted or re-created it): a rollback
  never clobbers a later change.

Audit mode. Cilium has no per-policy audit switch (cilium/cilium#9580 is still open). Policy
Audit Mode is an agent setting, ``policy-audit-mode`` in the ``cilium-config`` ConfigMap (Helm
``policyAuditMode``), or a per-endpoint option set on the node with ``cilium-dbg endpoint config
<id> PolicyAuditMode=Enabled`` (docs.cilium.io "Creating Policies from Verdicts"). The spec's
``enableDefaultDeny`` (Cilium >= 1.15) only decides whether a policy puts endpoints into
default-deny; deny rules still drop and nothing is reported as AUDIT, so rewriting a policy with
it would be a different policy, not an audit. So ``apply(policy, audit=True)`` applies the policy
unchanged only after reading ``cilium-config`` and finding audit mode on, and otherwise raises
:class:`AuditModeUnavailable` saying how to turn it on. Per-endpoint audit mode is invisible to
the Kubernetes API, so it is not checked.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
import urllib3
from kubernetes import client as k8s

from .schema import (
    API_VERSION,
    DEFAULT_SCHEMA_VERSION,
    KINDS,
    InvalidPolicy,
    check_policy,
)

__all__ = [
    "AppliedChange",
    "ApplyError",
    "ApplyResult",
    "AuditModeUnavailable",
    "Cause",
    "ChangedSinceApply",
    "Conflict",
    "Forbidden",
    "Invalid",
    "NotFound",
    "PolicyApplier",
    "PolicyRef",
    "Unreachable",
    "diverged",
    "restorable",
]

GROUP, VERSION = API_VERSION.split("/")
APPLY_PATCH: Final = "application/apply-patch+yaml"
#: Metadata the API server owns; never sent back on a replace.
SERVER_METADATA: Final = frozenset(
    ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink",
     "deletionTimestamp", "deletionGracePeriodSeconds")
)  # fmt: skip
_MANAGER = re.compile(r'conflicts? with "((?:[^"\\]|\\.)*)"')


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True, slots=True)
class Cause:
    """One reason the API server (or netwarden's own check) gave: field and message."""

    field: str
    message: str
    reason: str = ""

    def __str__(self) -> str:
        return f"{self.field or '<object>'}: {self.message}"


class ApplyError(Exception):
    """A policy could not be applied or rolled back; ``str()`` says what to do about it."""

    def __init__(self, message: str, *, status: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = dict(status or {})  # the API server's Status object, when there was one


class Conflict(ApplyError):
    """409: fields owned by other managers (``managers``: manager -> fields) or, when that is
    empty, the object changed since it was read (``reason`` ``Conflict``/``AlreadyExists``)."""

    def __init__(self, message: str, *, managers: Mapping[str, list[str]] | None = None,
                 reason: str = "Conflict", status: Mapping[str, Any] | None = None) -> None:  # fmt: skip
        super().__init__(message, status=status)
        self.managers = {name: list(fields) for name, fields in (managers or {}).items()}
        self.reason = reason

    @property
    def stale(self) -> bool:
        """The object was modified since it was read (someone else wrote in between)."""
        return not self.managers and self.reason == "Conflict"

    @property
    def concurrent(self) -> bool:
        """Another writer got there first (stale, created meanwhile, or changed since our
        apply): a verdict on the race, not on the policy."""
        return not self.managers and self.reason in ("Conflict", "AlreadyExists",
                                                     "ChangedSinceApply")  # fmt: skip


class ChangedSinceApply(Conflict):
    """A rollback refused: the object is no longer what netwarden applied (changed, deleted or
    re-created by someone else since), so restoring would undo their change."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="ChangedSinceApply")


class Invalid(ApplyError):
    """The policy was refused by validation; ``causes`` lists every problem, ``by`` says whose
    (``"netwarden"`` before sending, ``"server"`` from the API server's 422/400)."""

    def __init__(self, message: str, *, causes: Iterable[Cause], by: str,
                 status: Mapping[str, Any] | None = None) -> None:  # fmt: skip
        super().__init__(message, status=status)
        self.causes = tuple(causes)
        self.by = by


class Forbidden(ApplyError):
    """401/403: netwarden's credentials lack a permission (RBAC)."""


class NotFound(ApplyError):
    """404: the object, its namespace or the Cilium CRD is not there."""


class Unreachable(ApplyError):
    """The API server could not be reached; ``url`` is where netwarden tried."""

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


class AuditModeUnavailable(ApplyError):
    """Audit mode was asked for but the cluster's Cilium is not (known to be) in audit mode."""


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class PolicyRef:
    """Which object a policy is: kind, name and (for CiliumNetworkPolicy) namespace."""

    kind: str
    name: str
    namespace: str | None = None

    @classmethod
    def of(cls, policy: Mapping[str, Any]) -> PolicyRef:
        meta = policy["metadata"]
        namespaced = KINDS[policy["kind"]][1]
        return cls(policy["kind"], meta["name"], meta.get("namespace") if namespaced else None)

    @property
    def plural(self) -> str:
        return KINDS[self.kind][0]

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What the API server answered for an apply (or would, for a dry run)."""

    ref: PolicyRef
    object: dict[str, Any]  # the object as the server returned it
    previous: dict[str, Any] | None  # the object before, None when it did not exist
    dry_run: bool

    @property
    def created(self) -> bool:
        return self.previous is None

    @property
    def changed(self) -> bool:
        """Whether spec, labels or annotations differ from before."""
        return self.previous is None or _content(self.previous) != _content(self.object)


@dataclass(frozen=True, slots=True)
class AppliedChange:
    """An applied policy and what it replaced: everything :meth:`PolicyApplier.rollback` needs.
    ``to_dict``/``from_dict`` let it be stored (a rollback may come from another process)."""

    ref: PolicyRef
    previous: dict[str, Any] | None
    applied: dict[str, Any]
    audit_mode: bool = False
    dry_run: ApplyResult | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"ref": {"kind": self.ref.kind, "name": self.ref.name,
                        "namespace": self.ref.namespace},
                "previous": self.previous, "applied": self.applied,
                "audit_mode": self.audit_mode}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AppliedChange:
        return cls(PolicyRef(**data["ref"]), data["previous"], data["applied"],
                   bool(data.get("audit_mode", False)))  # fmt: skip


def diverged(expected: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    """How ``current`` is no longer the object ``expected`` (one read or written before): another
    ``uid``, or other spec, labels or annotations (a status update does not count); "" when it
    still is."""
    if (current.get("metadata") or {}).get("uid") != (expected.get("metadata") or {}).get("uid"):
        return "it was deleted and re-created (another uid)"
    ours, now = _content(expected), _content(current)
    changed = sorted(k for k in ours.keys() | now.keys() if ours.get(k) != now.get(k))
    if not changed:
        return ""
    entries = (current.get("metadata") or {}).get("managedFields") or []
    managers = sorted({str(e.get("manager", "?")) for e in entries if isinstance(e, dict)})
    owners = f" (field managers now: {', '.join(managers)})" if managers else ""
    return f"its {', '.join(changed)} changed{owners}"


def _content(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What a rollback restores: everything but metadata, plus labels and annotations."""
    meta = obj.get("metadata") or {}
    out = {k: v for k, v in obj.items() if k not in ("metadata", "status")}
    out["labels"] = meta.get("labels") or {}
    out["annotations"] = meta.get("annotations") or {}
    return out


def restorable(obj: Mapping[str, Any], resource_version: str | None = None) -> dict[str, Any]:
    """``obj`` without server-managed metadata (``managedFields``, ``uid``, ...), ready to be
    sent back; with ``resource_version`` set for an optimistic-concurrency replace."""
    out = copy.deepcopy(dict(obj))
    out.pop("status", None)
    meta = {k: v for k, v in out.get("metadata", {}).items() if k not in SERVER_METADATA}
    if resource_version is not None:
        meta["resourceVersion"] = resource_version
    out["metadata"] = meta
    return out


# --------------------------------------------------------------------------- the applier


class PolicyApplier:
    """Applies, dry-runs and rolls back Cilium policies through a ``kubernetes`` ApiClient.

    Settings only; no state beyond the client. ``schema_version`` is the Cilium CRD version the
    local check uses; ``cilium_namespace`` is where ``cilium-config`` lives.
    """

    def __init__(self, api_client: k8s.ApiClient, *, field_manager: str = "netwarden",
                 schema_version: str = DEFAULT_SCHEMA_VERSION,
                 cilium_namespace: str = "kube-system", timeout: float = 10.0) -> None:  # fmt: skip
        if not field_manager or len(field_manager) > 128:
            raise ValueError("field_manager must be 1 to 128 characters long")
        self.api_client = api_client
        self.field_manager = field_manager
        self.schema_version = schema_version
        self.cilium_namespace = cilium_namespace
        self.timeout = timeout
        self._custom = k8s.CustomObjectsApi(api_client)
        self._core = k8s.CoreV1Api(api_client)

    # ----------------------------------------------------------------- public API

    def get(
        self, namespace: str | None, name: str, *, kind: str | None = None
    ) -> dict[str, Any] | None:
        """The object as stored, or None. Without ``kind``: a CiliumNetworkPolicy when
        ``namespace`` is given, else a CiliumClusterwideNetworkPolicy."""
        kind = kind or ("CiliumNetworkPolicy" if namespace else "CiliumClusterwideNetworkPolicy")
        return self._get(PolicyRef(kind, name, namespace if KINDS[kind][1] else None))

    def dry_run(self, policy: Mapping[str, Any]) -> ApplyResult:
        """What applying ``policy`` would store; nothing is changed. Pass the result to
        :meth:`apply` (``checked=``) to apply against the very object this dry-run saw."""
        ref = self._check(policy)
        previous = self._get(ref)
        return self._write(ref, policy, previous, dry_run=True)

    def apply(self, policy: Mapping[str, Any], *, audit: bool = False,
              checked: ApplyResult | None = None) -> AppliedChange:  # fmt: skip
        """Dry-run, then apply ``policy``; the result holds what it replaced, for rollback.

        With ``checked`` (a :meth:`dry_run` of this policy) its dry-run stands and the apply is
        conditional on the object it saw: a change since then is a :class:`Conflict`. Without,
        the object is read and dry-run here first. A concurrent writer is never retried over:
        its change stands and the :class:`Conflict` says so.

        With ``audit=True`` the policy is applied only if Cilium runs in policy audit mode (see
        the module docstring); otherwise :class:`AuditModeUnavailable` is raised and nothing is
        sent.
        """
        ref = self._check(policy)
        if checked is not None and (checked.ref != ref or not checked.dry_run):
            raise ValueError(f"checked must be a dry-run of {ref}, got one of {checked.ref}")
        if audit:
            self.require_audit_mode()
        if checked is None:
            checked = self._write(ref, policy, self._get(ref), dry_run=True)
        done = self._write(ref, policy, checked.previous, dry_run=False)
        return AppliedChange(ref, checked.previous, done.object, audit_mode=audit, dry_run=checked)

    def rollback(self, change: AppliedChange) -> None:
        """Restore the object ``change`` replaced (spec, labels, annotations exactly), or delete
        it when ``change`` created it.

        Only while the object is still what netwarden applied (same ``uid``, same spec, labels
        and annotations: a status update does not count): otherwise :class:`ChangedSinceApply`,
        and nothing is written. The write is conditional on the ``resourceVersion`` read, so a
        writer in between is a stale :class:`Conflict`, not overwritten.
        """
        ref = change.ref
        current = self._get(ref)
        if current is None:
            if change.previous is None:
                return  # it created the object and the object is gone: nothing to undo
            raise ChangedSinceApply(
                f"cannot roll back {ref}: it was deleted after netwarden applied it; the "
                "object it replaced is not re-created over that decision (re-apply it by hand "
                "if that is what is wanted)"
            )
        why = diverged(change.applied, current)
        if why:
            raise ChangedSinceApply(
                f"cannot roll back {ref}: {why} since netwarden applied it (resourceVersion "
                f"{change.applied['metadata'].get('resourceVersion')} -> "
                f"{current['metadata'].get('resourceVersion')}); restoring the previous object "
                "would undo that change. Review the policy in the cluster and change it by hand "
                "or through a new proposal"
            )
        meta = current["metadata"]
        try:
            if change.previous is None:
                self._delete(ref, uid=meta["uid"], resource_version=meta["resourceVersion"])
            else:
                self._restore(ref, change.previous, meta["resourceVersion"])
        except Conflict as exc:
            raise Conflict(f"rollback of {ref} failed: {exc}", managers=exc.managers,
                           reason=exc.reason, status=exc.status) from exc  # fmt: skip

    def audit_mode_enabled(self) -> bool:
        """Whether ``cilium-config`` sets ``policy-audit-mode: "true"`` (the whole daemon)."""
        try:
            config = self._call(
                f"read ConfigMap {self.cilium_namespace}/cilium-config",
                self._core.read_namespaced_config_map, "cilium-config", self.cilium_namespace,
            )  # fmt: skip
        except NotFound as exc:
            raise AuditModeUnavailable(
                f"cannot tell whether Cilium runs in audit mode: ConfigMap "
                f"{self.cilium_namespace}/cilium-config not found (is Cilium installed in another "
                "namespace? set cilium_namespace)"
            ) from exc
        data = config.data or {}
        return str(data.get("policy-audit-mode", "false")).strip().lower() == "true"

    def require_audit_mode(self) -> None:
        """Raise :class:`AuditModeUnavailable` unless the cluster runs in policy audit mode."""
        if not self.audit_mode_enabled():
            raise AuditModeUnavailable(
                "Cilium policy audit mode is off in this cluster (cilium-config "
                'policy-audit-mode is not "true"). Audit mode is a Cilium agent setting, not part '
                "of a policy: enable it with Helm (policyAuditMode=true) or per endpoint "
                "(cilium-dbg endpoint config <id> PolicyAuditMode=Enabled), or apply without audit."
            )

    # ----------------------------------------------------------------- steps

    def _check(self, policy: Mapping[str, Any]) -> PolicyRef:
        try:
            check_policy(policy, schema_version=self.schema_version)
        except InvalidPolicy as exc:
            causes = [Cause(p.path, p.message) for p in exc.problems]
            raise Invalid(f"{exc}\nNothing was sent to the cluster.", causes=causes,
                          by="netwarden") from exc  # fmt: skip
        ref = PolicyRef.of(policy)
        if KINDS[ref.kind][1] and not ref.namespace:
            # kubectl would pick the kubeconfig's namespace; a reviewed policy must say where.
            cause = Cause("metadata.namespace", "required: say which namespace the policy is for")
            raise Invalid(f"{ref} has no namespace. Nothing was sent to the cluster.",
                          causes=[cause], by="netwarden")  # fmt: skip
        return ref

    def _write(self, ref: PolicyRef, policy: Mapping[str, Any], previous: dict[str, Any] | None,
               *, dry_run: bool) -> ApplyResult:  # fmt: skip
        """Create ``policy`` if ``previous`` is None, else update it conditionally on
        ``previous``'s resourceVersion (see the module docstring)."""
        what = f"{'dry-run ' if dry_run else ''}apply {ref}"
        options: dict[str, Any] = {
            "dry_run": "All" if dry_run else None,
            "field_manager": self.field_manager,
            "field_validation": "Strict",
        }
        body = restorable(policy)
        if previous is None:
            obj = self._call(what, self._custom_call("create", ref), body=body, **options)
            if not dry_run:
                obj = self._own_as_applier(ref, obj)
            return ApplyResult(ref, obj, None, dry_run)
        body["metadata"]["resourceVersion"] = previous["metadata"]["resourceVersion"]
        patch = self._custom_call("patch", ref)
        try:
            obj = self._call(what, patch, body=body, force=False, _content_type=APPLY_PATCH,
                             **options)  # fmt: skip
        except Conflict as exc:
            if set(exc.managers) != {self.field_manager}:
                raise
            # Only netwarden's own Update-operation fields conflict (see the module docstring).
            obj = self._call(what, patch, body=body, force=True, _content_type=APPLY_PATCH,
                             **options)  # fmt: skip
        return ApplyResult(ref, obj, previous, dry_run)

    def _own_as_applier(self, ref: PolicyRef, created: dict[str, Any]) -> dict[str, Any]:
        """Hand the fields netwarden just created (operation ``Update``) to its ``Apply``
        identity, as if a server-side apply had created them, so that a later apply of a policy
        without one of them removes it (Kubernetes keeps fields another (manager, operation)
        owns). An update that sets ``managedFields`` and changes nothing else stores exactly
        them (Kubernetes docs, Server-Side Apply, "Field management"); it is pinned to the
        created ``resourceVersion``. If it fails, the object stays as created: the next apply
        forces only netwarden's own fields (see :meth:`_write`)."""
        entries = []
        for entry in (created.get("metadata") or {}).get("managedFields") or []:
            mine = entry.get("manager") == self.field_manager and entry.get("operation") == "Update"
            entries.append({**entry, "operation": "Apply"} if mine else entry)
        return self._set_managed_fields(ref, created, entries) or created

    def _set_managed_fields(
        self, ref: PolicyRef, obj: dict[str, Any], entries: list[dict[str, Any]]
    ) -> dict[str, Any] | None:
        """``obj`` with ``entries`` as its managedFields (an update pinned to its
        resourceVersion), or None when that was refused: ownership is bookkeeping, the
        content was written already."""
        body = restorable(obj, obj["metadata"]["resourceVersion"])
        body["metadata"]["managedFields"] = entries
        try:
            return self._call(f"record field ownership of {ref}", self._custom_call("replace", ref),
                              body=body, field_manager=self.field_manager)  # fmt: skip
        except ApplyError:
            return None

    def _get(self, ref: PolicyRef) -> dict[str, Any] | None:
        try:
            return self._call(f"read {ref}", self._custom_call("get", ref))
        except NotFound:
            return None

    def _restore(self, ref: PolicyRef, previous: dict[str, Any], resource_version: str) -> None:
        """Put ``previous`` back over the object at ``resource_version``, then its field
        ownership too (the restore itself, an update, made netwarden own what it changed)."""
        restored = self._call(
            f"restore {ref}", self._custom_call("replace", ref),
            body=restorable(previous, resource_version), field_manager=self.field_manager,
            field_validation="Strict",
        )  # fmt: skip
        owners = (previous.get("metadata") or {}).get("managedFields")
        if owners:
            self._set_managed_fields(ref, restored, owners)

    def _delete(self, ref: PolicyRef, *, uid: str, resource_version: str) -> None:
        """Delete exactly the object read: the same uid (not one re-created under its name) at
        the same resourceVersion (nobody wrote since)."""
        pre = k8s.V1Preconditions(uid=uid, resource_version=resource_version)
        self._call(f"delete {ref}", self._custom_call("delete", ref),
                   body=k8s.V1DeleteOptions(preconditions=pre))  # fmt: skip

    def _custom_call(self, verb: str, ref: PolicyRef) -> Any:
        """Bind a CustomObjectsApi method to ``ref`` (namespaced or cluster-scoped).

        Bodies are decoded here, not by the client: its generated code only maps a 200 answer to
        an object, so the 201 of an apply that creates would come back as None.
        """
        scope = "namespaced" if ref.namespace else "cluster"
        method = getattr(self._custom, f"{verb}_{scope}_custom_object")
        args: tuple[str, ...] = (GROUP, VERSION)
        args += (ref.namespace,) if ref.namespace else ()
        args += (ref.plural,) if verb == "create" else (ref.plural, ref.name)

        def call(**kwargs: Any) -> Any:
            response = method(*args, _preload_content=False, **kwargs)
            return orjson.loads(response.data) if response.data else None

        return call

    def _call(self, what: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        """Call the client; turn its exceptions into :class:`ApplyError` subclasses."""
        try:
            return method(*args, _request_timeout=self.timeout, **kwargs)
        except k8s.ApiException as exc:
            if exc.status in (0, None):
                raise self._unreachable(what, exc) from exc
            raise _error_from(what, exc) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise self._unreachable(what, exc) from exc

    def _unreachable(self, what: str, exc: Exception) -> Unreachable:
        url = self.api_client.configuration.host
        reason = getattr(exc, "reason", None) or exc
        return Unreachable(
            f"cannot {what}: the Kubernetes API server at {url} is unreachable ({reason}); "
            "check the kubeconfig/cluster URL and the network", url=url,
        )  # fmt: skip


# --------------------------------------------------------------------------- error mapping


def _error_from(what: str, exc: k8s.ApiException) -> ApplyError:
    """Map an API error to the hierarchy, keeping the server's Status and causes."""
    try:
        status = orjson.loads(exc.body or b"{}")
    except orjson.JSONDecodeError:
        status = {}
    if not isinstance(status, dict):
        status = {}
    message = status.get("message") or exc.reason or "no message"
    reason = status.get("reason", "")
    causes = [
        Cause(str(c.get("field", "")), str(c.get("message", "")), str(c.get("reason", "")))
        for c in (status.get("details") or {}).get("causes") or []
        if isinstance(c, dict)
    ]
    code = exc.status
    if code == 409:
        managers: dict[str, list[str]] = {}
        for cause in causes:
            if cause.reason == "FieldManagerConflict":
                match = _MANAGER.search(cause.message)
                managers.setdefault(match[1] if match else cause.message, []).append(cause.field)
        if managers:
            owned = "; ".join(f"{m!r} owns {', '.join(fs)}" for m, fs in managers.items())
            text = (f"cannot {what}: fields are managed by someone else ({owned}). netwarden does "
                    "not take them over: ask that owner, or remove those fields from the policy")  # fmt: skip
        elif reason == "AlreadyExists":
            text = f"cannot {what}: {message}"
        else:
            text = f"cannot {what}: it changed since it was read ({message})"
        return Conflict(text, managers=managers, reason=reason or "Conflict", status=status)
    if code in (400, 422):
        listed = "".join(f"\n  - {c}" for c in causes)
        return Invalid(f"the API server refused to {what}: {message}{listed}", causes=causes,
                       by="server", status=status)  # fmt: skip
    if code in (401, 403):
        return Forbidden(
            f"not allowed to {what}: {message}. Grant netwarden's service account this verb on "
            f"{KINDS_PLURALS} in API group {GROUP} (see deploy/ RBAC)", status=status,
        )  # fmt: skip
    if code == 404:
        return NotFound(f"cannot {what}: {message} (is the Cilium CRD installed and the namespace "
                        "present?)", status=status)  # fmt: skip
    return ApplyError(f"cannot {what}: the API server answered {code} {reason}: {message}",
                      status=status)  # fmt: skip


KINDS_PLURALS: Final = "/".join(plural for plural, _ in KINDS.values())
