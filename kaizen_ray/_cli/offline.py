"""The commands that need no cluster: ``checkpoints ls|show|verify`` and ``demo``."""

from __future__ import annotations

from typing import Any

import click

__all__ = ["checkpoints", "demo"]

_STORAGE_HELP = "checkpoint folder or URI (default: $KAIZEN_RAY_STORAGE_PATH or ~/.kaizen_ray/checkpoints)"


def _as_json(as_json: bool) -> bool:
    # The root group's settings (``kaizen-ray --json checkpoints``), whatever their class.
    return as_json or bool(getattr(click.get_current_context().obj, "json", False))


def _emit(as_json: bool, value: Any, text: str) -> None:
    from kaizen_ray._cli.render import dumps

    if as_json:
        click.echo(dumps(value))
    elif text:
        click.echo(text)


def _info_object(info: Any) -> dict[str, Any]:
    return {
        "id": info.id,
        "agent": info.agent,
        "cycle": info.cycle,
        "status": info.status.value,
        "created_at": info.created_at.isoformat(),
    }


def _info_line(info: Any) -> str:
    reason = info.interrupt_reason
    why = f" {reason.source.value}/{reason.mode.value}" if reason else ""
    return f"{info.created_at:%Y-%m-%d %H:%M:%S} {info.id} {info.agent} cycle={info.cycle} {info.status.value}{why}"


def _list(storage: str | None, agent: str | None, as_json: bool) -> int:
    from kaizen_ray.core.checkpoint import list_checkpoints

    infos = list_checkpoints(storage, agent=agent)
    _emit(as_json, [_info_object(i) for i in infos], "\n".join(_info_line(i) for i in infos))
    return 0


# Signed checkpoints: the key is $KAIZEN_RAY_CHECKPOINT_KEY of this process, read by FileCheckpointStorage.
@click.group(invoke_without_command=True)
@click.option("--storage", default=None, help=_STORAGE_HELP)
@click.option("--agent", default=None, help="only this agent's checkpoints")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def checkpoints(ctx: click.Context, storage: str | None, agent: str | None, as_json: bool) -> int | None:
    """Saved checkpoints (no Ray needed); bare, the same as `checkpoints ls`."""
    ctx.meta["kaizen_ray.checkpoints"] = (storage, agent, as_json)
    if ctx.invoked_subcommand is None:
        return _list(storage, agent, _as_json(as_json))
    return None


def _merged(storage: str | None, agent: str | None, as_json: bool) -> tuple[str | None, str | None, bool]:
    # Options given to the group (`checkpoints --storage P ls`) or to the subcommand both count.
    g_storage, g_agent, g_json = click.get_current_context().meta.get("kaizen_ray.checkpoints", (None, None, False))
    return storage or g_storage, agent or g_agent, _as_json(as_json or g_json)


@checkpoints.command(name="ls")
@click.option("--storage", default=None, help=_STORAGE_HELP)
@click.option("--agent", default=None, help="only this agent's checkpoints")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def ls_checkpoints(storage: str | None, agent: str | None, as_json: bool) -> int:
    """List checkpoints, oldest first: time, id, agent, cycle, status, why it stopped."""
    return _list(*_merged(storage, agent, as_json))


@checkpoints.command()
@click.argument("checkpoint_id", metavar="ID")
@click.option("--storage", default=None, help=_STORAGE_HELP)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def show(checkpoint_id: str, storage: str | None, as_json: bool) -> int:
    """One checkpoint in full: its header, why it stopped, and its state."""
    from kaizen_ray._cli.render import json_safe
    from kaizen_ray.core.checkpoint import load_checkpoint

    storage, _agent, as_json = _merged(storage, None, as_json)
    ckpt = load_checkpoint(checkpoint_id, storage_path=storage)
    value = {
        "id": ckpt.id,
        "agent": ckpt.agent,
        "cycle": ckpt.cycle,
        "status": ckpt.status.value,
        "created_at": ckpt.created_at.isoformat(),
        "parent_id": ckpt.parent_id,
        "interrupt_reason": json_safe(ckpt.interrupt_reason),
        "metadata": json_safe(ckpt.metadata),
        "state": json_safe(ckpt.state),
    }
    _emit(as_json, value, "\n".join(f"{k}: {'-' if v is None else v}" for k, v in value.items()))
    return 0


@checkpoints.command()
@click.option("--storage", default=None, help=_STORAGE_HELP)
@click.option("--agent", default=None, help="only this agent's checkpoints")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def verify(storage: str | None, agent: str | None, as_json: bool) -> int:
    """Read and check every checkpoint file in full; exit 1 naming each corrupt one.

    With $KAIZEN_RAY_CHECKPOINT_KEY set, an unsigned or badly signed file is
    named too (and never unpickled); `ls` leaves such files out and `show`
    refuses them.
    """
    from kaizen_ray.core.checkpoint import CheckpointError, FileCheckpointStorage

    storage, agent, as_json = _merged(storage, agent, as_json)
    folder = FileCheckpointStorage(storage)
    try:
        files = folder._files(agent)  # every file, also those whose header no longer parses
    except FileNotFoundError:
        files = []
    good, bad = [], []
    for path in files:
        try:
            good.append(folder._read(path).id)
        except CheckpointError as exc:
            bad.append({"file": str(folder._show(path)), "problem": str(exc)})
    lines = [f"corrupt: {b['file']}: {b['problem']}" for b in bad] + [f"{len(good)} good, {len(bad)} corrupt"]
    _emit(as_json, {"good": good, "corrupt": bad}, "\n".join(lines))
    if bad:
        raise click.ClickException(f"{len(bad)} corrupt checkpoint file(s): {', '.join(b['file'] for b in bad)}")
    return 0


@click.command()
@click.option("--storage", default=None, help="checkpoint folder (default: a fresh temporary folder)")
@click.option("--in-process", is_flag=True, help="one agent, no Ray: a timeout, then resume")
@click.option("--dashboard", is_flag=True, help="start the Ray dashboard too")
def demo(storage: str | None, in_process: bool, dashboard: bool) -> int:
    """Run the demo: interrupt agents and resume them."""
    from kaizen_ray._demo import run_in_process_demo, run_swarm_demo
    from kaizen_ray.core.checkpoint import FileCheckpointStorage

    if storage is not None:  # a bad folder is the user's mistake: say so before any agent runs
        FileCheckpointStorage(storage).ensure_writable()
    if in_process:
        run_in_process_demo(click.echo, storage)
    else:
        run_swarm_demo(click.echo, storage, dashboard=dashboard)
    return 0
