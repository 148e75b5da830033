"""Ctrl+C / SIGTERM as interrupts: :class:`SignalInterruptHandler`, every press counted.

Presses are counted by a thread from the process's signal wakeup pipe
(:mod:`kaizen_ray.core._signal_pipe`); the Python-level handler takes no lock
(the main thread it interrupts may hold any of them); another thread talks to
the managers. :mod:`kaizen_ray.core.handlers` re-exports the handler, so
``from kaizen_ray.core.handlers import SignalInterruptHandler`` keeps working.

>>> SignalInterruptHandler([signal.SIGTERM]).signals == (signal.SIGTERM,)
True
"""

from __future__ import annotations

import _thread
import os
import signal
import threading
import warnings
from collections.abc import Iterable
from typing import Any

from kaizen_ray.core import _signal_pipe
from kaizen_ray.core._handler_base import InterruptHandler, _notify, logger
from kaizen_ray.core.interrupts import InterruptMode, InterruptSource

__all__ = ["SignalInterruptHandler"]


class _Installation:
    """One installation of a :class:`SignalInterruptHandler`: the previous handlers and the counts.

    Counting is the counter thread's (one wakeup byte per delivery, see
    :mod:`kaizen_ray.core._signal_pipe`). The Python-level handler is still
    needed: Python runs the C-level handler, which writes the byte, only for
    signals that have a Python-level one; and the third SIGINT must restore
    the previous handlers and raise ``KeyboardInterrupt`` in the main thread.
    It takes no lock (the main thread it interrupts may hold any of them).
    """

    def __init__(self, owner: SignalInterruptHandler, signals: tuple[signal.Signals, ...]) -> None:
        self.owner = owner
        self.signals = signals
        self.previous: dict[int, Any] = {}
        self.counts: dict[int, int] = {}  # written by the counter thread only
        self.presses = 0
        self.released = False  # our handlers are (being) removed: pass signals to the previous ones
        self.exiting = False  # the third SIGINT is raising KeyboardInterrupt
        self.pipe: _signal_pipe.SignalPipe | None = None
        self.py_handler = self._on_signal  # one object, so getsignal() identity checks work

    def install(self) -> None:
        """Main thread: join the process's wakeup pipe, then put our handler on each signal."""
        self.pipe = _signal_pipe.join(self)
        try:
            for sig in self.signals:
                self.previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self.py_handler)
        except BaseException:
            self.restore()
            raise

    def restore(self) -> list[str]:
        """Main thread only. Put back the previous handlers; the signals left alone (someone else's is on top)."""
        if self.released:
            return []
        overridden = []
        for sig, prev in self.previous.items():
            # signal.signal() first runs the Python-level handlers of signals
            # already pending: ours, while still in place, so none is lost.
            if signal.getsignal(sig) is self.py_handler:
                signal.signal(sig, signal.SIG_DFL if prev is None else prev)
            elif (above := self._installed_over(sig)) is not None:
                # Overlapping runs ending out of order: the one installed over ours
                # will restore straight to what was there before ours.
                above.previous[sig] = prev
            else:
                overridden.append(signal.Signals(sig).name)
        self.released = True
        self._leave_pipe()
        return overridden

    def _installed_over(self, sig: int) -> _Installation | None:
        """The live installation that saved ours as its previous handler of ``sig``, if any."""
        pipe = self.pipe
        for inst in pipe.users if pipe is not None else ():
            if inst is not self and not inst.released and inst.previous.get(sig) is self.py_handler:
                return inst
        return None

    def _leave_pipe(self) -> None:
        pipe, self.pipe = self.pipe, None
        if pipe is not None:
            _signal_pipe.leave(pipe, self)

    def count(self, signum: int) -> bool:
        """Counter thread: one delivery of ``signum``. False: not ours any more (pass it on)."""
        if self.released:
            return False
        if signum == signal.SIGINT and self.counts.get(signum, 0) >= 3:
            return True  # the nudge below writes a byte too; past the third press nothing is counted
        self.presses += 1
        count = self.counts[signum] = self.counts.get(signum, 0) + 1
        if signum != signal.SIGINT or count < 3:
            self._deliveries().put((self.owner, signum, count))
        else:
            # The main thread may have run our handler for this press before
            # we counted it: make it run once more (it sees the count then).
            _thread.interrupt_main(signal.SIGINT)
        return True

    def _deliveries(self) -> Any:
        pipe = self.pipe
        return pipe.deliveries if pipe is not None else _NOWHERE

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.exiting:
            return  # a trip still pending when the third press restores: it is the press being acted on
        if self.released:
            self._chain(signum, frame)
            return
        pipe = self.pipe
        if pipe is None:
            return
        if not pipe.owns_wakeup_fd():
            # Someone replaced the wakeup fd: count this call instead (presses
            # that arrive together then fold into one, as without a pipe).
            pipe.inject(signum)
        if signum != signal.SIGINT:
            return  # counted and delivered by the pipe's threads
        pipe.sync()
        if self.counts.get(signum, 0) >= 3:
            self.exiting = True
            try:
                self.restore()
            finally:
                self.exiting = False
            raise KeyboardInterrupt

    def _chain(self, signum: int, frame: Any) -> None:
        # Reached when our handler is still in place although we were removed:
        # removed from another thread, or out of order (a handler installed over
        # ours was removed after ours and put ours back). Step aside and act as
        # the previous handler.
        prev = self.previous.get(signum)
        if signal.getsignal(signum) is self.py_handler:
            signal.signal(signum, signal.SIG_DFL if prev is None else prev)
        self._leave_pipe()
        if callable(prev):
            prev(signum, frame)
        elif prev is not signal.SIG_IGN and signal.getsignal(signum) is signal.SIG_DFL:
            os.kill(os.getpid(), signum)  # the default action, as if we had never been there


class _Nowhere:
    def put(self, item: Any) -> None:
        """Drop it: the installation already left its pipe."""


_NOWHERE = _Nowhere()


class SignalInterruptHandler(InterruptHandler):
    """Ctrl+C and SIGTERM as USER interrupts, installed by ``arm`` in the main thread.

    First SIGINT: GRACEFUL; second: IMMEDIATE; third: the previous handlers are
    restored and ``KeyboardInterrupt`` is raised. Any other signal: GRACEFUL.
    Metadata: ``{"signal": "SIGINT", "count": n}``. Presses are counted one by
    one, however close together, also while the main thread sits in a long C
    call (one wakeup byte per delivery, see :mod:`kaizen_ray.core._signal_pipe`).
    The previous handlers (whatever they were: SIG_DFL, SIG_IGN, asyncio's,
    Ray's, another one of these) are restored by ``disarm`` of the last armed
    manager; nested installs must be removed in LIFO order to restore exactly.
    Armed from another thread it only warns (Python allows signal handlers
    only in the main thread).

    >>> from kaizen_ray.core.interrupts import InterruptManager
    >>> m, h = InterruptManager(), SignalInterruptHandler()
    >>> m.add_handler(h)
    >>> signal.raise_signal(signal.SIGINT)  # no KeyboardInterrupt: a graceful stop
    >>> m.wait(5), m.reason.metadata
    (True, {'signal': 'SIGINT', 'count': 1})
    >>> m.remove_handler(h); signal.getsignal(signal.SIGINT) is signal.default_int_handler
    True
    """

    def __init__(self, signals: Iterable[int] = (signal.SIGINT, signal.SIGTERM)) -> None:
        checked: list[signal.Signals] = []
        if isinstance(signals, (int, str)) or not hasattr(signals, "__iter__"):  # a bare SIGINT, not a tuple of them
            raise TypeError(f"signals must be an iterable of signal numbers, got {signals!r}")
        for sig in signals:
            try:
                if isinstance(sig, bool) or not isinstance(sig, int):  # True would be SIGHUP, 2.0 SIGINT
                    raise TypeError
                sig = signal.Signals(sig)
            except (ValueError, TypeError):
                raise ValueError(f"signals: {sig!r} is not a signal number of this platform") from None
            if sig in (signal.SIGKILL, signal.SIGSTOP):
                raise ValueError(f"signals: {sig.name} cannot be caught; expected e.g. SIGINT or SIGTERM")
            if sig not in checked:
                checked.append(sig)
        if not checked:
            raise ValueError("signals is empty; expected at least one signal, e.g. (SIGINT, SIGTERM)")
        self._signals = tuple(checked)
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._lock = threading.Lock()
        self._managers: list[Any] = []
        self._inst: _Installation | None = None

    @property
    def signals(self) -> tuple[signal.Signals, ...]:
        """The signals it handles."""
        return self._signals

    @property
    def installed(self) -> bool:
        """True while its Python signal handlers are in place."""
        inst = self._inst
        return inst is not None and not inst.released

    @property
    def presses(self) -> int:
        """Signals received by the current (or last) installation."""
        inst = self._inst
        return 0 if inst is None else inst.presses

    def __repr__(self) -> str:
        names = ", ".join(s.name for s in self._signals)
        return f"SignalInterruptHandler(signals=({names}), installed={self.installed}, presses={self.presses})"

    def arm(self, manager: Any) -> None:
        """Deliver the signals to ``manager``; installs the handlers (over whatever is current) if not yet."""
        if threading.current_thread() is not threading.main_thread():
            self._refuse(f"arm() ran in {self._thread_name()}: not installed")
            return
        with self._lock:
            if not any(m is manager for m in self._managers):
                self._managers.append(manager)
            if self._inst is None or self._inst.released:
                inst = _Installation(self, self._signals)
                try:
                    inst.install()
                except (ValueError, OSError) as exc:  # e.g. not the main interpreter
                    self._managers = [m for m in self._managers if m is not manager]
                    self._refuse(f"arm() could not install them: {exc}")
                    return
                self._inst = inst
                logger.debug("installed %r", self)

    def disarm(self, manager: Any) -> None:
        """Stop delivering to ``manager``; the last one out restores the previous handlers."""
        with self._lock:
            if not any(m is manager for m in self._managers):
                return
            self._managers = [m for m in self._managers if m is not manager]
            inst = self._inst
            if self._managers or inst is None:
                return
        if inst.released:
            return
        if threading.current_thread() is not threading.main_thread():
            inst.released = True  # ours now pass every signal on to the previous handlers
            self._refuse(
                f"disarm() ran in {self._thread_name()}: the previous handlers cannot be restored "
                "from there; ours pass the next signal on to them and step aside"
            )
            return
        pipe = inst.pipe
        overridden = inst.restore()
        if overridden:
            logger.warning(
                "%r removed out of order: %s now have a handler installed after ours; left in place",
                self,
                overridden,
            )
        if pipe is not None and pipe.closed:
            pipe.join_threads(1.0)

    @staticmethod
    def _thread_name() -> str:
        name = threading.current_thread().name
        return f"thread {name!r}, not the main thread (the only one where Python may set signal handlers)"

    def _refuse(self, what: str) -> None:
        names = ", ".join(s.name for s in self._signals)
        msg = f"SignalInterruptHandler for ({names}): {what}"
        logger.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)

    def _deliver(self, signum: int, count: int) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGINT and count == 1:
            mode, msg = InterruptMode.GRACEFUL, "SIGINT (Ctrl+C): graceful stop; press Ctrl+C again to stop at once"
        elif signum == signal.SIGINT:
            mode, msg = InterruptMode.IMMEDIATE, "SIGINT (Ctrl+C) twice: immediate stop; a third press exits"
        else:
            mode, msg = InterruptMode.GRACEFUL, f"{name}: graceful stop"
        with self._lock:
            managers = list(self._managers)
        _notify(managers, InterruptSource.USER, mode, msg, {"signal": name, "count": count})

    def __getstate__(self) -> dict[str, Any]:
        return {"signals": [int(s) for s in self._signals]}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._signals = tuple(signal.Signals(s) for s in state["signals"])
        self._init_runtime()
