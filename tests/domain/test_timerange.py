"""TimeRange: the spec's grammar, canonical rendering, and the algebra, with mediatimestamp as
an oracle where the two agree (they differ on exclusive instants: AppNote 0012 says empty)."""

from __future__ import annotations

import re

import mediatimestamp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tamstore.domain.timerange import (
    _TIMERANGE_RE,
    InvalidTimeRange,
    TimeRange,
    _ns,
    format_timestamp,
    parse_timestamp,
    segment_timerange,
)

SPEC_RE = re.compile(
    r"^(\[|\()?(-?(0|[1-9][0-9]*):(0|[1-9][0-9]{0,8}))?(_(-?(0|[1-9][0-9]*):(0|[1-9][0-9]{0,8}))?)?(\]|\))?$"
)

CANONICAL = [
    ("[0:0_10:0)", "[0:0_10:0)"),
    ("(5:0_", "(5:0_"),
    ("_10:0)", "_10:0)"),
    ("_", "_"),
    ("[_]", "_"),
    ("(_)", "_"),
    ("()", "()"),
    ("", "()"),
    ("[", "()"),
    ("[]", "()"),
    ("[10:0]", "[10:0]"),
    ("10:0", "[10:0]"),
    ("[10:0_10:0]", "[10:0]"),
    ("0:0_10:0", "[0:0_10:0]"),
    ("[10:0)", "()"),
    ("(10:0]", "()"),
    ("(10:0)", "()"),
    ("[5:0_3:0]", "()"),
    ("[5:0_5:0)", "()"),
    ("[-1:500000000_0:0)", "[-1:500000000_0:0)"),
    ("[1:5_2:0)", "[1:5_2:0)"),
    ("(0:0_1:0]", "(0:0_1:0]"),
]


@pytest.mark.parametrize(("text", "canonical"), CANONICAL, ids=[c[0] or "empty-string" for c in CANONICAL])
def test_canonical_rendering(text: str, canonical: str) -> None:
    assert TimeRange.from_str(text).to_str() == canonical


@pytest.mark.parametrize(
    "text",
    [
        "bad",
        "1:05",
        "[0:0_1:0_2:0)",
        "[00:0_1:0)",
        "[0.5:0_1:0)",
        "[0:1000000000_1:0)",
        "[0:0__1:0)",
        "-:0",
        "[ 0:0_1:0)",
    ],
)
def test_rejects_what_the_spec_regex_rejects(text: str) -> None:
    assert SPEC_RE.match(text) is None
    with pytest.raises(InvalidTimeRange):
        TimeRange.from_str(text)


@pytest.mark.parametrize("text", ["[0:0_1:0)\n", "1:0\n", "_\n"])
def test_rejects_a_trailing_newline(text: str) -> None:
    # Python's "$" would let it through; JSON Schema's ECMA-262 "$" does not.
    with pytest.raises(InvalidTimeRange):
        TimeRange.from_str(text) if "_" in text else parse_timestamp(text)


def test_timestamps_are_integer_nanoseconds() -> None:
    assert parse_timestamp("1:5") == 1_000_000_005
    assert parse_timestamp("-1:500000000") == -1_500_000_000
    assert parse_timestamp("-0:0") == 0
    assert format_timestamp(-500_000_000) == "-0:500000000"
    assert format_timestamp(0) == "0:0"


def test_adjacent_segments_do_not_overlap_but_inclusive_ends_do() -> None:
    a = TimeRange.from_str("[0:0_1:0)")
    b = TimeRange.from_str("[1:0_2:0)")
    assert not a.overlaps(b)
    assert TimeRange.from_str("[0:0_1:0]").overlaps(b)
    assert not TimeRange.never().overlaps(TimeRange.eternity())


def test_exclusive_start_means_the_next_nanosecond() -> None:
    assert TimeRange.from_str("(0:0_1:0)").start == 1
    assert TimeRange.from_str("(0:0_0:1)").is_empty()
    assert TimeRange.from_str("(0:0_0:1]").to_str() == "(0:0_0:1]"


def test_containment_and_intersection() -> None:
    whole = TimeRange.from_str("[0:0_10:0)")
    assert whole.contains(TimeRange.from_str("[2:0_3:0)"))
    assert not whole.contains(TimeRange.from_str("[9:0_10:0]"))
    assert whole.contains(TimeRange.never())
    assert TimeRange.eternity().contains(whole)
    assert whole.intersect(TimeRange.from_str("[5:0_")).to_str() == "[5:0_10:0)"
    assert whole.intersect(TimeRange.from_str("[20:0_")).is_empty()


def test_union_span_keeps_each_ends_brackets() -> None:
    a = TimeRange.from_str("[0:0_1:0)")
    b = TimeRange.from_str("[1:0_2:0)")
    assert a.extend_to_encompass(b).to_str() == "[0:0_2:0)"
    assert b.extend_to_encompass(TimeRange.from_str("[5:0]")).to_str() == "[1:0_5:0]"


def test_eternity_and_never_are_single_values() -> None:
    assert TimeRange.from_str("[_]") == TimeRange.eternity()
    assert TimeRange.from_str("[5:0_3:0)") == TimeRange.never() == TimeRange.from_str("")
    assert hash(TimeRange.from_str("()")) == hash(TimeRange.never())


# -- properties ---------------------------------------------------------------------------------

nanos = st.integers(min_value=-(10**15), max_value=10**15)
bounds = st.one_of(st.none(), nanos)


@st.composite
def timeranges(draw: st.DrawFn) -> TimeRange:
    return TimeRange.from_bounds(
        draw(bounds),
        draw(bounds),
        start_inclusive=draw(st.booleans()),
        end_inclusive=draw(st.booleans()),
    )


@given(timeranges())
def test_rendering_round_trips_and_matches_the_spec_regex(tr: TimeRange) -> None:
    text = tr.to_str()
    assert SPEC_RE.match(text)
    assert TimeRange.from_str(text) == tr


@given(st.from_regex(SPEC_RE.pattern.replace("$", r"\Z"), fullmatch=True))
def test_a_parsed_range_renders_as_if_rendered_afresh(text: str) -> None:
    """from_str keeps the text of an already-canonical range instead of rendering it again;
    whatever was written, what comes out is what a fresh rendering of the value gives. (The
    grammar allows any count of seconds; beyond 64-bit nanoseconds it is refused, never wrapped.)"""
    try:
        tr = TimeRange.from_str(text)
    except InvalidTimeRange as exc:
        assert "64-bit" in str(exc)
        return
    assert tr.to_str() == tr._render()


@pytest.mark.parametrize(
    "text",
    ["[9223372036:854775808_)", "(_9223372036:854775807]", "[-9223372036:854775808_0:0)", "[" + "9" * 5000 + ":0_)"],
)
def test_timestamps_beyond_64_bit_nanoseconds_are_refused(text: str) -> None:
    with pytest.raises(InvalidTimeRange, match="64-bit"):
        TimeRange.from_str(text)
    assert TimeRange.from_str("[9223372036:854775806_)").start == 2**63 - 2


def test_a_segment_range_keeps_its_text_and_others_are_rendered() -> None:
    assert TimeRange.from_str("[10:0_11:0)")._text == "[10:0_11:0)"  # kept, as written
    assert TimeRange.from_str("[-0:0_1:0)").to_str() == "[0:0_1:0)"
    assert TimeRange.from_str("[1:0_)").to_str() == "[1:0_"


@given(
    st.integers(0, 10**11),
    st.integers(0, 999_999_999),
    st.integers(0, 10**11),
    st.integers(0, 999_999_999),
)
def test_the_segment_form_fast_path_agrees_with_the_grammar(a: int, an: int, b: int, bn: int) -> None:
    """``segment_timerange`` (the ``[s:ns_s:ns)`` of nearly every segment) gives what the
    general grammar gives, or None and leaves the text to it: empty, beyond 64-bit, 11 digits."""
    text = f"[{a}:{an}_{b}:{bn})"
    fast = segment_timerange(text)
    general = _general(text)
    if fast is None:
        assert general is None or general.is_empty() or len(str(a)) > 10 or len(str(b)) > 10
    else:
        assert fast == general and fast.to_str() == general.to_str() == text
        assert not fast.start_exclusive and not fast.end_inclusive


def test_the_segment_form_fast_path_leaves_other_forms_alone() -> None:
    for text in [
        "[1:0_2:0]",
        "(1:0_2:0)",
        "[-1:0_2:0)",
        "[01:0_2:0)",
        "[2:0_1:0)",
        "[9223372036:854775807_9223372037:0)",
    ]:
        assert segment_timerange(text) is None
    assert segment_timerange("[9223372036:854775805_9223372036:854775806)").end == 2**63 - 2  # type: ignore[union-attr]


def _general(text: str) -> TimeRange | None:
    """The grammar's reading of ``text`` without the fast path (None: refused)."""
    try:
        m = _TIMERANGE_RE.match(text)
        assert m is not None
        _, s_sign, s_secs, s_nanos, _, e_sign, e_secs, e_nanos, _ = m.groups()
        return TimeRange.from_bounds(_ns(s_sign, s_secs, s_nanos), _ns(e_sign, e_secs, e_nanos))
    except InvalidTimeRange:
        return None


@given(timeranges(), timeranges())
def test_overlap_is_non_empty_intersection(a: TimeRange, b: TimeRange) -> None:
    assert a.overlaps(b) == (not a.intersect(b).is_empty())
    assert a.overlaps(b) == b.overlaps(a)


@given(timeranges(), timeranges())
def test_union_span_contains_both(a: TimeRange, b: TimeRange) -> None:
    span = a.extend_to_encompass(b)
    assert span.contains(a) and span.contains(b)


@given(timeranges(), nanos)
def test_agrees_with_mediatimestamp(tr: TimeRange, probe: int) -> None:
    """mediatimestamp is BBC's reference library; where it can express the range, both agree."""
    text = tr.to_str()
    theirs = mediatimestamp.TimeRange.from_str(text)
    assert theirs.is_empty() == tr.is_empty()
    ts = mediatimestamp.Timestamp.from_str(format_timestamp(probe))
    assert theirs.contains_subrange(mediatimestamp.TimeRange.from_single_timestamp(ts)) == tr.contains_timestamp(probe)
    assert TimeRange.from_str(theirs.to_sec_nsec_range()) == tr or tr.is_empty()


def test_mediatimestamp_differs_on_exclusive_instants() -> None:
    """Documented difference: mediatimestamp reads ``[10:0)`` as an instant; the spec says empty."""
    assert not mediatimestamp.TimeRange.from_str("[10:0)").is_empty()
    assert TimeRange.from_str("[10:0)").is_empty()


def test_equality_is_by_value_not_by_brackets() -> None:
    a, b = TimeRange.from_str("[0:0_1:0)"), TimeRange.from_str("[0:0_0:999999999]")
    assert a == b and hash(a) == hash(b) and a.to_str() != b.to_str()
    assert TimeRange.from_str("(0:0_1:0)") == TimeRange.from_str("[0:1_1:0)")
    assert TimeRange.from_str("[1:0_0:0)") == TimeRange.never() == TimeRange.from_str("()")
