"""Supervision trees and Ray actor options for children, on a real local Ray.

A tree here is ``<root>`` over a child supervisor ``team-a`` (two leaves) and
an agent ``solo``: five actors, plus the namespace's store (and timer or
budget actor). Interrupts are checked by each leaf's ``propagated_from`` (its
direct parent), manifests by resuming from them (the leaves' checkpoints must
chain back to the paused ones, or a fresh start would pass for a resume), and
actor options by an effect the child itself reports (an environment variable
its ``runtime_env`` sets; a resource no node has).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest
import ray
import ray.cloudpickle
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

import kaizen_ray as kr
from tests._support.ray_agents import (
    Counter,
    Spender,
    child_status,
    expected_state,
    wait_for_checkpointed_cycle,
)
from tests._support.waiting import wait_until

pytestmark = pytest.mark.ray

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

WAIT_S = 90.0  # generous: other helpers load this 2-core machine too


class ReadsProbe(kr.BaseAutonomousAgent):
    """One cycle: notes the ``KAIZEN_PROBE`` environment variable of its actor's process and its node."""

    def initial_state(self, task: Any) -> dict[str, Any]:
        return {}

    async def step(self, state, ctx):
        probe = {"probe": os.environ.get("KAIZEN_PROBE"), "node": ray.get_runtime_context().get_node_id()}
        return kr.StepResult(probe, done=True)


def leaf(storage: Any, name: str, goal: int | None, seed: int, *, cls: type = Counter, **spec: Any) -> kr.ChildSpec:
    config = kr.AutonomousConfig(storage_path=storage, checkpoint_frequency=1)
    return kr.ChildSpec(cls, name=name, config=config, task={"goal": goal, "seed": seed, "delay": 0.05}, **spec)


def tree(root: str, storage: Any, goal: int | None, **team: Any) -> Any:
    """``root`` over ``team-a`` (leaves w1, w2) and ``solo``, every leaf counting to ``goal``."""
    team_a = kr.ChildSpec(
        kr.Supervisor, name="team-a", children=[leaf(storage, "w1", goal, 1), leaf(storage, "w2", goal, 2)], **team
    )
    return kr.Supervisor.spawn(
        root, children=[team_a, leaf(storage, "solo", goal, 3)], config=kr.SupervisorConfig(storage_path=storage)
    )


LEAVES = {"team-a/w1": 1, "team-a/w2": 2, "solo": 3}  # path under the root -> the leaf's seed


def chain_reaches(storage: Any, final_id: str, ancestor_id: str) -> bool:
    """Whether ``final_id``'s checkpoints lead back (by ``parent_id``) to ``ancestor_id``: a resume, not a fresh start."""
    by_id = {info.id: info for info in kr.list_checkpoints(storage)}
    node = by_id.get(final_id)
    while node is not None:
        if node.id == ancestor_id:
            return True
        node = by_id.get(node.parent_id) if node.parent_id else None
    return False


def test_actor_options_reach_the_childs_actor(ray_cluster, storage, cleanup):
    node_id = ray.get_runtime_context().get_node_id()
    options = {
        "num_cpus": 0,
        "runtime_env": {"env_vars": {"KAIZEN_PROBE": "x"}},
        "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=False),
    }
    config = kr.AutonomousConfig(storage_path=storage)
    sup = kr.Supervisor.spawn(
        "opts",
        children=[
            kr.ChildSpec(ReadsProbe, name="probed", config=config, actor_options=options),
            kr.ChildSpec(ReadsProbe, name="plain", config=config),
        ],
        storage_path=storage,
    )
    cleanup(sup)

    result = ray.get(sup.start(), timeout=WAIT_S)

    assert result["status"] == "completed", result
    assert result["children"]["probed"]["state"] == {"probe": "x", "node": node_id}
    assert result["children"]["plain"]["state"]["probe"] is None  # the options are the child's own


def test_a_request_no_node_can_meet_fails_the_start_naming_child_and_option(ray_cluster, storage, cleanup):
    greedy = leaf(storage, "greedy", 5, 1, actor_options={"resources": {"nope": 1}}, spawn_timeout_s=3.0)
    sup = kr.Supervisor.spawn("impossible", children=[greedy, leaf(storage, "fine", 5, 2)], storage_path=storage)
    cleanup(sup)

    result = ray.get(sup.start(), timeout=WAIT_S)

    assert result["status"] == "failed"
    child = result["children"]["greedy"]
    assert child["status"] == "failed" and isinstance(child["error"], TimeoutError)
    # Its sibling never ran: still reported (and kept in the manifest, with where it was to resume from).
    assert set(result["children"]) == {"greedy", "fine"} and result["children"]["fine"]["status"] == "killed"
    manifest = kr.load_checkpoint(result["checkpoint_id"], storage_path=storage)
    assert manifest.state["children"] == {"greedy": None, "fine": None}  # a fresh start: no resume point
    for text in (str(child["error"]), result["error"]):
        assert "impossible/greedy" in text or "'greedy'" in text, text
        assert "'nope'" in text and "spawn_timeout_s=3.0" in text, text
    # Neither the pending actor nor its sibling, which never ran, is left behind.
    for name in ("impossible/greedy", "impossible/fine"):
        wait_until(lambda name=name: child_status(ray_cluster, name, timeout_s=5.0) is None, f"{name} to be gone")


def test_ray_options_ray_refuses_are_a_config_error_before_anything_starts(ray_cluster, storage):
    team_a = kr.ChildSpec(kr.Supervisor, name="team-a", children=[leaf(storage, "w", 1, 1, actor_options={"num_gpu": 1})])
    with pytest.raises(kr.ConfigError, match=r"actor_options of child 'refused/team-a/w'.*num_gpu"):
        kr.Supervisor.spawn("refused", children=[team_a], storage_path=storage)
    with pytest.raises(ValueError):
        ray.get_actor("refused", namespace=ray_cluster)


def test_an_interrupt_on_the_root_reaches_every_leaf_and_the_manifest_resumes_the_whole_tree(ray_cluster, storage, cleanup):
    goal = 40
    sup = tree("tree", storage, goal)
    cleanup(sup)
    ref = sup.start()
    for path in LEAVES:
        wait_for_checkpointed_cycle(ray_cluster, f"tree/{path}", 3)

    assert sup.request_interrupt(kr.InterruptSource.USER, kr.InterruptMode.GRACEFUL, "pause the tree") is True
    paused = ray.get(ref, timeout=WAIT_S)

    assert paused["status"] == "interrupted", paused
    team = paused["children"]["team-a"]
    assert team["agent"] == "tree/team-a" and team["status"] == "interrupted"
    assert team["interrupt_reason"].metadata["propagated_from"] == "tree"
    paused_leaves = {"team-a/w1": team["children"]["w1"], "team-a/w2": team["children"]["w2"], "solo": paused["children"]["solo"]}
    for path, child in paused_leaves.items():
        assert child["agent"] == f"tree/{path}" and child["status"] == "interrupted", child
        reason = child["interrupt_reason"]
        assert (reason.source, reason.message) == (kr.InterruptSource.USER, "pause the tree")
        assert reason.metadata["propagated_from"] == ("tree/team-a" if path.startswith("team-a/") else "tree")
        assert 3 <= child["cycles"] < goal

    # The root's manifest names team-a's manifest, which names its leaves' checkpoints.
    manifest = kr.load_checkpoint(paused["checkpoint_id"], storage)
    assert manifest.agent == "tree" and manifest.metadata["kind"] == "manifest"
    assert manifest.state["children"] == {"team-a": team["checkpoint_id"], "solo": paused["children"]["solo"]["checkpoint_id"]}
    team_manifest = kr.load_checkpoint(team["checkpoint_id"], storage)
    assert team_manifest.agent == "tree/team-a" and team_manifest.metadata["kind"] == "manifest"
    assert team_manifest.state["children"] == {n: team["children"][n]["checkpoint_id"] for n in ("w1", "w2")}

    resumed = ray.get(sup.start(resume_from_checkpoint=manifest.id), timeout=WAIT_S)

    assert resumed["status"] == "completed", resumed
    resumed_leaves = {
        "team-a/w1": resumed["children"]["team-a"]["children"]["w1"],
        "team-a/w2": resumed["children"]["team-a"]["children"]["w2"],
        "solo": resumed["children"]["solo"],
    }
    for path, child in resumed_leaves.items():
        task = {"goal": goal, "seed": LEAVES[path], "delay": 0.05}
        assert child["status"] == "completed" and child["state"] == expected_state(task, f"tree/{path}")
        assert chain_reaches(storage, child["checkpoint_id"], paused_leaves[path]["checkpoint_id"]), path


def test_a_child_supervisor_that_dies_is_restarted_with_its_subtree_from_its_latest(ray_cluster, storage, cleanup):
    goal = 60
    sup = tree("rs", storage, goal)
    cleanup(sup)
    ref = sup.start()
    before = {}
    for name in ("w1", "w2"):
        _, status = wait_for_checkpointed_cycle(ray_cluster, f"rs/team-a/{name}", 5)
        before[name] = status["checkpoint_id"]

    ray.kill(ray.get_actor("rs/team-a", namespace=ray_cluster), no_restart=True)
    result = ray.get(ref, timeout=WAIT_S)

    assert result["status"] == "completed", result
    assert result["restarts"] == 1
    team = result["children"]["team-a"]
    assert team["status"] == "completed" and team["agent"] == "rs/team-a"
    for name, seed in (("w1", 1), ("w2", 2)):
        child = team["children"][name]
        task = {"goal": goal, "seed": seed, "delay": 0.05}
        assert child["status"] == "completed" and child["state"] == expected_state(task, f"rs/team-a/{name}")
        # Resumed from a checkpoint at or past the one seen before the kill, not from scratch.
        assert chain_reaches(storage, child["checkpoint_id"], before[name]), name
    assert result["children"]["solo"]["status"] == "completed"


def test_a_budget_on_the_root_is_one_scope_for_every_leaf(ray_cluster, storage, cleanup):
    cost, max_cost = 0.1, 1.0  # Spender's default cost per cycle
    # Only team-a's leaves spend: were the root's scope not passed on through
    # team-a, nothing would ever spend it and the run would not end.
    team_a = kr.ChildSpec(
        kr.Supervisor, name="team-a",
        children=[leaf(storage, n, None, 0, cls=Spender) for n in ("w1", "w2")],
    )  # fmt: skip
    sup = kr.Supervisor.spawn(
        "budget-tree", children=[team_a, leaf(storage, "solo", None, 3)], config=kr.SupervisorConfig(storage_path=storage)
    )
    cleanup(sup)
    sup.add_handler(kr.BudgetInterruptHandler(max_cost=max_cost))

    result = ray.get(sup.start(), timeout=WAIT_S)

    assert result["status"] == "interrupted", result
    spenders = list(result["children"]["team-a"]["children"].values())
    for child in [*spenders, result["children"]["solo"]]:
        assert child["status"] == "interrupted", child
        assert child["interrupt_reason"].metadata["handler"] == "budget"
    paid = sum(child["state"]["paid"] for child in spenders) * cost
    # One scope: spending reaches the budget and overshoots it by at most one cycle per spender.
    assert max_cost - 1e-9 <= paid <= max_cost + len(spenders) * cost + 1e-9, paid
