"""How a run's result leaves an actor or task: pickled, not msgpack-packed.

Ray msgpack-packs a returned dict (falling back to pickle only for what
msgpack does not know), which for a state of many megabytes costs about twice
what pickle protocol 5 does: profiling a 1-cycle run with a 64 MB state
showed msgpack's ``packb`` as its largest item, once in the agent's actor and
once more in the watcher task. :func:`as_pickled` wraps the result in an
object msgpack does not know; Ray pickles it, and it unpickles as the plain
dict, so callers see no difference.
"""

from __future__ import annotations

from typing import Any

__all__ = ["as_pickled"]


def as_pickled(result: dict[str, Any]) -> Any:
    """``result`` wrapped to leave an actor or task pickled, not msgpack-packed; the caller receives the dict.

    >>> import pickle; pickle.loads(pickle.dumps(as_pickled({"status": "completed"})))
    {'status': 'completed'}
    """
    return _Pickled(result)


class _Pickled:
    """A result on its way out of the actor, pickled (protocol 5) instead of msgpack-packed; it arrives as the dict.

    Ray msgpack-packs a returned dict, which costs about twice what pickling
    does for a state of many megabytes (the state's bytes are copied through
    msgpack's growing buffer). msgpack does not know this class, so Ray
    pickles it, and ``__reduce__`` makes it unpickle as the plain dict.

    >>> import pickle; pickle.loads(pickle.dumps(_Pickled({"status": "completed"})))
    {'status': 'completed'}
    """

    __slots__ = ("value",)

    def __init__(self, value: dict[str, Any]) -> None:
        self.value = value

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (self.value,))
