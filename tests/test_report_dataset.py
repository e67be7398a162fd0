import numpy as np
import pytest

from refers_lite.cli import main
from refers_lite.data.reports.corpus import ReportCorpus
from refers_lite.data.reports.records import ImageRef, StudyRecord
from refers_lite.data.reports.report_dataset import ReportStudies, label_counts, prepare_reports
from refers_lite.data.reports.report_tokenizer import ANON, BOS, EOS, ReportTokenizer
from refers_lite.data.reports.structured_labels import LABELS


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepare_reports(tmp_path_factory.mktemp("iu"))


def test_prepared_iu_corpus_splits_and_tokenizer(prepared):
    kept = {r.study_id for r in prepared.corpus.kept}
    assert len(kept) == 3927
    parts = [set(prepared.splits[k]) for k in ("train", "validation", "test")]
    assert set().union(*parts) == kept and sum(map(len, parts)) == len(kept)
    tok = prepared.tokenizer
    # trained on the training split only: a word seen only outside it is not a whole token
    def words(reports):
        return {w for r in reports for w, _ in tok.tok.pre_tokenizer.pre_tokenize_str(r.text.lower())}
    train_words = words(prepared.split("train"))
    other_words = words(prepared.split("validation") + prepared.split("test"))
    only_outside = sorted(w for w in other_words - train_words if w.isalpha() and len(w) > 3)
    assert only_outside and all(tok.tok.token_to_id(w) is None for w in only_outside)
    # round trip of a real cleaned report, the placeholder staying one token
    text = next(r.text for r in prepared.split("train") if "[ANON]" in r.text)
    ids = tok.encode(text)
    assert ids[0] == BOS and ids[-1] == EOS and ANON in ids
    assert "".join(tok.decode(ids).split()) == "".join(text.split())  # the same text up to spacing


def test_prepare_is_idempotent(prepared, tmp_path):
    again = prepare_reports(prepared.out_dir)
    assert again.splits == prepared.splits
    assert again.tokenizer.tok.get_vocab() == prepared.tokenizer.tok.get_vocab()
    other = prepare_reports(tmp_path, corpus=ReportCorpus.from_records(prepared.corpus.records[:50]))
    (tmp_path / "report_tokenizer.json").unlink()
    with pytest.raises(ValueError, match="splits.csv: names .* studies not in this corpus"):
        prepare_reports(tmp_path, corpus=ReportCorpus.from_records(prepared.corpus.records[100:150]))
    assert len(other.corpus) == 50


def test_report_studies_items(prepared):
    ds = prepared.studies("train", max_len=32)
    item = ds[0]
    assert set(item) == {"study_id", "image_refs", "text", "report_ids", "labels"}
    assert len(item["report_ids"]) <= 32 and item["report_ids"][-1] == EOS
    assert item["labels"].shape == (len(LABELS),)
    views = {v for i in range(len(ds)) for _, v, _ in ds[i]["image_refs"]}
    assert views <= {"frontal", "lateral", "unknown"} and {"frontal", "lateral"} <= views
    counts = label_counts(prepared.corpus.kept)
    assert counts["cardiomegaly"] > 300 and list(counts)[0] == "normal"


def test_labels_come_from_text_when_there_is_no_mesh():
    recs = [StudyRecord("s1", "the heart is enlarged.", "", [ImageRef("d1", "frontal")], mesh=[], source="mimic"),
            StudyRecord("s2", "no acute disease. normal heart size.", "", [ImageRef("d2", "frontal")], source="mimic")]
    corpus = ReportCorpus.from_records(recs)
    ds = ReportStudies(corpus.kept, ReportTokenizer.train(corpus.texts, 200))
    assert ds[0]["labels"][LABELS.index("cardiomegaly")] == 1
    assert ds[1]["labels"][LABELS.index("normal")] == 1 and ds[1]["labels"].sum() == 1
    assert np.array_equal(ds.labels[:, LABELS.index("cardiomegaly")], [1, 0])


@pytest.mark.slow
def test_cli_data_reports_prints_the_summary(tmp_path, capsys):
    assert main(["data", "reports", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "CC BY-NC-ND 4.0" in out and "3,927" in out and "3,826" in out and "report vocabulary" in out
    assert "structured labels" in out and "macro F1" in out and (tmp_path / "splits.csv").is_file()
