"""Budget scopes on Ray: a named actor per scope, and the agents' client of it.

A scope is made when a :class:`BudgetInterruptHandler` is added to a handle:
an agent alone charges its own scope; every child of a supervisor charges the
supervisor's one. The actor runs the core handler itself (ledger, messages,
one-shot warning) with its subscribers as the handler's "managers", so a
spent budget or a refused reservation sends every subscriber a SYSTEM
interrupt (``metadata["handler"] == "budget"``, with ``max_cost`` and
``spent``) in the handler's mode.

Durability: the ledger is written (atomically) to
``<storage_path>/.budgets/<scope>.json`` (a file, or an object when the
storage path is a URI) before any call that changed it
answers, and reloaded by ``__init__``, which Ray re-runs when it restarts the
actor (``max_restarts=-1``): a crash can never give spent money back.

Settling: agents charge locally during a cycle and settle once, before the
next cycle starts. A settle that finds the budget exhausted also interrupts
the settling agent in its own process at once, so it stops at that very
boundary: overshoot is at most one cycle's charges per agent, and none when
every charge is covered by a reservation.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ray

from kaizen_ray.core.checkpoint import join_storage_path, read_blob, write_blob
from kaizen_ray.core.handlers import BudgetInterruptHandler
from kaizen_ray.core.interrupts import InterruptSource, coerce_source_mode
from kaizen_ray.runtime._namespaces import system_namespace

logger = logging.getLogger("kaizen_ray.budget")

__all__ = ["BudgetActor", "BudgetScope", "RayBudgetClient", "create_budget_scope"]

BUDGET_PREFIX = "kaizen-budget"


_APPLIED_KEPT = 256  # answers to recent calls kept (on disk) so that a retried call is not applied twice
_DELIVERY_TIMEOUT_S = 5.0  # longest the budget actor waits for its subscribers to accept an interrupt


class _Subscriber:
    """An actor as one of the handler's 'managers': interrupts are sent at once, all of them.

    The calls are kept in ``sent``; the budget actor waits for them (bounded)
    before it answers, so that the agent told to stop next is stopped after
    its subscribers (a supervisor) have accepted, and their results say why.
    """

    def __init__(self, actor: Any, name: str, sent: list[Any]) -> None:
        self.actor, self.name, self.sent = actor, name, sent

    def request_interrupt(self, source: Any, mode: Any, reason: str = "", metadata: dict[str, Any] | None = None) -> bool:
        self.sent.append(
            self.actor.request_interrupt.remote(*(x.value for x in coerce_source_mode(source, mode)), reason, metadata)
        )
        return True


class BudgetScope:
    """One budget scope without Ray: the core handler, subscribers, and the ledger on disk.

    >>> import tempfile
    >>> scope = BudgetScope("s1", BudgetInterruptHandler(1.0), Path(tempfile.mkdtemp()) / "s1.json")
    >>> scope.settle("a1", [(0.4, None)], [])["spent"]
    0.4
    >>> BudgetScope("s1", BudgetInterruptHandler(1.0), scope.path).snapshot()["spent"]  # reloaded
    0.4
    """

    def __init__(self, scope: str, handler: BudgetInterruptHandler, path: Path | str) -> None:
        self.scope = scope
        self.handler = handler
        self.path = path
        self.sent: list[Any] = []  # subscribers' interrupt calls not yet waited for (see _Subscriber)
        # Ray retries a call whose actor died before answering (max_task_retries):
        # the answer is kept with the ledger, in the same atomic write, so a
        # call that was applied is answered again, never applied twice.
        self._applied: OrderedDict[str, Any] = OrderedDict()
        # reservation id -> the agent holding it: what an agent that died holding one left behind
        # is released when it comes back (release_held), or when its supervisor sees it gone.
        self._holders: dict[str, str] = {}
        data = read_blob(path)  # through the storage seam: a local file or an object at a URI
        if data is not None:
            saved = json.loads(data)
            handler.ledger.restore(saved["ledger"])
            self._applied.update((call_id, answer) for call_id, answer in saved["applied"])
            self._holders.update(saved.get("holders", {}))  # absent from a ledger an older version wrote
            logger.info("budget %s reloaded: spent %g of %g", scope, handler.spent, handler.max_cost)
        else:
            self._persist()

    def _persist(self, call_id: str | None = None, answer: Any = None) -> None:
        if call_id is not None:
            self._applied[call_id] = answer
            while len(self._applied) > _APPLIED_KEPT:
                self._applied.popitem(last=False)
        saved = {"ledger": self.handler.snapshot(), "applied": list(self._applied.items()), "holders": self._holders}
        write_blob(self.path, json.dumps(saved).encode())

    def subscribe(self, actor: Any, name: str) -> None:
        """Send ``actor`` this scope's interrupts; at once if the budget is already spent."""
        self.handler.arm(_Subscriber(actor, name, self.sent))  # level-triggered inside the handler

    def reserve(self, agent: str, amount: float, call_id: str | None = None) -> str | None:
        """A reservation id, or None (refused: every subscriber is interrupted).

        A ``call_id`` seen before gets its first answer again, and nothing is reserved twice.
        """
        if call_id is not None and call_id in self._applied:
            return self._applied[call_id]
        reservation = self.handler.reserve(amount)
        rid = None if reservation is None else reservation.id
        if rid is not None:
            self._holders[rid] = agent
        self._persist(call_id, rid)
        return rid

    def settle(
        self,
        agent: str,
        charges: list[tuple[float, str | None]],
        release: list[str],
        call_id: str | None = None,
        release_calls: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Record a cycle's charges, release its reservations; the ledger after, with ``stop`` info.

        ``warning`` is True in the one answer whose charges crossed the warning threshold.
        A ``call_id`` seen before gets its first answer again: nothing is charged twice.
        ``release_calls``: ids of reserve calls whose answer never reached the agent (its step was
        cancelled while it waited): what they granted is released too.
        """
        if call_id is not None and call_id in self._applied:
            return self._applied[call_id]
        warning = False
        for amount, reservation_id in charges:
            warning |= self.handler.charge(amount, reservation_id=reservation_id).warning
        granted = [self._applied.get(c) for c in release_calls]
        for reservation_id in [*release, *(rid for rid in granted if isinstance(rid, str))]:
            self.handler.release(reservation_id)
            self._holders.pop(reservation_id, None)
        answer = {**self._answer(), "warning": warning}
        self._persist(call_id, answer)
        return answer

    def release_held(self, agent: str) -> float:
        """Release every reservation ``agent`` holds (it died holding them); the amount released.

        >>> import tempfile
        >>> scope = BudgetScope("s1", BudgetInterruptHandler(1.0), Path(tempfile.mkdtemp()) / "s1.json")
        >>> _ = scope.reserve("sup/a1", 0.6); scope.release_held("sup/a1"), scope.snapshot()["reserved"]
        (0.6, 0.0)
        """
        held = [rid for rid, holder in self._holders.items() if holder == agent]
        if not held:
            return 0.0
        released = 0.0
        for rid in held:
            released += self.handler.release(rid)
            del self._holders[rid]
        self._persist()
        logger.warning("budget %s: released %g reserved by %s, which is gone", self.scope, released, agent)
        return released

    def _answer(self) -> dict[str, Any]:
        snap = self.snapshot()
        if snap["exhausted"]:
            snap["stop"] = {
                "mode": self.handler.mode.value,
                "message": f"budget exhausted: spent {snap['spent']:g} of {snap['max_cost']:g}",
                "metadata": {"handler": "budget", "max_cost": snap["max_cost"], "spent": snap["spent"], "scope": self.scope},
            }
        return snap

    def snapshot(self) -> dict[str, Any]:
        return {**self.handler.snapshot(), "scope": self.scope}


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class BudgetActor:
    """A named budget scope (``kaizen-budget/<owner>/<id>``); made by ``create_budget_scope``."""

    def __init__(
        self, scope: str, handler: BudgetInterruptHandler, path: str, subscribers: tuple[tuple[Any, str], ...] = ()
    ) -> None:
        self._scope = BudgetScope(scope, handler, path)
        # Creation arguments, so that a restart (Ray re-runs __init__ with them)
        # subscribes them again: subscribe() calls die with the process.
        for actor, name in subscribers:
            self._scope.subscribe(actor, name)
        self._delivered()

    def __repr__(self) -> str:
        h = self._scope.handler
        return f"BudgetActor({self._scope.scope}, spent={h.spent:g}, max_cost={h.max_cost:g})"

    def _delivered(self) -> None:
        """Wait (bounded) until the subscribers accepted the interrupts just sent; a dead one does not hold it up."""
        refs = [ref for ref in self._scope.sent if ref is not None]
        self._scope.sent.clear()
        if refs:
            ray.wait(refs, num_returns=len(refs), timeout=_DELIVERY_TIMEOUT_S)

    def subscribe(self, actor: Any, name: str) -> None:
        self._scope.subscribe(actor, name)
        self._delivered()

    def reserve(self, agent: str, amount: float, call_id: str | None = None) -> tuple[str | None, dict[str, Any]]:
        reservation_id = self._scope.reserve(agent, amount, call_id)
        self._delivered()
        return reservation_id, self._scope._answer()

    def settle(
        self,
        agent: str,
        charges: list[tuple[float, str | None]],
        release: list[str],
        call_id: str | None = None,
        release_calls: Sequence[str] = (),
    ) -> dict[str, Any]:
        answer = self._scope.settle(agent, charges, release, call_id, release_calls)
        self._delivered()
        return answer

    def release_held(self, agent: str) -> float:
        return self._scope.release_held(agent)

    def snapshot(self) -> dict[str, Any]:
        return self._scope.snapshot()


def create_budget_scope(
    owner: str, handler: BudgetInterruptHandler, storage_path: str, namespace: str | None, subscriber: Any = None
) -> Any:
    """A new budget actor for ``owner``'s handler, its ledger under ``storage_path/.budgets``.

    ``subscriber`` (the owner's actor) is subscribed for the actor's whole
    life, restarts included. The actor is named ``kaizen-budget/<owner>/<id>``
    in :func:`~kaizen_ray.runtime._namespaces.system_namespace` of ``namespace``.

    >>> scope = create_budget_scope("a1", BudgetInterruptHandler(1.0), "/tmp/ckpts", "kaizen")  # doctest: +SKIP
    >>> ray.get(scope.snapshot.remote())["scope"]                                              # doctest: +SKIP
    'kaizen-budget/a1/...'
    """
    scope_id = uuid.uuid4().hex[:12]
    scope = f"{BUDGET_PREFIX}/{owner}/{scope_id}"
    path = join_storage_path(storage_path, ".budgets", f"{owner.replace('/', '%2F')}-{scope_id}.json")
    # A named namespace, as for every SYSTEM actor (see _namespaces): findable by name from anywhere.
    options: dict[str, Any] = {"name": scope, "namespace": system_namespace(namespace)}
    subscribers = () if subscriber is None else ((subscriber, owner),)
    return BudgetActor.options(**options).remote(scope, handler, path, subscribers)


def _call_id() -> str:
    return uuid.uuid4().hex


class RayBudgetClient:
    """An agent's spend on Ray: charges gathered per cycle, settled with every scope before the next.

    Implements the core's ``BudgetClient``; ``manager`` is the agent's own, so
    that a settle that finds the budget spent stops the agent at this boundary.
    """

    def __init__(self, agent: str, manager: Any, local: Any = None) -> None:
        self._agent = agent
        self._manager = manager
        self._local = local  # in-process handlers on the agent's own manager, if any
        # Each scope's actor beside its reservations of this cycle, one list per scope: a scope is added
        # or removed on the control group's thread while a settle on the run's loop awaits its scopes in
        # turn, so each settle walks a copy of the list and keeps each scope with its own reservations.
        self._scopes: list[tuple[Any, list[str]]] = []
        self._charges: list[float] = []
        # Reserve calls whose answer never came back (the step was cancelled while it waited), per scope:
        # the actor applied them all the same, so the next settle releases what they granted.
        self._unanswered: list[tuple[Any, str]] = []
        self._last: dict[str, Any] | None = None
        self._warning: dict[str, Any] | None = None
        # With a scope, every cycle settles: that is how an agent learns its siblings spent the budget.
        self.settles_every_cycle = False

    def add_scope(self, actor: Any) -> None:
        self._scopes = [*self._scopes, (actor, [])]
        self.settles_every_cycle = True

    def remove_scope(self, actor: Any) -> None:
        self._scopes = [entry for entry in self._scopes if entry[0] != actor]
        self.settles_every_cycle = bool(self._scopes)

    def charge(self, amount: float) -> None:
        self._charges.append(amount)
        if self._local is not None:
            self._local.charge(amount)

    async def reserve(self, amount: float) -> bool:
        if self._local is not None and not await self._local.reserve(amount):
            return False
        granted: list[tuple[Any, list[str], str]] = []
        for scope, rids in self._scopes:
            call_id = _call_id()
            try:
                reservation_id, answer = await scope.reserve.remote(self._agent, amount, call_id)
            except asyncio.CancelledError:
                # An IMMEDIATE stop cancelled the step here. The call goes on in the actor: what
                # it grants, and what the scopes before it granted, the cycle's settle releases.
                self._unanswered.append((scope, call_id))
                for _, held, rid in granted:
                    held.append(rid)
                raise
            self._last = answer
            if reservation_id is None:
                for other, _, rid in granted:  # all scopes or none
                    await other.settle.remote(self._agent, [], [rid], _call_id())
                self._stop_if_spent(answer)
                return False
            granted.append((scope, rids, reservation_id))
        for _, rids, rid in granted:
            rids.append(rid)
        return True

    async def settle(self) -> None:
        if self._local is not None:
            await self._local.settle()
            self._warning = self._warning or self._local.take_warning()
        charges, self._charges = self._charges, []
        unanswered, self._unanswered = self._unanswered, []
        for scope, held in self._scopes:
            rids = list(held)
            held.clear()
            # Charges consume this cycle's newest reservation first (the ledger
            # counts whatever it does not cover as fresh spend).
            consuming = rids[-1] if rids else None
            calls = [call_id for other, call_id in unanswered if other == scope]
            answer = await scope.settle.remote(self._agent, [(c, consuming) for c in charges], rids, _call_id(), calls)
            self._last = answer
            if answer["warning"]:
                self._warning = answer
            self._stop_if_spent(answer)

    def _stop_if_spent(self, answer: dict[str, Any]) -> None:
        stop = answer.get("stop")
        if stop is not None:
            self._manager.request_interrupt(InterruptSource.SYSTEM, stop["mode"], stop["message"], stop["metadata"])

    def snapshot(self) -> dict[str, Any] | None:
        if self._last is None and self._local is not None:
            return self._local.snapshot()
        return self._last

    def take_warning(self) -> dict[str, Any] | None:
        """The snapshot of a warning this client's settle raised, once."""
        warning, self._warning = self._warning, None
        return warning
