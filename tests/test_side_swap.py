"""Left/right swapping for horizontally flipped studies (refers_lite.data.reports.side_swap)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refers_lite.data.reports.side_swap import has_side_words, swap_sides


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("left", "right"),
        ("right", "left"),
        ("Left", "Right"),
        ("RIGHT", "LEFT"),
        ("Small left pleural effusion.", "Small right pleural effusion."),
        ("Right lower lobe opacity; left base clear.", "Left lower lobe opacity; right base clear."),
        ("left-sided chest tube", "right-sided chest tube"),
        ("Right-sided aortic arch", "Left-sided aortic arch"),
        ("mediastinal shift leftward", "mediastinal shift rightward"),
        ("trachea deviated rightwards", "trachea deviated leftwards"),
        ("the leftmost rib", "the rightmost rib"),
        ("left-to-right shunt", "right-to-left shunt"),
        ("LEFTWARD", "RIGHTWARD"),
        ("(left)", "(right)"),
        ("left/right", "right/left"),
        ("L: left, R: right.", "L: right, R: left."),
    ],
)
def test_examples(text: str, expected: str) -> None:
    assert swap_sides(text) == expected
    assert swap_sides(expected) == text


@pytest.mark.parametrize(
    "text",
    [
        "bright",
        "Brightness of the lung fields",
        "copyright 2012",
        "leftover contrast",
        "upright PA view",
        "outright",
        "rightly",
        "rights",
        "righteous",
        "lefty",
        "left_lung",
        "right2",
        "lEfT",  # mixed case is not an English spelling: left alone
        "éleft",
    ],
)
def test_non_side_words_untouched(text: str) -> None:
    assert swap_sides(text) == text
    assert not has_side_words(text)


def test_official_code_bug_is_gone() -> None:
    assert swap_sides("bright left apex") == "bright right apex"


def test_has_side_words() -> None:
    assert has_side_words("Left lung clear")
    assert has_side_words("a right-sided catheter")
    assert has_side_words("shift leftward")
    assert not has_side_words("No acute cardiopulmonary abnormality.")
    assert not has_side_words("")


_SIDE_WORDS = [
    "left", "right", "Left", "Right", "LEFT", "RIGHT", "lEfT", "leftward", "Rightwards",
    "leftmost", "left-sided", "bright", "leftover", "copyright", "brightness", "upright",
    "rightly", "lefty", "RIGHTMOST",
]
_PIECES = st.one_of(
    st.sampled_from(_SIDE_WORDS),
    st.text(alphabet="abcdefghilmnorstwxyzLRT_-", min_size=1, max_size=8),
    st.sampled_from([" ", "  ", "-", "/", ",", ".", ";", "(", ")", "\n", "'", "é", "_", "2"]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=30).map("".join))
def test_involution_on_mixed_text(text: str) -> None:
    assert swap_sides(swap_sides(text)) == text


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_involution_on_arbitrary_text(text: str) -> None:
    assert swap_sides(swap_sides(text)) == text


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=30).map("".join))
def test_swap_changes_text_iff_has_side_words(text: str) -> None:
    assert (swap_sides(text) != text) == has_side_words(text)
    assert has_side_words(swap_sides(text)) == has_side_words(text)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_text_without_side_words_unchanged(text: str) -> None:
    if not has_side_words(text):
        assert swap_sides(text) == text


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="lLrR")))
def test_text_without_l_or_r_unchanged(text: str) -> None:
    assert swap_sides(text) == text
    assert not has_side_words(text)
