"""Signed checkpoints (no Ray): with a key, every file carries an HMAC and a file without a valid one is refused unpickled."""

from __future__ import annotations

import hashlib
import json
import logging
import zlib
from pathlib import Path

import cloudpickle
import pytest

import kaizen_ray as kr
from kaizen_ray.cli import main
from kaizen_ray.core.checkpoint import (
    KEY_ENV,
    CheckpointCorruptError,
    CheckpointSignatureError,
    FileCheckpointStorage,
    decode_checkpoint,
    encode_checkpoint,
    load_checkpoint,
    list_checkpoints,
)
from kaizen_ray.core.errors import ConfigError

KEY = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _no_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)


class PlantsAMarker:
    """A state whose unpickling runs code: it creates the file ``path`` (what an attacker's pickle would do)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _parts(path: Path) -> tuple[bytes, dict, bytes]:
    magic, line, payload = path.read_bytes().split(b"\n", 2)
    return magic, json.loads(line), payload


def _rewrite(path: Path, magic: bytes, header: dict, payload: bytes) -> None:
    """Write ``header`` back with a correct header checksum: damage only a key-holder can detect."""
    body = {k: v for k, v in header.items() if k != "header_sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    header = {**header, "header_sha256": hashlib.sha256(canonical).hexdigest()}
    path.write_bytes(magic + b"\n" + json.dumps(header, separators=(",", ":")).encode() + b"\n" + payload)


def test_a_signed_checkpoint_round_trips_with_its_key_and_still_verifies_without_one(tmp_path):
    store = FileCheckpointStorage(tmp_path, key=KEY)
    ckpt = kr.Checkpoint.new("a1", 3, "completed", {"n": 3})
    path = Path(store.write(ckpt))

    _magic, header, _payload = _parts(path)
    assert header["signature"].startswith("hmac-sha256:") and len(header["payload_sha256"]) == 64
    assert KEY.encode() not in path.read_bytes()
    assert load_checkpoint(ckpt.id, tmp_path, key=KEY).state == {"n": 3}
    assert load_checkpoint(ckpt.id, tmp_path).state == {"n": 3}  # no key: integrity only, as before
    assert [i.id for i in list_checkpoints(tmp_path, key=KEY)] == [ckpt.id]


@pytest.mark.parametrize(
    ("writer_key", "problem"),
    [(None, "it is not signed, and a checkpoint key is set"), ("another key", "does not match the checkpoint key")],
    ids=["unsigned", "other-key"],
)
def test_a_file_not_signed_with_the_key_is_refused_before_it_is_unpickled(tmp_path, writer_key, problem):
    marker = tmp_path / "code-ran"
    ckpt = kr.Checkpoint.new("a1", 1, "completed", PlantsAMarker(str(marker)))
    path = Path(FileCheckpointStorage(tmp_path / "ck", key=writer_key).write(ckpt))

    with pytest.raises(CheckpointSignatureError) as err:
        load_checkpoint(ckpt.id, tmp_path / "ck", key=KEY)
    assert not marker.exists()
    assert err.value.path == path and str(path) in str(err.value) and problem in str(err.value)
    assert isinstance(err.value, kr.CheckpointError)

    # The same file without a key: the pickle does run code. This is what the key guards against.
    load_checkpoint(ckpt.id, tmp_path / "ck", key=writer_key)
    assert marker.exists()


def test_a_signed_file_whose_payload_was_swapped_is_refused_before_it_is_unpickled(tmp_path):
    marker = tmp_path / "code-ran"
    ckpt = kr.Checkpoint.new("a1", 1, "completed", {"n": 1})
    path = Path(FileCheckpointStorage(tmp_path / "ck", key=KEY).write(ckpt))
    magic, header, _payload = _parts(path)
    evil = cloudpickle.dumps(PlantsAMarker(str(marker)))
    # Everything an attacker without the key can recompute is recomputed; the signature cannot be.
    header.update(payload_size=len(evil), payload_crc32=zlib.crc32(evil), payload_sha256=hashlib.sha256(evil).hexdigest())
    _rewrite(path, magic, header, evil)

    with pytest.raises(CheckpointSignatureError, match="does not match the checkpoint key"):
        load_checkpoint(ckpt.id, tmp_path / "ck", key=KEY)
    assert not marker.exists()


def test_a_signed_header_edited_by_hand_is_refused(tmp_path):
    ckpt = kr.Checkpoint.new("a1", 2, "completed", {"n": 2})
    path = Path(FileCheckpointStorage(tmp_path, key=KEY).write(ckpt))
    magic, header, payload = _parts(path)
    _rewrite(path, magic, {**header, "cycle": 99}, payload)

    with pytest.raises(CheckpointSignatureError, match="does not match"):
        load_checkpoint(ckpt.id, tmp_path, key=KEY)
    assert load_checkpoint(ckpt.id, tmp_path).cycle == 99  # without the key nothing can tell


def test_the_key_comes_from_the_environment_and_latest_skips_unsigned_files_with_a_warning(tmp_path, monkeypatch, caplog):
    signed = kr.Checkpoint.new("a1", 1, "running", {"n": 1})
    FileCheckpointStorage(tmp_path, key=KEY).write(signed)
    newer = kr.Checkpoint.new("a1", 2, "running", {"n": 2})
    FileCheckpointStorage(tmp_path).write(newer)  # unsigned, and newer

    monkeypatch.setenv(KEY_ENV, KEY)
    with caplog.at_level(logging.WARNING, logger="kaizen_ray"):
        assert [i.id for i in list_checkpoints(tmp_path, agent="a1")] == [signed.id]
        assert FileCheckpointStorage(tmp_path).load_latest("a1").id == signed.id
    assert any(newer.id in r.getMessage() and "not signed" in r.getMessage() for r in caplog.records)
    with pytest.raises(CheckpointSignatureError):
        load_checkpoint(newer.id, tmp_path)
    assert KEY not in caplog.text


def test_an_empty_key_is_refused_naming_where_it_came_from(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "")
    with pytest.raises(ConfigError, match=KEY_ENV):
        FileCheckpointStorage(tmp_path)
    with pytest.raises(ConfigError, match="checkpoint_key"):
        kr.AutonomousConfig(checkpoint_key="")


def test_decode_with_a_key_refuses_unsigned_bytes():
    data = encode_checkpoint(kr.Checkpoint.new("a1", 1, "running", [1]))
    with pytest.raises(CheckpointSignatureError, match="not signed"):
        decode_checkpoint(data, source="mem", key=KEY.encode())
    assert decode_checkpoint(encode_checkpoint(kr.Checkpoint.new("a1", 1, "running", [1]), key=b"k"), key=b"k").state == [1]


def test_a_version_1_file_still_loads_and_is_refused_as_unsigned_with_a_key(tmp_path):
    ckpt = kr.Checkpoint.new("a1", 1, "completed", {"old": True})
    path = Path(FileCheckpointStorage(tmp_path).write(ckpt))
    magic, header, payload = _parts(path)
    for k in ("payload_crc32", "signature"):
        del header[k]
    _rewrite(path, magic, {**header, "format_version": 1, "payload_sha256": hashlib.sha256(payload).hexdigest()}, payload)

    assert load_checkpoint(ckpt.id, tmp_path).state == {"old": True}
    with pytest.raises(CheckpointSignatureError, match="format version 1 predates signing"):
        load_checkpoint(ckpt.id, tmp_path, key=KEY)


def test_the_config_key_is_a_secret_never_shown_and_an_agent_signs_with_it(tmp_path):
    cfg = kr.AutonomousConfig(storage_path=tmp_path, checkpoint_key=KEY, max_cycles=1)
    assert KEY not in repr(cfg) and KEY not in str(cfg) and KEY not in cfg.model_dump_json()

    class Once(kr.BaseAutonomousAgent):
        async def step(self, state, ctx):
            return kr.StepResult({"n": 1}, done=True)

    import asyncio

    result = asyncio.run(Once(config=cfg, name="once").run_autonomous(None))
    assert KEY not in repr(result)
    path = Path(FileCheckpointStorage(tmp_path).find(result["checkpoint_id"]))
    assert _parts(path)[1]["signature"].startswith("hmac-sha256:") and KEY.encode() not in path.read_bytes()
    assert load_checkpoint(result["checkpoint_id"], tmp_path, key=KEY).state == {"n": 1}
    with pytest.raises(CheckpointSignatureError):
        load_checkpoint(result["checkpoint_id"], tmp_path, key="not the key")


def test_checkpoints_verify_with_the_key_in_the_environment_names_unsigned_files(tmp_path, monkeypatch, capsys):
    FileCheckpointStorage(tmp_path, key=KEY).write(kr.Checkpoint.new("a1", 1, "completed", {"n": 1}))
    unsigned = Path(FileCheckpointStorage(tmp_path).write(kr.Checkpoint.new("a1", 2, "completed", {"n": 2})))
    monkeypatch.setenv(KEY_ENV, KEY)

    assert main(["--json", "checkpoints", "verify", "--storage", str(tmp_path)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert len(report["good"]) == 1
    assert [Path(b["file"]).name for b in report["corrupt"]] == [unsigned.name]
    assert "not signed" in report["corrupt"][0]["problem"]
    assert main(["checkpoints", "show", unsigned.stem, "--storage", str(tmp_path)]) == 1
    assert "refused" in capsys.readouterr().err


def test_a_signature_error_is_a_corrupt_error_and_survives_pickling():
    import pickle

    err = CheckpointSignatureError("/x/a/ck-1.ckpt", "it is not signed, and a checkpoint key is set")
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, CheckpointCorruptError) and str(back) == str(err) and back.path == err.path


def test_a_key_of_the_wrong_type_is_refused_without_echoing_it():
    with pytest.raises(ConfigError) as err:
        kr.AutonomousConfig(checkpoint_key=98765432)
    assert "checkpoint_key" in str(err.value) and "int" in str(err.value) and "98765432" not in str(err.value)
