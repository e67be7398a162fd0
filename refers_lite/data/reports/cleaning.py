"""Cleaning of free-text radiology reports before tokenisation.

The paper (Methods, "Datasets"/"Pre-training") keeps only the FINDINGS and IMPRESSION sections of a
report and drops reports with fewer than three tokens; :data:`MIN_TOKENS` and :func:`count_tokens`
implement that rule, :func:`clean_report` the text normalisation. The rules, applied in order:

1. Unicode NFKC normalisation (full-width forms, ligatures, non-breaking spaces -> plain ones).
2. Typographic quotes become ASCII (``‘’‚‛`` -> ``'``, ``“”„‟`` -> ``"``) and every dash or minus sign
   (``‐‑‒–—―−``) becomes ``-``.
3. Lower-case.
4. The de-identification placeholder becomes the single special token ``[ANON]`` of the report
   tokenizer, upper-case and bracketed, surrounded by spaces (``x-XXXX`` -> ``x - [ANON]``). A
   placeholder is a run of four or more ``x`` possibly joined to further runs by ``-``, ``/`` or
   spaces (``XXXX``, ``XXXX-XXXX``, ``XXXX XXXX``): in upper case wherever it occurs, even glued to
   a word (``4XXXX`` -> ``4 [ANON]``, ``XXXXpm`` -> ``[ANON] pm``: IU has a few); in any other case
   only as a whole word (``xxxx``, ``XxXx``); an ``[ANON]`` already there (any case) stays one, so
   cleaning is idempotent. This step runs before lower-casing (step 3).
5. Runs of the same sentence punctuation collapse to one (``..`` -> ``.``, ``,,`` -> ``,``).
6. Sentence punctuation ``. , ; : ? !`` and brackets ``( )`` become separate tokens, one space on
   each side; a ``.`` or ``,`` between two digits (``1.5 cm``, ``1,000``) stays inside its number.
7. Whitespace runs (spaces, tabs, new lines) become one space; no leading/trailing space.

Words themselves (``x-ray``, ``t-spine``, ``4/5``) are left intact. :func:`count_tokens` counts the
lower-case ``[a-z0-9]+`` tokens of a text, so ``[ANON]`` counts as one token (``anon``), just as the
raw ``XXXX`` it replaces counts as one (``xxxx``).
"""
from __future__ import annotations

import re
import unicodedata

MIN_TOKENS = 3  # the paper drops reports with fewer than three tokens
ANON_TOKEN = "[ANON]"  # must match report_tokenizer.SPECIAL_TOKENS

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
                         "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
                         "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-",
                         "\u2015": "-", "\u2212": "-"})
# A placeholder run: xxxx, optionally joined to more xxxx runs by -, / or blanks; not part of a longer word.
_ANON_RUN = re.compile(r"(?<![a-z0-9])x{4,}(?:[\s/-]+x{4,})*(?![a-z0-9])")
# Upper-case XXXX is never an English word: replaced even when glued to a word (4XXXX, XXXXpm).
_ANON_UPPER = re.compile(r"X{4,}(?:[\s/-]+X{4,})*")
_ANON_SENTINEL = "\x00"  # stands for [ANON] while punctuation is spaced (any NUL in the input becomes a space)
_REPEATED_PUNCT = re.compile(r"([.,;:?!])(?:\s*\1)+")
_PUNCT = re.compile(r"(?<!\d)([.,])|([.,])(?!\d)|([;:?!()])")
_TOKEN = re.compile(r"[a-z0-9]+")


def clean_report(text: str | None) -> str:
    """Normalise one report text (see the module docstring for the rules, in order)."""
    if not text:
        return ""
    t = unicodedata.normalize("NFKC", text).translate(_QUOTES).replace(_ANON_SENTINEL, " ")
    t = re.sub(r"\[anon\]", f" {_ANON_SENTINEL} ", t, flags=re.IGNORECASE)  # already cleaned: idempotent
    t = _ANON_UPPER.sub(f" {_ANON_SENTINEL} ", t)
    t = t.lower()
    t = _ANON_RUN.sub(f" {_ANON_SENTINEL} ", t)
    t = re.sub(rf"{_ANON_SENTINEL}(?:[\s/-]*{_ANON_SENTINEL})+", _ANON_SENTINEL, t)  # xxxx XXXX: one run
    t = _REPEATED_PUNCT.sub(r"\1", t)
    t = _PUNCT.sub(lambda m: f" {m.group(0)} ", t)
    # a hyphen glued to the placeholder (x-XXXX) becomes its own token
    t = re.sub(rf"-\s*{_ANON_SENTINEL}", f" - {_ANON_SENTINEL}", t)
    t = re.sub(rf"{_ANON_SENTINEL}\s*-", f"{_ANON_SENTINEL} - ", t)
    t = " ".join(t.split())
    return t.replace(_ANON_SENTINEL, ANON_TOKEN)


def count_tokens(text: str | None) -> int:
    """Number of lower-case ``[a-z0-9]+`` tokens (the unit of the paper's three-token rule)."""
    return len(_TOKEN.findall(text.lower())) if text else 0


def words(text: str | None) -> list[str]:
    """The lower-case ``[a-z0-9]+`` tokens themselves (what :func:`count_tokens` counts)."""
    return _TOKEN.findall(text.lower()) if text else []
