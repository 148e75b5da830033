"""A local S3 for tests: ``moto_server`` on 127.0.0.1, an ephemeral port, its own session.

:func:`moto_s3` starts the server as a subprocess in a session of its own,
reads the port it bound from its log line, waits until it answers HTTP,
creates a bucket, and yields a :class:`MotoS3` with the standard ``AWS_*``
variables that reach it. It ends the server by process group, whatever the
test did.

    >>> with moto_s3() as s3:  # doctest: +SKIP
    ...     s3.env["AWS_ENDPOINT_URL"], s3.bucket
    ('http://127.0.0.1:41234', 'kaizen-test-...')
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["MotoS3", "moto_s3"]

_START_S = 60.0  # moto_server imports a lot; on two busy cores it can take a while
_PORT_LINE = re.compile(r"Running on http://127\.0\.0\.1:(\d+)")


@dataclass(frozen=True)
class MotoS3:
    """A running moto_server: its endpoint, a bucket in it, and the env that reaches it."""

    endpoint: str
    bucket: str
    env: dict[str, str]

    def client(self):
        """A boto3 S3 client on this server (moto ships boto3)."""
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=self.env["AWS_DEFAULT_REGION"],
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
        )


def _moto_server() -> str:
    found = Path(sys.executable).with_name("moto_server")
    if not found.exists():
        pytest.skip("moto_server is not installed (pip install 'moto[server]>=5')")
    return str(found)


def _wait_for_port(log: Path, proc: subprocess.Popen[bytes], deadline: float) -> int:
    while time.monotonic() < deadline:
        if (found := _PORT_LINE.search(log.read_text(errors="replace"))) is not None:
            return int(found.group(1))
        if proc.poll() is not None:
            pytest.fail(f"moto_server exited ({proc.returncode}) before it listened:\n{log.read_text()[-4000:]}")
        time.sleep(0.05)  # polling a log file: there is no event to await
    pytest.fail(f"moto_server did not say its port within {_START_S:.0f}s:\n{log.read_text()[-4000:]}")


def _wait_until_answers(endpoint: str, deadline: float) -> None:
    while True:
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=5):
                return
        except urllib.error.HTTPError:  # it answered, if not with 200
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextlib.contextmanager
def moto_s3() -> Iterator[MotoS3]:
    """Start moto_server, make a bucket, yield a :class:`MotoS3`; end it by process group."""
    log = Path(tempfile.mkdtemp(prefix="kaizen-moto-")) / "moto_server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [_moto_server(), "-H", "127.0.0.1", "-p", "0"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: killpg ends it and nothing else
        )
    try:
        deadline = time.monotonic() + _START_S
        endpoint = f"http://127.0.0.1:{_wait_for_port(log, proc, deadline)}"
        _wait_until_answers(endpoint, deadline)
        env = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        s3 = MotoS3(endpoint, f"kaizen-test-{uuid.uuid4().hex[:8]}", env)
        s3.client().create_bucket(Bucket=s3.bucket)
        yield s3
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
