"""Results and handles render as HTML tables in Jupyter (values present, every one escaped; results stay dicts); bar labels."""

from __future__ import annotations

import json
import pickle

import kaizen_ray as kr
from kaizen_ray.core._html import cell, columns_table, rows_table
from kaizen_ray.core.results import run_result, supervisor_result

HOSTILE = '<script>alert("x")</script>&'
ESCAPED = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;"


def test_a_run_result_is_a_dict_that_shows_its_values_in_a_table():
    reason = kr.InterruptReason(source="user", mode="graceful", message="enough")
    r = run_result("a1", "interrupted", cycles=3, cost=0.25, checkpoint_id="ck-42", interrupt_reason=reason)
    assert isinstance(r, kr.RunResult) and isinstance(r, dict)
    page = r._repr_html_()
    assert page.startswith('<div class="kaizen-ray"><table>')
    for text in ("a1", "interrupted", "<td style=\"text-align:left\">3</td>", "0.25", "ck-42", "user/graceful: enough"):
        assert text in page, text


def test_every_value_in_a_result_table_is_escaped():
    r = run_result(HOSTILE, "failed", output=HOSTILE, error=ValueError(HOSTILE), checkpoint_id=HOSTILE)
    page = r._repr_html_()
    assert "<script>" not in page
    assert page.count(ESCAPED) >= 3  # caption, output, checkpoint_id (the error's text is escaped too)
    assert "ValueError: " + ESCAPED in page


def test_a_supervisor_result_has_one_row_per_child_escaped():
    children = {
        "w1": run_result("swarm/w1", "completed", cycles=5, checkpoint_id="ck-1"),
        HOSTILE: run_result("swarm/x", "killed", cycles=2),
    }
    r = supervisor_result("swarm", "interrupted", children=children, checkpoint_id="ck-m", restarts=1)
    page = r._repr_html_()
    assert "<th>child</th>" in page and "<td>w1</td><td>completed</td><td>5</td>" in page
    assert f"<td>{ESCAPED}</td><td>killed</td><td>2</td>" in page
    assert "<script>" not in page


def test_a_result_stays_a_plain_dict_for_json_pickle_and_equality():
    r = run_result("a1", "completed", cycles=2, output=["p1", "p2"])
    assert json.loads(json.dumps(r))["output"] == ["p1", "p2"]
    back = pickle.loads(pickle.dumps(r))
    assert type(back) is kr.RunResult and back == r == dict(r)
    assert repr(r) == repr(dict(r))  # the doctests and logs see the dict


def test_long_values_are_cut_and_none_is_empty():
    assert cell("x" * 1000).endswith("…") and len(cell("x" * 1000)) == 200
    assert cell(None) == ""
    assert "<td></td>" in columns_table(["cost"], {"a": {}})
    assert "&lt;" in rows_table("<", [])


def test_a_progress_bar_is_labelled_with_the_agents_name_and_its_spend_against_a_budget():
    from kaizen_ray.runtime._progress import bar_label

    assert bar_label("swarm/w1", 0.5, None) == "swarm/w1"  # no budget: no cost in the label
    assert bar_label("swarm/w1", 0.5, {"max_cost": None}) == "swarm/w1"
    assert bar_label("a1", 0.256, {"max_cost": 2, "spent": 0.3}) == "a1 $0.26/$2.00"


def test_a_results_repr_is_a_dicts_until_a_value_is_huge_then_cut_with_its_size():
    small = run_result("a1", "completed", cycles=2, state={"notes": ["x", {"k": 1.5}]}, output="done")
    assert repr(small) == dict.__repr__(small)  # same text, same key order
    big = run_result("a1", "completed", state={"blob": bytes(8 << 20), "n": 1})
    text = repr(big)
    assert len(text) < 5000 and f"({8 << 20} bytes)" in text and "'n': 1" in text
    assert eval(repr(small)) == small  # noqa: S307 - the repr of a small result is still a dict literal

