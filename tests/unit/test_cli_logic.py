"""The pure parts of ``kaizen-ray``: MODULE:OBJ resolution, storage for a swarm's children, JSON rendering (no Ray)."""

from __future__ import annotations

import json
import math
import sys
import types
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

import kaizen_ray as kr
from kaizen_ray._cli.render import (
    ROW_KEYS,
    dumps,
    json_safe,
    result_lines,
    status_row,
    table,
)
from kaizen_ray._cli.target import resolve_target, with_storage
from kaizen_ray.core.results import run_result, supervisor_result


class Worker(kr.BaseAutonomousAgent):
    async def step(self, state, ctx):  # pragma: no cover - never run here
        return kr.StepResult(state, done=True)


@pytest.fixture
def user_module() -> Iterator[types.ModuleType]:
    """A module as a user's would be: an agent class, ChildSpec lists and factories, and things that are neither."""
    mod = types.ModuleType("kaizen_cli_user_mod")
    mod.Worker = Worker
    mod.specs = [kr.ChildSpec(Worker, name="a"), kr.ChildSpec(Worker, name="b")]
    mod.make_specs = lambda: [kr.ChildSpec(Worker, name="c")]
    mod.broken_factory = lambda: 1 / 0
    mod.empty = []
    mod.numbers = [1, 2]
    mod.NotAnAgent = dict
    mod.nested = types.SimpleNamespace(Inner=Worker)
    sys.modules[mod.__name__] = mod
    yield mod
    del sys.modules[mod.__name__]


def test_an_agent_class_resolves_to_an_agent_named_after_it(user_module: types.ModuleType) -> None:
    target = resolve_target("kaizen_cli_user_mod:Worker")
    assert (target.kind, target.agent_cls, target.default_name) == ("agent", Worker, "Worker")
    assert resolve_target("kaizen_cli_user_mod:nested.Inner").default_name == "Inner"


@pytest.mark.parametrize(("obj", "names"), [("specs", ["a", "b"]), ("make_specs", ["c"])])
def test_a_childspec_list_or_a_function_returning_one_resolves_to_a_swarm(user_module: types.ModuleType, obj: str, names: list[str]) -> None:
    target = resolve_target(f"kaizen_cli_user_mod:{obj}")
    assert (target.kind, target.default_name) == ("swarm", obj)
    assert [c.name for c in target.children] == names


@pytest.mark.parametrize(
    ("spec", "needles"),
    [
        ("kaizen_cli_user_mod", ["'package.module:name'"]),
        (":Worker", ["'package.module:name'"]),
        ("kaizen_cli_user_mod:", ["'package.module:name'"]),
        ("no_such_module_xyz:Worker", ["ModuleNotFoundError", "no_such_module_xyz"]),
        ("kaizen_cli_user_mod:Missing", ["has no 'Missing'"]),
        ("kaizen_cli_user_mod:NotAnAgent", ["BaseAutonomousAgent subclass", "dict"]),
        ("kaizen_cli_user_mod:numbers", ["a list holding int"]),
        ("kaizen_cli_user_mod:empty", ["an empty list"]),
        ("kaizen_cli_user_mod:broken_factory", ["ZeroDivisionError"]),
    ],
)
def test_a_bad_module_obj_is_a_config_error_naming_the_value_and_why(user_module: types.ModuleType, spec: str, needles: list[str]) -> None:
    with pytest.raises(kr.ConfigError) as caught:
        resolve_target(spec)
    message = str(caught.value)
    assert repr(spec) in message and "\n" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)


def test_storage_goes_to_every_child_that_names_none_down_the_tree(tmp_path: Path) -> None:
    own = tmp_path / "own"
    specs = [
        kr.ChildSpec(Worker, name="plain"),
        kr.ChildSpec(Worker, name="mine", config=kr.AutonomousConfig(storage_path=own, max_cycles=3)),
        kr.ChildSpec(kr.Supervisor, name="team", children=[kr.ChildSpec(Worker, name="deep")]),
    ]
    shared = tmp_path / "shared"
    out = with_storage(specs, str(shared))
    assert [Path(s.config.storage_path) for s in out] == [shared, own, shared]
    assert Path(out[2].children[0].config.storage_path) == shared
    assert out[1].config.max_cycles == 3  # the rest of a child's config is kept
    assert specs[0].config.storage_path is None  # the user's specs are not changed
    assert with_storage(specs, None) == specs
    assert with_storage(specs, "s3://bucket/ck")[0].config.storage_path == "s3://bucket/ck"  # a URI stays a URI


def test_a_result_renders_as_json_with_reasons_as_objects_and_errors_as_type_and_message() -> None:
    reason = kr.InterruptReason(source="user", mode="graceful", message="enough", metadata={"by": "kaizen-ray"})
    result = run_result("a1", "interrupted", state={"n": 3, "seen": {"b", "a"}, "at": datetime(2026, 1, 2, tzinfo=UTC)},
                        cycles=3, cost=0.03, checkpoint_id="ck-1", interrupt_reason=reason, error=ValueError("bad\nvalue"))
    out = json.loads(dumps(result))
    assert out["interrupt_reason"]["source"] == "user" and out["interrupt_reason"]["mode"] == "graceful"
    assert out["interrupt_reason"]["metadata"] == {"by": "kaizen-ray", "checkpoint_id": "ck-1"}
    assert out["error"] == {"type": "ValueError", "message": "bad\nvalue"}
    assert out["state"] == {"n": 3, "seen": ["a", "b"], "at": "2026-01-02T00:00:00+00:00"}
    assert (out["status"], out["cycles"], out["cost"], out["checkpoint_id"]) == ("interrupted", 3, 0.03, "ck-1")


def test_json_safe_never_fails_on_what_json_cannot_hold() -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    loop: list = []
    loop.append(loop)
    out = json_safe({"nan": math.nan, "inf": -math.inf, "obj": Opaque(), "bytes": b"\xff", "path": Path("/x"), (1, 2): "t"})
    assert out == {"nan": None, "inf": None, "obj": "<opaque>", "bytes": "\\xff", "path": "/x", "(1, 2)": "t"}
    json.dumps(json_safe(loop))  # a self-referencing state ends in a repr, not a RecursionError
    json.dumps(json_safe(supervisor_result("sw", "failed", children={}, error="gave up")))


def test_status_rows_have_the_design_keys_and_a_supervisor_falls_back_to_its_manifest() -> None:
    agent = status_row("a1", "agent", {"phase": "running", "cycle": 4, "cost": 0.04, "checkpoint_id": "ck-4", "budget": None})
    assert tuple(agent) == ROW_KEYS == ("name", "kind", "phase", "cycle", "cost", "checkpoint_id")
    sup = status_row("sw", "supervisor", {"phase": "finished", "children": {}}, "ck-m")
    assert sup == {"name": "sw", "kind": "supervisor", "phase": "finished", "cycle": None, "cost": None, "checkpoint_id": "ck-m"}
    lines = table([agent, sup]).splitlines()
    assert lines[0].split() == ["NAME", "KIND", "PHASE", "CYCLE", "COST", "CHECKPOINT_ID"]
    assert lines[2].split() == ["sw", "supervisor", "finished", "-", "-", "ck-m"]


def test_result_lines_show_each_child_under_its_supervisor() -> None:
    child = run_result("sw/w1", "interrupted", cycles=2, checkpoint_id="ck-2",
                       interrupt_reason=kr.InterruptReason(source="user", mode="immediate", message="stop"))
    lines = result_lines(supervisor_result("sw", "interrupted", children={"w1": child}, checkpoint_id="ck-m"))
    assert lines == [
        "sw: interrupted, restarts 0, manifest ck-m",
        "  sw/w1: interrupted after 2 cycles, cost 0, checkpoint ck-2 (user/immediate: stop)",
    ]


def test_checkpoints_verify_reads_every_file_and_exits_non_zero_naming_the_corrupt_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kaizen_ray.cli import main
    from kaizen_ray.core.checkpoint import FileCheckpointStorage

    storage = FileCheckpointStorage(tmp_path)
    paths = [Path(storage.write(kr.Checkpoint.new("a1", cycle, "interrupted", {"n": cycle}))) for cycle in (1, 2)]
    assert main(["checkpoints", "verify", "--storage", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == "2 good, 0 corrupt"

    paths[1].write_bytes(paths[1].read_bytes()[:-3])  # a torn write: the payload is short
    assert main(["--json", "checkpoints", "verify", "--storage", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert len(report["good"]) == 1 and [Path(b["file"]).name for b in report["corrupt"]] == [paths[1].name]
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("kaizen-ray: error: 1 corrupt checkpoint file(s): ") and paths[1].name in lines[0]


# -- `kaizen-ray run` refuses before it connects ------------------------------------------------------


@pytest.fixture
def no_connection(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every attempt to connect to Ray, recorded (and refused): a refusal must come before any."""
    from kaizen_ray import cli

    attempts: list[str] = []

    def refuse(self: object, **kwargs: object) -> None:
        attempts.append("connect")
        raise AssertionError("connected to Ray")

    monkeypatch.setattr(cli._Settings, "connect", refuse)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return attempts


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--detach"], "--detach needs a cluster that outlives this command"),
        (["--timeout", "nan"], "--timeout"),
        (["--budget", "inf"], "--budget"),
    ],
    ids=["detach-without-a-cluster", "timeout-nan", "budget-inf"],
)
def test_run_refuses_before_connecting_naming_the_option(user_module, no_connection, args, needle) -> None:
    from click.testing import CliRunner

    from kaizen_ray.cli import cli

    outcome = CliRunner().invoke(cli, ["run", f"{user_module.__name__}:Worker", *args])
    assert outcome.exit_code == 2, outcome.output  # a usage error, not a failed run
    assert needle in outcome.output and no_connection == []


def test_a_uris_keys_are_left_out_of_what_is_shown_of_it() -> None:
    from kaizen_ray.core.checkpoint._paths import shown

    for uri in ("s3://AKIA:SECRET@bucket/ck", "s3://bucket/ck?access_key=AKIA&secret_key=SECRET"):
        assert shown(uri) == "s3://bucket/ck"


def test_system_actors_are_known_by_their_exact_names_and_kaizen_bot_is_an_agent() -> None:
    from kaizen_ray._cli.cluster import is_system_name
    from kaizen_ray.runtime.budget import BUDGET_PREFIX
    from kaizen_ray.runtime.checkpoints import STORE_NAME
    from kaizen_ray.runtime.timer import TIMER_NAME

    assert is_system_name(TIMER_NAME) and is_system_name(STORE_NAME) and is_system_name(f"{BUDGET_PREFIX}/sw/1a2b")
    assert not any(map(is_system_name, ["kaizen-bot", "kaizen-timers", "kaizen-budget", "swarm/w1"]))
