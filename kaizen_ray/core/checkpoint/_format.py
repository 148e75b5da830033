"""The checkpoint file format: magic, one self-checking header line, the payload.

Format version 2 (written), one checkpoint per file::

    KAIZENRAY-CKPT\\n
    {"agent":"a","cycle":3,...,"header_sha256":"..."}\\n   one line of compact JSON
    <payload_size bytes: cloudpickle of the state>

The header holds everything but the state, so listing reads headers only.
``header_sha256`` covers the other header keys and ``payload_crc32`` the
payload: a truncated, flipped or edited file is refused, never half-loaded.
Signed (a key set, see ``_sign``): ``payload_sha256`` holds the payload's
SHA-256 and ``signature`` an HMAC-SHA256 of the header, checked before
anything is unpickled. Unsigned, both are null: CRC32 finds damage at a third
of SHA-256's cost, which counts for a state of many megabytes.

Version 1 files (a SHA-256 of every payload, never signed) are still read; any
other version is refused with a :class:`CheckpointCorruptError` naming it.
Head and payload travel as buffers (:func:`encode_buffers`) and are written
with one ``writev``: the payload is never copied to join them, and the big
``bytes`` of a state are not copied into the payload either.

Private: import the public names from ``kaizen_ray.core.checkpoint``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import zlib
from pathlib import Path
from typing import Any

import cloudpickle
from pydantic import ValidationError

from kaizen_ray.core.checkpoint._json import _JSON_RULE, _json_problem, _type_name
from kaizen_ray.core.checkpoint._model import (
    Checkpoint,
    CheckpointCorruptError,
    CheckpointInfo,
    CheckpointSerializationError,
    CheckpointSignatureError,
    _Header,
)
from kaizen_ray.core.checkpoint._sign import sign, signature_problem

logger = logging.getLogger("kaizen_ray.checkpoint")

__all__ = [
    "CHECKPOINT_FORMAT_VERSION", "MAGIC", "MAX_HEADER_BYTES", "encode_buffers", "encode_checkpoint", "encode_parts",
    "decode_checkpoint",
]  # fmt: skip

CHECKPOINT_FORMAT_VERSION = 2
MAGIC = b"KAIZENRAY-CKPT\n"
MAX_HEADER_BYTES = 1 << 20  # a bound for readline: a damaged file must not make us read it all
_COMMON_KEYS = frozenset({
    "format_version", "id", "agent", "cycle", "status", "created_at", "parent_id",
    "interrupt_reason", "metadata", "payload_size", "header_sha256",
})
# Version 1 (read, never written): a SHA-256 of every payload, no signature.
_KEYS_OF_VERSION = {
    1: _COMMON_KEYS | {"payload_sha256"},
    2: _COMMON_KEYS | {"payload_crc32", "payload_sha256", "signature"},
}


# One encoder for every call: json.dumps with options builds a new one each time.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _canonical(obj: Any) -> bytes:
    return _ENCODER.encode(obj).encode("ascii")


def _header_digest(header: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical({k: v for k, v in header.items() if k != "header_sha256"})).hexdigest()


def _header_line(header: dict[str, Any]) -> bytes:
    """The header line, end of line included: ``_canonical`` of ``header`` with its ``header_sha256`` added.

    Byte for byte what encoding the header a second time, checksum
    included, would give, for the cost of one encoding (metadata and all).
    With sorted keys the checksum's member goes just before the one of
    "id", which is the first ``,"id":`` of the JSON the checksum covers: the
    keys before it hold a str (agent, created_at) or an int (cycle,
    format_version), and a JSON string holds no bare '"'. An agent or cycle
    of another type (a model built without validation) is encoded twice.
    """
    body = _canonical(header)
    checksum = hashlib.sha256(body).hexdigest()
    if type(header["agent"]) is not str or type(header["cycle"]) is not int:
        return _canonical({**header, "header_sha256": checksum}) + b"\n"
    cut = body.index(b',"id":') + 1
    return b"".join((body[:cut], b'"header_sha256":"', checksum.encode("ascii"), b'",', body[cut:], b"\n"))


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


def _signed_part(header: dict[str, Any]) -> bytes:
    """What the signature covers: every header key but the signature and the header checksum."""
    return _canonical({k: v for k, v in header.items() if k not in ("signature", "header_sha256")})


# A pickled chunk this big is kept by reference (a state's bytes are immutable); smaller writes
# of the pickler (its 64 KiB frames) are joined into one buffer.
_BIG_CHUNK = 1 << 18


class _Chunks:
    """The file a pickler writes the payload to: big ``bytes`` kept as they are, the rest joined.

    ``cloudpickle.dumps`` would copy a state of 64 MB into its output (about
    50 ms here) before the payload is checksummed and written; a pickler
    writing to a file hands a big ``bytes`` object to ``write`` whole, so the
    payload is written straight from the state. Only immutable ``bytes`` are
    kept: a ``bytearray`` (or any other buffer) could change after the save
    was taken, so it is copied like the small writes.
    """

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self._small: list[bytes] = []

    def write(self, data: Any) -> int:
        if type(data) is bytes and len(data) >= _BIG_CHUNK:
            self._join_small()
            self.parts.append(data)
        else:
            self._small.append(bytes(data))
        return len(data)

    def _join_small(self) -> None:
        if self._small:
            self.parts.append(self._small[0] if len(self._small) == 1 else b"".join(self._small))
            self._small = []

    def done(self) -> list[bytes]:
        self._join_small()
        return self.parts


def _pickled(ckpt: Checkpoint) -> list[bytes]:
    """The state's cloudpickle, as :class:`_Chunks`; a state it refuses is a CheckpointSerializationError naming the culprit."""
    out = _Chunks()
    try:
        cloudpickle.CloudPickler(out, protocol=cloudpickle.DEFAULT_PROTOCOL).dump(ckpt.state)
    except Exception as exc:
        where, culprit = _find_unpicklable(ckpt.state)
        raise CheckpointSerializationError(
            ckpt.agent, _type_name(culprit), where,
            f"cloudpickle cannot serialise it ({type(exc).__name__}: {exc}); keep locks, sockets, "
            "open files and clients out of the state and recreate them after a restore",
        ) from exc
    return out.done()


def encode_buffers(ckpt: Checkpoint, *, key: bytes | None = None) -> list[bytes]:
    """The checkpoint file as buffers written back to back: ``[magic + header line, *payload]``.

    The payload (the state's cloudpickle) is one buffer, or several when the
    state holds big ``bytes``: those are not copied, the file is written from
    them with one ``writev``. ``key`` (bytes, see
    :func:`~kaizen_ray.core.checkpoint._sign.resolve_key`): sign it.

    >>> head, *payload = encode_buffers(Checkpoint.new("a", 1, "running", {"blob": bytes(1 << 20)}))
    >>> head.startswith(b"KAIZENRAY-CKPT\\n{"), [len(p) for p in payload][1]
    (True, 1048576)
    """
    if found := _json_problem(ckpt.metadata, "metadata"):
        raise CheckpointSerializationError(ckpt.agent, found[1], found[0], _JSON_RULE)
    payload = _pickled(ckpt)
    crc, digest = 0, hashlib.sha256() if key else None
    for part in payload:
        crc = zlib.crc32(part, crc)
        if digest is not None:
            digest.update(part)
    header: dict[str, Any] = {
        "format_version": CHECKPOINT_FORMAT_VERSION, "id": ckpt.id, "agent": ckpt.agent,
        "cycle": ckpt.cycle, "status": ckpt.status.value, "created_at": ckpt.created_at.isoformat(),
        "parent_id": ckpt.parent_id, "interrupt_reason": _reason_json(ckpt), "metadata": ckpt.metadata,
        "payload_size": sum(len(p) for p in payload), "payload_crc32": crc,
        # The SHA-256 only where a signature must vouch for the payload: CRC32 finds damage at a third of the cost.
        "payload_sha256": digest.hexdigest() if digest is not None else None, "signature": None,
    }
    if key:
        header["signature"] = sign(key, _signed_part(header))
    line = _header_line(header)
    if len(line) > MAX_HEADER_BYTES:
        raise CheckpointSerializationError(
            ckpt.agent, "dict", "metadata",
            f"the header would be {len(line)} bytes, over the {MAX_HEADER_BYTES}-byte limit; "
            "put bulk data in the state",
        )
    return [MAGIC + line, *payload]


def encode_parts(ckpt: Checkpoint, *, key: bytes | None = None) -> tuple[bytes, bytes]:
    """The checkpoint file as two buffers, ``(magic + header line, payload)`` (see :func:`encode_buffers`, which does not join the payload).

    >>> head, payload = encode_parts(Checkpoint.new("a", 1, "running", [1, 2]))
    >>> head.startswith(b"KAIZENRAY-CKPT\\n{") and head.endswith(b"\\n"), len(payload) > 0
    (True, True)
    """
    head, *payload = encode_buffers(ckpt, key=key)
    return head, payload[0] if len(payload) == 1 else b"".join(payload)


def encode_checkpoint(ckpt: Checkpoint, *, key: bytes | None = None) -> bytes:
    """The bytes of the checkpoint file: magic, header line, cloudpickle payload (signed if ``key``).

    >>> encode_checkpoint(Checkpoint.new("a", 1, "running", [1, 2])).startswith(b"KAIZENRAY-CKPT\\n{")
    True
    """
    return b"".join(encode_buffers(ckpt, key=key))


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_header(head: bytes, line: bytes, source: Path | str, key: bytes | None = None) -> dict[str, Any]:
    """Check magic, JSON, version, keys, header checksum and (with ``key``) signature; return the header dict."""
    def corrupt(problem: str) -> CheckpointCorruptError:
        return CheckpointCorruptError(source, problem)

    if head != MAGIC:
        if len(head) < len(MAGIC) and MAGIC.startswith(head):
            raise corrupt(f"truncated: the file is {len(head)} bytes, shorter than the magic {MAGIC!r}")
        raise corrupt(f"wrong magic: expected {MAGIC!r}, got {bytes(head)!r}; not a kaizen_ray checkpoint")
    if not line.endswith(b"\n"):
        if len(line) > MAX_HEADER_BYTES:
            raise corrupt(f"header line longer than {MAX_HEADER_BYTES} bytes")
        raise corrupt(f"truncated header: no end of line after {len(line)} bytes")
    try:
        # Strict JSON, as it was written: a NaN would only fail later, unnamed, at the checksum.
        header = json.loads(line, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than Python's stack
        raise corrupt(f"bad header JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise corrupt(f"bad header JSON: expected an object, got {type(header).__name__}")
    version = header.get("format_version")
    if type(version) is not int:
        raise corrupt(f"bad header: format_version is {version!r}, expected an integer")
    if version not in _KEYS_OF_VERSION:
        raise corrupt(f"unknown format version {version}; this kaizen_ray reads versions "
                      f"{', '.join(map(str, _KEYS_OF_VERSION))}")
    expected_keys = _KEYS_OF_VERSION[version]
    if missing := sorted(expected_keys - header.keys()):
        raise corrupt(f"bad header: missing keys {missing}")
    if extra := sorted(header.keys() - expected_keys):
        raise corrupt(f"bad header: unexpected keys {extra}")
    if (computed := _header_digest(header)) != header["header_sha256"]:
        raise corrupt(f"header checksum mismatch (header altered or damaged): "
                      f"expected {header['header_sha256']!r}, computed {computed!r}")
    if type(header["payload_size"]) is not int or header["payload_size"] < 0:
        raise corrupt(f"bad header: payload_size is {header['payload_size']!r}, expected an integer >= 0")
    if key is not None:
        if version == 1:
            raise CheckpointSignatureError(source, "it is not signed (format version 1 predates signing), "
                                                   "and a checkpoint key is set")
        if problem := signature_problem(key, _signed_part(header), header["signature"]):
            raise CheckpointSignatureError(source, problem)
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


def _split(data: Any) -> tuple[Any, Any]:
    """``(magic + header line, payload)`` of a file's bytes, or of the buffers :func:`encode_buffers` made."""
    if isinstance(data, (list, tuple)):
        if len(data) < 2:
            raise TypeError(f"checkpoint data as parts must be [head, *payload], got {len(data)} part(s)")
        # Joined only here, to unpickle: a load is rare, a save is not.
        payload = data[1] if len(data) == 2 else b"".join(data[1:])
        return memoryview(data[0]), memoryview(payload)
    view = memoryview(data)
    n = len(MAGIC)
    end = bytes(view[n:n + MAX_HEADER_BYTES + 1]).find(b"\n")
    cut = n + end + 1 if end != -1 else len(view)
    return view[:cut], view[cut:]


def _payload_problem(header: dict[str, Any], payload: Any, key: bytes | None) -> str | None:
    if header["format_version"] == 1 or key is not None:
        want = header["payload_sha256"]
        if (digest := hashlib.sha256(payload).hexdigest()) != want:
            return f"payload checksum mismatch: expected sha256 {want!r}, computed {digest!r}"
    if header["format_version"] >= 2 and (crc := zlib.crc32(payload)) != header["payload_crc32"]:
        return f"payload checksum mismatch: expected crc32 {header['payload_crc32']!r}, computed {crc!r}"
    return None


def _decode(data: Any, source: Path | str, key: bytes | None = None) -> Checkpoint:
    head, payload = _split(data)
    n = len(MAGIC)
    header = _parse_header(bytes(head[:n]), bytes(head[n:n + MAX_HEADER_BYTES + 1]), source, key)
    expected, got = header["payload_size"], len(payload)
    if got != expected:
        raise CheckpointCorruptError(source, _size_problem(expected, got))
    if problem := _payload_problem(header, payload, key):
        raise CheckpointCorruptError(source, problem)
    try:
        state = cloudpickle.loads(payload)
    except Exception as exc:
        raise CheckpointCorruptError(
            source, f"the payload checksum is good but unpickling failed ({type(exc).__name__}: {exc}); "
                    "does the state need a module or class this process cannot import?",
        ) from exc
    return _build(Checkpoint, header, source, state=state)


def decode_checkpoint(data: Any, *, source: str = "<bytes>", key: bytes | None = None) -> Checkpoint:
    """Verify and decode checkpoint bytes (or ``(head, payload)`` parts); CheckpointCorruptError naming ``source`` if anything is off.

    With ``key``, an unsigned or badly signed checkpoint is refused
    (:class:`CheckpointSignatureError`) before anything is unpickled.

    >>> decode_checkpoint(b"hello", source="x.ckpt")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    kaizen_ray.core.checkpoint._model.CheckpointCorruptError: checkpoint x.ckpt is corrupt: wrong magic: ...
    """
    return _decode(data, source, key)


def _read_header_info(path: Path, key: bytes | None = None) -> CheckpointInfo:
    """The header of the file at ``path``, checked against the file size; never reads the payload."""
    with open(path, "rb") as f:
        head = f.read(len(MAGIC))
        line = f.readline(MAX_HEADER_BYTES + 1)
        size = os.fstat(f.fileno()).st_size
    header = _parse_header(head, line, path, key)
    got = size - len(MAGIC) - len(line)  # a stat, not a read: truncation shows in listings too
    if got != header["payload_size"]:
        raise CheckpointCorruptError(path, _size_problem(header["payload_size"], got))
    return _build(CheckpointInfo, header, path, path=path, payload_size=header["payload_size"])
