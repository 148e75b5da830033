"""Checkpoints: format integrity, atomic durable storage, safe names, header-only listing."""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import pickle
import re
import socket
import stat
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import kaizen_ray.core.checkpoint as ckmod
import kaizen_ray.core.checkpoint._model as ckmodel
import kaizen_ray.core.checkpoint._storage as ckstorage
from kaizen_ray.core.checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    Checkpoint,
    CheckpointCorruptError,
    CheckpointError,
    CheckpointInfo,
    CheckpointNotFoundError,
    CheckpointSerializationError,
    CheckpointStatus,
    CheckpointStorageError,
    FileCheckpointStorage,
    decode_checkpoint,
    default_storage_path,
    encode_buffers,
    encode_checkpoint,
    list_checkpoints,
    load_checkpoint,
    new_checkpoint_id,
    resolve_storage_path,
    validate_agent_name,
    validate_checkpoint_id,
)
from kaizen_ray.core.interrupts import InterruptMode, InterruptReason, InterruptSource

T0 = datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC)


def make(agent: str = "worker", cycle: int = 1, state: object = None, **kw) -> Checkpoint:
    return Checkpoint.new(agent, cycle, kw.pop("status", CheckpointStatus.RUNNING), state, **kw)


def at(ckpt: Checkpoint, when: datetime) -> Checkpoint:
    return ckpt.model_copy(update={"created_at": when})


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def flip_byte(path: Path, offset_from_end: int) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))


# -- round trips ------------------------------------------------------------------------


def test_round_trip_keeps_nested_state_a_local_class_and_the_interrupt_reason(tmp_path):
    @dataclasses.dataclass
    class Memory:  # local: cloudpickle must carry it by value
        notes: list[str]
        scores: dict[str, tuple[int, float]]

    reason = InterruptReason(
        source=InterruptSource.USER, mode=InterruptMode.IMMEDIATE, message="Ctrl+C",
        timestamp=T0, metadata={"signal": "SIGINT", "propagated_from": "sup", "n": [1, 2.5, None]},
    )
    state = {"memory": Memory(["a", "b"], {"x": (1, 0.5)}), "bytes": b"\x00\xff", "set": {1, 2}}
    ckpt = make("sup/child", 7, state, status="interrupted", interrupt_reason=reason,
                parent_id="ck-parent", metadata={"cost": 1.5, "tags": ["a"], "ok": True})
    store = FileCheckpointStorage(tmp_path)

    path = store.write(ckpt)
    loaded = store.load(ckpt.id)

    assert path == tmp_path / "sup%2Fchild" / f"{ckpt.id}.ckpt"
    assert loaded == ckpt
    assert loaded.state["memory"].scores == {"x": (1, 0.5)} and type(loaded.state["memory"]).__name__ == "Memory"
    assert loaded.interrupt_reason == reason
    assert loaded.interrupt_reason.source is InterruptSource.USER
    assert loaded.interrupt_reason.mode is InterruptMode.IMMEDIATE
    assert loaded.created_at == ckpt.created_at and loaded.created_at.tzinfo is not None
    assert load_checkpoint(ckpt.id, tmp_path) == ckpt


def test_a_fresh_process_loads_a_state_whose_class_it_cannot_import(tmp_path):
    class Plan:  # defined here only: the child process has no way to import it
        def __init__(self, steps):
            self.steps = steps

        def total(self):
            return sum(self.steps)

    ckpt = make("planner", 3, Plan([1, 2, 3]))
    FileCheckpointStorage(tmp_path / "store").write(ckpt)
    package_root = Path(ckmod.__file__).parents[3]
    code = (
        "import sys; from kaizen_ray.core.checkpoint import load_checkpoint;"
        "c = load_checkpoint(sys.argv[1], sys.argv[2]);"
        "print(type(c.state).__name__, c.state.total(), c.agent, c.cycle)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, ckpt.id, str(tmp_path / "store")], cwd=tmp_path, capture_output=True,
        text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(package_root)}, check=True,
    )
    assert out.stdout.split() == ["Plan", "6", "planner", "3"]


def test_the_file_format_is_magic_then_one_json_header_line_then_the_payload(tmp_path):
    ckpt = make("a", 2, {"k": "v"}, metadata={"cost": 2})
    data = encode_checkpoint(ckpt)
    magic, header_line, payload = data.split(b"\n", 2)
    header = json.loads(header_line)

    assert magic == b"KAIZENRAY-CKPT"
    assert header["format_version"] == CHECKPOINT_FORMAT_VERSION == 2
    assert (header["id"], header["agent"], header["cycle"], header["status"]) == (ckpt.id, "a", 2, "running")
    assert header["payload_size"] == len(payload) and header["metadata"] == {"cost": 2}
    assert set(header) >= {"payload_crc32", "header_sha256", "created_at", "parent_id", "interrupt_reason"}
    assert (header["payload_sha256"], header["signature"]) == (None, None)  # unsigned: no key set


def test_a_states_big_bytes_are_written_from_the_state_itself_and_mutable_buffers_are_copied(tmp_path):
    blob, scratch = os.urandom(1 << 20), bytearray(os.urandom(1 << 19))
    ckpt = make("a", 1, {"blob": blob, "scratch": scratch, "n": 7})
    head, *payload = encode_buffers(ckpt)
    assert any(part is blob for part in payload)  # not copied into the payload
    assert all(type(part) is bytes for part in payload)  # nothing a later change of the state could reach
    assert b"".join([head, *payload]) == encode_checkpoint(ckpt)  # the same file, joined or not
    assert pickle.loads(b"".join(payload)) == pickle.loads(pickle.dumps(ckpt.state))

    scratch[:4] = b"\x00\x00\x00\x00"  # the state changes after the save was encoded
    path = FileCheckpointStorage(tmp_path).write_bytes("a", ckpt.id, [head, *payload])
    assert load_checkpoint(ckpt.id, storage_path=tmp_path).state["scratch"] != scratch
    assert path.stat().st_size == len(head) + sum(map(len, payload))


def test_a_checkpoint_in_several_buffers_decodes_as_its_file_does_and_damage_in_any_is_found():
    blob = os.urandom(1 << 20)
    head, *payload = encode_buffers(make("a", 3, {"blob": blob, "tail": "t"}))
    assert len(payload) > 1
    assert decode_checkpoint([head, *payload]).state == {"blob": blob, "tail": "t"}
    damaged = [bytearray(p) for p in payload]
    damaged[-1][-2] ^= 0x01
    with pytest.raises(CheckpointCorruptError, match="payload checksum mismatch"):
        decode_checkpoint([head, *map(bytes, damaged)], source="parts")


# -- integrity --------------------------------------------------------------------------


def test_listing_reads_headers_only_a_damaged_payload_still_lists_but_will_not_load(tmp_path):
    store = FileCheckpointStorage(tmp_path)
    ckpt = make("a", 4, list(range(1000)), metadata={"cost": 0.25})
    path = store.write(ckpt)
    flip_byte(path, 10)

    [info] = store.list("a")
    assert isinstance(info, CheckpointInfo)
    assert (info.id, info.cycle, info.metadata, info.path) == (ckpt.id, 4, {"cost": 0.25}, path)
    assert info.payload_size == len(encode_checkpoint(ckpt).split(b"\n", 2)[2])
    with pytest.raises(CheckpointCorruptError, match="payload checksum mismatch") as err:
        store.load(ckpt.id)
    assert err.value.path == path and str(path) in str(err.value)


def test_a_truncated_file_is_refused_naming_the_file_and_the_sizes(tmp_path):
    store = FileCheckpointStorage(tmp_path)
    ckpt = make("a", 1, "x" * 500)
    path = store.write(ckpt)
    payload_size = len(encode_checkpoint(ckpt).split(b"\n", 2)[2])
    path.write_bytes(path.read_bytes()[:-100])

    with pytest.raises(CheckpointCorruptError) as err:
        store.load(ckpt.id)
    message = str(err.value)
    assert str(path) in message
    assert f"truncated payload: expected {payload_size} bytes, got {payload_size - 100}" in message


def test_a_flipped_payload_byte_fails_the_checksum():
    data = bytearray(encode_checkpoint(make("a", 1, {"weights": [0.1] * 50})))
    data[-5] ^= 0x01
    with pytest.raises(CheckpointCorruptError, match="payload checksum mismatch") as err:
        decode_checkpoint(bytes(data), source="mem.ckpt")
    assert err.value.path == "mem.ckpt" and "mem.ckpt" in str(err.value)


def test_an_edited_header_field_is_detected(tmp_path):
    store = FileCheckpointStorage(tmp_path)
    ckpt = make("a", 3, "s")
    path = store.write(ckpt)
    magic, line, payload = path.read_bytes().split(b"\n", 2)
    header = json.loads(line)
    header["cycle"] = 99  # header_sha256 left as it was
    path.write_bytes(magic + b"\n" + json.dumps(header, separators=(",", ":")).encode() + b"\n" + payload)

    with pytest.raises(CheckpointCorruptError, match="header checksum mismatch"):
        store.load(ckpt.id)


def _header_edit(**changes):
    def edit(data: bytes) -> bytes:
        magic, line, payload = data.split(b"\n", 2)
        header = {**json.loads(line), **changes}
        return magic + b"\n" + json.dumps(header).encode() + b"\n" + payload

    return edit


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda d: b"", "truncated: the file is 0 bytes"),
        (lambda d: d[:8], "truncated: the file is 8 bytes"),
        (lambda d: b"PK\x03\x04" + d[4:], "wrong magic"),
        (lambda d: d[:40], "truncated header"),
        (lambda d: d.replace(b'{"agent"', b'{"agent" ', 1).replace(b"{", b"[", 1), "bad header JSON"),
        (_header_edit(format_version=3), "unknown format version 3; this kaizen_ray reads versions 1, 2"),
        (_header_edit(extra="x"), "unexpected keys ['extra']"),
        (lambda d: d + b"junk", "trailing data after the payload: expected"),
    ],
    ids=["empty", "short-magic", "magic", "header-eol", "json", "version", "keys", "trailing"],
)
def test_each_kind_of_damage_is_named(damage, problem):
    data = encode_checkpoint(make("a", 1, [1, 2, 3]))
    with pytest.raises(CheckpointCorruptError) as err:
        decode_checkpoint(damage(data), source="f.ckpt")
    assert problem in err.value.problem and str(err.value).startswith("checkpoint f.ckpt is corrupt: ")


def test_a_file_renamed_by_hand_is_not_loaded_under_the_wrong_id(tmp_path):
    store = FileCheckpointStorage(tmp_path)
    ckpt = make("a", 1, 1)
    path = store.write(ckpt)
    path.rename(path.with_name("ck-other.ckpt"))
    with pytest.raises(CheckpointCorruptError, match="header says id"):
        store.load("ck-other")
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "ck-other.ckpt").rename(tmp_path / "b" / f"{ckpt.id}.ckpt")
    with pytest.raises(CheckpointCorruptError, match="header says agent 'a' but the file is in folder 'b'"):
        store.load(ckpt.id)
    assert store.list() == [] and store.load_latest("b") is None


def test_load_latest_skips_damaged_newer_files_with_a_warning(tmp_path, caplog):
    store = FileCheckpointStorage(tmp_path)
    good = store.write(at(make("a", 1, "good"), T0))
    flipped = store.write(at(make("a", 2, "flipped"), T0 + timedelta(seconds=1)))
    truncated = store.write(at(make("a", 3, "truncated"), T0 + timedelta(seconds=2)))
    store.write(at(make("other", 9, "another agent"), T0 + timedelta(seconds=3)))
    flip_byte(flipped, 3)
    truncated.write_bytes(truncated.read_bytes()[:-3])

    with caplog.at_level(logging.WARNING, logger="kaizen_ray"):
        latest = store.load_latest("a")

    assert latest is not None and latest.state == "good" and store.find(latest.id) == good
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(flipped) in m and "payload checksum mismatch" in m for m in warnings)
    assert any(str(truncated) in m and "truncated payload" in m for m in warnings)


def test_load_latest_is_none_without_checkpoints(tmp_path):
    assert FileCheckpointStorage(tmp_path / "nothing").load_latest("a") is None


# -- atomic writes ----------------------------------------------------------------------


def test_an_unserialisable_state_names_agent_and_type_and_writes_nothing(tmp_path):
    store = FileCheckpointStorage(tmp_path)
    old = store.write(make("a", 1, "old"))
    before = old.read_bytes()

    with pytest.raises(CheckpointSerializationError) as err:
        store.write(make("a", 2, {"ok": [1], "inner": {"guard": threading.Lock()}}))
    assert err.value.agent == "a" and err.value.type_name == "_thread.lock"
    assert "'a'" in str(err.value) and "state['inner']['guard'] is a _thread.lock" in str(err.value)
    assert isinstance(err.value, TypeError) and err.value.__cause__ is not None

    with socket.socket() as sock, pytest.raises(CheckpointSerializationError, match=r"socket\.socket"):
        store.write(make("a", 3, sock))
    assert files_in(tmp_path / "a") == [old.name] and old.read_bytes() == before


@pytest.mark.parametrize("call", ["replace", "fsync"])
def test_a_failing_write_leaves_no_temp_and_no_partial_file(tmp_path, monkeypatch, call):
    store = FileCheckpointStorage(tmp_path)
    old = store.write(make("a", 1, "old"))

    def broken(*args, **kwargs):
        raise OSError(errno.EIO, f"injected {call} failure")

    monkeypatch.setattr(ckstorage.os, call, broken)
    ckpt = make("a", 2, "new")
    with pytest.raises(CheckpointStorageError, match=f"injected {call} failure") as err:
        store.write(ckpt)
    monkeypatch.undo()

    assert isinstance(err.value, OSError) and isinstance(err.value.__cause__, OSError)
    assert files_in(tmp_path / "a") == [old.name]
    assert [i.id for i in store.list("a")] == [store.load(old.stem).id]


def test_folders_are_0700_and_files_0600_whatever_the_umask(tmp_path):
    root = tmp_path / "deep" / "store"
    previous = os.umask(0o277)  # would make mkdir give 0o500 and the file 0o400
    try:
        path = FileCheckpointStorage(root).write(make("sup/child", 1, "s"))
    finally:
        os.umask(previous)
    for folder in (tmp_path / "deep", root, path.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_ensure_writable_creates_the_folder_0700_and_leaves_no_probe(tmp_path):
    root = tmp_path / "a" / "b"
    assert FileCheckpointStorage(root).ensure_writable() == root
    assert stat.S_IMODE(root.stat().st_mode) == 0o700 and files_in(root) == []


def test_a_storage_path_under_a_regular_file_is_unusable_and_says_why(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    store = FileCheckpointStorage(blocker / "ckpts")
    for attempt in (store.ensure_writable, lambda: store.write(make("a", 1, 1)), store.list):
        with pytest.raises(CheckpointStorageError) as err:
            attempt()
        assert str(blocker) in str(err.value) and isinstance(err.value, OSError)
    with pytest.raises(CheckpointStorageError, match="not a folder"):
        FileCheckpointStorage(blocker).ensure_writable()


# -- names and paths --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../x", "/abs", "a/../../b", "a\\b", "", ".", "..", "a//b", "a/", "-x",
                                  "a\x00b", "x\n", "a" * 201, "é"])
def test_agent_names_that_could_escape_are_rejected(tmp_path, name):
    with pytest.raises(ValueError) as err:
        validate_agent_name(name)
    assert repr(name) in str(err.value) and "expected" in str(err.value)
    with pytest.raises(ValueError, match=re.escape(f"agent name {name!r} is not allowed: ")):
        FileCheckpointStorage(tmp_path).path_for(name, "ck-1")
    with pytest.raises(ValidationError, match="agent"):
        make(name)


@pytest.mark.parametrize("bad", ["", ".", "..", "../x", "a/b", "a\\b", "-x", ".hidden", "x\n", "a" * 129, "a b"])
def test_checkpoint_ids_that_could_escape_are_rejected(tmp_path, bad):
    with pytest.raises(ValueError) as err:
        validate_checkpoint_id(bad)
    assert repr(bad) in str(err.value)
    store = FileCheckpointStorage(tmp_path)
    for attempt in (lambda: store.path_for("a", bad), lambda: store.load(bad), lambda: store.write_bytes("a", bad, b"")):
        with pytest.raises(ValueError, match=re.escape(f"checkpoint id {bad!r} is not allowed: expected ")):
            attempt()
    assert files_in(tmp_path) == []


def test_nested_agent_names_stay_one_folder_inside_the_root(tmp_path):
    store = FileCheckpointStorage(tmp_path)
    assert validate_agent_name("sup/child_2.v1") == "sup/child_2.v1"
    path = store.path_for("sup/child", "ck-1")
    assert path == tmp_path / "sup%2Fchild" / "ck-1.ckpt"
    ckpt = make("sup/child", 1, "s")
    store.write(ckpt)
    assert files_in(tmp_path) == ["sup%2Fchild"]
    assert [i.agent for i in store.list("sup/child")] == ["sup/child"] and store.list("sup") == []


def test_storage_path_env_override_and_a_default_outside_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KAIZEN_RAY_STORAGE_PATH", raising=False)
    default = default_storage_path()
    assert default == tmp_path / "home" / ".kaizen_ray" / "checkpoints"
    assert not default.is_relative_to(Path.cwd() / "checkpoints") and default.is_absolute()

    monkeypatch.setenv("KAIZEN_RAY_STORAGE_PATH", "~/elsewhere")
    assert default_storage_path() == tmp_path / "home" / "elsewhere"
    assert resolve_storage_path(None) == tmp_path / "home" / "elsewhere"
    assert FileCheckpointStorage().path == tmp_path / "home" / "elsewhere"
    assert resolve_storage_path("rel") == tmp_path / "rel"
    assert not (tmp_path / "home").exists()  # constructing a storage touches no disk


# -- ids ----------------------------------------------------------------------------------


def test_new_ids_are_unique_valid_and_sort_in_creation_order():
    ids = [new_checkpoint_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert sorted(ids) == ids
    assert all(validate_checkpoint_id(i) == i for i in ids[:100])


def test_ids_keep_their_order_when_the_clock_stands_still_or_goes_back(monkeypatch):
    t0_ns = int(T0.timestamp()) * 10**9 + T0.microsecond * 1000
    now = [t0_ns]
    monkeypatch.setattr(ckmodel, "_now_ns", lambda: now[0])
    monkeypatch.setattr(ckmodel, "_id_last_us", 0)
    monkeypatch.setattr(ckmodel, "_id_counter", 0)

    frozen = [new_checkpoint_id() for _ in range(0x10000 + 10)]  # more than the 4-hex counter holds
    now[0] = t0_ns - 10**9  # the wall clock steps back a second
    after = [new_checkpoint_id() for _ in range(10)]
    ids = frozen + after

    assert sorted(ids) == ids and len(set(ids)) == len(ids)
    assert frozen[0].startswith("ck-20261125T100000123456Z-0000-")
    assert frozen[0xFFFF].startswith("ck-20261125T100000123456Z-ffff-")
    assert frozen[0x10000].startswith("ck-20261125T100000123457Z-0000-")  # borrowed the next microsecond
    assert after[0].startswith("ck-20261125T100000123457Z-000a-")


def test_new_ids_are_unique_across_threads():
    ids: list[str] = []
    lock = threading.Lock()

    def work():
        mine = [new_checkpoint_id() for _ in range(2000)]
        with lock:
            ids.extend(mine)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(set(ids)) == 8000


# -- listing, finding, deleting ---------------------------------------------------------


def test_list_is_oldest_first_by_id_and_latest_is_the_newest_id_even_when_the_clock_stepped_back(tmp_path):
    """Ids never go backwards in a process; created_at follows the wall clock, which may: ids order them (as on Ray)."""
    store = FileCheckpointStorage(tmp_path)
    first = make("a", 1, 1)
    second = at(make("a", 2, 2, parent_id=first.id), first.created_at - timedelta(seconds=2))  # the clock stepped back
    other = make("b", 1, 1)
    for ckpt in (other, second, first):  # written in any order
        store.write(ckpt)

    assert [i.id for i in store.list()] == [first.id, second.id, other.id]
    assert [i.cycle for i in list_checkpoints(tmp_path, agent="a")] == [1, 2]
    assert store.load_latest("a").id == second.id
    assert list_checkpoints(tmp_path / "missing") == []


def test_not_found_names_the_id_and_the_folder(tmp_path):
    store = FileCheckpointStorage(tmp_path)
    store.write(make("a", 1, 1))
    for root in (tmp_path, tmp_path / "missing"):
        with pytest.raises(CheckpointNotFoundError) as err:
            load_checkpoint("ck-nope", root)
        assert err.value.checkpoint_id == "ck-nope" and err.value.where == root
        assert "'ck-nope'" in str(err.value) and str(root) in str(err.value)
        assert isinstance(err.value, LookupError)


def test_delete_removes_exactly_one_checkpoint(tmp_path):
    store = FileCheckpointStorage(tmp_path)
    keep, gone = make("a", 1, 1), make("a", 2, 2)
    store.write(keep)
    store.write(gone)
    store.delete(gone.id)
    assert [i.id for i in store.list()] == [keep.id]
    with pytest.raises(CheckpointNotFoundError):
        store.delete(gone.id)


def test_list_skips_unreadable_headers_and_temp_files_with_a_warning(tmp_path, caplog):
    store = FileCheckpointStorage(tmp_path)
    good = make("a", 1, 1)
    store.write(good)
    (tmp_path / "a" / "ck-junk.ckpt").write_bytes(b"garbage")
    (tmp_path / "a" / f".{good.id}.deadbeef.tmp").write_bytes(b"half")
    short = store.write(make("a", 2, "will be cut"))
    short.write_bytes(short.read_bytes()[:-1])  # the header is fine; the stat shows the missing byte
    with caplog.at_level(logging.WARNING, logger="kaizen_ray"):
        assert [i.id for i in store.list()] == [good.id]
    messages = [r.getMessage() for r in caplog.records]
    assert any("ck-junk.ckpt" in m and "wrong magic" in m for m in messages)
    assert any(short.name in m and "truncated payload" in m for m in messages)



@pytest.mark.parametrize(
    "damage", [b'"metadata":{"x":NaN}', b'"metadata":' + b"[" * 200_000 + b"]" * 200_000], ids=["NaN", "deep"]
)
def test_a_header_that_is_not_strict_json_is_corrupt_and_skipped_by_list_and_latest(tmp_path, damage):
    """Damage Python's json would parse (a NaN) or choke on (nesting past the stack) is a corrupt file like any other."""
    store = FileCheckpointStorage(tmp_path)
    good = make("swarm/w1", 1, 1)
    store.write(good)
    bad = store.write(make("swarm/w1", 2, 2))
    bad.write_bytes(bad.read_bytes().replace(b'"metadata":{}', damage, 1))
    assert [i.id for i in store.list("swarm/w1")] == [good.id]
    assert store.load_latest("swarm/w1").id == good.id
    with pytest.raises(CheckpointCorruptError, match="bad header JSON"):
        store.load(bad.name.removesuffix(".ckpt"))

# -- models and metadata ----------------------------------------------------------------


def test_metadata_must_be_json_and_the_error_says_where_and_what():
    with pytest.raises(ValidationError, match=r"metadata\['tags'\] is a set; metadata must be small and JSON-only"):
        make("a", metadata={"tags": {"x"}})
    with pytest.raises(ValidationError, match=r"metadata\['x'\] is a non-finite float"):
        make("a", metadata={"x": float("nan")})
    sneaked = make("a").model_copy(update={"metadata": {"when": T0}})  # model_copy skips validation
    with pytest.raises(CheckpointSerializationError, match=r"metadata\['when'\] is a datetime.datetime") as err:
        encode_checkpoint(sneaked)
    assert err.value.agent == "a"


def test_checkpoint_model_is_frozen_and_validated():
    ckpt = make("a", 0)
    with pytest.raises(ValidationError):
        ckpt.cycle = 2
    with pytest.raises(ValidationError, match="cycle"):
        make("a", -1)
    with pytest.raises(ValidationError, match="no time zone"):
        Checkpoint(id="ck-1", agent="a", cycle=0, status="running", created_at=datetime(2026, 1, 1))
    with pytest.raises(ValidationError, match="extra"):
        Checkpoint(id="ck-1", agent="a", cycle=0, status="running", bogus=1)
    assert [s.value for s in CheckpointStatus] == ["running", "completed", "interrupted", "failed", "killed"]


def test_errors_keep_their_attributes_across_pickling():
    errors = [
        CheckpointNotFoundError("ck-1", Path("/d")),
        CheckpointCorruptError(Path("/d/a/ck-1.ckpt"), "truncated payload"),
        CheckpointSerializationError("a", "_thread.lock", "state['l']", "no"),
        CheckpointStorageError("/d", "PermissionError"),
    ]
    for err in errors:
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err) and vars(back) == vars(err)
        assert isinstance(back, CheckpointError)


# -- property: anything JSON-shaped comes back equal ------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
segments = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}", fullmatch=True)
reasons = st.none() | st.builds(
    InterruptReason, source=st.sampled_from(InterruptSource), mode=st.sampled_from(InterruptMode),
    message=st.text(max_size=30), metadata=st.dictionaries(st.text(max_size=8), json_values, max_size=3),
    timestamp=st.datetimes(timezones=st.just(UTC)),
)


@settings(max_examples=150, deadline=None)
@given(
    state=json_values,
    metadata=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    agent=st.lists(segments, min_size=1, max_size=3).map("/".join),
    cycle=st.integers(min_value=0, max_value=2**63),
    status=st.sampled_from(CheckpointStatus),
    reason=reasons,
    created_at=st.datetimes(timezones=st.just(UTC)),
)
def test_encode_decode_round_trips_any_json_shaped_checkpoint(state, metadata, agent, cycle, status, reason, created_at):
    ckpt = Checkpoint.new(agent, cycle, status, state, interrupt_reason=reason, metadata=metadata)
    ckpt = ckpt.model_copy(update={"created_at": created_at})
    back = decode_checkpoint(encode_checkpoint(ckpt))
    assert back == ckpt
    assert back.interrupt_reason == reason and back.metadata == metadata and back.state == state


def test_an_interrupt_reason_with_non_json_metadata_still_checkpoints_with_reprs(caplog):
    reason = InterruptReason(source="system", metadata={"handler": "budget", "error": ValueError("spent")})
    ckpt = make("a", 1, "s", status="interrupted", interrupt_reason=reason)
    with caplog.at_level(logging.WARNING, logger="kaizen_ray"):
        back = decode_checkpoint(encode_checkpoint(ckpt))
    assert back.interrupt_reason.metadata == {"handler": "budget", "error": "ValueError('spent')"}
    assert back.interrupt_reason.timestamp == reason.timestamp and back.state == "s"
    assert any("interrupt_reason.metadata is not JSON" in r.getMessage() for r in caplog.records)
