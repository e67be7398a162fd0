"""How good are the reports REFERS writes? (Task 1, Eq. 1, measured on held-out studies.)

The paper trains the report transformer only as a supervisory signal and never looks at its output.
Here it writes a report for every held-out study from the images alone (``REFERS.generate``: greedy
decoding, ``num_beams=1``, or beam search) and we compare it with the radiologist's:

* **BLEU-n** (Papineni et al., 2002), n = 1..4: corpus-level modified n-gram precision up to order
  n (geometric mean, uniform weights) times a brevity penalty, ``nltk.translate.bleu_score.corpus_bleu``
  with ``SmoothingFunction().method1`` (an n-gram order without any match counts epsilon = 0.1
  instead of zero, so short corpora do not collapse to 0):

      BLEU-n = BP * exp( sum_{m=1..n} (1/n) log p_m ),  BP = min(1, exp(1 - r / c))

  with p_m the clipped m-gram precision over the corpus, r the reference and c the candidate length.
* **ROUGE-L** (Lin, 2004): the F-measure of the longest common subsequence of words, per report,
  averaged (``rouge_score``): ``F = 2 P R / (P + R)``, ``P = LCS / len(generated)``,
  ``R = LCS / len(reference)``.
* **Clinical finding F1**: both reports go through the report-text label extractor
  (``data/structured_labels.labels_from_text``: 15 findings + normal, with negation), and we score
  the generated report's findings against the real report's: per-class precision, recall and F1,
  the macro F1 over classes present in the real reports, and the micro F1 over all decisions. BLEU
  rewards saying things the way radiologists do; this rewards saying the right things.

Words for BLEU are lower-cased runs of letters and digits (punctuation dropped), the same words
``rouge_score`` uses. The reference of a study is its report as the model was trained to write it:
the report-tokenizer ids cut to ``model.max_report_len``, decoded (``reference`` column); the full
text is kept beside it (``real``) for reading.
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["words", "bleu", "rouge_l", "clinical_f1", "decoding_name", "generate_reports", "report_quality"]

_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    """Lower-cased words: runs of letters and digits ("Right-sided 5 mm." -> right, sided, 5, mm)."""
    return _WORD.findall(str(text).lower())


def _pairs(references: Sequence[str], hypotheses: Sequence[str]) -> tuple[list[str], list[str]]:
    references, hypotheses = list(references), list(hypotheses)
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} reference report(s) but {len(hypotheses)} generated one(s)")
    if not references:
        raise ValueError("no reports to score")
    return references, hypotheses


def bleu(references: Sequence[str], hypotheses: Sequence[str], max_n: int = 4) -> dict[str, float]:
    """Corpus BLEU-1 .. BLEU-``max_n`` (one reference per report), nltk's ``corpus_bleu`` with method1 smoothing."""
    from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu
    references, hypotheses = _pairs(references, hypotheses)
    refs = [[words(r)] for r in references]
    hyps = [words(h) for h in hypotheses]
    smooth = SmoothingFunction().method1
    out = {}
    for n in range(1, max_n + 1):
        if not any(hyps):  # nothing generated at all: no n-gram can match
            out[f"BLEU-{n}"] = 0.0
            continue
        out[f"BLEU-{n}"] = float(corpus_bleu(refs, hyps, weights=(1.0 / n,) * n, smoothing_function=smooth))
    return out


def rouge_l(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Mean ROUGE-L F-measure over the reports (``rouge_score``, no stemming)."""
    from rouge_score import rouge_scorer
    references, hypotheses = _pairs(references, hypotheses)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return float(np.mean([scorer.score(r, h)["rougeL"].fmeasure for r, h in zip(references, hypotheses)]))


def clinical_f1(references: Sequence[str], hypotheses: Sequence[str]) -> pd.DataFrame:
    """Findings of the generated reports against those of the real ones (``labels_from_text`` on both).

    One row per label (``support``: real reports with it, ``predicted``: generated reports with it,
    ``true_positive``, ``precision`` (NaN where never predicted), ``recall`` (NaN without support),
    ``f1`` (NaN where neither)), then ``macro`` (mean precision / recall / F1 over the labels with
    support, ``normal`` included) and ``micro`` (from the summed counts)."""
    from ..data.reports.structured_labels import LABELS, labels_from_texts
    references, hypotheses = _pairs(references, hypotheses)
    y = labels_from_texts(references).astype(bool)  # (N, L)
    p = labels_from_texts(hypotheses).astype(bool)  # (N, L)
    support, pred, tp = y.sum(0), p.sum(0), (y & p).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(pred > 0, tp / np.maximum(pred, 1), np.nan)
        recall = np.where(support > 0, tp / np.maximum(support, 1), np.nan)
        f1 = np.where(support + pred > 0, 2 * tp / np.maximum(support + pred, 1), np.nan)
    df = pd.DataFrame({"support": support, "predicted": pred, "true_positive": tp, "precision": precision,
                       "recall": recall, "f1": f1}, index=pd.Index(LABELS, name="label"))
    present = df[df["support"] > 0]
    df.loc["macro"] = [present["support"].sum(), present["predicted"].sum(), present["true_positive"].sum(),
                       present["precision"].mean(), present["recall"].mean(), present["f1"].mean()]
    S, P, T = int(support.sum()), int(pred.sum()), int(tp.sum())
    df.loc["micro"] = [S, P, T, T / P if P else np.nan, T / S if S else np.nan,
                       2 * T / (S + P) if S + P else np.nan]
    return df


def decoding_name(num_beams: int) -> str:
    """``1`` -> ``"greedy"``, ``3`` -> ``"beam3"``."""
    return "greedy" if int(num_beams) == 1 else f"beam{int(num_beams)}"


def generate_reports(model, cfg, source, beams: Sequence[int] = (1, 3), split: str = "test",
                     max_studies: int | None = None, seed: int = 0, batch_size: int = 32,
                     report_tokenizer=None) -> pd.DataFrame:
    """Reports written from the images of a source split, one column per decoding.

    ``model``/``cfg``: a pre-trained REFERS with its config (``checkpoint.load_refers``); ``source``: a
    source-domain folder or a ``SourceStudies``. Columns: ``study_id``, ``real`` (the full text),
    ``reference`` (the text the model was trained to write: the report cut to ``max_report_len``
    tokens), then ``greedy`` / ``beamK`` per entry of ``beams``. ``max_studies``: the first that many."""
    from ..data.loading.source_studies import SourceStudies
    from .joint_space import JointSpace
    if model.decoder is None:
        raise RuntimeError("this model was built without the report transformer (loss.use_generation=false): "
                           "it cannot write reports")
    beams = [int(b) for b in beams]
    if not beams or min(beams) < 1:
        raise ValueError(f"beams must be numbers of beams >= 1, got {beams}")
    ds = source if isinstance(source, SourceStudies) else SourceStudies(
        source, split, report_tokenizer=report_tokenizer, max_report_len=cfg.model.max_report_len)
    if max_studies is not None:
        if max_studies < 1:
            raise ValueError(f"max_studies must be >= 1, got {max_studies}")
        from torch.utils.data import Subset
        base = Subset(ds, range(min(max_studies, len(ds))))
    else:
        base = ds
    tok = ds.report_tokenizer
    space = JointSpace(model, cfg, batch_size=batch_size)
    rows: list[dict] = []
    for batch in space.source_studies(base, seed=seed):
        images = space.prepare(batch["images"])  # (b, V, C, H, W)
        mask = batch["view_mask"].to(space.device)
        out = {decoding_name(b): model.generate(images, mask, num_beams=b).cpu() for b in beams}
        for j, sid in enumerate(batch["study_id"]):
            rows.append({"study_id": str(sid), "real": batch["text"][j],
                         "reference": tok.decode(batch["report_ids"][j].tolist()),
                         **{name: tok.decode(ids[j].tolist()) for name, ids in out.items()}})
    return pd.DataFrame(rows, columns=["study_id", "real", "reference", *[decoding_name(b) for b in beams]])


def report_quality(reports: pd.DataFrame, decodings: Sequence[str] | None = None,
                   reference: str = "reference") -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """BLEU-1..4, ROUGE-L and clinical F1 (macro, micro) per decoding column of :func:`generate_reports`'
    frame; returns (summary with one row per decoding, ``{decoding: per-label clinical F1 table}``)."""
    if reference not in reports.columns:
        raise ValueError(f"no {reference!r} column in the reports frame (columns: {list(reports.columns)})")
    decodings = list(decodings) if decodings is not None else \
        [c for c in reports.columns if c == "greedy" or re.fullmatch(r"beam\d+", str(c))]
    if not decodings:
        raise ValueError(f"no decoding columns (greedy, beamK) in the reports frame (columns: {list(reports.columns)})")
    refs = reports[reference].tolist()
    rows, per_class = [], {}
    for d in decodings:
        hyps = reports[d].tolist()
        f1 = clinical_f1(refs, hyps)
        per_class[d] = f1
        rows.append({"decoding": d, **bleu(refs, hyps), "ROUGE-L": rouge_l(refs, hyps),
                     "clinical F1 (macro)": f1.loc["macro", "f1"], "clinical F1 (micro)": f1.loc["micro", "f1"],
                     "words per report": float(np.mean([len(words(h)) for h in hyps])),
                     "distinct reports": len(set(hyps))})
    rows.append({"decoding": "real reports", "words per report": float(np.mean([len(words(r)) for r in refs])),
                 "distinct reports": len(set(refs))})
    return pd.DataFrame(rows).set_index("decoding"), per_class
