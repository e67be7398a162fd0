"""Report cleaning rules (refers_lite.data.reports.cleaning)."""
from hypothesis import given, settings, strategies as st

from refers_lite.data.reports.cleaning import ANON_TOKEN, MIN_TOKENS, clean_report, count_tokens
from refers_lite.data.reports.report_tokenizer import SPECIAL_TOKENS


def test_anon_token_is_a_tokenizer_special():
    assert ANON_TOKEN in SPECIAL_TOKENS and MIN_TOKENS == 3


def test_placeholder_runs_become_one_anon():
    assert clean_report("There are no XXXX of effusion.") == "there are no [ANON] of effusion ."
    assert clean_report("XXXX-XXXX stable") == "[ANON] stable"
    assert clean_report("the xxxx XXXX and XxXx/XXXX") == "the [ANON] and [ANON]"
    assert clean_report("Normal chest x-XXXX.") == "normal chest x - [ANON] ."
    assert clean_report("XXXX") == "[ANON]"
    assert clean_report(clean_report("no XXXX here.")) == "no [ANON] here ."  # idempotent
    assert clean_report("[anon] no [ANON] here") == "[ANON] no [ANON] here"
    assert clean_report("At 4XXXX, XXXXpm") == "at 4 [ANON] , [ANON] pm"  # upper-case runs even when glued
    # a word merely containing x's is not a placeholder
    assert clean_report("xxx and xxxxa") == "xxx and xxxxa"


def test_whitespace_and_punctuation():
    assert clean_report("  Heart   size\tnormal.\n\nLungs clear ,  ") == "heart size normal . lungs clear ,"
    assert clean_report("Normal.. Stable;unchanged (no change)!") == "normal . stable ; unchanged ( no change ) !"
    assert clean_report("nodule 1.5 cm, 1,000 cc") == "nodule 1.5 cm , 1,000 cc"
    assert clean_report("x-ray of T-spine 4/5") == "x-ray of t-spine 4/5"


def test_unicode_quotes_and_dashes():
    assert clean_report("\u201cClear\u201d \u2013 the patient\u2019s lungs\u2014ok") == "\"clear\" - the patient's lungs-ok"
    assert clean_report("no\u00a0effusion") == "no effusion"


def test_empty_inputs():
    assert clean_report("") == "" and clean_report(None) == "" and clean_report(" \n ") == ""
    assert count_tokens("") == 0 and count_tokens(None) == 0


def test_count_tokens():
    assert count_tokens("Normal chest x-XXXX.") == 4
    assert count_tokens("normal chest x - [ANON] .") == 4
    assert count_tokens("No acute disease") == 3
    assert count_tokens("...,;") == 0


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_clean_is_idempotent_and_tidy(text):
    once = clean_report(text)
    assert clean_report(once) == once
    assert once == once.strip() and "  " not in once
    assert once.replace(ANON_TOKEN, "") == once.replace(ANON_TOKEN, "").lower()
