"""Swap 'left' and 'right' in a report whose radiograph was flipped horizontally.

A horizontal flip turns the image of a patient into the image of a mirror patient, so the report
has to describe the mirror patient too: every *left* becomes *right* and vice versa.  The official
REFERS code did this with a plain ``str.replace`` chain, which also rewrote words that merely
contain a side word ('bright' -> 'bleft', 'copyright' -> 'copyleft').  Here a side word is only
swapped when it stands as a word of its own.

Rules
-----
* **Whole words only.**  The stem ``left`` / ``right`` must not be preceded by a word character
  (a Unicode letter, digit or underscore), so 'bright', 'copyright', 'brightness', 'upright',
  'outright' are never touched.
* **Derived forms that are swapped.**  The stem may be followed by nothing (end of word) or by one
  of the suffixes ``ward``, ``wards``, ``most`` and then the end of the word: 'leftward',
  'rightwards', 'leftmost'.  Hyphenated compounds are swapped because the hyphen ends the word:
  'left-sided' -> 'right-sided', 'left-to-right' -> 'right-to-left', 'right-hand' -> 'left-hand'.
  The suffix is kept exactly as written (any case: 'LEFTWARD' -> 'RIGHTWARD').
* **Derived forms that are not swapped.**  Any other continuation of the stem is a different word:
  'leftover', 'lefty', 'rightly', 'rights', 'rightful', 'righteous' stay as they are.  So do
  'left_lung' and 'left2' (underscore and digits are word characters).
* **Case.**  The stem's case pattern is kept: ``left`` -> ``right``, ``Left`` -> ``Right``,
  ``LEFT`` -> ``RIGHT`` (and back).  A stem in any other mixed case ('lEfT', 'RIght') is not an
  English spelling and is left alone; this keeps :func:`swap_sides` an exact involution
  (``swap_sides(swap_sides(t)) == t`` for every string ``t``), which the tests check.

Note the rule is lexical: 'left' in the sense of 'remained' ('nothing left in the field') is also
swapped.  Radiology reports almost never use that sense and the mirror text stays grammatical.
"""
from __future__ import annotations

import re

__all__ = ["SWAPPED_SUFFIXES", "has_side_words", "swap_sides"]

#: Suffixes after which the stem still counts as a side word ('leftward', 'rightmost').
SWAPPED_SUFFIXES: tuple[str, ...] = ("wards", "ward", "most")



def _any_case(word: str) -> str:
    """Regex for ``word`` in any ASCII case: 'most' -> '[Mm][Oo][Ss][Tt]'."""
    return "".join(f"[{c.upper()}{c.lower()}]" for c in word)


_SUFFIX = "|".join(_any_case(s) for s in SWAPPED_SUFFIXES)
# Explicit ASCII letter classes (no re.IGNORECASE): Unicode case folding would also let
# look-alike letters such as the dotless 'ı' match 'i'.
_STEM = _any_case("left") + "|" + _any_case("right")
_SIDE_RE = re.compile(rf"(?<!\w)(?P<stem>{_STEM})(?P<suffix>(?:{_SUFFIX})?)(?!\w)")
_OTHER = {"left": "right", "right": "left"}


def _recase(word: str, like: str) -> str | None:
    """``word`` (lower case) in the case pattern of ``like``; None for a mixed-case ``like``."""
    if like.islower():
        return word
    if like.isupper():
        return word.upper()
    if like[0].isupper() and like[1:].islower():
        return word.capitalize()
    return None


def _swap_match(m: re.Match[str]) -> str:
    stem = m.group("stem")
    swapped = _recase(_OTHER[stem.lower()], stem)
    if swapped is None:
        return m.group(0)
    return swapped + m.group("suffix")


def swap_sides(text: str) -> str:
    """Swap 'left' and 'right' (whole words and the derived forms listed in the module doc)."""
    return _SIDE_RE.sub(_swap_match, text)


def has_side_words(text: str) -> bool:
    """True when ``text`` holds a side word that :func:`swap_sides` would swap."""
    return any(_recase("x", m.group("stem")) is not None for m in _SIDE_RE.finditer(text))
