"""The process's one signal wakeup pipe: every delivered signal is one byte, counted by a thread.

Python runs a Python-level signal handler once per *batch*: a signal that
arrives twice before the main thread is back in the eval loop (it sat in a
long C call, or in one poll of ``ray.wait``) runs the handler once. CPython's
C-level handler, though, writes the signal number to the fd given to
:func:`signal.set_wakeup_fd` once per delivery. So the bytes are the count:
a *counter* thread reads them and counts, while the main thread is away.

One pipe per process, shared by every installed ``SignalInterruptHandler``:
the bytes keep their order, and a byte belongs to the installation whose
Python-level handler is in place for that signal (the one Python would call),
so a nested install shadows an outer one exactly as its handler does. Bytes no
active installation owns go on to the wakeup fd that was there before ours
(asyncio's, for ``loop.add_signal_handler``), so those handlers keep working.

Two threads, so that the main thread may wait for the counter from inside a
signal handler: the counter reads, counts and never blocks on anything but the
pipe; the *deliverer* talks to the interrupt managers (it may wait for their
locks, which the interrupted main thread may hold).

>>> _SYNC  # the one byte no signal writes: a sync marker from the main thread
0
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import signal
import threading
import time
from typing import Any

logger = logging.getLogger("kaizen_ray.handlers")

__all__ = ["SignalPipe", "join", "leave"]

_SYNC = 0
_SYNC_POLL_S = 0.0002  # the counter answers within microseconds: it only needs the GIL the waiter gives up

# Main thread only (set_wakeup_fd may only be called there), so no lock: a lock
# taken here could be re-entered by a signal handler running in the same thread.
_current: SignalPipe | None = None


class SignalPipe:
    """The wakeup pipe, its counter and deliverer threads, and the installations it serves.

    An installation provides ``py_handler`` (its Python-level handler) and
    ``count(signum) -> bool`` (called in the counter thread; False hands the
    byte on to the previous wakeup fd).

    >>> SignalPipe.__name__
    'SignalPipe'
    """

    def __init__(self) -> None:
        self.rfd, self.wfd = os.pipe()
        os.set_blocking(self.wfd, False)  # set_wakeup_fd requires it: a full pipe drops a byte, never blocks
        self.previous_fd = -1  # the wakeup fd before ours
        self.users: list[Any] = []  # installations, oldest first; mutated by the main thread only
        self.deliveries: queue.SimpleQueue[tuple[Any, int, int] | None] = queue.SimpleQueue()
        self._syncs_sent = itertools.count(1)
        self.syncs_seen = 0  # written by the counter only
        self.closing = False
        self.closed = False  # our write end is closed: the threads are ending
        self._counter = threading.Thread(target=self._count, name="kaizen-signal-count", daemon=True)
        self._deliverer = threading.Thread(target=self._deliver, name="kaizen-signal-deliver", daemon=True)

    @property
    def alive(self) -> bool:
        """True while the counter reads the pipe."""
        return self._counter.is_alive()

    def start(self) -> None:
        """Main thread: make our pipe the wakeup fd and start the threads."""
        try:
            self.previous_fd = signal.set_wakeup_fd(self.wfd, warn_on_full_buffer=False)
        except BaseException:
            os.close(self.rfd)
            os.close(self.wfd)
            raise
        self._counter.start()
        self._deliverer.start()

    def join_threads(self, timeout: float) -> None:
        """Wait for both threads to end (after the last installation left)."""
        for thread in (self._counter, self._deliverer):
            if thread is not threading.current_thread():
                thread.join(timeout)

    # -- main thread, possibly inside a signal handler --------------------------------

    def owns_wakeup_fd(self) -> bool:
        """Whether the wakeup fd is still ours (someone may have set theirs since); theirs is left in place."""
        current = signal.set_wakeup_fd(self.wfd, warn_on_full_buffer=False)
        if current == self.wfd:
            return True
        signal.set_wakeup_fd(current)
        return False

    def inject(self, signum: int) -> None:
        """Count one delivery of ``signum`` whose byte went to another wakeup fd."""
        try:
            os.write(self.wfd, bytes((signum,)))
        except OSError:  # pipe full: the counter is far behind and has presses to count already
            pass

    def sync(self, timeout: float = 1.0) -> bool:
        """Wait until the counter has read every byte written before this call.

        Safe from a signal handler: the counter never waits for the main
        thread, and this takes no lock (a poll of a plain int).
        """
        seq = next(self._syncs_sent)
        try:
            os.write(self.wfd, bytes((_SYNC,)))
        except OSError:
            return False
        deadline = time.monotonic() + timeout
        while self.syncs_seen < seq:
            if time.monotonic() >= deadline:
                logger.warning("the signal counter did not answer within %.1fs; counting what it has seen", timeout)
                return False
            time.sleep(_SYNC_POLL_S)
        return True

    # -- counter thread ----------------------------------------------------------------

    def _count(self) -> None:
        try:
            while True:
                try:
                    chunk = os.read(self.rfd, 512)
                except OSError:
                    return
                if not chunk:  # write end closed: the last installation left
                    return
                for byte in chunk:
                    if byte == _SYNC:
                        self.syncs_seen += 1
                    elif not self._route(byte):
                        self._forward(byte)
        finally:
            os.close(self.rfd)
            self.deliveries.put(None)

    def _route(self, signum: int) -> bool:
        try:
            current = signal.getsignal(signum)
        except ValueError:
            return False
        for inst in reversed(list(self.users)):
            if current is inst.py_handler:
                return inst.count(signum)
        return False

    def _forward(self, signum: int) -> None:
        if self.previous_fd < 0:
            return
        try:
            os.write(self.previous_fd, bytes((signum,)))
        except OSError:  # full, or closed by its owner: it reads its Python-level flags too
            pass

    # -- deliverer thread --------------------------------------------------------------

    def _deliver(self) -> None:
        while True:
            item = self.deliveries.get()
            if item is None:
                return
            owner, signum, count = item
            try:
                owner._deliver(signum, count)
            except Exception:
                logger.exception("delivering signal %d (press %d) to %r failed", signum, count, owner)


def join(inst: Any) -> SignalPipe:
    """Main thread: serve ``inst`` from the process's pipe (started on first use)."""
    global _current
    pipe = _current
    if pipe is None:
        pipe = SignalPipe()
        pipe.start()
        _current = pipe
    pipe.users.append(inst)
    return pipe


def leave(pipe: SignalPipe, inst: Any) -> None:
    """Main thread: stop serving ``inst``; the last one out puts the previous wakeup fd back.

    If someone set their own wakeup fd after ours, theirs stays, and so does
    our pipe (they may hand the fd back to it later): it forwards every byte.
    """
    global _current
    if any(u is inst for u in pipe.users):
        pipe.users = [u for u in pipe.users if u is not inst]
    if pipe.users or pipe.closing:
        return
    pipe.closing = True
    if _current is pipe:
        _current = None
    try:
        current = signal.set_wakeup_fd(pipe.previous_fd)
    except (OSError, ValueError):  # the previous fd was closed meanwhile (e.g. its asyncio loop)
        current = signal.set_wakeup_fd(-1)
    if current != pipe.wfd:
        signal.set_wakeup_fd(current)
        logger.warning(
            "the signal wakeup fd was replaced (by fd %d) while kaizen_ray's was installed; "
            "theirs is left in place and ours keeps forwarding to fd %d",
            current,
            pipe.previous_fd,
        )
        return
    pipe.closed = True
    os.close(pipe.wfd)  # the counter reads to the end, then stops both threads
