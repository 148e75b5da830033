"""The interrupt manager of an actor, driven from anywhere: :class:`InterruptManagerProxy`.

``handle.interrupt_manager`` is one. It has the :class:`InterruptManager`'s
methods with the same meanings, each carried out by the actor's own manager
through a control call (so it lands within milliseconds, even mid-step), which
is what lets the manager-style code of the original Kaizen examples run on
actors unchanged. Differences, all forced by the process boundary: every call
is a round trip and may raise ``AgentGoneError`` (the actor is gone) or
``TimeoutError`` (no answer within the control timeout); handlers go through
the handle (signals are caught in this process, timeouts and budgets by the
timer and budget actors); a child must be another actor's handle or proxy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kaizen_ray.core.interrupts import InterruptManager, InterruptMode, InterruptReason, InterruptSource
from kaizen_ray.runtime._actors import CONTROL_TIMEOUT_S

__all__ = ["InterruptManagerProxy", "child_key"]


class InterruptManagerProxy:
    """The manager of an agent or supervisor actor, with the manager's methods.

    ``parent.interrupt_manager.add_child(child.interrupt_manager)`` makes the
    parent actor forward its interrupts to the child actor, as managers do.

    >>> handle = Worker.spawn(name="w1")                                      # doctest: +SKIP
    >>> handle.interrupt_manager.request_interrupt("user", "immediate", message="stop")  # doctest: +SKIP
    True
    >>> handle.interrupt_manager.reason.message, handle.interrupt_manager.mode  # doctest: +SKIP
    ('stop', <InterruptMode.IMMEDIATE: 'immediate'>)
    """

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def __repr__(self) -> str:
        return f"InterruptManagerProxy({self._handle!r})"

    def __reduce__(self):
        return (type(self), (self._handle,))

    @property
    def name(self) -> str:
        """The actor's name: what ``propagated_from`` reports when it forwards a reason."""
        return self._handle.name

    def _manager(self, method: str, *args: Any) -> Any:
        return self._handle._call(self._handle.actor.manager_call.remote(method, *args))

    # -- requests ------------------------------------------------------------

    def request_interrupt(
        self,
        source: InterruptSource | str,
        mode: InterruptMode | str = InterruptMode.GRACEFUL,
        reason: str = "",
        metadata: dict[str, Any] | None = None,
        *,
        message: str | None = None,
    ) -> bool:
        """Ask the actor to stop; True if its manager accepted (the first request, or an escalation).

        Accepting forwards to the actor's children at once, as a manager does.
        """
        return self._handle.request_interrupt(source, mode, reason, metadata, message=message)

    def request_interrupt_nowait(
        self,
        source: InterruptSource | str,
        mode: InterruptMode | str = InterruptMode.GRACEFUL,
        reason: str = "",
        metadata: dict[str, Any] | None = None,
        *,
        message: str | None = None,
    ) -> Any:
        """Send the request without waiting; an ObjectRef of the bool (how managers forward: all at once)."""
        return self._handle.request_interrupt_nowait(source, mode, reason, metadata, message=message)

    # -- state ---------------------------------------------------------------

    def is_interrupted(self) -> bool:
        """True once the actor's manager accepted a request (until :meth:`reset`)."""
        return self._manager("is_interrupted")

    @property
    def mode(self) -> InterruptMode | None:
        """The current mode: that of the first request, or IMMEDIATE after escalation."""
        return self._manager("mode")

    @property
    def reason(self) -> InterruptReason | None:
        """The first accepted reason of the current episode, or None."""
        return self._manager("reason")

    @property
    def history(self) -> list[InterruptReason]:
        """Every request the actor's manager accepted, oldest first."""
        return self._manager("history")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the actor is interrupted, or for ``timeout`` seconds; True if it was."""
        call_timeout = None if timeout is None else timeout + CONTROL_TIMEOUT_S
        return self._handle._call(self._handle.actor.manager_call.remote("wait", timeout), call_timeout)

    def reset(self) -> None:
        """Clear the interrupt (not the history); the actor's waiters keep waiting for the next one."""
        self._manager("reset")

    # -- wiring ---------------------------------------------------------------

    def add_handler(self, handler: Any) -> None:
        """Attach a handler through the handle: signals act in this process, timeouts and budgets in their actors."""
        self._handle.add_handler(handler)

    def remove_handler(self, handler: Any) -> None:
        """Detach a handler added with :meth:`add_handler`."""
        self._handle.remove_handler(handler)

    def add_child(self, child: Any) -> None:
        """Forward every request the actor accepts to ``child``: another actor's handle or proxy."""
        if isinstance(child, InterruptManager):
            raise TypeError(
                f"{child!r} lives in this process and cannot be a child of actor {self._handle.name!r}; "
                "pass an agent or supervisor handle (or its interrupt_manager)"
            )
        self._manager("add_child", child)

    def remove_child(self, child: Any) -> None:
        """Stop forwarding to ``child``."""
        self._manager("remove_child", child)

    def on_shutdown(self, callback: Callable[[], Any]) -> None:
        """Run ``callback()`` in the actor at the end of its next run (it is shipped there: it must pickle)."""
        self._manager("on_shutdown", callback)


def child_key(child: Any) -> Any:
    """One key for every copy of one actor's handle or proxy; for any other child, the object itself.

    A proxy call ships a new copy of its arguments each time, and a manager
    knows its children by identity: the actor keys the children wired through
    its proxy with this, so that a later ``remove_child`` finds the copy added.

    >>> class Other:
    ...     def request_interrupt(self, *args): return True
    >>> other = Other(); child_key(other) == ("object", id(other))
    True
    """
    handle = child._handle if isinstance(child, InterruptManagerProxy) else child
    actor_id = getattr(getattr(handle, "actor", None), "_actor_id", None)
    return ("actor", actor_id) if actor_id is not None else ("object", id(child))
