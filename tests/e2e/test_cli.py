"""The ``kaizen-ray`` console script as a user runs it: ``demo`` (in-process and on Ray) and ``checkpoints``.

Each command runs in its own session with RAY_ADDRESS removed (the Ray demo
starts an embedded local Ray) and is ended by process group if it hangs.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

from tests._support.processes import Completed, run

pytestmark = pytest.mark.e2e

LISTING = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (?P<id>ck-\S+) (?P<agent>\S+) cycle=(?P<cycle>\d+) (?P<status>\w+)(?: (?P<why>\w+/\w+))?$"
)
TOPICS = ("interrupts", "checkpoints", "supervision")  # the Ray demo's researchers (kaizen_ray/_demo.py)


def _console_script() -> list[str]:
    """The installed ``kaizen-ray`` beside this interpreter (as ``make`` installs it), else the module."""
    beside = Path(sys.executable).parent / "kaizen-ray"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("kaizen-ray")
    return [found] if found else [sys.executable, "-m", "kaizen_ray.cli"]


def kaizen_ray(*args: str | Path, log_dir: Path, timeout: float = 60) -> Completed:
    return run([*_console_script(), *map(str, args)], timeout=timeout, log_dir=log_dir, name="kaizen-ray")


def _ok(done: Completed) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr[-3000:]}"
    return done.stdout


def _listed(out: str) -> dict[str, re.Match[str]]:
    """The ``checkpoints`` listing by id; every line must be a checkpoint line."""
    lines = out.splitlines()
    matches = [LISTING.match(line) for line in lines]
    assert all(matches), f"not a checkpoint line in:\n{out}"
    listed = {m.group("id"): m for m in matches}
    assert len(listed) == len(lines), f"an id listed twice:\n{out}"
    return listed


def _files(storage: Path, folder: str = "*") -> set[str]:
    return {p.stem for p in storage.glob(f"{folder}/*.ckpt")}


def test_demo_in_process_stops_on_its_timeout_resumes_to_completion_and_lists_its_checkpoints(tmp_path: Path) -> None:
    storage = tmp_path / "ckpts"
    out = _ok(kaizen_ray("demo", "--in-process", "--storage", storage, log_dir=tmp_path))

    first = re.search(r"^  interrupted after (\d+) cycles by system/timeout \(graceful\)", out, re.M)
    assert first, out
    stopped_at = int(first.group(1))
    assert 1 <= stopped_at < 8, out  # stopped by the timeout, before the 8 notes it needs
    held = re.search(r"^  checkpoint (ck-\S+) holds (\d+) notes$", out, re.M)
    assert held and int(held.group(2)) == stopped_at, out
    assert re.search(r"^  completed after 8 cycles in all, cost 0\.08$", out, re.M), out  # resumed: no cycle redone
    final = re.search(r"^  final checkpoint (ck-\S+); notes: 8$", out, re.M)
    assert final, out

    listed = _listed(_ok(kaizen_ray("checkpoints", "--storage", storage, log_dir=tmp_path)))
    assert set(listed) == _files(storage) == _files(storage, "researcher")
    interrupted = listed[held.group(1)]
    assert (interrupted["agent"], interrupted["cycle"], interrupted["status"], interrupted["why"]) == (
        "researcher", str(stopped_at), "interrupted", "system/graceful"
    )
    assert (listed[final.group(1)]["cycle"], listed[final.group(1)]["status"]) == ("8", "completed")

    assert set(_listed(_ok(kaizen_ray("checkpoints", "--storage", storage, "--agent", "researcher", log_dir=tmp_path)))) == set(listed)
    assert _ok(kaizen_ray("checkpoints", "--storage", storage, "--agent", "nobody", log_dir=tmp_path)) == ""


def test_demo_on_ray_interrupts_the_swarm_resumes_it_and_checkpoints_lists_each_agent(tmp_path: Path) -> None:
    storage = tmp_path / "ckpts"
    out = _ok(kaizen_ray("demo", "--storage", storage, log_dir=tmp_path, timeout=120))

    first = re.search(r"accepted=True; swarm interrupted, manifest (ck-\S+)$", out, re.M)
    assert first, out
    for topic in TOPICS:  # the one interrupt reached every researcher through the supervisor
        assert re.search(rf"^   - {topic}: interrupted after \d+ cycles, \d+ notes \(forwarded from swarm\)$", out, re.M), out
    second = re.search(r"^   swarm completed, restarts \S+, manifest (ck-\S+)$", out, re.M)
    assert second, out
    for topic in TOPICS:
        assert re.search(rf"^   - {topic}: completed after 8 cycles in all, 8 notes, cost 0\.08$", out, re.M), out

    listed = _listed(_ok(kaizen_ray("checkpoints", "--storage", storage, log_dir=tmp_path)))
    assert set(listed) == _files(storage)
    assert {first.group(1), second.group(1)} <= set(listed)
    for topic in TOPICS:
        agent = f"swarm/{topic}"
        mine = _listed(_ok(kaizen_ray("checkpoints", "--storage", storage, "--agent", agent, log_dir=tmp_path)))
        assert set(mine) == _files(storage, f"swarm%2F{topic}"), agent
        assert {m["agent"] for m in mine.values()} == {agent}
        assert [m["status"] for m in mine.values()].count("completed") == 1, agent


@pytest.mark.parametrize("command", [["checkpoints"], ["demo", "--in-process"]])
def test_a_storage_path_that_is_a_file_ends_the_command_with_one_line_and_no_traceback(tmp_path: Path, command: list[str]) -> None:
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("not a folder")
    done = kaizen_ray(*command, "--storage", not_a_folder, log_dir=tmp_path)
    assert done.returncode == 1, done
    assert done.stdout == "", done  # nothing ran
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("kaizen-ray: error: checkpoint storage "), done.stderr
    assert str(not_a_folder) in lines[0] and "NotADirectoryError" in lines[0], done.stderr
