"""The report side of a pre-training dataset, and its preparation on disk.

:class:`ReportStudies` is what the data path consumes for each study: its image references with
views, its cleaned report text, the report's token ids in the report transformer's vocabulary,
and its structured labels (from the MeSH tags where a study has them, IU X-ray; otherwise from
the report text by :func:`~refers_lite.data.reports.structured_labels.labels_from_text`, MIMIC-CXR).
Pixels come from an image source (the radiographs rendered from a CT, or a user's MIMIC-CXR-JPG)
that pairs these references with images.

:func:`prepare_reports` writes, beside the data cache, everything a run needs and must not
recompute differently: the study-level splits (``splits.csv``), the report tokenizer trained on
the training split only (``report_tokenizer.json``) and a summary (``reports_summary.json``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from .corpus import CorpusReport, ReportCorpus
from .report_tokenizer import ReportTokenizer
from .splits import make_splits, read_splits, write_splits
from .structured_labels import LABELS, labels_from_mesh_batch, labels_from_texts


def structured_labels(reports: list[CorpusReport]) -> np.ndarray:
    """Multi-hot (n, len(LABELS)): MeSH-derived where a study has MeSH tags, text-derived otherwise."""
    out = labels_from_mesh_batch([r.record.mesh for r in reports]) if reports else np.zeros((0, len(LABELS)))
    no_mesh = [i for i, r in enumerate(reports) if not r.record.mesh]
    if no_mesh:
        out[no_mesh] = labels_from_texts([reports[i].text for i in no_mesh])
    return out.astype(np.float32)


class ReportStudies(Dataset):
    """Studies with cleaned text, token ids and structured labels; items are dicts."""

    def __init__(self, reports: list[CorpusReport], tokenizer: ReportTokenizer, max_len: int = 128):
        self.reports, self.tokenizer = list(reports), tokenizer
        self.report_ids = [tokenizer.encode(r.text, max_len) for r in self.reports]
        self.labels = structured_labels(self.reports)  # (n, len(LABELS))

    def __len__(self) -> int:
        return len(self.reports)

    def __getitem__(self, i: int) -> dict:
        r = self.reports[i]
        return {"study_id": r.study_id, "image_refs": [(im.image_id, im.view, im.path) for im in r.record.images],
                "text": r.text, "report_ids": self.report_ids[i], "labels": self.labels[i]}


@dataclass
class PreparedReports:
    corpus: ReportCorpus
    splits: dict[str, list[str]]
    tokenizer: ReportTokenizer
    out_dir: Path

    def split(self, name: str) -> list[CorpusReport]:
        ids = set(self.splits[name])
        return [r for r in self.corpus.kept if r.study_id in ids]

    def studies(self, name: str, max_len: int = 128) -> ReportStudies:
        return ReportStudies(self.split(name), self.tokenizer, max_len)


def prepare_reports(out_dir: str | Path, corpus: ReportCorpus | None = None, seed: int = 0,
                    vocab_size: int = 3000) -> PreparedReports:
    """Splits, tokenizer and summary for a corpus (default: IU X-ray, text-only), in ``out_dir``.

    Existing ``splits.csv`` and ``report_tokenizer.json`` are reused (a second run changes nothing);
    a splits file that names studies the corpus lacks is an error naming the file.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus = corpus or ReportCorpus.from_iu(require_images=False)
    ids = {r.study_id for r in corpus.kept}
    split_path, tok_path = out / "splits.csv", out / "report_tokenizer.json"
    if split_path.exists():
        splits = read_splits(split_path)
        unknown = sorted(set().union(*map(set, splits.values())) - ids)
        if unknown:
            raise ValueError(f"{split_path}: names {len(unknown)} studies not in this corpus (e.g. {unknown[:3]}); "
                             f"delete it to split afresh")
    else:
        splits = make_splits(corpus.records, seed=seed)
        write_splits(splits, split_path)
    if tok_path.exists():
        tok = ReportTokenizer.load(tok_path)
    else:  # the training split only, so validation and test text never shapes the vocabulary
        train_ids = set(splits["train"])
        tok = ReportTokenizer.train([r.text for r in corpus.kept if r.study_id in train_ids], vocab_size=vocab_size)
        tok.save(tok_path)
    prepared = PreparedReports(corpus, splits, tok, out)
    summary = corpus.summary() | {"splits": {k: len(v) for k, v in splits.items()}, "vocab_size": tok.vocab_size,
                                  "label_counts": label_counts(corpus.kept)}
    (out / "reports_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return prepared


def label_counts(reports: list[CorpusReport]) -> dict[str, int]:
    """Studies per structured label, most frequent first."""
    counts = structured_labels(reports).sum(0)
    return {LABELS[i]: int(counts[i]) for i in np.argsort(-counts, kind="stable")}
