"""Signed checkpoints: the key, and the HMAC-SHA256 that proves a header (and so its payload) came from it.

A checkpoint is a pickle, and unpickling runs code. With a key set, every
checkpoint written carries ``signature``: an HMAC-SHA256, under the key, of
the canonical header, which holds the SHA-256 of the payload. A valid
signature therefore vouches for header and payload alike (hash, then MAC),
and a reader checks it, then the payload's SHA-256, before it unpickles
anything. Without a key nothing is signed or checked, as before.

The key comes from ``checkpoint_key`` (``AutonomousConfig(checkpoint_key=...)``,
``load_checkpoint(..., key=...)``), else from the environment variable
``KAIZEN_RAY_CHECKPOINT_KEY`` of the process that writes or reads. It is
never logged, shown in a repr, or written into a checkpoint.

Private: ``FileCheckpointStorage`` and ``encode_checkpoint`` take ``key=``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

from kaizen_ray.core.errors import ConfigError

__all__ = ["KEY_ENV", "SIGNATURE_SCHEME", "resolve_key", "sign", "signature_problem"]

KEY_ENV = "KAIZEN_RAY_CHECKPOINT_KEY"
SIGNATURE_SCHEME = "hmac-sha256"


def resolve_key(key: Any = None) -> bytes | None:
    """The signing key as bytes: ``key`` if given (str, bytes or pydantic ``SecretStr``), else ``$KAIZEN_RAY_CHECKPOINT_KEY``.

    None when neither is set: checkpoints are then unsigned. An empty key is
    refused (it would sign with nothing).

    >>> resolve_key("s3cret"), resolve_key(b"k")
    (b's3cret', b'k')
    >>> resolve_key("")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    kaizen_ray.core.errors.ConfigError: checkpoint_key must be ...
    """
    where = "checkpoint_key"
    if key is None:
        key = os.environ.get(KEY_ENV)
        if key is None:
            return None
        where = KEY_ENV
    secret = getattr(key, "get_secret_value", None)
    if callable(secret):
        key = secret()
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not isinstance(key, (bytes, bytearray)):
        raise ConfigError(where, type(key).__name__, "a str, bytes or SecretStr key")
    if not key:
        raise ConfigError(where, "(empty)", "a non-empty key (unset it to write unsigned checkpoints)")
    return bytes(key)


def sign(key: bytes, canonical_header: bytes) -> str:
    """``"hmac-sha256:<hex>"`` of the canonical header (which holds the payload's SHA-256).

    >>> sign(b"k", b"{}")[:12]
    'hmac-sha256:'
    """
    return f"{SIGNATURE_SCHEME}:{hmac.new(key, canonical_header, hashlib.sha256).hexdigest()}"


def signature_problem(key: bytes, canonical_header: bytes, signature: Any) -> str | None:
    """Why ``signature`` does not vouch for the header under ``key``, or None if it does.

    >>> signature_problem(b"k", b"{}", None)
    'it is not signed, and a checkpoint key is set'
    >>> signature_problem(b"k", b"{}", sign(b"other", b"{}"))
    'its signature does not match the checkpoint key (signed with another key, or altered)'
    """
    if signature is None:
        return "it is not signed, and a checkpoint key is set"
    if not isinstance(signature, str) or not signature.startswith(f"{SIGNATURE_SCHEME}:"):
        return f"its signature {str(signature)[:40]!r} is not of the {SIGNATURE_SCHEME} scheme"
    if not hmac.compare_digest(signature, sign(key, canonical_header)):
        return "its signature does not match the checkpoint key (signed with another key, or altered)"
    return None
