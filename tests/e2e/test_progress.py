"""``run(..., progress=True)``: one tqdm_ray bar per agent, drawn by the driver, labelled with its name, to the last cycle.

A real driver in a subprocess (bars are drawn from the worker's log stream,
which only a real driver has): a plain run first (no bar: off by default),
then an agent with a budget and a supervisor of two children with bars on.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests._support.processes import clean_env, run

pytestmark = pytest.mark.e2e

SCRIPT = """
import asyncio, sys, tempfile, time
import ray, kaizen_ray as kr

ray.init(address="local", num_cpus=2, include_dashboard=False)

class Walker(kr.BaseAutonomousAgent):
    def initial_state(self, task):
        return 0
    async def step(self, state, ctx):
        await asyncio.sleep(0.2)  # runs of ~1 s: the bars show while they go
        ctx.charge(0.01)
        return kr.StepResult(state + 1, done=state + 1 >= 6)

storage = tempfile.mkdtemp()
config = kr.AutonomousConfig(storage_path=storage, max_cycles=6)
quiet = Walker.spawn(config=config, name="quiet-one")
plain = quiet.run("t")
print("PLAIN", plain["status"], plain["cycles"], flush=True)
print("HANDLE", '<td style="text-align:left">finished</td>' in quiet._repr_html_(), flush=True)
quiet.kill()
for _ in range(200):  # Ray has no event for an actor's death: its handle's table says so once it is dead
    page = quiet._repr_html_()
    if "AgentGoneError" in page:
        break
    time.sleep(0.05)
print("GONE", "AgentGoneError: agent &#x27;quiet-one&#x27; is gone" in page, flush=True)

walker = Walker.spawn(config=config, name="walker-one")
walker.add_handler(kr.BudgetInterruptHandler(max_cost=1.0))
shown = walker.run("t", progress=True)
print("AGENT", type(shown).__name__, shown["status"], shown["cycles"], flush=True)

swarm = kr.Supervisor.spawn("swarm", children=[kr.ChildSpec(Walker, name=n, config=config) for n in ("c1", "c2")])
result = swarm.run("t", progress=True)
print("SWARM", type(result).__name__, result["status"], *sorted(c["cycles"] for c in result["children"].values()), flush=True)
ray.shutdown()
"""


def _final_bars(stderr: str) -> dict[str, str]:
    """Each bar's last drawn state, by label (tqdm redraws a bar in place with carriage returns)."""
    last: dict[str, str] = {}
    for frame in re.split(r"[\r\n]", re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", stderr)):
        match = re.search(r"(\S+?)(?: \$[0-9.]+/\$[0-9.]+)?: +\d+%\|.*?\| *(\S+)/(\S+) ", frame)
        if match:
            last[match.group(1)] = frame
    return last


def test_progress_draws_a_bar_per_agent_to_its_last_cycle_and_is_off_by_default(tmp_path: Path) -> None:
    script = tmp_path / "progress_driver.py"
    script.write_text(SCRIPT)
    done = run([sys.executable, str(script)], timeout=120, env=clean_env(), log_dir=tmp_path, name="progress")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "PLAIN completed 6" in done.stdout, done.stdout
    # A handle's table shows the actor's live phase, and why there is none once the actor is gone (no raise).
    assert "HANDLE True" in done.stdout and "GONE True" in done.stdout, done.stdout
    assert "AGENT RunResult completed 6" in done.stdout, done.stdout  # a RunResult, back through Ray
    assert "SWARM RunResult completed 6 6" in done.stdout, done.stdout

    bars = _final_bars(done.stderr)
    # (Its name may be in other stderr lines: Ray prefixes an actor's log lines with its repr.)
    assert "quiet-one" not in bars and not re.search(r"quiet-one[^\r\n]*cycle", done.stderr), "a bar without progress=True"
    for label in ("walker-one", "swarm/c1", "swarm/c2"):
        assert label in bars, f"no bar labelled {label!r}: {sorted(bars)}\n{done.stderr[-3000:]}"
        assert re.search(r"100%\|.*\| *6(\.00)?/6(\.00)? ", bars[label]), bars[label]
    # The budgeted agent's bar shows its spend against its budget.
    assert re.search(r"walker-one \$0\.\d\d/\$1\.00: 100%", bars["walker-one"]), bars["walker-one"]
    assert "swarm/c1 $" not in bars["swarm/c1"]  # no budget, no cost in the label
