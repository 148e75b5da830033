"""The ``kaizen-ray`` command.

    kaizen-ray demo [--in-process] [--dashboard] [--storage PATH]   the README's main job
    kaizen-ray checkpoints [--storage PATH] [--agent NAME]   list saved checkpoints
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kaizen-ray", description="Agents on Ray that stop well.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the demo: interrupt agents and resume them")
    demo.add_argument("--storage", help="checkpoint folder (default: a fresh temporary folder)")
    demo.add_argument("--in-process", action="store_true", help="one agent, no Ray: a timeout, then resume")
    demo.add_argument("--dashboard", action="store_true", help="start the Ray dashboard too")
    listing = sub.add_parser("checkpoints", help="list checkpoints (no Ray needed)")
    listing.add_argument("--storage", help="checkpoint folder (default: $KAIZEN_RAY_STORAGE_PATH or ~/.kaizen_ray/checkpoints)")
    listing.add_argument("--agent", help="only this agent's checkpoints")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kaizen-ray`` console script; the exit code.

    A :class:`~kaizen_ray.core.errors.KaizenError` (a storage path that is a
    file, say) ends the command with one line on stderr and exit code 1, not a
    traceback.

    >>> import tempfile
    >>> main(["checkpoints", "--storage", tempfile.mkdtemp()])  # an empty folder: nothing listed
    0
    >>> main(["checkpoints", "--storage", tempfile.mkstemp()[1]])  # a file: one line on stderr
    1
    """
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from kaizen_ray.core.errors import KaizenError

    try:
        return _run(args)
    except KaizenError as exc:
        print(f"kaizen-ray: error: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from kaizen_ray._demo import run_in_process_demo, run_swarm_demo
        from kaizen_ray.core.checkpoint import FileCheckpointStorage

        if args.storage is not None:  # a bad folder is the user's mistake: say so before any agent runs
            FileCheckpointStorage(args.storage).ensure_writable()
        if args.in_process:
            run_in_process_demo(print, args.storage)
        else:
            run_swarm_demo(print, args.storage, dashboard=args.dashboard)
        return 0
    if args.command == "checkpoints":
        from kaizen_ray.core.checkpoint import list_checkpoints

        for info in list_checkpoints(args.storage, agent=args.agent):
            reason = info.interrupt_reason
            why = f" {reason.source.value}/{reason.mode.value}" if reason else ""
            print(f"{info.created_at:%Y-%m-%d %H:%M:%S} {info.id} {info.agent} cycle={info.cycle} {info.status.value}{why}")
        return 0
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
