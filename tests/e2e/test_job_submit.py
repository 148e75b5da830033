"""docs/cluster.md's ``ray job submit`` walk-through, run as written against a real head with its job server.

The test reads the head's ``ray start``, ``swarm.py`` and every command of
step 5 from the page itself, so the page cannot drift from what runs: only the
placeholders are filled in (the head's address and a free port for each of its
servers, as the page's note on sharing a machine says, and the ``env_vars``
values, for S3 played by a local ``moto_server``). The head is started as the
page's step 2 says, without ``RAY_AUTH_MODE`` (``ray start --head`` turns
token auth on by itself); every client sets ``RAY_AUTH_MODE=token`` as the
page does. kaizen_ray is importable on the node as step 1 asks: this checkout
is on the head's ``PYTHONPATH``, and the venv's ``bin`` first on its ``PATH``.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests._support.moto import MotoS3, moto_s3
from tests._support.processes import ROOT, Completed, clean_env, run
from tests._support.ray_cluster import RAY, RayHead, ray_head

pytestmark = pytest.mark.e2e

DOC = ROOT / "docs" / "cluster.md"
CHILDREN = ("w1", "w2")  # the children swarm.py spawns
CYCLES = 10  # the task swarm.py gives each
DOC_SERVER = "http://<head-ip>:8265"
DOC_STORAGE = "s3://my-bucket/kaizen"


def _blocks(pattern: str) -> list[str]:
    """The fenced blocks of the page with a line matching ``pattern``."""
    blocks = re.findall(r"^```\w*\n(.*?)^```$", DOC.read_text(), re.MULTILINE | re.DOTALL)
    return [b for b in blocks if re.search(pattern, b, re.MULTILINE)]


def _commands_of(block: str) -> list[str]:
    """A shell block's commands, one string each: lines joined across a trailing backslash or an open quote."""
    commands, pending = [], ""
    for line in block.splitlines():
        pending = f"{pending}\n{line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1]
        elif pending.count("'") % 2 == 0:
            commands.append(pending)
            pending = ""
    assert not pending, f"an unfinished command in {DOC}: {pending!r}"
    return commands


def _command(pattern: str) -> tuple[dict[str, str], list[str]]:
    """The page's one command matching ``pattern``: its leading VAR=value assignments, and its words."""
    commands = [c for b in _blocks(pattern) for c in _commands_of(b) if re.search(pattern, c)]
    assert len(commands) == 1, f"{len(commands)} commands of {DOC} match {pattern!r}: {commands}"
    words = shlex.split(commands[0], comments=True)
    assigned = {}
    while re.fullmatch(r"[A-Z_]+=.*", words[0]):
        key, _, value = words.pop(0).partition("=")
        assigned[key] = value
    return assigned, words


def _head_options() -> dict[str, str]:
    """Step 2's ``ray start --head`` options (``--opt=value``), checked to be the ones the test knows how to play."""
    assigned, words = _command(r"^ray start --head")
    assert not assigned and words[:3] == ["ray", "start", "--head"], words
    options = dict(w.split("=", 1) for w in words[3:])
    assert set(options) == {"--port", "--num-cpus", "--dashboard-host"}, options
    return options


def _submit_argv(dashboard_url: str, env_vars: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """Step 5's ``ray job submit``, its placeholders filled in."""
    assigned, words = _command(r"ray job submit")
    assert words[:3] == ["ray", "job", "submit"], words
    argv = [str(RAY), *words[1:]]
    address = argv.index("--address") + 1
    assert argv[address] == DOC_SERVER, argv[address]
    argv[address] = dashboard_url
    runtime_env = argv.index("--runtime-env-json") + 1
    documented = json.loads(argv[runtime_env])
    assert set(documented) == {"env_vars"} and set(documented["env_vars"]) == set(env_vars), documented
    assert documented["env_vars"]["KAIZEN_STORAGE"] == DOC_STORAGE, documented
    argv[runtime_env] = json.dumps({"env_vars": env_vars})
    assert argv[argv.index("--working-dir") + 1] == "." and argv[-3:] == ["--", "python", "swarm.py"], argv
    return assigned, argv


def _filled(words: list[str], replacements: dict[str, str]) -> list[str]:
    for placeholder, value in replacements.items():
        words = [w.replace(placeholder, value) for w in words]
    return words


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RayHead, MotoS3]]:
    """Step 2's head (one node) with its job server, and S3; moto_server starts while the head does."""
    options = _head_options()
    # No RAY_AUTH_MODE for the head, as in step 2; this checkout on PYTHONPATH plays "installed on every node".
    env = {k: v for k, v in clean_env().items() if k != "RAY_AUTH_MODE" and not k.startswith("AWS_")}
    s3_server = moto_s3()
    pool = ThreadPoolExecutor(1, thread_name_prefix="moto")
    s3_started = pool.submit(s3_server.__enter__)
    try:
        with ray_head(
            tmp_path_factory.mktemp("job-head"), dashboard=True, dashboard_host=options["--dashboard-host"],
            num_cpus=int(options["--num-cpus"]), head_env=env,
        ) as head:  # fmt: skip
            yield head, s3_started.result(timeout=90)
    finally:
        pool.shutdown(wait=True)  # moto_server's start is over, whether it succeeded or not
        if s3_started.exception() is None:
            s3_server.__exit__(None, None, None)


def _ok(done: Completed, what: str) -> str:
    assert done.returncode == 0, f"{what}: exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout + done.stderr


def test_the_documented_job_runs_the_swarm_to_completion_and_every_child_checkpointed_to_s3(
    cluster: tuple[RayHead, MotoS3], tmp_path: Path
) -> None:
    head, s3 = cluster
    assert head.dashboard_url is not None
    work = tmp_path / "job"
    work.mkdir()
    (swarm,) = _blocks(r"^# swarm\.py$")
    (work / "swarm.py").write_text(swarm)
    storage = f"s3://{s3.bucket}/kaizen"
    assigned, argv = _submit_argv(head.dashboard_url, {**s3.env, "KAIZEN_STORAGE": storage})
    assert assigned == {"RAY_AUTH_MODE": "token"}, assigned
    client_env = clean_env(assigned)  # no AWS_* here: only the job's runtime_env carries them

    submitted = _ok(run(argv, cwd=work, env=client_env, timeout=110, log_dir=tmp_path, name="ray-job-submit"), "ray job submit")
    job_id = re.search(r"Job '(\S+)' submitted successfully", submitted)
    assert job_id, submitted
    job_id = job_id.group(1)
    assert f"Job '{job_id}' succeeded" in submitted, submitted
    joined = re.search(r"Connecting to existing Ray cluster at address: (\S+?)\.*$", submitted, re.MULTILINE)
    port = head.address.rsplit(":", 1)[1]
    assert joined and joined.group(1).endswith(f":{port}"), f"the job's driver joined another cluster:\n{submitted}"
    printed = {m.group(1): m for m in re.finditer(r"^  (w\d): (\w+) after (\d+) cycles, checkpoint (ck-\S+)$", submitted, re.MULTILINE)}
    assert "swarm: completed" in submitted and set(printed) == set(CHILDREN), submitted
    assert all(m.group(2) == "completed" and int(m.group(3)) == CYCLES for m in printed.values()), submitted

    placeholders = {DOC_SERVER: head.dashboard_url, "<submission-id>": job_id, DOC_STORAGE: storage}
    for what in ("status", "logs"):
        assigned, words = _command(rf"ray job {what} ")
        assert assigned == {"RAY_AUTH_MODE": "token"} and words[:3] == ["ray", "job", what], words
        out = _ok(run([str(RAY), *_filled(words, placeholders)[1:]], env=client_env, timeout=60, log_dir=tmp_path, name=f"ray-job-{what}"), what)
        if what == "status":
            assert f"Job '{job_id}' succeeded" in out or "SUCCEEDED" in out, out
        else:  # the job's own output, kept by the job server
            for name in CHILDREN:
                assert f"  {name}: completed after {CYCLES} cycles, checkpoint {printed[name].group(4)}" in out, out

    # Read back without Ray, from a process that has the AWS_* variables, as the page says.
    assigned, words = _command(r"^kaizen-ray checkpoints ls")
    assert not assigned, assigned
    argv = [sys.executable, "-m", "kaizen_ray.cli", *_filled(words, placeholders)[1:], "--json"]
    listed = run(argv, env=clean_env(s3.env), timeout=60, log_dir=tmp_path, name="kaizen-ray-checkpoints")
    assert listed.returncode == 0, listed
    saved = json.loads(listed.stdout)
    for name in CHILDREN:
        mine = [c for c in saved if c["agent"] == f"swarm/{name}"]
        assert sorted(c["cycle"] for c in mine if c["status"] != "completed") == list(range(1, CYCLES)), mine
        assert [c["id"] for c in mine if c["status"] == "completed"] == [printed[name].group(4)], mine
    assert any(c["agent"] == "swarm" for c in saved), saved  # the supervisor's manifests, beside its children
