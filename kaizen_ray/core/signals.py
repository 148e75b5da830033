"""Ctrl+C / SIGTERM as interrupts: :class:`SignalInterruptHandler` and its self-pipe dispatcher.

The self-pipe trick: the Python-level signal handler takes no lock (the main
thread it interrupts may hold any of them); a dispatcher thread talks to the
managers. :mod:`kaizen_ray.core.handlers` re-exports the handler, so
``from kaizen_ray.core.handlers import SignalInterruptHandler`` keeps working.

>>> SignalInterruptHandler([signal.SIGTERM]).signals == (signal.SIGTERM,)
True
"""

from __future__ import annotations

import os
import signal
import threading
import warnings
from collections.abc import Iterable
from typing import Any

from kaizen_ray.core._handler_base import InterruptHandler, _notify, logger
from kaizen_ray.core.interrupts import InterruptMode, InterruptSource

__all__ = ["SignalInterruptHandler"]


class _Installation:
    """One installation of a :class:`SignalInterruptHandler`: old handlers, pipe, dispatcher.

    ``_on_signal`` runs in the main thread between any two bytecodes, maybe
    while that thread holds a lock, so it takes none: it counts (plain ints)
    and writes two bytes (signal number, press count) to a non-blocking pipe.
    The write end is closed only from the main thread (``restore``), behind a
    flag set first, so a handler can never write to a closed, reused fd.
    """

    def __init__(self, owner: SignalInterruptHandler, signals: tuple[signal.Signals, ...]) -> None:
        self.owner = owner
        self.signals = signals
        self.previous: dict[int, Any] = {}
        self.counts: dict[int, int] = {}
        self.presses = 0
        self.released = False  # our handlers are (being) removed: pass signals to the previous ones
        self.write_closed = False
        self.rfd, self.wfd = os.pipe()
        os.set_blocking(self.wfd, False)
        self.py_handler = self._on_signal  # one object, so getsignal() identity checks work
        self.thread = threading.Thread(target=self._dispatch, name="kaizen-signal-dispatch", daemon=True)

    def install(self) -> None:
        self.thread.start()
        try:
            for sig in self.signals:
                self.previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self.py_handler)
        except BaseException:
            self.restore()
            raise

    def restore(self) -> list[str]:
        """Main thread only. Put back the previous handlers; the signals left alone (someone else's is on top)."""
        if self.released and self.write_closed:
            return []
        self.released = True
        overridden = []
        for sig, prev in self.previous.items():
            if signal.getsignal(sig) is self.py_handler:
                signal.signal(sig, signal.SIG_DFL if prev is None else prev)
            else:
                overridden.append(signal.Signals(sig).name)
        self._close_write()
        return overridden

    def _close_write(self) -> None:
        if self.write_closed:
            return
        self.write_closed = True
        os.close(self.wfd)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.released:
            self._chain(signum, frame)
            return
        self.presses += 1
        count = self.counts.get(signum, 0) + 1
        self.counts[signum] = count
        if signum == signal.SIGINT and count >= 3:
            self.restore()
            raise KeyboardInterrupt
        if not self.write_closed:
            try:
                os.write(self.wfd, bytes((signum, min(count, 255))))
            except OSError:  # pipe full: the dispatcher already has presses to deliver
                pass

    def _chain(self, signum: int, frame: Any) -> None:
        # Reached when a handler installed over ours was removed after ours
        # (not LIFO) and put ours back: step aside and act as the previous one.
        prev = self.previous.get(signum)
        if signal.getsignal(signum) is self.py_handler:
            signal.signal(signum, signal.SIG_DFL if prev is None else prev)
        self._close_write()
        if callable(prev):
            prev(signum, frame)
        elif prev is not signal.SIG_IGN and signal.getsignal(signum) is signal.SIG_DFL:
            os.kill(os.getpid(), signum)  # the default action, as if we had never been there

    def _dispatch(self) -> None:
        buf = b""
        try:
            while True:
                try:
                    chunk = os.read(self.rfd, 512)
                except OSError:
                    return
                if not chunk:  # write end closed and drained
                    return
                buf += chunk
                while len(buf) >= 2:
                    self.owner._deliver(buf[0], buf[1])
                    buf = buf[2:]
        finally:
            os.close(self.rfd)


class SignalInterruptHandler(InterruptHandler):
    """Ctrl+C and SIGTERM as USER interrupts, installed from ``attach`` in the main thread.

    First SIGINT: GRACEFUL; second: IMMEDIATE; third: the previous handlers are
    restored and ``KeyboardInterrupt`` is raised. Any other signal: GRACEFUL.
    Metadata: ``{"signal": "SIGINT", "count": n}``. The previous handlers
    (whatever they were: SIG_DFL, SIG_IGN, Ray's, another one of these) are
    restored by ``detach`` or ``run_ended`` of the last attached manager;
    nested installs must be removed in LIFO order to restore exactly.
    Attached from another thread it only warns (Python allows signal handlers
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
        for sig in signals:
            try:
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

    def attach(self, manager: Any) -> None:
        """Deliver the signals to ``manager``; installs the handlers if not yet installed."""
        if threading.current_thread() is not threading.main_thread():
            self._refuse(f"attach() ran in {self._thread_name()}: not installed")
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
                    self._refuse(f"attach() could not install them: {exc}")
                    return
                self._inst = inst
                logger.debug("installed %r", self)

    def detach(self, manager: Any) -> None:
        """Stop delivering to ``manager``; the last one out restores the previous handlers."""
        with self._lock:
            if not any(m is manager for m in self._managers):
                return
            self._managers = [m for m in self._managers if m is not manager]
            inst = self._inst
            if self._managers or inst is None:
                return
        if not inst.released:
            if threading.current_thread() is not threading.main_thread():
                inst.released = True  # ours now pass every signal on to the previous handlers
                self._refuse(
                    f"detach() ran in {self._thread_name()}: the previous handlers cannot be restored "
                    "from there; ours pass the next signal on to them and step aside"
                )
                return
            overridden = inst.restore()
            if overridden:
                logger.warning(
                    "%r removed out of order: %s now have a handler installed after ours; left in place",
                    self,
                    overridden,
                )
        if inst.thread is not threading.current_thread():
            inst.thread.join(1.0)

    def run_ended(self, manager: Any) -> None:
        """Same as :meth:`detach`: the handlers live until the end of the run."""
        self.detach(manager)

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
