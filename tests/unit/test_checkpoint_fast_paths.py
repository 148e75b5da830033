"""The cheap paths of a checkpoint save make exactly what the checked, general ones made.

``Checkpoint.new`` skips validation for values of the exact types it keeps;
the header is encoded once; ids are stamped without ``strftime``; a storage
keeps each agent's checked folder. Each is pinned here against what it
replaced, so that a speed-up can never change an object, a byte on disk or a
refusal.
"""

from __future__ import annotations

import math
import pickle
import random
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import kaizen_ray.core.checkpoint._format as ckformat
import kaizen_ray.core.checkpoint._json as ckjson
import kaizen_ray.core.checkpoint._model as ckmodel
from kaizen_ray.core.checkpoint import (
    Checkpoint,
    CheckpointStatus,
    FileCheckpointStorage,
    decode_checkpoint,
    encode_buffers,
    new_checkpoint_id,
)
from kaizen_ray.core.interrupts import InterruptReason

T0 = datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC)
ID_FORMAT = re.compile(r"ck-\d{8}T\d{12}Z-[0-9a-f]{4}-[0-9a-f]{6}")


class Name(str):
    pass


class Count(int):
    pass


def validated(ckpt: Checkpoint, agent, cycle, status, state, interrupt_reason=None, parent_id=None, metadata=None):
    """What ``Checkpoint.new`` made before it skipped validation: the model validated from the same arguments."""
    ref = Checkpoint(
        id=ckpt.id, agent=agent, cycle=cycle, status=status, state=state,
        interrupt_reason=interrupt_reason, parent_id=parent_id, metadata=dict(metadata or {}),
    )
    object.__setattr__(ref, "__dict__", {**ref.__dict__, "created_at": ckpt.created_at})  # the one field made "now"
    return ref


CASES = [
    dict(agent="worker", cycle=0, status=CheckpointStatus.RUNNING, state=None, metadata={}),
    dict(agent="sup/child-1", cycle=7, status="completed", state={"n": [1, 2]}, parent_id="ck-1",
         metadata={"cost": 1.5, "done": True, "output": {"a": [None, "x", 2.5, {"b": False}]}}),
    dict(agent="a", cycle=2**70, status="interrupted", state=b"x",
         interrupt_reason=InterruptReason(source="user", message="stop"), metadata={"k": [[[]]]}),
    # Values of other types than validation keeps: validated, and converted, as before.
    dict(agent=Name("a"), cycle=Count(3), status="failed", state=1, parent_id=Name("ck-2"), metadata={Name("k"): 1}),
    dict(agent="a", cycle=True, status="killed", state=None, metadata={}),
]


@pytest.mark.parametrize("values", CASES)
def test_new_makes_exactly_the_checkpoint_validation_makes(values):
    kwargs = {k: v for k, v in values.items() if k not in ("agent", "cycle", "status", "state")}
    ckpt = Checkpoint.new(values["agent"], values["cycle"], values["status"], values["state"], **kwargs)
    ref = validated(ckpt, **values)

    assert ckpt == ref and repr(ckpt) == repr(ref)
    assert list(ckpt.__dict__) == list(ref.__dict__)  # the field order too (repr and dumps follow it)
    assert {k: type(v) for k, v in ckpt.__dict__.items()} == {k: type(v) for k, v in ref.__dict__.items()}
    assert type(ckpt) is Checkpoint and ckpt.model_fields_set == ref.model_fields_set
    assert (ckpt.__pydantic_extra__, ckpt.__pydantic_private__) == (ref.__pydantic_extra__, ref.__pydantic_private__)
    assert ckpt.model_dump() == ref.model_dump() and pickle.loads(pickle.dumps(ckpt)) == ref
    assert ID_FORMAT.fullmatch(ckpt.id) and ckpt.created_at.tzinfo is UTC
    assert ckpt.metadata is not values["metadata"]  # a copy, never the caller's dict
    with pytest.raises(ValidationError):
        ckpt.cycle = 2  # frozen as a validated one is


@pytest.mark.parametrize(("values", "field"), [
    (dict(agent="../x"), "agent"),
    (dict(agent=Name("../x")), "agent"),
    (dict(agent=5), "agent"),
    (dict(cycle=-1), "cycle"),
    (dict(cycle=1.5), "cycle"),
    (dict(status="paused"), "status"),
    (dict(parent_id="../ck"), "parent_id"),
    (dict(parent_id=7), "parent_id"),
    (dict(metadata={"x": float("nan")}), "metadata"),
    (dict(metadata={"x": (1, 2)}), "metadata"),
    (dict(metadata={1: "x"}), "metadata"),
    (dict(interrupt_reason="user"), "interrupt_reason"),
])
def test_new_refuses_with_the_error_validation_gives(values, field):
    base = dict(agent="a", cycle=1, status="running", parent_id=None, metadata={}, interrupt_reason=None)
    base.update(values)
    with pytest.raises(ValidationError) as new_error:
        Checkpoint.new(base.pop("agent"), base.pop("cycle"), base.pop("status"), None, **base)
    with pytest.raises(ValidationError) as validation_error:
        Checkpoint(id="ck-1", state=None, **{**dict(agent="a", cycle=1, status="running"), **values})
    assert new_error.value.errors(include_url=False, include_context=False) == validation_error.value.errors(
        include_url=False, include_context=False
    )
    assert {e["loc"][0] for e in new_error.value.errors()} == {field}


def test_a_subclass_of_checkpoint_is_still_validated_as_itself():
    class Tagged(Checkpoint):
        tag: str = "t"

    ckpt = Tagged.new("a", 1, "running", None)
    assert type(ckpt) is Tagged and ckpt.tag == "t"
    with pytest.raises(ValidationError):
        Tagged.new("../a", 1, "running", None)


def test_an_agent_name_is_refused_every_time_and_a_lookalike_never_passes_as_a_checked_one(tmp_path):
    for _ in range(2):  # refusals are not cached
        with pytest.raises(ValueError, match="is not allowed"):
            ckmodel.validate_agent_name("../x")

    class Lookalike(str):  # equal to, and hashed as, a name already checked
        def __eq__(self, other):
            return other == "good" or str.__eq__(self, other)

        def __hash__(self):
            return hash("good")

    store = FileCheckpointStorage(tmp_path)
    ckmodel.validate_agent_name("good")
    assert store.path_for("good", "ck-1") == tmp_path / "good" / "ck-1.ckpt"
    for _ in range(2):
        with pytest.raises(ValueError, match="is not allowed"):
            ckmodel.validate_agent_name(Lookalike("../x"))
        with pytest.raises(ValueError, match="is not allowed"):
            store.path_for(Lookalike("../x"), "ck-1")
        with pytest.raises(ValueError, match="checkpoint id"):
            store.path_for("good", "../ck-1")  # the id of a known agent is still checked


def test_a_storage_path_with_dot_dot_is_folded_and_every_write_lands_under_it(tmp_path):
    """``--storage ../ckpts`` names a folder: its ".." folded, not refused at the first write."""
    store = FileCheckpointStorage(tmp_path / "x" / ".." / "y")
    assert store.path == tmp_path / "y"
    for _ in range(2):  # the agent's checked folder is cached after the first
        assert store.path_for("a", "ck-1") == tmp_path / "y" / "a" / "ck-1.ckpt"


# -- the metadata check ------------------------------------------------------------------

odd_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=3)
    | st.sampled_from([Name("s"), Count(2), (1,), {1}, b"x", 1j, math.inf]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3) | st.integers(), inner, max_size=3)
    | st.lists(inner, max_size=2).map(tuple),
    max_leaves=12,
)


def nested(depth: int, leaf: object) -> object:
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


@settings(max_examples=400, deadline=None)
@given(odd_values)
def test_the_quick_json_check_agrees_with_the_walk_that_names_places(value):
    assert ckjson._json_clean(value) == (ckjson._first_json_problem(value, "metadata") is None)
    assert ckjson._json_problem(value, "metadata") == ckjson._first_json_problem(value, "metadata")


@pytest.mark.parametrize("depth", [62, 63, 64, 65, 66])
@pytest.mark.parametrize("leaf", [1, 1.5, math.nan, [], {}, [1], {"k": None}, (1,)])
def test_the_quick_json_check_agrees_at_the_depth_limit(depth, leaf):
    value = nested(depth, leaf)
    assert ckjson._json_clean(value) == (ckjson._first_json_problem(value, "metadata") is None)


# -- the header line and the id -----------------------------------------------------------

# Written by the version that encoded the header twice; this header must come out byte for byte.
GOLDEN_HEAD = (
    b'KAIZENRAY-CKPT\n{"agent":"sup/child","created_at":"2026-11-25T10:00:00.123456+00:00","cycle":3,'
    b'"format_version":2,"header_sha256":"2ace9bd34bad26d0a32ad1ac77f9599d573e294cb17e83587ae719d510fb2da8",'
    b'"id":"ck-20261125T100000123456Z-0000-a1b2c3","interrupt_reason":{"message":"stop","metadata":{"k":[1,2.5]},'
    b'"mode":"graceful","source":"user","timestamp":"2026-11-25T10:00:00.123456Z"},"metadata":{"cost":1.5,'
    b'"done":false,"output":{"id":",\\"id\\":\\"x\\"","z":[null,true,"\\u00e9"]}},'
    b'"parent_id":"ck-20261125T095959000001Z-0001-000000","payload_crc32":2029700232,"payload_sha256":null,'
    b'"payload_size":4,"signature":null,"status":"interrupted"}\n'
)


def golden_checkpoint() -> Checkpoint:
    reason = InterruptReason(source="user", mode="graceful", message="stop", timestamp=T0, metadata={"k": [1, 2.5]})
    return Checkpoint(
        id="ck-20261125T100000123456Z-0000-a1b2c3", agent="sup/child", cycle=3, status="interrupted", created_at=T0,
        parent_id="ck-20261125T095959000001Z-0001-000000", interrupt_reason=reason, state=None,
        metadata={"cost": 1.5, "done": False, "output": {"id": ',"id":"x"', "z": [None, True, "\u00e9"]}},
    )


def test_the_header_is_byte_for_byte_what_it_was():
    head, payload = encode_buffers(golden_checkpoint())
    assert head == GOLDEN_HEAD
    assert decode_checkpoint(GOLDEN_HEAD + payload) == golden_checkpoint()


def twice_encoded(header: dict) -> bytes:
    return ckformat._canonical({**header, "header_sha256": ckformat._header_digest(header)}) + b"\n"


tricky_text = st.text(alphabet=',"\\:id{}[] ée\u2028', max_size=8)


@settings(max_examples=200, deadline=None)
@given(
    metadata=st.dictionaries(tricky_text, st.none() | tricky_text | st.lists(tricky_text, max_size=2), max_size=4),
    cycle=st.integers(min_value=0, max_value=2**64),
    signed=st.booleans(),
)
def test_the_header_line_is_the_canonical_header_with_its_checksum(metadata, cycle, signed):
    ckpt = Checkpoint.new("a/b", cycle, "running", None, metadata={"id": ',"id":', **metadata})
    head, *_ = encode_buffers(ckpt, key=b"k" * 32 if signed else None)
    header = {k: v for k, v in ckformat.json.loads(head[len(ckformat.MAGIC):]).items() if k != "header_sha256"}
    assert head[len(ckformat.MAGIC):] == twice_encoded(header)


def test_a_header_of_unvalidated_odd_types_is_still_encoded_as_before():
    header = {"agent": {"a": 1, "id": 2}, "cycle": 1, "format_version": 2, "id": "ck-1", "status": "running"}
    assert ckformat._header_line(header) == twice_encoded(header)


def test_id_stamps_are_what_strftime_writes():
    rng = random.Random(7)
    seconds = [0, 1, 59, 951782400, 4102444799, 253402300799, *(rng.randrange(0, 253402300800) for _ in range(2000))]
    for second in seconds:
        assert ckmodel._utc_stamp(second) == datetime.fromtimestamp(second, UTC).strftime("%Y%m%dT%H%M%S"), second
        assert ckmodel._utc_stamp(second) == ckmodel._utc_stamp(second)  # and from the cache


def test_ids_keep_their_format():
    assert all(ID_FORMAT.fullmatch(new_checkpoint_id()) for _ in range(100))


def test_a_write_makes_a_missing_agent_folder_and_says_why_it_cannot(tmp_path):
    store = FileCheckpointStorage(tmp_path / "root")
    ckpt = Checkpoint.new("a", 1, "running", {"n": 1})
    assert store.write(ckpt) == tmp_path / "root" / "a" / f"{ckpt.id}.ckpt"
    (tmp_path / "root" / "b").write_text("a file where the folder goes")
    with pytest.raises(OSError, match="is not a folder"):
        store.write(Checkpoint.new("b", 1, "running", None))
    assert Path(store.path_for("a", ckpt.id)).exists()
