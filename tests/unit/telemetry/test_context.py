"""W3C trace context on the loop: which traceparent is continued, and how a new trace is sampled."""

from __future__ import annotations

import pytest

from addon.telemetry import context

TRACE, PARENT = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


def test_a_valid_traceparent_is_continued_with_its_sampled_flag_and_tracestate() -> None:
    ids = context.start(f"00-{TRACE}-{PARENT}-01", "vendor=x", context.ratio_bound_of(0.0))
    assert (ids.trace_id, ids.parent_id, ids.sampled, ids.tracestate) == (int(TRACE, 16), int(PARENT, 16), True,
                                                                          "vendor=x")
    assert ids.span_id != ids.parent_id
    assert ids.traceparent() == f"00-{TRACE}-{ids.span_id:016x}-01"
    unsampled = context.start(f"00-{TRACE}-{PARENT}-00", None, context.ratio_bound_of(1.0))
    assert not unsampled.sampled and unsampled.traceparent().endswith("-00")  # the caller's decision wins


@pytest.mark.parametrize("header", [
    "", "garbage", f"00-{'0' * 32}-{PARENT}-01", f"00-{TRACE}-{'0' * 16}-01", f"ff-{TRACE}-{PARENT}-01",
    f"00-{TRACE}-{PARENT}-01-extra", f"00-{TRACE[:-1]}-{PARENT}-01",
])
def test_an_invalid_traceparent_starts_a_new_trace(header: str) -> None:
    ids = context.start(header, "vendor=x", context.ratio_bound_of(1.0))
    assert ids.parent_id == 0 and ids.trace_id != int(TRACE, 16) and ids.sampled and ids.tracestate == ""


def test_a_later_version_may_carry_more_fields() -> None:
    assert context.parse_traceparent(f"01-{TRACE}-{PARENT}-01-more") == (int(TRACE, 16), int(PARENT, 16), True)


def test_new_traces_are_kept_by_ratio() -> None:
    assert not any(context.start(None, None, context.ratio_bound_of(0.0)).sampled for _ in range(200))
    assert all(context.start(None, None, context.ratio_bound_of(1.0)).sampled for _ in range(200))
    kept = sum(context.start(None, None, context.ratio_bound_of(0.5)).sampled for _ in range(4000))
    assert 1600 < kept < 2400
