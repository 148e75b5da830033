"""The quickstart notebook runs in a real Jupyter kernel, and a kernel interrupt stops a run as Ctrl+C does.

The kernel is the venv's own python (``kernel_name="python3"``: jupyter_client
runs a spec's ``python`` as ``sys.executable``; the test checks it), with this
checkout on PYTHONPATH. RAY_ADDRESS points at nothing: the notebook must start
a Ray of its own (``address="local"``), whatever runs on the machine.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("nbclient")
import nbformat  # noqa: E402
from jupyter_client import KernelManager  # noqa: E402
from nbclient import NotebookClient  # noqa: E402

import kaizen_ray as kr  # noqa: E402
from tests._support.processes import ROOT, clean_env  # noqa: E402

pytestmark = pytest.mark.e2e

NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"
NOBODY = "127.0.0.1:9"  # no Ray listens on the discard port
CHECK = "import sys, kaizen_ray; print('KERNEL', sys.executable, kaizen_ray.__file__)"


def _kernel_env() -> dict[str, str]:
    return clean_env({"RAY_ADDRESS": NOBODY})  # PYTHONPATH: this checkout first; RAY_USAGE_STATS_ENABLED=0


def _texts(cell: Any, kind: str) -> str:
    """A cell's stream text (``kind`` "stdout"/"stderr") or its HTML outputs ("html")."""
    out = []
    for o in cell.get("outputs", []):
        if kind == "html" and "data" in o:
            out.append(o["data"].get("text/html", ""))
        elif o.get("output_type") == "stream" and o.get("name") == kind:
            out.append(o["text"])
    return "".join(out)


def _cell_with(nb: Any, needle: str) -> Any:
    return next(c for c in nb.cells if c.cell_type == "code" and needle in c.source)


def test_the_quickstart_notebook_runs_in_a_kernel_stops_resumes_and_plots_its_swarm(tmp_path: Path) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(CHECK))  # in memory only: which python, which kaizen_ray
    client = NotebookClient(nb, kernel_name="python3", timeout=110, resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=_kernel_env())  # raises CellExecutionError, with the cell and its traceback, on any error

    kernel = _texts(nb.cells[0], "stdout").split()
    assert kernel[1] == sys.executable and Path(kernel[2]).is_relative_to(ROOT), kernel

    handle_html = _texts(_cell_with(nb, "kr.Supervisor.spawn("), "html")
    assert "SupervisorHandle swarm" in handle_html and "swarm/writer0" in handle_html, handle_html

    watch = _cell_with(nb, "progress=True)\nwhile")
    assert "AgentHandle swarm/writer0" in _texts(watch, "html")

    stop = _cell_with(nb, "request_interrupt(")
    stopped = re.search(r"STOPPED interrupted (ck-\S+)", _texts(stop, "stdout"))
    assert stopped, _texts(stop, "stdout")
    stop_html = _texts(stop, "html")
    assert "interrupted" in stop_html and stopped.group(1) in stop_html
    assert all(f"<td>writer{i}</td><td>interrupted</td>" in stop_html for i in range(3)), stop_html

    resume = _cell_with(nb, "resume_from_checkpoint=")
    resume_html = _texts(resume, "html")
    assert all(f"<td>writer{i}</td><td>completed</td><td>10</td>" in resume_html for i in range(3)), resume_html
    # Progress: the bars of the resumed run, one per agent, labelled with its name, drawn in the cell to the end.
    bars = _texts(resume, "stderr")
    for i in range(3):
        assert re.search(rf"swarm/writer{i}: 100%\|.*?\| 10\.0/10\.0", bars), bars[-2000:]

    plot = _cell_with(nb, "plt.subplots")
    assert any("image/png" in o.get("data", {}) for o in plot.outputs), "no figure"
    assert "SUMMARY completed writer0=10 writer1=10 writer2=10 cost=0.30" in _texts(plot, "stdout"), _texts(plot, "stdout")


# -- a kernel interrupt while a cell blocks in handle.run() ---------------------------------------

AGENT = """
import asyncio, os, threading, time
import ray, kaizen_ray as kr
ray.init(address='local', num_cpus=2, include_dashboard=False, log_to_driver=False)
storage = {storage!r}

def stopping_hook(ctx):
    open(os.path.join(storage, f'{{ctx.agent_name}}.stopping'), 'w').close()

class Slow(kr.BaseAutonomousAgent):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.hook_manager.register(kr.HookEvent.PRE_INTERRUPT, stopping_hook)

    def initial_state(self, task):
        return 0
    async def step(self, state, ctx):
        if state == 2:  # the test interrupts once this file appears: the run is under way
            open(os.path.join(storage, f'{{ctx.agent_name}}.cycling'), 'w').close()
        await asyncio.sleep(60 if state >= 2 and ctx.agent_name == 'stuck' else 0.1)
        return kr.StepResult(state + 1)

def marked(agent, event):
    # The agent's PRE_INTERRUPT hook writes a file; this thread turns it into kernel output the test awaits.
    path = os.path.join(storage, f'{{agent}}.{{event}}')
    def announce():
        while not os.path.exists(path):
            time.sleep(0.02)
        print('SEEN', agent, event, flush=True)
    threading.Thread(target=announce, daemon=True).start()
"""

RUN = """
agent = Slow.spawn(config=kr.AutonomousConfig(storage_path=storage, graceful_shutdown_timeout=120), name={name!r})
marked({name!r}, 'cycling'); marked({name!r}, 'stopping')
result = agent.run('x')
reason = result['interrupt_reason']
print('RESULT', result['status'], result['mode'], reason.source.value, result['checkpoint_id'], flush=True)
"""


def _execute(client: Any, code: str, on_stream: Callable[[str], None] | None = None) -> tuple[str, list[str]]:
    """Run ``code`` in the kernel: its stdout, and the names of any errors it raised (tracebacks)."""
    msg_id = client.execute(code)
    out: list[str] = []
    errors: list[str] = []
    while True:
        msg = client.get_iopub_msg(timeout=110)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream" and content["name"] == "stdout":
            out.append(content["text"])
            if on_stream is not None:
                on_stream("".join(out))
        elif kind == "error":
            errors.append(f"{content['ename']}: {content['evalue']}")
        elif kind == "status" and content["execution_state"] == "idle":
            return "".join(out), errors


def test_a_kernel_interrupt_stops_a_blocking_run_gracefully_then_immediately(tmp_path: Path) -> None:
    storage = tmp_path / "ck"
    storage.mkdir()
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(env=_kernel_env(), cwd=str(tmp_path))
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        out, errors = _execute(client, CHECK + "\n" + AGENT.format(storage=str(storage)))
        assert not errors and out.split()[1] == sys.executable, (out, errors)

        # One interrupt (a real SIGINT to the kernel), once the cell is inside run(): a graceful stop.
        sent: list[str] = []

        def interrupt_when(marker: str) -> Callable[[str], None]:
            def on_stream(text: str) -> None:
                if marker in text and marker not in sent:
                    sent.append(marker)
                    manager.interrupt_kernel()

            return on_stream

        out, errors = _execute(client, RUN.format(name="slow"), interrupt_when("SEEN slow cycling"))
        assert not errors, f"the interrupt raised in the cell: {errors}\n{out}"
        graceful = re.search(r"RESULT interrupted graceful user (ck-\S+)", out)
        assert graceful, out
        on_disk = {c.id: c for c in kr.list_checkpoints(str(storage), agent="slow")}
        assert graceful.group(1) in on_disk and on_disk[graceful.group(1)].cycle >= 3

        # Two interrupts: the second (sent once the agent's PRE_INTERRUPT hook saw the first) escalates
        # to IMMEDIATE and cancels the 60 s step in flight.
        def two_presses(text: str) -> None:
            interrupt_when("SEEN stuck cycling")(text)
            interrupt_when("SEEN stuck stopping")(text)

        out, errors = _execute(client, RUN.format(name="stuck"), two_presses)
        assert not errors, f"the interrupts raised in the cell: {errors}\n{out}"
        immediate = re.search(r"RESULT interrupted immediate user (ck-\S+)", out)
        assert immediate, out
        assert immediate.group(1) in {c.id for c in kr.list_checkpoints(str(storage), agent="stuck")}
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=False)
