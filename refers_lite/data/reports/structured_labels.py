"""Structured labels from MeSH tags and from free text (IU X-ray), for the LSP baseline.

The IU X-ray reports carry MeSH ``<major>`` tags written by annotators, e.g.
``Cardiomegaly/mild``, ``Opacity/lung/base/right/mild`` or ``normal``.  REFERS compares its
report-supervised pre-training with label-supervised pre-training (LSP) on such "human-assisted
structured labels"; this module turns tags into a fixed multi-hot vocabulary, and extracts the same
vocabulary from free text so that generated reports can be scored against it.

MeSH tags (:func:`parse_mesh`)
------------------------------
A tag is ``head/qualifier/qualifier/...``.  The head is the finding; each qualifier is sorted
into one slot by fixed word lists: side (left, right, bilateral), zone (base, apex, upper/middle/
lower lobe, lingula, hilum, retrocardiac, ...), severity (mild, moderate, severe, small, large,
borderline, ...), or the remaining ``qualifiers`` (anatomical site and descriptors: lung, pleura,
ribs, streaky, enlarged, ...).  The first qualifier of a slot wins; later ones go to
``qualifiers``.  Whitespace is collapsed, qualifiers are lower-cased, empty parts (extra slashes)
are dropped; the head keeps its case.

Label vocabulary and synonym map
--------------------------------
:data:`LABELS` has 15 findings close to ChestX-ray14 / CheXpert classes, plus ``normal``.  A tag
maps to a label by its head (:data:`MESH_SYNONYMS`, compared case-insensitively) or, for a few
generic heads, by head plus a required qualifier (:data:`MESH_CONDITIONAL`).  Merges:

* ``airspace_opacity``: Opacity, Airspace Disease, Consolidation, Pneumonia, Infiltrate, Density
  (ChestX-ray14's Infiltration/Consolidation/Pneumonia and CheXpert's Lung Opacity in one class:
  the IU annotators use these heads interchangeably for the same appearance).
* ``granuloma``: Calcified Granuloma, Granuloma, Granulomatous Disease.
* ``emphysema``: Emphysema, Pulmonary Emphysema, Bullous Emphysema, Pulmonary Disease, Chronic
  Obstructive (not Subcutaneous/Mediastinal Emphysema, which are air outside the lung).
* ``edema``: Pulmonary Edema, Pulmonary Congestion, Heart Failure.
* ``pleural_effusion``: Pleural Effusion, Hydropneumothorax, Hemothorax (+ ``pneumothorax`` for
  the pneumothorax compounds).
* ``fibrosis``: Cicatrix (scar), Pulmonary Fibrosis, Fibrosis, Lung Diseases, Interstitial.
* ``support_device``: Catheters, Indwelling, Implanted Medical Device, Medical Device, Tube,
  Inserted, Stents, Surgical Instruments (clips, sternotomy wires), Sutures.
* Conditional: Cardiac Shadow + enlarged -> cardiomegaly; Thickening + pleura -> pleural_thickening.

Heads outside the map (Lung/hypoinflation, Aorta/tortuous, Spine, Calcinosis, ...) give no label.
``normal`` is set exactly when no finding label is set ("no finding within this vocabulary", like
CheXpert's No Finding), both for tags and for text, so the two stay comparable.

Labels from text (:func:`labels_from_text`)
-------------------------------------------
1. The text is lower-cased and split into sentences (``.``, ``;``, ``?``, ``!``, newlines) and
   each sentence into clauses at contrast words (``but``, ``however``, ``although``, ``though``,
   ``except``, ``whereas``, ``otherwise``) -- negation never crosses a clause boundary, while
   lists ('no pneumothorax, effusion, or consolidation') stay inside one clause.
2. Each label has regular-expression phrases (:data:`TEXT_PATTERNS`, synonyms included, e.g.
   'cardiomegaly', 'heart is enlarged'; 'scarring'; 'pacemaker', 'sternotomy wires').  A few
   phrases are removed first because they contain a finding word without meaning it
   (:data:`_MASKS`: 'calcified nodule' is a granuloma, 'subcutaneous emphysema', 'heart failure'
   in a history, 'nodular' ...).
3. A match is **negated** when, inside its clause, a pre-negation cue comes before it ('no',
   'not', 'without', 'negative for', 'no evidence of', 'free of', 'clear of', 'resolution of',
   'removal of', 'rule out', 'resolved', 'absence of'; searched up to the end of the match, so
   'heart is not enlarged' is negated) or a post-negation cue follows it ('has
   resolved', 'is not seen', 'not identified', 'are absent', 'removed', ...).  A label is positive
   when at least one of its matches is not negated.  Hedged mentions ('possible', 'may
   represent', 'cannot exclude') count as positive, as the IU annotators tagged them.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = [
    "LABELS",
    "MESH_CONDITIONAL",
    "MESH_SYNONYMS",
    "TEXT_PATTERNS",
    "MeshTag",
    "label_agreement",
    "labels_from_mesh",
    "labels_from_mesh_batch",
    "labels_from_text",
    "labels_from_texts",
    "mesh_label_names",
    "parse_mesh",
]

# ----------------------------------------------------------------------------------- MeSH tags

SIDES: dict[str, str] = {"left": "left", "right": "right", "bilateral": "bilateral",
                         "both": "bilateral"}
ZONES: frozenset[str] = frozenset({
    "base", "apex", "upper lobe", "middle lobe", "lower lobe", "lingula", "hilum", "retrocardiac",
    "paratracheal", "costophrenic angle", "cardiophrenic angle", "azygos lobe", "sulcus",
    "supracardiac", "pleural sinus", "multilobar",
})
SEVERITIES: frozenset[str] = frozenset({
    "mild", "moderate", "severe", "small", "large", "borderline", "minimal", "marked", "trace",
})


@dataclass(frozen=True)
class MeshTag:
    """One parsed MeSH major tag, e.g. ``Opacity/lung/base/right/mild``."""

    finding: str
    side: str | None = None
    zone: str | None = None
    severity: str | None = None
    qualifiers: tuple[str, ...] = field(default_factory=tuple)


def _clean(part: str) -> str:
    return " ".join(part.split())


def parse_mesh(tag: str) -> MeshTag:
    """Parse ``head/qualifier/...`` (see module doc).  Never raises on a string input."""
    parts = [_clean(p) for p in str(tag).split("/")]
    parts = [p for p in parts if p]
    if not parts:
        return MeshTag(finding="")
    head, rest = parts[0], [p.lower() for p in parts[1:]]
    side = zone = severity = None
    others: list[str] = []
    for q in rest:
        if q in SIDES and side is None:
            side = SIDES[q]
        elif q in ZONES and zone is None:
            zone = q
        elif q in SEVERITIES and severity is None:
            severity = q
        else:
            others.append(q)
    return MeshTag(head, side, zone, severity, tuple(others))


# ------------------------------------------------------------------------------ vocabulary

LABELS: tuple[str, ...] = (
    "cardiomegaly",
    "pleural_effusion",
    "atelectasis",
    "airspace_opacity",
    "nodule",
    "mass",
    "granuloma",
    "emphysema",
    "edema",
    "pneumothorax",
    "fracture",
    "hernia",
    "pleural_thickening",
    "fibrosis",
    "support_device",
    "normal",
)
LABEL_INDEX: dict[str, int] = {name: i for i, name in enumerate(LABELS)}
NORMAL: int = LABEL_INDEX["normal"]

#: MeSH head (lower case, whitespace collapsed) -> labels.
MESH_SYNONYMS: dict[str, tuple[str, ...]] = {
    "cardiomegaly": ("cardiomegaly",),
    "pleural effusion": ("pleural_effusion",),
    "hydropneumothorax": ("pleural_effusion", "pneumothorax"),
    "hemopneumothorax": ("pleural_effusion", "pneumothorax"),
    "hemothorax": ("pleural_effusion",),
    "pulmonary atelectasis": ("atelectasis",),
    "opacity": ("airspace_opacity",),
    "airspace disease": ("airspace_opacity",),
    "consolidation": ("airspace_opacity",),
    "pneumonia": ("airspace_opacity",),
    "infiltrate": ("airspace_opacity",),
    "density": ("airspace_opacity",),
    "nodule": ("nodule",),
    "mass": ("mass",),
    "calcified granuloma": ("granuloma",),
    "granuloma": ("granuloma",),
    "granulomatous disease": ("granuloma",),
    "emphysema": ("emphysema",),
    "pulmonary emphysema": ("emphysema",),
    "bullous emphysema": ("emphysema",),
    "pulmonary disease, chronic obstructive": ("emphysema",),
    "pulmonary edema": ("edema",),
    "pulmonary congestion": ("edema",),
    "heart failure": ("edema",),
    "pneumothorax": ("pneumothorax",),
    "fractures, bone": ("fracture",),
    "hernia, hiatal": ("hernia",),
    "hernia, diaphragmatic": ("hernia",),
    "cicatrix": ("fibrosis",),
    "pulmonary fibrosis": ("fibrosis",),
    "fibrosis": ("fibrosis",),
    "lung diseases, interstitial": ("fibrosis",),
    "catheters, indwelling": ("support_device",),
    "implanted medical device": ("support_device",),
    "medical device": ("support_device",),
    "tube, inserted": ("support_device",),
    "stents": ("support_device",),
    "surgical instruments": ("support_device",),
    "sutures": ("support_device",),
}

#: (MeSH head, qualifier that must be present) -> labels, for generic heads.
MESH_CONDITIONAL: dict[tuple[str, str], tuple[str, ...]] = {
    ("cardiac shadow", "enlarged"): ("cardiomegaly",),
    ("thickening", "pleura"): ("pleural_thickening",),
}


def mesh_label_names(tag: str | MeshTag) -> tuple[str, ...]:
    """Finding labels of one tag (empty for 'normal' and unmapped heads)."""
    t = tag if isinstance(tag, MeshTag) else parse_mesh(tag)
    head = t.finding.lower()
    names = list(MESH_SYNONYMS.get(head, ()))
    quals = set(t.qualifiers) | {q for q in (t.side, t.zone, t.severity) if q}
    for (h, q), extra in MESH_CONDITIONAL.items():
        if h == head and q in quals:
            names.extend(extra)
    return tuple(dict.fromkeys(names))


def _finish(vec: np.ndarray) -> np.ndarray:
    vec[NORMAL] = 0.0 if vec[:NORMAL].any() else 1.0
    return vec


def labels_from_mesh(tags: Iterable[str]) -> np.ndarray:
    """Multi-hot float32 vector of shape (len(LABELS),); ``normal`` iff no finding is set."""
    vec = np.zeros(len(LABELS), dtype=np.float32)
    for tag in tags:
        for name in mesh_label_names(tag):
            vec[LABEL_INDEX[name]] = 1.0
    return _finish(vec)


def labels_from_mesh_batch(tag_lists: Sequence[Iterable[str]]) -> np.ndarray:
    """(n, len(LABELS)) stack of :func:`labels_from_mesh`."""
    out = np.zeros((len(tag_lists), len(LABELS)), dtype=np.float32)
    for i, tags in enumerate(tag_lists):
        out[i] = labels_from_mesh(tags)
    return out


# ------------------------------------------------------------------------------------ text

_HEART = r"(?:heart|cardiac (?:silhouette|size|shadow|contour)s?|cardiomediastinal (?:silhouette|contour)s?|heart size)"
#: label -> regular expressions (applied to lower-cased text).
TEXT_PATTERNS: dict[str, tuple[str, ...]] = {
    "cardiomegaly": (
        r"\bcardiomegaly\b",
        rf"\b{_HEART}\b[^,]*?\b(?:is |are |appears |remains |)(?:\w+ )?(?:enlarged|enlargement|large)\b",
        r"\benlarge(?:d|ment of the) (?:heart|cardiac)",
    ),
    "pleural_effusion": (r"\beffusions?\b", r"\bhydropneumothora(?:x|ces)\b", r"\bhemothorax\b"),
    "atelectasis": (r"\batelecta(?:sis|tic|ses)\b", r"\bcollapse\b"),
    "airspace_opacity": (
        r"\bopacit(?:y|ies|ification)\b", r"\bconsolidat(?:ion|ions|ive)\b", r"\bpneumonias?\b",
        r"\binfiltrates?\b", r"\bairspace disease\b", r"\bair space disease\b",
        r"\bdensit(?:y|ies)\b", r"\bpneumonitis\b",
    ),
    "nodule": (r"\bnodules?\b", r"\bnodular opacit",),
    "mass": (r"\bmass(?:es)?\b",),
    "granuloma": (r"\bgranulomas?\b", r"\bgranulomatous\b", r"\bcalcified nodules?\b"),
    "emphysema": (r"\bemphysema(?:tous)?\b", r"\bcopd\b", r"\bchronic obstructive\b", r"\bbullae\b",
                  r"\bbullous\b"),
    "edema": (r"\bedema\b", r"\bcongestion\b", r"\bcongestive\b", r"\bchf\b"),
    "pneumothorax": (r"\bpneumothora(?:x|ces)\b", r"\bhydropneumothorax\b"),
    "fracture": (r"\bfractures?\b", r"\bfx\b"),
    "hernia": (r"\bhernias?\b",),
    "pleural_thickening": (r"\bpleural thickening\b", r"\bthickening of the pleura\b",
                           r"\bpleural(?:-| )parenchymal thickening\b", r"\bpleural scarring\b"),
    "fibrosis": (r"\bscar(?:s|ring|red)?\b", r"\bfibro(?:sis|tic)\b", r"\bcicatri",
                 r"\binterstitial (?:lung )?disease\b"),
    "support_device": (
        r"\bcatheters?\b", r"\bpacemaker\b", r"\bpacer\b", r"\bdefibrillator\b", r"\baicd\b",
        r"\bicd\b", r"\bport-?a-?cath\b", r"\bports?\b", r"\bpicc\b", r"\b(?:central|venous) line\b",
        r"\btubes?\b", r"\bstents?\b", r"\bclips?\b", r"\bsternotomy wires?\b", r"\bwires\b",
        r"\bleads?\b", r"\bhardware\b", r"\bprosthe(?:sis|tic)\b", r"\bvalve replacement\b",
        r"\bsutures?\b", r"\bdevices?\b", r"\bfixation\b", r"\bsternotomy\b",
    ),
}

#: Phrases blanked out before matching: they hold a finding word without meaning that finding.
_MASKS: tuple[str, ...] = (
    r"\bsubcutaneous emphysema\b", r"\bmediastinal emphysema\b", r"\bhistory of [^,.]*",
    r"\bno (?:definite )?(?:focal )?(?:radiographic |radiologic )?evidence of disease\b",
    r"\bdensity of (?:the )?bones?\b", r"\bbone density\b", r"\bsoft tissue density\b",
    r"\bmass effect\b", r"\bnipple shadows?\b", r"\bnodular\b(?! opacit)", r"\bxxxx\b",
    r"\bfollow-?up\b",
)
_MASK_RE = re.compile("|".join(_MASKS))
_GRANULOMA_NOT_NODULE = re.compile(r"\bcalcified nodules?\b")

_PRE_NEG = re.compile(
    r"\b(?:no|not|without|negative for|free of|clear of|resolution of|resolved|removal of|"
    r"rule out|ruled out|r/o|absence of|absent|nor|never|neither|interval resolution)\b"
)
_POST_NEG = re.compile(
    r"^[^,]*?\b(?:ha(?:s|ve) resolved|resolved|(?:is|are|was|were) (?:not|no longer)"
    r"|not (?:seen|identified|present|visualized|demonstrated|evident)|(?:is|are) absent"
    r"|removed|has cleared|have cleared)\b"
)
_SENTENCE_SPLIT = re.compile(r"[.;?!\n]+(?:\s|$)|[;\n]")
_CLAUSE_SPLIT = re.compile(r"\b(?:but|however|although|though|except|whereas|otherwise)\b")
_COMPILED: dict[str, tuple[re.Pattern[str], ...]] = {
    name: tuple(re.compile(p) for p in pats) for name, pats in TEXT_PATTERNS.items()
}


def _clauses(text: str) -> list[str]:
    out: list[str] = []
    for sentence in _SENTENCE_SPLIT.split(text.lower()):
        out.extend(c for c in _CLAUSE_SPLIT.split(sentence) if c.strip())
    return out


def _negated(clause: str, start: int, end: int) -> bool:
    # Pre-negation cues are looked for up to the end of the match, so that a cue inside a
    # multi-word match ('heart is not enlarged') negates it too.
    return bool(_PRE_NEG.search(clause, 0, end)) or bool(_POST_NEG.search(clause[end:]))


def labels_from_text(text: str) -> np.ndarray:
    """Multi-hot float32 vector (len(LABELS),) read from free text (rules in the module doc)."""
    vec = np.zeros(len(LABELS), dtype=np.float32)
    for clause in _clauses(text or ""):
        # 'calcified nodule' is read as a granuloma, not a nodule: keep it for granuloma only.
        masked = _MASK_RE.sub(lambda m: " " * len(m.group(0)), clause)
        no_calc = _GRANULOMA_NOT_NODULE.sub(lambda m: " " * len(m.group(0)), masked)
        for name, patterns in _COMPILED.items():
            idx = LABEL_INDEX[name]
            if vec[idx]:
                continue
            target = masked if name == "granuloma" else no_calc
            for pat in patterns:
                if any(not _negated(target, m.start(), m.end()) for m in pat.finditer(target)):
                    vec[idx] = 1.0
                    break
    return _finish(vec)


def labels_from_texts(texts: Sequence[str]) -> np.ndarray:
    """(n, len(LABELS)) stack of :func:`labels_from_text` for many texts."""
    out = np.zeros((len(texts), len(LABELS)), dtype=np.float32)
    for i, text in enumerate(texts):
        out[i] = labels_from_text(text)
    return out


# ------------------------------------------------------------------------------- agreement

def label_agreement(mesh_lists: Sequence[Iterable[str]], texts: Sequence[str]) -> pd.DataFrame:
    """Per-label agreement of the text extractor with the MeSH-derived labels.

    Columns: support (MeSH positives), text_positive, true_positive, precision, recall, f1;
    one row per label plus a ``macro`` row (unweighted mean of precision/recall/F1 over the labels
    with support > 0, ``normal`` included; support and counts summed).  Precision is NaN where nothing is predicted.
    """
    if len(mesh_lists) != len(texts):
        raise ValueError("mesh_lists and texts must have the same length")
    y = labels_from_mesh_batch(mesh_lists).astype(bool)
    p = labels_from_texts(texts).astype(bool)
    support = y.sum(0)
    pred = p.sum(0)
    tp = (y & p).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(pred > 0, tp / np.maximum(pred, 1), np.nan)
        recall = np.where(support > 0, tp / np.maximum(support, 1), np.nan)
        f1 = np.where(support + pred > 0, 2 * tp / np.maximum(support + pred, 1), np.nan)
    df = pd.DataFrame(
        {"support": support, "text_positive": pred, "true_positive": tp,
         "precision": precision, "recall": recall, "f1": f1},
        index=pd.Index(LABELS, name="label"),
    )
    present = df[df["support"] > 0]
    df.loc["macro"] = [
        present["support"].sum(), present["text_positive"].sum(), present["true_positive"].sum(),
        present["precision"].mean(), present["recall"].mean(), present["f1"].mean(),
    ]
    return df
