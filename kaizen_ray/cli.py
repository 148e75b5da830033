"""The ``kaizen-ray`` command: run, list, inspect, interrupt and clean up agent swarms on a Ray cluster.

    kaizen-ray [--address A] [--namespace N] [--json] [-v] COMMAND ...
    run MODULE:OBJ [--task T] [--name N] [--storage P] [--timeout S] [--budget USD] [--resume ID|latest] [--detach]
    ls [--watch [--interval S]] | status NAME | interrupt NAME [--immediate] [--reason TEXT] [--wait] | gc
    checkpoints [ls|show ID|verify] [--storage P] [--agent A]     (no Ray needed)
    demo [--in-process] [--dashboard] [--storage PATH]

Errors are one line on stderr (``kaizen-ray: error: ...``) and a non-zero exit.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from kaizen_ray._cli.watch import Interval

__all__ = ["main"]

logger = logging.getLogger("kaizen_ray.cli")

EXIT_FAILED = 1  # an error, or a run that failed or was killed
EXIT_USAGE = 2


class _Settings:
    def __init__(self, address: str | None, namespace: str, as_json: bool) -> None:
        self.address, self.namespace, self.json = address, namespace, as_json

    def connect(self, *, log_to_driver: bool = False) -> None:
        from kaizen_ray._cli.cluster import connect

        connect(self.address, self.namespace, log_to_driver=log_to_driver)


def _json_option(fn: Any) -> Any:
    # --json is accepted after the command too (`kaizen-ray ls --json`), as users tend to write it.
    return click.option("--json", "as_json", is_flag=True, default=False, help="machine-readable output")(fn)


def _settings(as_json: bool) -> _Settings:
    settings: _Settings = click.get_current_context().find_object(_Settings)
    settings.json = settings.json or as_json
    return settings


def _emit(settings: _Settings, value: Any, text: str) -> None:
    from kaizen_ray._cli.render import dumps

    click.echo(dumps(value) if settings.json else text)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--address", envvar="RAY_ADDRESS", default=None, help="Ray cluster to join (default: RAY_ADDRESS, else an embedded local Ray)")
@click.option("--namespace", default="kaizen", show_default=True, help="Ray namespace of the agents")
@_json_option
@click.option("-v", "--verbose", is_flag=True, help="log at INFO level")
@click.pass_context
def cli(ctx: click.Context, address: str | None, namespace: str, as_json: bool, verbose: bool) -> None:
    """Agents on Ray that stop well."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = _Settings(address, namespace, as_json)


# -- running ---------------------------------------------------------------------------------------


@cli.command()
@click.argument("target", metavar="MODULE:OBJ")
@click.option("--task", default=None, help="the task (a string) given to every agent")
@click.option("--name", default=None, help="actor name (default: OBJ's name)")
@click.option("--storage", default=None, help="checkpoint folder or URI, for every agent that names none")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, help="seconds before a graceful SYSTEM stop")
@click.option("--budget", type=click.FloatRange(min=0, min_open=True), default=None, help="USD before a graceful SYSTEM stop")
@click.option("--resume", default=None, metavar="ID|latest", help="resume from this checkpoint")
@click.option("--detach", is_flag=True, help="start it detached, print its name and exit while it runs on")
@click.option("--progress/--no-progress", default=None,
              help="one progress bar per agent on stderr (default: on when stdout is a terminal)")
@_json_option
def run(target: str, task: str | None, name: str | None, storage: str | None, timeout: float | None,
        budget: float | None, resume: str | None, detach: bool, progress: bool | None, as_json: bool) -> int:
    """Run MODULE:OBJ: an agent class, or a list (or function returning one) of ChildSpec for a swarm."""
    import ray

    from kaizen_ray._cli.cluster import CliError
    from kaizen_ray._cli.render import result_lines
    from kaizen_ray._cli.target import resolve_target
    from kaizen_ray.core.handlers import BudgetInterruptHandler, TimeoutInterruptHandler

    settings = _settings(as_json)
    if detach and (settings.address or os.environ.get("RAY_ADDRESS") or "local") == "local":
        # Without a cluster, the command starts a Ray of its own, which ends with it, detached actors too.
        raise click.UsageError("--detach needs a cluster that outlives this command: pass --address or set RAY_ADDRESS")
    resolved = resolve_target(target)  # before Ray: a bad MODULE:OBJ costs no cluster connection
    try:  # checked before Ray too: a refused --timeout nan must leave no actor behind
        handlers = [
            TimeoutInterruptHandler(timeout) if timeout is not None else None,
            BudgetInterruptHandler(budget) if budget is not None else None,
        ]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--timeout" if "timeout" in str(exc) else "--budget") from exc
    settings.connect(log_to_driver=not detach)
    name = name or resolved.default_name
    handle = _spawn_or_reuse(resolved, name, storage, settings.namespace, detach)
    for handler in handlers:
        if handler is not None:
            handle.add_handler(handler)
    if detach:
        try:
            ray.get(handle.actor.start_detached.remote(task, resume), timeout=60.0)
        except RuntimeError as exc:  # Ray wraps the actor's refusal; its message says why
            raise CliError(_one_line(exc)) from exc
        _emit(settings, {"name": name, "kind": handle.kind, "namespace": settings.namespace}, name)
        return 0
    if progress is None:  # bars are for a person watching; a pipe or a file gets only the result
        progress = sys.stdout.isatty()
    result = handle.run(task, resume, progress=progress)
    _emit(settings, result, "\n".join(result_lines(result)))
    return 0 if result["status"] in ("completed", "interrupted") else EXIT_FAILED


def _spawn_or_reuse(resolved: Any, name: str, storage: str | None, namespace: str, detach: bool) -> Any:
    """A new actor for ``name``, or the existing one if its run has ended (to resume it there)."""
    import ray

    from kaizen_ray._cli.cluster import CliError, find
    from kaizen_ray._cli.target import with_storage
    from kaizen_ray.core.config import AutonomousConfig
    from kaizen_ray.core.errors import AgentGoneError
    from kaizen_ray.runtime.supervisor import Supervisor

    try:
        existing = find(name, namespace)
    except AgentGoneError:
        existing = None
    if existing is not None:
        if ray.get(existing.actor.running.remote(), timeout=10.0):
            raise CliError(f"{existing.kind} {name!r} is already running in namespace {namespace!r}: interrupt it first")
        _refuse_a_different_actor(existing, resolved, storage)
        # This command's --timeout and --budget only: an earlier command's would still stop this run.
        removed = ray.get(existing.actor.remove_handlers.remote(), timeout=10.0)
        logger.info("reusing the existing %s %s (its run has ended; %d earlier handler(s) removed)", existing.kind, name, removed)
        return existing
    lifetime = "detached" if detach else None
    if resolved.kind == "agent":
        config = AutonomousConfig(storage_path=storage) if storage is not None else None
        return resolved.agent_cls.spawn(config=config, name=name, namespace=namespace, lifetime=lifetime)
    children = with_storage(resolved.children, storage)
    return Supervisor.spawn(name, children=children, storage_path=storage, namespace=namespace, lifetime=lifetime)


def _refuse_a_different_actor(existing: Any, resolved: Any, storage: str | None) -> None:
    """A reused actor keeps its kind and its storage: asking for others is an error, never silently ignored."""
    from kaizen_ray._cli.cluster import CliError
    from kaizen_ray.core.checkpoint import resolve_storage_path
    from kaizen_ray.core.checkpoint._paths import shown
    from kaizen_ray.runtime.agent_actor import class_path

    wanted = "agent" if resolved.kind == "agent" else "supervisor"
    advice = "remove it with `kaizen-ray gc`, or pick another --name"
    if existing.kind != wanted:
        raise CliError(f"{existing.name!r} is an existing {existing.kind}, not a {wanted}: {advice}")
    if resolved.kind == "agent":
        asked: Any = class_path(resolved.agent_cls)  # as the actor's describe() says it
    else:
        asked = [spec.name for spec in resolved.children]
    if existing._made_of is not None and existing._made_of != asked:
        made_of = "an agent of class" if resolved.kind == "agent" else "a supervisor of children"
        raise CliError(f"{existing.name!r} is {made_of} {existing._made_of}, not {asked}: {advice}")
    if storage is not None and resolve_storage_path(storage) != resolve_storage_path(existing.storage_path):
        raise CliError(
            f"{existing.kind} {existing.name!r} exists with storage {shown(str(existing.storage_path))}, "
            f"not --storage {shown(storage)}: drop --storage to resume it there, {advice}"
        )


# -- inspecting and stopping -----------------------------------------------------------------------------


@cli.command(name="ls")
@click.option("--watch", "watch_", is_flag=True, help="redraw every --interval seconds until Ctrl+C (with --json: one JSON line each)")
@click.option("--interval", type=Interval(), default=1.0, show_default=True, help="seconds between refreshes of --watch")
@_json_option
def ls_command(watch_: bool, interval: float, as_json: bool) -> int:
    """Every agent and supervisor in the namespace: name, kind, phase, cycle, cost, last checkpoint."""
    from kaizen_ray._cli.cluster import list_rows
    from kaizen_ray._cli.render import ROW_KEYS, table
    from kaizen_ray._cli.watch import CLEAR, frame, watch

    settings = _settings(as_json)
    ctx = click.get_current_context()
    if not watch_ and ctx.get_parameter_source("interval") is not click.core.ParameterSource.DEFAULT:
        raise click.UsageError("--interval applies to --watch only: add --watch, or drop --interval", ctx)
    settings.connect()

    def rows() -> list[dict[str, Any]]:
        return [{k: r[k] for k in ROW_KEYS} for r in list_rows(settings.namespace)]

    if not watch_:
        listed = rows()
        _emit(settings, listed, table(listed) if listed else f"no agents in namespace {settings.namespace!r}")
        return 0
    on_terminal = not settings.json and sys.stdout.isatty()
    drawn = 0

    def show(text: str) -> None:
        nonlocal drawn
        # A terminal gets the table redrawn in place; a pipe gets frames one after another (JSON: one per line).
        separator = CLEAR if on_terminal else ("\n" if drawn and not settings.json else "")
        click.echo(separator + text)
        drawn += 1

    try:
        watch(lambda: frame(rows(), settings.namespace, interval, as_json=settings.json), show, interval)
    except BrokenPipeError:  # `... | head -n 2` has read what it wanted: done, quietly
        _quiet_stdout()
    return 0


def _quiet_stdout() -> None:
    # Python would report the broken pipe again when it flushes stdout at exit.
    import os

    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@cli.command()
@click.argument("name")
@_json_option
def status(name: str, as_json: bool) -> int:
    """One agent's or supervisor's status."""
    from kaizen_ray._cli.cluster import find, row_of
    from kaizen_ray._cli.render import ROW_KEYS

    settings = _settings(as_json)
    settings.connect()
    row = row_of(find(name, settings.namespace))
    row = {k: row[k] for k in ROW_KEYS}
    _emit(settings, row, "\n".join(f"{k}: {'-' if v is None else v}" for k, v in row.items()))
    return 0


@cli.command()
@click.argument("name")
@click.option("--immediate", is_flag=True, help="cancel the cycle in flight (default: graceful)")
@click.option("--reason", default="kaizen-ray interrupt", show_default=True, help="the interrupt's message")
@click.option("--wait", "wait_", is_flag=True, help="block until the run has ended and print its result")
@_json_option
def interrupt(name: str, immediate: bool, reason: str, wait_: bool, as_json: bool) -> int:
    """Interrupt a running agent or supervisor (a USER interrupt, as Ctrl+C would be)."""
    from kaizen_ray._cli.cluster import find, wait_result
    from kaizen_ray._cli.render import result_lines
    from kaizen_ray.core.interrupts import InterruptMode, InterruptSource

    settings = _settings(as_json)
    settings.connect()
    handle = find(name, settings.namespace)
    mode = InterruptMode.IMMEDIATE if immediate else InterruptMode.GRACEFUL
    accepted = handle.request_interrupt(InterruptSource.USER, mode, reason, {"by": "kaizen-ray"})
    if not wait_:
        _emit(settings, {"name": name, "accepted": accepted}, f"{name}: interrupt {'accepted' if accepted else 'not accepted'}")
        return 0
    result = wait_result(handle)
    _emit(settings, result, "\n".join(result_lines(result)))
    return 0 if result["status"] in ("completed", "interrupted") else EXIT_FAILED


@cli.command(name="gc")
@_json_option
def gc_command(as_json: bool) -> int:
    """Remove agents and supervisors whose runs have ended, and the system actors nothing uses."""
    from kaizen_ray._cli.cluster import gc

    settings = _settings(as_json)
    settings.connect()
    removed = gc(settings.namespace)
    text = "\n".join(f"removed {r['kind']} {r['name']}" for r in removed) or "nothing to remove"
    _emit(settings, removed, text)
    return 0


# -- checkpoints and the demo ------------------------------------------------------------------------------


def _register_more() -> None:
    from kaizen_ray._cli.offline import checkpoints, demo

    cli.add_command(checkpoints)
    cli.add_command(demo)


_register_more()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kaizen-ray`` console script; the exit code.

    Any error ends the command with one line on stderr and a non-zero exit, not
    a traceback (``-v`` logs the traceback too).

    >>> import tempfile
    >>> main(["checkpoints", "--storage", tempfile.mkdtemp()])  # an empty folder: nothing listed
    0
    >>> main(["checkpoints", "--storage", tempfile.mkstemp()[1]])  # a file: one line on stderr
    1
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = cli.main(args=args, prog_name="kaizen-ray", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        _error("aborted")
        return 130
    except click.ClickException as exc:
        _error(exc.format_message().replace("\n", " "))
        return exc.exit_code
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except Exception as exc:
        logger.info("the command failed", exc_info=True)
        from kaizen_ray.core.errors import KaizenError

        _error(_one_line(exc) if isinstance(exc, KaizenError) else f"{type(exc).__name__}: {_one_line(exc)}")
        return EXIT_FAILED
    return code if isinstance(code, int) else 0


def _one_line(exc: BaseException) -> str:
    # Ray wraps a remote error in its traceback: the exception's own line is the last one.
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if len(lines) <= 1 else lines[-1]


def _error(text: str) -> None:
    click.echo(f"kaizen-ray: error: {text}", err=True)


if __name__ == "__main__":
    sys.exit(main())
