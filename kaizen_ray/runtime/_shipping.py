"""How a run's result leaves an agent or supervisor actor: made picklable, then pickled once.

The actor pickles its result itself and returns the bytes; a watcher forwards
them unopened (:class:`kaizen_ray.runtime._watch.PickledResult`) and only the
reader unpickles them, so a large state is not pickled again at every hop.
"""

from __future__ import annotations

import logging
from typing import Any

import ray

from kaizen_ray.core.checkpoint import CheckpointSerializationError
from kaizen_ray.core.checkpoint._format import _find_unpicklable
from kaizen_ray.core.checkpoint._json import _type_name

logger = logging.getLogger("kaizen_ray.runtime")

__all__ = ["pickled_result", "shippable_result"]


def pickled_result(result: dict[str, Any], pickled_state: Any = None) -> tuple[dict[str, Any], bytes]:
    """``result`` made shippable (:func:`shippable_result`) and its one pickle, made with cloudpickle.

    >>> r, data = pickled_result({"agent": "a1", "state": {"n": 1}, "output": None, "error": None})
    >>> ray.cloudpickle.loads(data) == r
    True
    """
    try:
        return result, ray.cloudpickle.dumps(result)
    except Exception:  # noqa: BLE001 - found and reported key by key
        result = shippable_result(result, pickled_state)
        return result, ray.cloudpickle.dumps(result)


def shippable_result(result: dict[str, Any], pickled_state: Any = None) -> dict[str, Any]:
    """``result`` made picklable for its trip to the caller: a state or output cloudpickle refuses is dropped.

    ``pickled_state``: a state just pickled for a checkpoint; when the result
    holds that very object, it is not pickled a second time to check it.

    Ray would otherwise fail the call with a bare ``TypeError`` that names
    neither the agent nor where the culprit is; the error says both instead
    (the run's own error, if any, is kept: it usually names the same culprit).

    >>> import threading
    >>> r = shippable_result({"agent": "a1", "state": {"lock": threading.Lock()}, "output": None, "error": None})
    >>> r["state"], str(r["error"]).split(";")[0]
    (None, "cannot checkpoint agent 'a1': result['state']['lock'] is a _thread.lock")
    """
    known = pickled_state is not None and result.get("state") is pickled_state
    try:
        ray.cloudpickle.dumps({**result, "state": None} if known else result)
        return result
    except Exception:  # noqa: BLE001 - found and reported key by key below
        pass
    result = type(result)(result)  # a RunResult stays one
    for key in ("state", "output"):
        try:
            ray.cloudpickle.dumps(result[key])
        except Exception as exc:  # noqa: BLE001 - reported in the result's error
            where, culprit = _find_unpicklable(result[key], f"result[{key!r}]")
            error = CheckpointSerializationError(
                result["agent"], _type_name(culprit), where,
                f"cloudpickle cannot serialise it ({type(exc).__name__}: {exc}); it is left out of the result",
            )
            logger.error("%s", error)
            result[key] = None
            if result.get("error") is None:
                result["error"] = error
    return result
