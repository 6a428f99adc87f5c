"""Validate CiliumNetworkPolicy objects against the real Cilium CRD schema.

A proposal that the API server would refuse is worse than no proposal: it wastes a reviewer's
time and fails at apply. So every policy is checked, before it is shown, against the CRD's own
``openAPIV3Schema`` (shipped in ``crds/``), the way Kubernetes' structural-schema validation does
it, plus what JSON Schema cannot express:

* OpenAPI 3.0 specifics: ``nullable``, ``x-kubernetes-int-or-string``,
  ``x-kubernetes-preserve-unknown-fields``, and only the ``format`` values Kubernetes checks
  (``cidr``, ``date-time``, ``int32``, ``int64``); patterns use Go (RE2) semantics.
* Strict field validation (``kubectl apply --validate=strict``, the default): an object schema
  with ``properties`` and neither ``additionalProperties`` nor preserve-unknown-fields rejects keys
  it does not declare.
* ObjectMeta (``metadata`` is a bare ``object`` in the CRD, the API server checks it itself): a
  DNS-1123 ``name``; ``namespace`` only on the namespaced kind; label and annotation syntax.
* The CEL rule ``has(self.spec) || has(self.specs)`` (newer CRDs declare it; Cilium 1.19 rejects
  such a policy in the agent instead), checked by hand because jsonschema does not run CEL.

Validators are built once per (kind, schema version) and cached, so validating hundreds of
policies per second is cheap.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import functools
import importlib.resources
import ipaddress
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema import Draft4Validator, FormatChecker, ValidationError

__all__ = [
    "API_VERSION",
    "DEFAULT_SCHEMA_VERSION",
    "KINDS",
    "SCHEMA_VERSIONS",
    "InvalidPolicy",
    "PolicyFileError",
    "PolicyProblem",
    "check_policy",
    "crd_file",
    "load_policies",
    "validate_policy",
]

API_VERSION = "cilium.io/v2"
#: kind -> (CRD file stem, namespaced?)
KINDS: Mapping[str, tuple[str, bool]] = {
    "CiliumNetworkPolicy": ("ciliumnetworkpolicies", True),
    "CiliumClusterwideNetworkPolicy": ("ciliumclusterwidenetworkpolicies", False),
}
#: schema version -> suffix of the CRD file names in ``crds/``
SCHEMA_VERSIONS: Mapping[str, str] = {"1.19": "", "main-2026-05-29": "-main-2026-05-29"}
#: Cilium 1.19 is what the clusters run.
DEFAULT_SCHEMA_VERSION = "1.19"

# Custom keyword that marks a structural object whose undeclared keys are unknown fields.
_KNOWN_FIELDS = "x-netwarden-known-fields"


@dataclass(frozen=True, slots=True)
class PolicyProblem:
    """One reason a policy would be refused: where (JSON path, ``""`` = the whole object) and what
    to change."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '<policy>'}: {self.message}"


class InvalidPolicy(ValueError):
    """A policy failed validation; ``problems`` lists every reason, not just the first."""

    def __init__(self, problems: Iterable[PolicyProblem], policy: str = "policy") -> None:
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        count = len(self.problems)
        super().__init__(f"{policy} is invalid ({count} problem{'s' * (count != 1)}):\n{lines}")


class PolicyFileError(ValueError):
    """A policy file cannot be read as YAML policy objects; the message names file and line."""


# --------------------------------------------------------------------------- public API


def validate_policy(
    obj: Any, *, schema_version: str = DEFAULT_SCHEMA_VERSION, strict: bool = True
) -> list[PolicyProblem]:
    """Every problem the API server (and Cilium's CEL rule) would report; empty means valid.

    ``strict=False`` skips the unknown-field check (``--validate=ignore``: the API server would
    silently prune those fields instead of refusing the object).
    """
    if not isinstance(obj, Mapping):
        return [PolicyProblem("", f"a policy must be a mapping, got {_json_type(obj)}")]
    problems = _check_header(obj)
    kind = obj.get("kind")
    if not _is_known_kind(kind):
        return problems  # without a known kind there is no schema to check against
    namespaced = KINDS[kind][1]
    problems += _check_metadata(obj.get("metadata"), kind, namespaced)
    if "spec" not in obj and "specs" not in obj:
        problems.append(PolicyProblem("spec", "spec or specs must be provided"))
    validator = _validator(kind, schema_version)
    for error in validator.iter_errors(obj):
        problems += _problems_from(error)
    if not strict:
        problems = [p for p in problems if not p.message.startswith(_UNKNOWN_FIELD)]
    return sorted(set(problems), key=lambda p: (p.path, p.message))


def check_policy(obj: Any, *, schema_version: str = DEFAULT_SCHEMA_VERSION) -> None:
    """Raise :class:`InvalidPolicy` listing every problem unless ``obj`` is a valid policy."""
    problems = validate_policy(obj, schema_version=schema_version)
    if problems:
        raise InvalidPolicy(problems, _describe(obj))


def load_policies(path: str | Path) -> list[dict[str, Any]]:
    """Read policy objects from a YAML file (multi-document; ``kind: List`` is unpacked) or from
    every ``*.yaml``/``*.yml`` file of a directory, in name order. Documents are not validated:
    call :func:`validate_policy` on each."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
        return [policy for file in files for policy in _load_file(file)]
    if not path.exists():
        raise FileNotFoundError(f"policy file not found: {path}")
    return _load_file(path)


def crd_file(kind: str, schema_version: str = DEFAULT_SCHEMA_VERSION) -> Traversable:
    """The packaged CRD file for ``kind`` (a :data:`KINDS` key) at ``schema_version``."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    if schema_version not in SCHEMA_VERSIONS:
        raise ValueError(
            f"unknown schema_version {schema_version!r}; "
            f"expected one of {', '.join(SCHEMA_VERSIONS)}"
        )
    name = f"{KINDS[kind][0]}{SCHEMA_VERSIONS[schema_version]}.yaml"
    return importlib.resources.files(__package__ or "netwarden.remediation") / "crds" / name


# --------------------------------------------------------------------------- header and metadata

_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_OBJECT_META_FIELDS = frozenset(
    (
        "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
        "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels",
        "annotations", "ownerReferences", "finalizers", "managedFields",
    )
)  # fmt: skip
_UNKNOWN_FIELD = "unknown field"


def _check_header(obj: Mapping[str, Any]) -> list[PolicyProblem]:
    problems = []
    api_version = obj.get("apiVersion")
    if api_version is None:
        problems.append(
            PolicyProblem("apiVersion", f"required field is missing; set it to {API_VERSION}")
        )
    elif api_version != API_VERSION:
        problems.append(PolicyProblem("apiVersion", f"must be {API_VERSION}, got {api_version!r}"))
    kind = obj.get("kind")
    if not _is_known_kind(kind):
        found = "is missing" if kind is None else f"is {kind!r}"
        problems.append(PolicyProblem("kind", f"must be one of {', '.join(KINDS)}; it {found}"))
    return problems


def _is_known_kind(kind: Any) -> bool:
    return isinstance(kind, str) and kind in KINDS


def _check_metadata(metadata: Any, kind: str, namespaced: bool) -> list[PolicyProblem]:
    """What the API server checks on ObjectMeta for a custom resource."""
    if not isinstance(metadata, Mapping):
        return []  # missing or not an object: reported by the schema
    problems = []
    for key in metadata:
        if key not in _OBJECT_META_FIELDS:
            problems.append(
                PolicyProblem(f"metadata{_path_part(key)}", f"{_UNKNOWN_FIELD} in ObjectMeta")
            )
    name = metadata.get("name")
    if name is None:
        problems.append(
            PolicyProblem("metadata.name", "required field is missing: every policy needs a name")
        )
    elif not isinstance(name, str) or len(name) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(name):
        problems.append(
            PolicyProblem(
                "metadata.name",
                f"{name!r} is not a valid name: use at most 253 lower-case letters, digits, '-' "
                "and '.', starting and ending with a letter or digit",
            )
        )
    namespace = metadata.get("namespace")
    if namespace is not None:
        if not namespaced:
            problems.append(
                PolicyProblem(
                    "metadata.namespace",
                    f"{kind} is cluster-scoped, so a namespace is not allowed; remove it or use a "
                    "CiliumNetworkPolicy",
                )
            )
        elif (
            not isinstance(namespace, str)
            or len(namespace) > 63
            or not _DNS1123_LABEL.fullmatch(namespace)
        ):
            problems.append(
                PolicyProblem(
                    "metadata.namespace",
                    f"{namespace!r} is not a valid namespace: use at most 63 lower-case letters, "
                    "digits and '-', starting and ending with a letter or digit",
                )
            )
    for field, check_value in (("labels", True), ("annotations", False)):
        problems += _check_string_map(metadata.get(field), f"metadata.{field}", check_value)
    return problems


def _check_string_map(value: Any, path: str, label_values: bool) -> list[PolicyProblem]:
    if value is None:
        return []
    if not isinstance(value, Mapping):
        return [PolicyProblem(path, f"must be a map of strings, got {_json_type(value)}")]
    problems = []
    for key, item in value.items():
        where = f"{path}{_path_part(key)}"
        if not _is_qualified_name(key):
            problems.append(
                PolicyProblem(
                    where,
                    f"{key!r} is not a valid key: an optional DNS-subdomain prefix and '/', "
                    "then at most 63 letters, digits, '-', '_' or '.', starting and ending "
                    "with a letter or digit",
                )
            )
        if not isinstance(item, str):
            problems.append(
                PolicyProblem(where, f"must be a string, got {_json_type(item)} (quote it)")
            )
        elif label_values and (len(item) > 63 or not _LABEL_VALUE.fullmatch(item)):
            problems.append(
                PolicyProblem(
                    where,
                    f"{item!r} is not a valid label value: at most 63 letters, digits, "
                    "'-', '_' or '.', "
                    "starting and ending with a letter or digit",
                )
            )
    return problems


def _is_qualified_name(key: Any) -> bool:
    if not isinstance(key, str):
        return False
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(prefix)):
        return False
    return len(name) <= 63 and bool(_QUALIFIED_NAME.fullmatch(name))


def _describe(obj: Any) -> str:
    if not isinstance(obj, Mapping):
        return "policy"
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    name = "/".join(str(part) for part in (metadata.get("namespace"), metadata.get("name")) if part)
    return f"{obj.get('kind') or 'policy'} {name or '<unnamed>'}".strip()


# --------------------------------------------------------------------------- schema loading


@functools.cache
def _openapi_schema(kind: str, schema_version: str) -> dict[str, Any]:
    """The served ``v2`` ``openAPIV3Schema`` of the packaged CRD."""
    source = crd_file(kind, schema_version)
    crd = yaml.load(source.read_text(encoding="utf-8"), Loader=_YAML_LOADER)
    for version in crd["spec"]["versions"]:
        if version["name"] == "v2" and version.get("served", True):
            return version["schema"]["openAPIV3Schema"]
    raise ValueError(f"{source}: the CRD serves no v2 schema")


@functools.cache
def _validator(kind: str, schema_version: str) -> Draft4Validator:
    """A jsonschema validator equivalent to the API server's check of this CRD (built once)."""
    schema = _to_json_schema(_openapi_schema(kind, schema_version), structural=True)
    return _K8sValidator(schema, format_checker=_FORMATS)


def _to_json_schema(node: Any, *, structural: bool) -> Any:
    """Translate an OpenAPI 3.0 structural schema node into JSON Schema draft 4.

    ``structural`` is false inside ``anyOf``/``oneOf``/``allOf``/``not``: in a structural schema
    those only add value checks, so they must not close the object against unknown fields.
    """
    if not isinstance(node, dict):
        return node
    out = dict(node)
    if node.get("nullable") is True:
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    if node.get("x-kubernetes-int-or-string") and "type" not in node and "anyOf" not in node:
        out["type"] = ["integer", "string"]
    if isinstance(node.get("properties"), dict):
        out["properties"] = {
            key: _to_json_schema(sub, structural=structural)
            for key, sub in node["properties"].items()
        }
        if (
            structural
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            out[_KNOWN_FIELDS] = sorted(node["properties"])
    if isinstance(node.get("items"), dict):
        out["items"] = _to_json_schema(node["items"], structural=structural)
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = _to_json_schema(
            node["additionalProperties"], structural=structural
        )
    for combinator in ("anyOf", "oneOf", "allOf"):
        if combinator in node:
            out[combinator] = [_to_json_schema(sub, structural=False) for sub in node[combinator]]
    if "not" in node:
        out["not"] = _to_json_schema(node["not"], structural=False)
    return out


# --------------------------------------------------------------------------- keywords


def _known_fields(
    validator: Any, known: list[str], instance: Any, schema: dict
) -> Iterator[ValidationError]:
    """Strict field validation: one error per undeclared key, with the key in the path."""
    if not isinstance(instance, dict):
        return
    for key in instance:
        if key not in schema["properties"]:
            yield ValidationError(
                f"{_UNKNOWN_FIELD}: Kubernetes strict field validation rejects it"
                f"{_did_you_mean(key, known)} "
                f"(fields allowed here: {', '.join(known)})",
                path=[key],
            )


def _did_you_mean(key: Any, known: list[str]) -> str:
    folded = {name.casefold(): name for name in known}
    match = folded.get(str(key).casefold()) or next(
        iter(difflib.get_close_matches(str(key), known, n=1, cutoff=0.8)), None
    )
    return f"; did you mean {match!r}?" if match else ""


def _required(
    validator: Any, required: list[str], instance: Any, schema: dict
) -> Iterator[ValidationError]:
    """Like draft 4 ``required``, but the error path names the missing field itself."""
    if not isinstance(instance, dict):
        return
    for key in required:
        if key not in instance:
            yield ValidationError(f"'{key}' is a required property", path=[key])


def _pattern(
    validator: Any, pattern: str, instance: Any, schema: dict
) -> Iterator[ValidationError]:
    """``pattern`` with Go regexp semantics (the API server is written in Go)."""
    if isinstance(instance, str) and not _go_regex(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


_K8sValidator = jsonschema.validators.extend(
    Draft4Validator,
    validators={_KNOWN_FIELDS: _known_fields, "required": _required, "pattern": _pattern},
)


# --------------------------------------------------------------------------- Go regexp


@functools.lru_cache(maxsize=256)
def _go_regex(pattern: str) -> re.Pattern[str]:
    """Compile a Go (RE2) pattern with Python ``re``: ``$`` and ``\\z`` mean end of text, and
    ``\\pX``/``\\PX`` Unicode categories become character classes."""
    out: list[str] = []
    i, in_class = 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            escaped = pattern[i + 1]
            if escaped in "pP":
                if in_class:
                    raise ValueError(
                        f"unsupported Go regexp {pattern!r}: \\p inside a character class"
                    )
                if pattern.startswith("{", i + 2):
                    end = pattern.index("}", i + 2)
                    category, i = pattern[i + 3 : end], end + 1
                else:
                    category, i = pattern[i + 2], i + 3
                out.append(_category_class(category, negate=escaped == "P"))
                continue
            out.append(r"\Z" if escaped == "z" else pattern[i : i + 2])
            i += 2
            continue
        if char == "[" and not in_class:
            in_class = True
        elif char == "]" and in_class:
            in_class = False
        elif char == "$" and not in_class:
            char = r"\Z"
        out.append(char)
        i += 1
    return re.compile("".join(out))


@functools.cache
def _category_class(category: str, *, negate: bool) -> str:
    """A character class for a Unicode general category (``C``, ``Lu``, ...), built once."""
    ranges: list[tuple[int, int]] = []
    start = None
    for code in range(0x110001):
        inside = code <= 0x10FFFF and unicodedata.category(chr(code)).startswith(category)
        if inside and start is None:
            start = code
        elif not inside and start is not None:
            ranges.append((start, code - 1))
            start = None
    if not ranges:
        raise ValueError(f"unknown Unicode category {category!r} in a schema pattern")
    body = "".join(
        re.escape(chr(low)) + (f"-{re.escape(chr(high))}" if high > low else "")
        for low, high in ranges
    )
    return f"[{'^' if negate else ''}{body}]"


# --------------------------------------------------------------------------- formats

_FORMATS = FormatChecker(formats=())
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


@_FORMATS.checks("cidr")
def _is_cidr(value: object) -> bool:
    """Go's ``net.ParseCIDR``: address, '/', decimal prefix length; host bits may be set."""
    if not isinstance(value, str):
        return True
    address, slash, prefix = value.partition("/")
    if not slash or not re.fullmatch(r"[0-9]{1,3}", prefix) or "%" in address:
        return False
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


@_FORMATS.checks("date-time")
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not _RFC3339.fullmatch(value):
        return False
    try:
        _dt.datetime.fromisoformat(value.upper().replace(" ", "T"))
    except ValueError:
        return False
    return True


def _int_range_checker(fmt: str) -> Callable[[object], bool]:
    low, high = _INT_RANGES[fmt]

    def check(value: object) -> bool:
        return not isinstance(value, int) or isinstance(value, bool) or low <= value <= high

    return check


for _fmt in _INT_RANGES:
    _FORMATS.checks(_fmt)(_int_range_checker(_fmt))


# --------------------------------------------------------------------------- messages

_TYPE_WORDS = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping",
    "null": "null",
}


def _problems_from(error: ValidationError) -> list[PolicyProblem]:
    """Turn a jsonschema error into problems a person can act on."""
    path = _format_path(error.absolute_path)
    if error.validator in ("oneOf", "anyOf"):
        message = _choice_message(error)
        if message is None and error.context:
            return _problems_from(jsonschema.exceptions.best_match(error.context))
    else:
        describe = _MESSAGES.get(error.validator)
        message = describe(error) if describe is not None else None
    return [PolicyProblem(path, error.message if message is None else message)]


def _choice_message(error: ValidationError) -> str | None:
    """``oneOf``/``anyOf`` between keys or between types, said as such; None for other
    branches (then the best matching branch's own error says more)."""
    value, instance = error.validator_value, error.instance
    keys = _branch_keys(value)
    if keys is not None:
        if error.validator == "anyOf":
            return f"set at least one of {', '.join(keys)} (none is set)"
        present = [key for key in keys if isinstance(instance, Mapping) and key in instance]
        found = f"found {' and '.join(present)}" if present else "none is set"
        return f"set exactly one of {', '.join(keys)} ({found})"
    types = [branch.get("type") for branch in value if isinstance(branch, dict)]
    if all(isinstance(t, str) for t in types) and len(types) == len(value):
        wanted = " or ".join(_TYPE_WORDS.get(t, t) for t in types)
        return f"must be {wanted}, got {_json_type(instance)}"
    return None


def _type_message(error: ValidationError) -> str:
    """A value of the wrong type: what was wanted, what was given, and the usual fixes (omit a
    null, quote a number meant as a string)."""
    value, instance = error.validator_value, error.instance
    if instance is None:
        return "must not be null: the field is not nullable, omit it instead"
    wanted = " or ".join(
        _TYPE_WORDS.get(t, t) for t in ([value] if isinstance(value, str) else value)
    )
    hint = " (quote it)" if value == "string" and isinstance(instance, int | float | bool) else ""
    return f"must be {wanted}, got {_json_type(instance)} {instance!r}{hint}"[:300]


def _value_message(error: ValidationError) -> str:
    """A value outside the allowed ones (``enum``, ``pattern``, ``format``), with the field's
    own description of a valid one where the schema has it."""
    value, instance = error.validator_value, error.instance
    if error.validator == "enum":
        choices = ", ".join(str(choice) for choice in value)
        return f"must be one of {choices}; got {instance!r}"
    if error.validator == "pattern":
        return f"{instance!r} does not match the pattern {value}{_hint(error.schema)}"
    return f"{instance!r} is not a valid {value}{_hint(error.schema)}"


def _bound_message(error: ValidationError) -> str:
    """A length, item count or number beyond a ``max*``/``min*`` bound, with the actual one."""
    keyword, value, instance = error.validator, error.validator_value, error.instance
    bound = "at most" if keyword.startswith("max") else "at least"
    if keyword.endswith("Length"):
        return f"must be {bound} {value} characters long, got {len(instance)}"
    if keyword.endswith("Items"):
        return f"must have {bound} {value} items, got {len(instance)}"
    return f"must be {bound} {value}, got {instance!r}"


#: keyword -> its problem in words; other keywords keep jsonschema's message
_MESSAGES: dict[str, Callable[[ValidationError], str]] = {
    "required": lambda _error: "required field is missing",
    "type": _type_message,
    **dict.fromkeys(("enum", "pattern", "format"), _value_message),
    **dict.fromkeys(
        ("maxLength", "minLength", "maxItems", "minItems", "maximum", "minimum"), _bound_message
    ),
}


def _branch_keys(branches: list[Any]) -> list[str] | None:
    """For ``oneOf``/``anyOf`` branches that each only require one key, those keys."""
    keys = []
    for branch in branches:
        if not isinstance(branch, dict) or len(branch.get("required", ())) != 1:
            return None
        if set(branch) - {"required", "properties"}:
            return None
        keys.append(branch["required"][0])
    return keys


def _hint(schema: Mapping[str, Any]) -> str:
    """First sentence of the field's own description: says what a valid value looks like."""
    description = " ".join(str(schema.get("description", "")).split())
    if not description:
        return ""
    sentence = description.split(". ")[0].rstrip(".")
    return f" ({sentence[:160]})"


_SIMPLE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _path_part(key: Any) -> str:
    if isinstance(key, int) and not isinstance(key, bool):
        return f"[{key}]"
    if isinstance(key, str) and _SIMPLE_KEY.fullmatch(key):
        return f".{key}"
    return f"[{str(key)!r}]"


def _format_path(parts: Iterable[Any]) -> str:
    """``spec.egress[0].toPorts[0]``; keys that are not identifiers are quoted:
    ``matchLabels['k8s:app']``."""
    return "".join(_path_part(part) for part in parts).lstrip(".")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


# --------------------------------------------------------------------------- YAML files

_YAML_BASE: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _PolicyLoader(_YAML_BASE):  # type: ignore[misc, valid-type]
    """Safe YAML as Kubernetes reads it: timestamps stay strings, duplicate keys are errors
    (``kubectl --validate=strict`` refuses them too)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value != "<<":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"duplicate key {key_node.value!r}",
                        key_node.start_mark,
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


_PolicyLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _YAML_BASE.yaml_implicit_resolvers.items()
}
_YAML_LOADER: type = _YAML_BASE  # for the (trusted, large) CRD files: fastest safe loader


def _load_file(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyFileError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    try:
        documents = list(yaml.load_all(text, Loader=_PolicyLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        what = " ".join(part for part in (exc.context, exc.problem) if part)
        raise PolicyFileError(f"{path}: invalid YAML at {where}: {what}") from exc
    except yaml.YAMLError as exc:
        raise PolicyFileError(f"{path}: invalid YAML: {exc}") from exc
    policies: list[dict[str, Any]] = []
    for number, document in enumerate(documents, start=1):
        if document is None:
            continue  # empty document, e.g. after a trailing '---'
        if not isinstance(document, dict):
            raise PolicyFileError(
                f"{path}: document {number} is {_json_type(document)}, "
                "expected a mapping (a policy object)"
            )
        items = document.get("items")
        if str(document.get("kind", "")).endswith("List") and isinstance(items, list):
            for index, item in enumerate(items):
                if not isinstance(item, dict):
                    raise PolicyFileError(
                        f"{path}: document {number}, items[{index}] is {_json_type(item)}, "
                        "expected a mapping"
                    )
                policies.append(item)
        else:
            policies.append(document)
    return policies
