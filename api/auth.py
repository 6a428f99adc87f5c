"""Bearer tokens with roles: who may read, who may act on anomalies.

Roles form one ladder, ``viewer < operator < reviewer < admin``: a route names the lowest role it
needs and every higher role passes. Viewers read; operators also acknowledge, suppress and
resolve anomalies; reviewers and admins exist for policy review.

Only the SHA-256 (hex) of each token is configured, never the token, so a leaked configuration
grants nothing. Tokens come from a file (YAML or JSON: a list of ``{name, role, sha256}``) and
from ``NETWARDEN_API_TOKENS`` (``name:role:sha256hex,name2:role:sha256hex``); both are merged.
The service's configuration (:mod:`netwarden.config`) reads that variable and passes its value
here: nothing in this module reads the environment.
A presented token is hashed and compared with every configured hash in constant time
(:func:`hmac.compare_digest`, no early exit), so timing tells nothing about which hashes exist.
The token's name is the actor the anomaly store records. The HTTP side (reading the bearer
token of a request, checking its role) is :mod:`netwarden.api.deps`.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

__all__ = [
    "ENV_VAR",
    "Role",
    "TokenConfigError",
    "TokenEntry",
    "TokenTable",
    "hash_token",
    "load_tokens",
    "new_token",
    "tokens_from_env",
    "tokens_from_file",
]

ENV_VAR: Final = "NETWARDEN_API_TOKENS"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")  # no ':' or ',': the env separators
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FIELDS: Final = ("name", "role", "sha256")


class Role(enum.IntEnum):
    """The roles, in rank order: a higher role may do everything a lower one may."""

    viewer = 1
    operator = 2
    reviewer = 3
    admin = 4

    @classmethod
    def parse(cls, value: str | Role) -> Role:
        """The role called ``value``; a ValueError listing the known roles otherwise."""
        if isinstance(value, Role):
            return value
        try:
            return cls[value]
        except (KeyError, TypeError):
            raise ValueError(
                f"unknown role {value!r}: expected one of {', '.join(r.name for r in cls)}"
            ) from None


class TokenConfigError(ValueError):
    """A token file or variable that cannot be used; the message names where and what."""


def hash_token(token: str) -> str:
    """The SHA-256 hex digest of a token, as configured."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenEntry:
    """One configured token: its name (the actor recorded), its role, and its SHA-256."""

    name: str
    role: Role
    sha256: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ValueError(
                f"name {self.name!r} is not valid: use 1-128 letters, digits and "
                "._@+- (starting with a letter or digit)"
            )
        object.__setattr__(self, "role", Role.parse(self.role))
        digest = self.sha256.lower() if isinstance(self.sha256, str) else self.sha256
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            # never echo the value: it may be the token itself, pasted by mistake
            got = f"{len(digest)} characters" if isinstance(digest, str) else type(digest).__name__
            raise ValueError(
                f"sha256 must be 64 hex digits (the SHA-256 of the token, not "
                f"the token itself), got {got}"
            )
        object.__setattr__(self, "sha256", digest)

    @property
    def line(self) -> str:
        """This entry as one ``name:role:sha256`` item of ``NETWARDEN_API_TOKENS``."""
        return f"{self.name}:{self.role.name}:{self.sha256}"

    def to_dict(self) -> dict[str, str]:
        """This entry as one item of a token file."""
        return {"name": self.name, "role": self.role.name, "sha256": self.sha256}


class TokenTable:
    """The configured tokens; answers "whose token is this?" in constant time per entry."""

    def __init__(self, entries: Iterable[TokenEntry] = ()) -> None:
        by_hash: dict[str, TokenEntry] = {}
        for entry in entries:
            seen = by_hash.setdefault(entry.sha256, entry)
            if seen != entry:
                raise TokenConfigError(
                    f"one token is configured twice, as {seen.name!r} ({seen.role.name}) and "
                    f"as {entry.name!r} ({entry.role.name}): give each token one entry"
                )
        self._entries = tuple(by_hash.values())

    def authenticate(self, token: str) -> TokenEntry | None:
        """The entry of ``token``, or None. Compares against every entry, whatever matches."""
        digest = hash_token(token)
        found = None
        for entry in self._entries:
            if hmac.compare_digest(entry.sha256, digest):
                found = entry
        return found

    def merged(self, other: TokenTable) -> TokenTable:
        """Both tables' tokens (a token in both must have the same name and role)."""
        return TokenTable((*self._entries, *other._entries))

    def __iter__(self) -> Iterator[TokenEntry]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:  # names and roles only: hashes stay out of logs
        return f"TokenTable({', '.join(f'{e.name}:{e.role.name}' for e in self._entries)})"


# ---------------------------------------------------------------------------- configuration


def _entry(raw: Any, where: str) -> TokenEntry:
    if not isinstance(raw, Mapping):
        raise TokenConfigError(
            f"{where}: expected a mapping with {', '.join(_FIELDS)}, got {type(raw).__name__}"
        )
    name = raw.get("name")
    if isinstance(name, str) and name:
        where = f"{where} (name {name!r})"
    unknown = sorted(str(k) for k in raw if k not in _FIELDS)
    if unknown:
        hint = " (entries hold the token's sha256, never the token)" if "token" in unknown else ""
        raise TokenConfigError(
            f"{where}: unknown key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}: expected "
            f"{', '.join(_FIELDS)}{hint}"
        )
    missing = [k for k in _FIELDS if raw.get(k) in (None, "")]
    if missing:
        raise TokenConfigError(f"{where}: missing {', '.join(map(repr, missing))}")
    try:
        return TokenEntry(
            name=name,
            role=raw["role"],  # type: ignore[arg-type]
            sha256=raw["sha256"],
        )
    except ValueError as exc:
        raise TokenConfigError(f"{where}: {exc}") from None


def tokens_from_file(path: str | Path) -> TokenTable:
    """The tokens of a YAML or JSON file: a list of ``{name, role, sha256}`` (or a mapping
    whose only key ``tokens`` holds that list). An empty file holds no tokens."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise TokenConfigError(f"{path}: cannot read the token file: {reason}") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise TokenConfigError(
            f"{path}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise TokenConfigError(f"{path}: not valid YAML: {problem}{at}") from None
    if data is None:
        return TokenTable()
    if isinstance(data, Mapping) and set(data) == {"tokens"}:
        data = data["tokens"]
    if not isinstance(data, list):
        got = (
            f"a mapping with keys {', '.join(map(str, data))}"
            if isinstance(data, Mapping)
            else type(data).__name__
        )
        raise TokenConfigError(
            f"{path}: expected a list of {{name, role, sha256}} entries, got {got}"
        )
    table = [_entry(raw, f"{path}: entry {n}") for n, raw in enumerate(data, start=1)]
    try:
        return TokenTable(table)
    except TokenConfigError as exc:
        raise TokenConfigError(f"{path}: {exc}") from None


def tokens_from_env(value: str, *, source: str = ENV_VAR) -> TokenTable:
    """The tokens of ``name:role:sha256hex`` items separated by commas (blank items skipped)."""
    entries = []
    for n, item in enumerate(value.split(","), start=1):
        item = item.strip()
        if not item:
            continue
        parts = [p.strip() for p in item.split(":")]
        if len(parts) != 3:
            raise TokenConfigError(
                f"{source}: item {n}: expected name:role:sha256, got "
                f"{len(parts)} field{'s' if len(parts) != 1 else ''}"
            )
        entries.append(_entry(dict(zip(_FIELDS, parts)), f"{source}: item {n}"))
    try:
        return TokenTable(entries)
    except TokenConfigError as exc:
        raise TokenConfigError(f"{source}: {exc}") from None


def load_tokens(path: str | Path | None = None, env_value: str = "") -> TokenTable:
    """The tokens of the file at ``path`` (if any) merged with those of ``env_value``, the value
    of ``NETWARDEN_API_TOKENS`` as the service's configuration read it."""
    table = tokens_from_file(path) if path is not None else TokenTable()
    from_env = tokens_from_env(env_value)
    try:
        return table.merged(from_env)
    except TokenConfigError as exc:
        raise TokenConfigError(f"{path} and {ENV_VAR}: {exc}") from None


def new_token(name: str, role: str | Role) -> tuple[str, TokenEntry]:
    """A fresh random token and its entry (give the token to its user, configure the entry)."""
    token = secrets.token_urlsafe(32)
    return token, TokenEntry(name=name, role=Role.parse(role), sha256=hash_token(token))
