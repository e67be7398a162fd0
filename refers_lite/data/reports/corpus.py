"""A cleaned report corpus: which studies are kept for pre-training, which are dropped and why.

Methods (REFERS): only the FINDINGS and IMPRESSION sections are kept, and reports with fewer than
three tokens are dropped. :meth:`ReportCorpus.from_records` applies, in order, to each record's
``raw_text`` (FINDINGS then IMPRESSION) cleaned by :func:`~refers_lite.data.reports.cleaning.clean_report`:

* ``no_text``: nothing left after cleaning;
* ``too_short``: fewer than ``min_tokens`` (default :data:`~refers_lite.data.reports.cleaning.MIN_TOKENS` = 3)
  lower-case ``[a-z0-9]+`` tokens (``[ANON]`` counts as one, as the ``XXXX`` it replaces would);
* ``no_images``: only with ``require_images=True`` (image-report pre-training needs >= 1 radiograph;
  text-only uses, such as training the report tokenizer, keep reports without images).

On the IU X-ray corpus this keeps 3,927 reports as text and 3,826 with images (asserted in tests).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from .cleaning import MIN_TOKENS, clean_report, count_tokens, words
from .records import StudyRecord

DROP_REASONS = ("no_text", "too_short", "no_images")


@dataclass
class CorpusReport:
    """A kept study with its cleaned report text."""
    record: StudyRecord
    text: str
    n_tokens: int

    @property
    def study_id(self) -> str:
        return self.record.study_id


@dataclass
class ReportCorpus:
    kept: list[CorpusReport]
    dropped: Counter = field(default_factory=Counter)
    n_read: int = 0
    require_images: bool = False
    min_tokens: int = MIN_TOKENS

    @classmethod
    def from_records(cls, records: Iterable[StudyRecord], require_images: bool = False,
                     min_tokens: int = MIN_TOKENS) -> "ReportCorpus":
        kept: list[CorpusReport] = []
        dropped: Counter[str] = Counter()
        n = 0
        for rec in records:
            n += 1
            text = clean_report(rec.raw_text)
            n_tokens = count_tokens(text)
            if not text:
                dropped["no_text"] += 1
            elif n_tokens < min_tokens:
                dropped["too_short"] += 1
            elif require_images and not rec.images:
                dropped["no_images"] += 1
            else:
                kept.append(CorpusReport(rec, text, n_tokens))
        return cls(kept, dropped, n, require_images, min_tokens)

    @classmethod
    def from_iu(cls, require_images: bool = False, path=None) -> "ReportCorpus":
        """The IU X-ray corpus (:func:`~refers_lite.data.reports.iu_xray.load_iu_reports`)."""
        from .iu_xray import load_iu_reports
        return cls.from_records(load_iu_reports(path)[0], require_images=require_images)

    def __len__(self) -> int:
        return len(self.kept)

    @property
    def texts(self) -> list[str]:
        return [r.text for r in self.kept]

    @property
    def records(self) -> list[StudyRecord]:
        return [r.record for r in self.kept]

    def summary(self) -> dict:
        """Counts of the corpus (all over the kept studies except ``reports_read`` / ``dropped``)."""
        lengths = np.array([r.n_tokens for r in self.kept], dtype=float)
        q = (lambda p: float(np.percentile(lengths, p))) if len(lengths) else (lambda p: 0.0)
        vocab: set[str] = set()
        for r in self.kept:
            vocab.update(words(r.text))
        return {
            "reports_read": self.n_read,
            "kept": len(self.kept),
            "require_images": self.require_images,
            "dropped": {k: self.dropped.get(k, 0) for k in DROP_REASONS} | dict(self.dropped),
            "images_per_study": dict(sorted(Counter(len(r.record.images) for r in self.kept).items())),
            "images": sum(len(r.record.images) for r in self.kept),
            "views": dict(sorted(Counter(i.view for r in self.kept for i in r.record.images).items())),
            "tokens": {"p50": q(50), "p90": q(90), "p99": q(99), "max": int(lengths.max()) if len(lengths) else 0},
            "distinct_words": len(vocab),
        }

    def format_summary(self) -> str:
        s = self.summary()
        t = s["tokens"]
        lines = [
            f"reports read      {s['reports_read']:,}",
            f"kept              {s['kept']:,}" + ("  (text and >= 1 image)" if s["require_images"] else "  (text)"),
            "dropped           " + (", ".join(f"{k} {v:,}" for k, v in s["dropped"].items()) or "none"),
            "images per study  " + ", ".join(f"{k}: {v:,}" for k, v in s["images_per_study"].items()),
            f"images            {s['images']:,}  (" + ", ".join(f"{k} {v:,}" for k, v in s["views"].items()) + ")",
            f"tokens per report p50 {t['p50']:g}, p90 {t['p90']:g}, p99 {t['p99']:g}, max {t['max']}"
            f" (min {self.min_tokens})",
            f"distinct words    {s['distinct_words']:,}",
        ]
        return "\n".join(lines)
