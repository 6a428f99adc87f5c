"""Signing model artifacts: HMAC-SHA256 over a version's manifest, with a key kept apart.

A model version is code-like: whoever can rewrite its manifest decides what is an anomaly
(``forest_threshold`` raised to 1e9 silences every alert). The per-file SHA-256 digests in the
manifest catch a damaged or swapped file, but not an attacker who rewrites the manifest too.
So the manifest carries an HMAC-SHA256 over its own canonical JSON (which holds the digest of
every file it names), made with a secret key that lives outside the model folder: a file named
in the configuration, in Kubernetes a mounted Secret, or on the embedded default a key generated
once in the data folder (mode 0600). Whoever may write models but not read that key cannot make
a version the service accepts.

A key file holds at least 32 bytes (HMAC-SHA256's block-strength key, as made by
``openssl rand -hex 32`` or :func:`ensure_key`); surrounding whitespace (the newline ``echo`` or
an editor adds) is not part of the key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any, Final

__all__ = [
    "ALGORITHM",
    "MIN_KEY_BYTES",
    "SigningKeyError",
    "canonical",
    "ensure_key",
    "key_id",
    "load_key",
    "sign",
    "signature_problem",
]

ALGORITHM: Final = "hmac-sha256"
MIN_KEY_BYTES: Final = 32
_MAX_KEY_BYTES: Final = 4096  # a key file bigger than this is the wrong file


class SigningKeyError(ValueError):
    """The signing key cannot be read or is unfit (the message says which file and why)."""


def load_key(path: str | Path) -> bytes:
    """The key in ``path`` (a file, e.g. a mounted Kubernetes Secret), whitespace stripped."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_KEY_BYTES + 1)
    except OSError as exc:
        raise SigningKeyError(f"{path}: cannot read the signing key: {exc.strerror}") from None
    if len(data) > _MAX_KEY_BYTES:
        raise SigningKeyError(f"{path}: over {_MAX_KEY_BYTES} bytes: not a signing key")
    key = data.strip()
    if len(key) < MIN_KEY_BYTES:
        raise SigningKeyError(
            f"{path}: the signing key has {len(key)} bytes, at least {MIN_KEY_BYTES} are needed "
            "(make one with `openssl rand -hex 32`)"
        )
    return key


def ensure_key(path: str | Path) -> bytes:
    """The key in ``path``, made first (64 random hex digits, mode 0600) if there is none: the
    embedded default signs its models without any setup."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_key(path)
    except OSError as exc:
        raise SigningKeyError(f"{path}: cannot create a signing key: {exc.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(MIN_KEY_BYTES) + "\n")
    return load_key(path)


def key_id(key: bytes) -> str:
    """A short public name of a key (which key signed a version), revealing nothing of it."""
    return hashlib.sha256(b"netwarden model signing key\0" + key).hexdigest()[:16]


def canonical(manifest: dict[str, Any]) -> bytes:
    """The bytes signed: the manifest without its ``signature``, as sorted compact JSON."""
    unsigned = {k: v for k, v in manifest.items() if k != "signature"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign(manifest: dict[str, Any], key: bytes) -> dict[str, str]:
    """The ``signature`` entry for ``manifest``."""
    mac = hmac.new(key, canonical(manifest), hashlib.sha256).hexdigest()
    return {"algorithm": ALGORITHM, "key_id": key_id(key), "value": mac}


def signature_problem(manifest: dict[str, Any], key: bytes | None, *, required: bool) -> str | None:
    """Why ``manifest`` must not be trusted with ``key`` (None: it may be).

    Unsigned manifests pass only when a signature is not ``required``; a signed one is checked
    whenever a key is given (and refused when one is required but none is given).
    """
    signature = manifest.get("signature")
    if signature is None:
        if required:
            return (
                "the model is unsigned and a signing key is configured: retrain it with "
                "`netwarden train --signing-key <the key file>`"
            )
        return None
    if (
        not isinstance(signature, dict)
        or signature.get("algorithm") != ALGORITHM
        or not isinstance(signature.get("value"), str)
    ):
        return f"signature: expected {{algorithm: {ALGORITHM}, key_id, value}}, got {signature!r}"[
            :300
        ]
    if key is None:
        return (
            "the model is signed but no signing key is configured to check it" if required else None
        )
    expected = sign(manifest, key)
    if hmac.compare_digest(expected["value"], signature["value"]):
        return None
    if signature.get("key_id") != expected["key_id"]:
        return (
            f"signed with another key (key id {str(signature.get('key_id'))[:16]}, the "
            f"configured key is {expected['key_id']})"
        )
    return "the signature does not match: the manifest was changed after it was signed"
