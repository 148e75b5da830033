"""Storage paths that are URIs, without a network: parsing, file://, and the pyarrow.fs code path on local disk.

S3 itself (moto_server, real Ray) is in tests/integration/test_storage_uri.py.
Here ``file://`` is the local code path under another name, and a storage made
with ``filesystem=pyarrow.fs.LocalFileSystem()`` drives the very pyarrow code
an ``s3://`` storage runs (listing, ranged header reads, temp file and move).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

pafs = pytest.importorskip("pyarrow.fs")

import kaizen_ray as kr
from kaizen_ray.core.checkpoint import (
    Checkpoint,
    CheckpointNotFoundError,
    FileCheckpointStorage,
    join_storage_path,
    read_blob,
    resolve_storage_path,
    storage_scheme,
    write_blob,
)
from kaizen_ray.core.checkpoint._fs import _with_s3_endpoint


def _truncate(path: Path, by: int = 3) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:-by])


# -- parsing -----------------------------------------------------------------------------------


def test_a_uri_stays_a_normalised_str_and_file_uris_are_local_folders(tmp_path):
    assert resolve_storage_path("s3://bucket/ckpts/") == "s3://bucket/ckpts"
    assert resolve_storage_path("S3://bucket/ckpts") == "s3://bucket/ckpts"
    assert resolve_storage_path("gs://bucket") == "gs://bucket"
    assert resolve_storage_path("hdfs://namenode:8020/ckpts") == "hdfs://namenode:8020/ckpts"
    assert resolve_storage_path(f"file://{tmp_path}/a%20b") == tmp_path / "a b"
    assert resolve_storage_path(f"file://localhost{tmp_path}") == tmp_path
    assert storage_scheme("relative/folder") is None and storage_scheme(Path("s3:")) is None


def test_the_config_keeps_a_uri_as_a_str_not_a_folder_named_s3(tmp_path):
    # The bug this guards: Path("s3://bucket/x") is the relative folder "s3:/bucket/x".
    cfg = kr.AutonomousConfig(storage_path="s3://bucket/x")
    assert cfg.storage_path == "s3://bucket/x" and isinstance(cfg.storage_path, str)
    assert kr.SupervisorConfig(storage_path="gs://bucket/y/").storage_path == "gs://bucket/y"
    assert kr.AutonomousConfig(storage_path=f"file://{tmp_path}").storage_path == tmp_path
    assert kr.AutonomousConfig(storage_path=tmp_path).storage_path == tmp_path


@pytest.mark.parametrize("bad", ["ftp://host/ckpts", "foo://x", "s3:bucket/ckpts", "s3:/bucket/ckpts"])
def test_an_unsupported_or_malformed_uri_is_refused_at_construction_naming_it_and_the_schemes(bad):
    with pytest.raises(kr.ConfigError) as caught:
        kr.AutonomousConfig(storage_path=bad)
    assert bad in str(caught.value) and "s3://" in str(caught.value) and "file://" in str(caught.value)
    with pytest.raises(kr.ConfigError, match="supported scheme"):
        kr.SupervisorConfig(storage_path=bad)
    with pytest.raises(kr.ConfigError, match="supported scheme") as direct:
        FileCheckpointStorage(bad)
    assert direct.value.field == "storage_path" and direct.value.value == bad
    with pytest.raises(kr.ConfigError):
        kr.list_checkpoints(bad)


@pytest.mark.parametrize("bad", ["s3:///no-bucket", "file://otherhost/x", "file://relative"])
def test_a_uri_without_bucket_or_with_a_remote_file_host_is_refused(bad):
    with pytest.raises(kr.ConfigError, match="storage_path"):
        FileCheckpointStorage(bad)


def test_the_s3_endpoint_comes_from_the_aws_variables_unless_the_uri_names_one(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    assert _with_s3_endpoint("s3://b/x") == "s3://b/x?endpoint_override=127.0.0.1%3A9000&scheme=http"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "https://s3.example:443")  # the service-specific one wins
    assert _with_s3_endpoint("s3://b/x") == "s3://b/x?endpoint_override=s3.example%3A443&scheme=https"
    assert _with_s3_endpoint("s3://b/x?endpoint_override=h:1") == "s3://b/x?endpoint_override=h:1"
    assert _with_s3_endpoint("gs://b/x") == "gs://b/x"


# -- file:// is the local code path --------------------------------------------------------------


def test_file_uri_round_trip_lists_skips_a_corrupt_newer_file_and_loads_without_ray(tmp_path, caplog):
    uri = f"file://{tmp_path}/ckpts"
    storage = FileCheckpointStorage(uri)
    assert storage.ensure_writable() == tmp_path / "ckpts"
    old = Checkpoint.new("sup/a1", 1, "running", {"n": 1})
    new = Checkpoint.new("sup/a1", 2, "running", {"n": 2})
    written = storage.write(old)
    _truncate(Path(storage.write(new)))
    # The local atomic path, permissions included.
    assert oct(Path(written).stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "ckpts").stat().st_mode & 0o777) == "0o700"

    with caplog.at_level(logging.WARNING, logger="kaizen_ray"):
        assert [i.id for i in kr.list_checkpoints(uri, agent="sup/a1")] == [old.id]
        assert storage.load_latest("sup/a1").id == old.id
    assert any("truncated payload" in r.getMessage() for r in caplog.records)
    assert kr.load_checkpoint(old.id, storage_path=uri).state == {"n": 1}


# -- the pyarrow.fs code path, on the local disk ----------------------------------------------------


@pytest.fixture
def arrow_storage(tmp_path):
    return FileCheckpointStorage(str(tmp_path / "ck"), filesystem=pafs.LocalFileSystem())


def test_the_pyarrow_path_writes_lists_loads_and_deletes(arrow_storage, tmp_path):
    assert arrow_storage.ensure_writable() == arrow_storage.path
    a = Checkpoint.new("sup/a1", 1, "running", {"n": 1})
    b = Checkpoint.new("b", 3, "completed", [1, 2, 3])
    where = arrow_storage.write(a)
    arrow_storage.write(b)
    assert isinstance(where, str) and where.endswith(f"/ck/sup%2Fa1/{a.id}.ckpt")
    assert (tmp_path / "ck" / "sup%2Fa1" / f"{a.id}.ckpt").is_file()
    # A ledger beside the checkpoints, and no temp file left: neither is listed.
    write_blob(join_storage_path(tmp_path / "ck", ".budgets", "s.json"), b"{}")
    assert sorted(p.name for p in (tmp_path / "ck").rglob("*") if p.name.endswith(".tmp")) == []

    infos = arrow_storage.list()
    assert [(i.id, i.agent, i.cycle) for i in infos] == [(a.id, "sup/a1", 1), (b.id, "b", 3)]
    assert infos[0].path == where and infos[0].payload_size > 0
    assert [i.id for i in arrow_storage.list("b")] == [b.id]
    assert arrow_storage.load(b.id).state == [1, 2, 3]

    arrow_storage.delete(a.id)
    with pytest.raises(CheckpointNotFoundError, match=a.id):
        arrow_storage.load(a.id)


def test_the_pyarrow_path_skips_a_truncated_newer_checkpoint_for_latest_with_a_warning(arrow_storage, tmp_path, caplog):
    good = Checkpoint.new("a1", 1, "running", {"n": 1})
    newer = Checkpoint.new("a1", 2, "running", {"n": 2})
    newest = Checkpoint.new("a1", 3, "running", {"n": 3})
    for ck in (good, newer, newest):
        arrow_storage.write(ck)
    _truncate(tmp_path / "ck" / "a1" / f"{newest.id}.ckpt")  # the size no longer matches the header
    # Damage the payload but not its length: only a full read's checksum finds it.
    damaged = tmp_path / "ck" / "a1" / f"{newer.id}.ckpt"
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF
    damaged.write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING, logger="kaizen_ray"):
        latest = arrow_storage.load_latest("a1")
    assert latest is not None and latest.id == good.id
    messages = [r.getMessage() for r in caplog.records]
    assert any("truncated payload" in m and newest.id in m for m in messages)
    assert any("checksum mismatch" in m and newer.id in m for m in messages)


def test_the_pyarrow_path_lists_nothing_for_a_folder_that_does_not_exist(tmp_path):
    storage = FileCheckpointStorage(str(tmp_path / "none"), filesystem=pafs.LocalFileSystem())
    assert storage.list() == [] and storage.load_latest("a1") is None
    with pytest.raises(CheckpointNotFoundError):
        storage.load("ck-1")


# -- single files beside the checkpoints (budget ledgers) ------------------------------------------


def test_blobs_at_a_folder_and_at_a_file_uri_are_the_same_file(tmp_path):
    local = join_storage_path(tmp_path, ".budgets", "a%2Fb-1.json")
    as_uri = join_storage_path(f"file://{tmp_path}", ".budgets", "a%2Fb-1.json")
    assert local == as_uri == str(tmp_path / ".budgets" / "a%2Fb-1.json")
    assert read_blob(local) is None
    write_blob(as_uri, b'{"spent": 1}')
    assert read_blob(local) == b'{"spent": 1}'
    assert oct(Path(local).stat().st_mode & 0o777) == "0o600"  # the local atomic path
    assert join_storage_path("s3://b/ck?region=eu-west-1", ".budgets", "x.json") == (
        "s3://b/ck/.budgets/x.json?region=eu-west-1"
    )


def test_the_budget_scope_keeps_its_ledger_through_the_storage_seam(tmp_path):
    from kaizen_ray.runtime.budget import BudgetScope

    where = join_storage_path(f"file://{tmp_path}", ".budgets", "s1.json")
    scope = BudgetScope("s1", kr.BudgetInterruptHandler(1.0), where)
    scope.settle("a1", [(0.25, None)], [])
    assert BudgetScope("s1", kr.BudgetInterruptHandler(1.0), where).snapshot()["spent"] == 0.25
    assert os.path.exists(tmp_path / ".budgets" / "s1.json")


@pytest.mark.parametrize(
    "error",
    [
        lambda where: kr.CheckpointNotFoundError("latest", where),
        lambda where: kr.CheckpointCorruptError(f"{where}/a/ck-1.ckpt", "payload checksum mismatch"),
        lambda where: kr.CheckpointStorageError(where, "access denied"),
    ],
    ids=["not-found", "corrupt", "storage"],
)
def test_a_uris_keys_never_reach_a_checkpoint_errors_message(error):
    """Whoever raises it, from whatever spelling of the storage path: the query (keys, maybe) is left out."""
    raised = error("s3://bucket/ck?access_key=AK&secret_key=SECRET")
    assert "SECRET" not in str(raised) and "AK" not in str(raised) and "s3://bucket/ck" in str(raised)
    assert "SECRET" not in repr(raised.__reduce__())  # nor in what travels (Ray pickles errors)
