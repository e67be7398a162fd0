"""Report generation quality (refers_lite.evaluation.report_metrics): BLEU and ROUGE-L against hand-computed values, the
clinical finding F1 of the report-text label extractor, and reports written by a (tiny, untrained) REFERS."""
import math

import pandas as pd
import pytest
import torch

from refers_lite.config import get_config
from refers_lite.data.loading.source_studies import SourceStudies, write_placeholder_source
from refers_lite.models import REFERS
from refers_lite.evaluation.report_metrics import (bleu, clinical_f1, decoding_name, generate_reports, report_quality,
                                                   rouge_l, words)

REF_A, HYP_A = "The heart is normal in size.", "the heart is normal"
REF_B, HYP_B = "The lungs are clear.", "The lungs are NOT clear!"


def test_words_are_lower_case_runs_of_letters_and_digits():
    assert words("Right-sided 5 mm nodule, [ANON].") == ["right", "sided", "5", "mm", "nodule", "anon"]


def test_bleu_of_known_sentences_matches_the_hand_computation():
    # A: every n-gram of the hypothesis is in the reference (p_n = 1), 4 words against 6: BP = exp(1 - 6/4)
    bp = math.exp(1 - 6 / 4)
    assert bleu([REF_A], [HYP_A]) == {f"BLEU-{n}": pytest.approx(bp) for n in range(1, 5)}
    # B: 5 words against 4 (BP = 1); p1 = 4/5, p2 = 2/4 (the lungs, lungs are), p3 = 1/3, p4 = 0/2 -> method1's 0.1/2
    p = [4 / 5, 2 / 4, 1 / 3, 0.1 / 2]
    got = bleu([REF_B], [HYP_B])
    for n in range(1, 5):
        assert got[f"BLEU-{n}"] == pytest.approx(math.prod(p[:n]) ** (1 / n)), n
    # the corpus pools the counts: p1 = 8/9, p2 = 5/7, p3 = 3/5, p4 = 1/3; c = 9, r = 10
    corpus = bleu([REF_A, REF_B], [HYP_A, HYP_B])
    assert corpus["BLEU-4"] == pytest.approx(math.exp(1 - 10 / 9) * (8 / 9 * 5 / 7 * 3 / 5 * 1 / 3) ** 0.25)
    assert corpus["BLEU-1"] == pytest.approx(math.exp(1 - 10 / 9) * 8 / 9)
    assert bleu([REF_A], [REF_A])["BLEU-4"] == pytest.approx(1.0)
    assert bleu([REF_A], [""])["BLEU-1"] == 0.0
    with pytest.raises(ValueError, match="2 reference"):
        bleu([REF_A, REF_B], [HYP_A])


def test_rouge_l_of_known_sentences_matches_the_hand_computation():
    # LCS of 'the heart is normal in size' and 'heart size is normal' is 'heart is normal': P = 3/4, R = 3/6
    f_a = 2 * (3 / 4) * (3 / 6) / (3 / 4 + 3 / 6)
    assert rouge_l([REF_A], ["heart size is normal"]) == pytest.approx(f_a)
    # B: LCS 4 ('the lungs are clear'), P = 4/5, R = 4/4; the mean over the two reports
    f_b = 2 * 0.8 * 1.0 / 1.8
    assert rouge_l([REF_A, REF_B], ["heart size is normal", HYP_B]) == pytest.approx((f_a + f_b) / 2)
    assert rouge_l([REF_B], [REF_B]) == pytest.approx(1.0)


def test_clinical_f1_reads_findings_and_negations_from_both_reports():
    refs = ["Heart size is enlarged.", "No pleural effusion.", "There is a small left pleural effusion."]
    hyps = ["Cardiomegaly.", "Small pleural effusion.", "No acute disease."]
    f1 = clinical_f1(refs, hyps)
    assert f1.loc["cardiomegaly", ["support", "predicted", "true_positive", "f1"]].tolist() == [1, 1, 1, 1.0]
    assert f1.loc["pleural_effusion", ["support", "predicted", "true_positive", "f1"]].tolist() == [1, 1, 0, 0.0]
    assert f1.loc["normal", ["support", "predicted", "true_positive", "f1"]].tolist() == [1, 1, 0, 0.0]
    assert math.isnan(f1.loc["edema", "f1"]) and math.isnan(f1.loc["edema", "precision"])
    assert f1.loc["macro", "f1"] == pytest.approx(1 / 3)  # over the three labels the real reports have
    assert f1.loc["micro", "f1"] == pytest.approx(2 * 1 / (3 + 3))
    assert clinical_f1(refs, refs).loc["macro", "f1"] == 1.0


def test_report_quality_scores_each_decoding_column():
    frame = pd.DataFrame({"reference": [REF_A, REF_B], "greedy": [REF_A, REF_B], "beam3": [HYP_A, HYP_B]})
    summary, per_class = report_quality(frame)
    assert list(summary.index) == ["greedy", "beam3", "real reports"] and set(per_class) == {"greedy", "beam3"}
    assert summary.loc["greedy", "BLEU-4"] == pytest.approx(1.0) and summary.loc["greedy", "ROUGE-L"] == 1.0
    assert summary.loc["greedy", "clinical F1 (macro)"] == 1.0
    assert summary.loc["beam3", "BLEU-4"] == pytest.approx(bleu([REF_A, REF_B], [HYP_A, HYP_B])["BLEU-4"])
    assert summary.loc["real reports", "words per report"] == pytest.approx((6 + 4) / 2)
    assert decoding_name(1) == "greedy" and decoding_name(4) == "beam4"
    with pytest.raises(ValueError, match="no decoding"):
        report_quality(frame[["reference"]])


def test_reports_written_from_images_alone(tmp_path):
    root = write_placeholder_source(tmp_path / "source", n_studies=20, image_size=32, seed=2)
    ds = SourceStudies(root, "test")
    cfg = get_config("smoke", {"model": {"vocab_size": max(128, ds.report_tokenizer.vocab_size)}})
    torch.manual_seed(0)
    model = REFERS.from_config(cfg).eval()
    df = generate_reports(model, cfg, root, beams=(1, 2), max_studies=3, batch_size=2)
    assert list(df.columns) == ["study_id", "real", "reference", "greedy", "beam2"]
    assert df["study_id"].tolist() == ds.study_ids[:3] and df["real"].tolist() == ds.texts[:3]
    tok = ds.report_tokenizer
    assert df["reference"].tolist() == [tok.decode(tok.encode(t, cfg.model.max_report_len)) for t in ds.texts[:3]]
    assert all(isinstance(t, str) for t in df["greedy"]) and all(len(words(t)) < cfg.model.max_report_len
                                                                for t in df["beam2"])
    again = generate_reports(model, cfg, root, beams=(1,), max_studies=3, batch_size=3)
    assert again["greedy"].tolist() == df["greedy"].tolist()  # deterministic, whatever the batching
    cfg_no_gen = get_config("smoke", {"loss": {"use_generation": False}})
    with pytest.raises(RuntimeError, match="report transformer"):
        generate_reports(REFERS.from_config(cfg_no_gen), cfg_no_gen, root)
