"""The checkpoint file format: magic, one self-checking header line, the payload.

Format version 1, one checkpoint per file::

    KAIZENRAY-CKPT\\n
    {"agent":"a","cycle":3,...,"header_sha256":"..."}\\n   one line of compact JSON
    <payload_size bytes: cloudpickle of the state>

The header holds everything but the state, so listing reads headers only.
``header_sha256`` covers the other header keys and ``payload_sha256`` the
payload: a truncated, flipped or edited file is refused, never half-loaded.

Private: import the public names from ``kaizen_ray.core.checkpoint``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import cloudpickle
from pydantic import ValidationError

from kaizen_ray.core.checkpoint._model import (
    _JSON_RULE,
    Checkpoint,
    CheckpointCorruptError,
    CheckpointInfo,
    CheckpointSerializationError,
    _Header,
    _json_problem,
    _type_name,
)

logger = logging.getLogger("kaizen_ray.checkpoint")

__all__ = ["CHECKPOINT_FORMAT_VERSION", "MAGIC", "MAX_HEADER_BYTES", "encode_checkpoint", "decode_checkpoint"]

CHECKPOINT_FORMAT_VERSION = 1
MAGIC = b"KAIZENRAY-CKPT\n"
MAX_HEADER_BYTES = 1 << 20  # a bound for readline: a damaged file must not make us read it all
_HEADER_KEYS = frozenset({
    "format_version", "id", "agent", "cycle", "status", "created_at", "parent_id",
    "interrupt_reason", "metadata", "payload_size", "payload_sha256", "header_sha256",
})


def _canonical(obj: Any) -> bytes:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return text.encode("ascii")


def _header_digest(header: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical({k: v for k, v in header.items() if k != "header_sha256"})).hexdigest()


def _children(obj: Any, where: str):
    if isinstance(obj, dict):
        for key, value in list(obj.items()):
            yield f"{where}[{key!r}]", value
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for i, value in enumerate(list(obj)):
            yield f"{where}[{i}]", value
    else:
        attrs = getattr(obj, "__dict__", None)
        for name, value in list(attrs.items()) if isinstance(attrs, dict) else []:
            yield f"{where}.{name}", value
        for klass in type(obj).__mro__:
            slots = klass.__dict__.get("__slots__", ())
            for name in [slots] if isinstance(slots, str) else slots:
                if name not in ("__dict__", "__weakref__") and hasattr(obj, name):
                    yield f"{where}.{name}", getattr(obj, name)


def _find_unpicklable(obj: Any, where: str = "state") -> tuple[str, Any]:
    """Descend into the first child that fails to pickle; the culprit is the one whose children all pickle."""
    for _ in range(32):  # bounded: a cycle of unpicklable objects must not loop forever
        for child_where, child in _children(obj, where):
            try:
                cloudpickle.dumps(child)
            except Exception:  # noqa: BLE001 - any failure marks the way down
                obj, where = child, child_where
                break
        else:
            return where, obj
    return where, obj


def _reason_json(ckpt: Checkpoint) -> dict[str, Any] | None:
    reason = ckpt.interrupt_reason
    if reason is None:
        return None
    try:
        return reason.model_dump(mode="json")
    except Exception as exc:  # noqa: BLE001 - a fact about the stop must not cost the checkpoint
        logger.warning("agent %r: interrupt_reason.metadata is not JSON (%s); storing repr() of such values",
                       ckpt.agent, exc)
        return {**reason.model_dump(mode="json", exclude={"metadata"}), "metadata": _lossy_json(reason.metadata)}


def _lossy_json(value: Any) -> Any:
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, (list, tuple)):
        return [_lossy_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _lossy_json(v) for k, v in value.items()}
    return repr(value)


def encode_checkpoint(ckpt: Checkpoint) -> bytes:
    """The bytes of the checkpoint file: magic, header line, cloudpickle payload.

    >>> encode_checkpoint(Checkpoint.new("a", 1, "running", [1, 2])).startswith(b"KAIZENRAY-CKPT\\n{")
    True
    """
    if found := _json_problem(ckpt.metadata, "metadata"):
        raise CheckpointSerializationError(ckpt.agent, found[1], found[0], _JSON_RULE)
    try:
        payload = cloudpickle.dumps(ckpt.state)
    except Exception as exc:
        where, culprit = _find_unpicklable(ckpt.state)
        raise CheckpointSerializationError(
            ckpt.agent, _type_name(culprit), where,
            f"cloudpickle cannot serialise it ({type(exc).__name__}: {exc}); keep locks, sockets, "
            "open files and clients out of the state and recreate them after a restore",
        ) from exc
    header: dict[str, Any] = {
        "format_version": CHECKPOINT_FORMAT_VERSION, "id": ckpt.id, "agent": ckpt.agent,
        "cycle": ckpt.cycle, "status": ckpt.status.value, "created_at": ckpt.created_at.isoformat(),
        "parent_id": ckpt.parent_id, "interrupt_reason": _reason_json(ckpt), "metadata": ckpt.metadata,
        "payload_size": len(payload), "payload_sha256": hashlib.sha256(payload).hexdigest(),
    }
    header["header_sha256"] = _header_digest(header)
    line = _canonical(header) + b"\n"
    if len(line) > MAX_HEADER_BYTES:
        raise CheckpointSerializationError(
            ckpt.agent, "dict", "metadata",
            f"the header would be {len(line)} bytes, over the {MAX_HEADER_BYTES}-byte limit; "
            "put bulk data in the state",
        )
    return b"".join((MAGIC, line, payload))


def _parse_header(head: bytes, line: bytes, source: Path | str) -> dict[str, Any]:
    """Check magic, JSON, version, keys and header checksum; return the header dict."""
    def corrupt(problem: str) -> CheckpointCorruptError:
        return CheckpointCorruptError(source, problem)

    if head != MAGIC:
        if len(head) < len(MAGIC) and MAGIC.startswith(head):
            raise corrupt(f"truncated: the file is {len(head)} bytes, shorter than the magic {MAGIC!r}")
        raise corrupt(f"wrong magic: expected {MAGIC!r}, got {head!r}; not a kaizen_ray checkpoint")
    if not line.endswith(b"\n"):
        if len(line) > MAX_HEADER_BYTES:
            raise corrupt(f"header line longer than {MAX_HEADER_BYTES} bytes")
        raise corrupt(f"truncated header: no end of line after {len(line)} bytes")
    try:
        header = json.loads(line)
    except ValueError as exc:
        raise corrupt(f"bad header JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise corrupt(f"bad header JSON: expected an object, got {type(header).__name__}")
    version = header.get("format_version")
    if type(version) is not int:
        raise corrupt(f"bad header: format_version is {version!r}, expected an integer")
    if version != CHECKPOINT_FORMAT_VERSION:
        raise corrupt(f"unknown format version {version}; this kaizen_ray reads version {CHECKPOINT_FORMAT_VERSION}")
    if missing := sorted(_HEADER_KEYS - header.keys()):
        raise corrupt(f"bad header: missing keys {missing}")
    if extra := sorted(header.keys() - _HEADER_KEYS):
        raise corrupt(f"bad header: unexpected keys {extra}")
    if (computed := _header_digest(header)) != header["header_sha256"]:
        raise corrupt(f"header checksum mismatch (header altered or damaged): "
                      f"expected {header['header_sha256']!r}, computed {computed!r}")
    if type(header["payload_size"]) is not int or header["payload_size"] < 0:
        raise corrupt(f"bad header: payload_size is {header['payload_size']!r}, expected an integer >= 0")
    return header


def _build(model: type[_Header], header: dict[str, Any], source: Path | str, **extra: Any) -> Any:
    fields = {k: header[k] for k in ("id", "agent", "cycle", "status", "created_at", "parent_id",
                                     "interrupt_reason", "metadata")}
    try:
        return model(**fields, **extra)
    except ValidationError as exc:
        bad = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise CheckpointCorruptError(source, f"bad header values: {bad}") from exc


def _size_problem(expected: int, got: int) -> str:
    if got < expected:
        return f"truncated payload: expected {expected} bytes, got {got}"
    return f"trailing data after the payload: expected {expected} bytes, got {got}"


def _decode(data: bytes, source: Path | str) -> Checkpoint:
    data = bytes(data)
    n = len(MAGIC)
    end = data.find(b"\n", n, n + MAX_HEADER_BYTES + 1)
    line = data[n:end + 1] if end != -1 else data[n:n + MAX_HEADER_BYTES + 1]
    header = _parse_header(data[:n], line, source)
    start = n + len(line)
    expected, got = header["payload_size"], len(data) - start
    if got != expected:
        raise CheckpointCorruptError(source, _size_problem(expected, got))
    payload = memoryview(data)[start:]
    if (digest := hashlib.sha256(payload).hexdigest()) != header["payload_sha256"]:
        raise CheckpointCorruptError(source, f"payload checksum mismatch: expected sha256 "
                                             f"{header['payload_sha256']!r}, computed {digest!r}")
    try:
        state = cloudpickle.loads(payload)
    except Exception as exc:
        raise CheckpointCorruptError(
            source, f"the payload checksum is good but unpickling failed ({type(exc).__name__}: {exc}); "
                    "does the state need a module or class this process cannot import?",
        ) from exc
    return _build(Checkpoint, header, source, state=state)


def decode_checkpoint(data: bytes, *, source: str = "<bytes>") -> Checkpoint:
    """Verify and decode checkpoint bytes; CheckpointCorruptError naming ``source`` if anything is off.

    >>> decode_checkpoint(b"hello", source="x.ckpt")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    kaizen_ray.core.checkpoint._model.CheckpointCorruptError: checkpoint x.ckpt is corrupt: wrong magic: ...
    """
    return _decode(data, source)



def _read_header_info(path: Path) -> CheckpointInfo:
    """The header of the file at ``path``, checked against the file size; never reads the payload."""
    with open(path, "rb") as f:
        head = f.read(len(MAGIC))
        line = f.readline(MAX_HEADER_BYTES + 1)
        size = os.fstat(f.fileno()).st_size
    header = _parse_header(head, line, path)
    got = size - len(MAGIC) - len(line)  # a stat, not a read: truncation shows in listings too
    if got != header["payload_size"]:
        raise CheckpointCorruptError(path, _size_problem(header["payload_size"], got))
    return _build(CheckpointInfo, header, path, path=path, payload_size=header["payload_size"])
