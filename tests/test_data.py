import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from refers_lite.data.reports.report_tokenizer import BOS, EOS, PAD, SPECIAL_TOKENS, ReportTokenizer
from refers_lite.data.loading.studies import MultiViewStudies, ResumableSampler, StudyCollator
from refers_lite.data.loading.toy import ToyStudies, study_spec
from refers_lite.data.loading.views import sample_views


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 8), k=st.integers(1, 5), seed=st.integers(0, 2**31))
def test_view_sampling_follows_the_paper(n, k, seed):
    views = sample_views(n, k, np.random.default_rng(seed))
    assert len(views) == k and all(0 <= v < n for v in views)
    if n >= k:
        assert len(set(views)) == k  # without replacement
    else:
        assert set(views) == set(range(n))  # every image kept ...
        assert len(set(views[n:])) == 1  # ... and one randomly chosen image repeated


def test_view_sampling_uses_every_image_over_draws():
    rng = np.random.default_rng(0)
    seen = {v for _ in range(50) for v in sample_views(5, 3, rng)}
    assert seen == set(range(5))
    with pytest.raises(ValueError, match="at least one image"):
        sample_views(0, 3, rng)


def test_multiview_items_are_a_function_of_index_and_epoch(toy):
    train, _, _ = toy
    ds = MultiViewStudies(train, 3, seed=0)
    i = next(j for j in range(len(train)) if train.specs[j]["n_views"] >= 2)
    a, b = ds[(i, 0)], ds[(i, 0)]
    assert torch.equal(a["images"], b["images"]) and a["images"].shape[0] == 3
    differs = any(not torch.equal(ds[(i, e)]["images"], a["images"]) for e in range(1, 6))
    assert differs  # a new epoch draws views afresh


def test_multiview_rejects_bad_items():
    ds = MultiViewStudies([{"images": torch.zeros(0, 1, 8, 8), "report_ids": [1, 2], "text": "x"}], 3, name="my set")
    with pytest.raises(ValueError, match=r"my set\[0\]: 'images'"):
        ds[0]


def test_sampler_resumes_mid_epoch_and_shards():
    s = ResumableSampler(10, seed=3)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start=4)
    assert list(s) == full[4:] and len(s) == 6
    s.set_epoch(3)
    assert [i for i, _ in s] != [i for i, _ in full]
    shards = []
    for r in range(2):
        sh = ResumableSampler(10, seed=3, rank=r, world_size=2)
        sh.set_epoch(2)
        shards.append([i for i, _ in sh])
    assert sorted(shards[0] + shards[1]) == list(range(10)) and len(shards[0]) == len(shards[1]) == 5


def test_collator_pads_truncates_and_never_mutates(text_tokenizer):
    items = [{"images": torch.zeros(3, 1, 8, 8), "report_ids": torch.tensor([1, 5, 6, 7, 2]), "text": "a b c"},
             {"images": torch.ones(3, 1, 8, 8), "report_ids": [1, 9, 2], "text": "d"}]
    before = items[0]["report_ids"].clone()
    out = StudyCollator(text_tokenizer, text_max_len=8, max_report_len=4)(items)
    assert out["images"].shape == (2, 3, 1, 8, 8) and out["view_mask"].all()
    assert out["report_ids"].tolist() == [[1, 5, 6, 2], [1, 9, 2, 0]]  # cut to 4, EOS kept; padded
    assert torch.equal(items[0]["report_ids"], before)
    assert out["text_ids"].shape == out["text_mask"].shape
    with pytest.raises(ValueError, match="at least BOS and EOS"):
        StudyCollator()([{"images": torch.zeros(3, 1, 8, 8), "report_ids": [1], "text": ""}])
    with pytest.raises(ValueError, match="share one image shape"):
        StudyCollator()([items[0], dict(items[1], images=torch.zeros(3, 1, 4, 4))])
    with pytest.raises(ValueError, match="empty batch"):
        StudyCollator()([])


def test_report_tokenizer_round_trip_is_deterministic_and_saved(tmp_path):
    texts = ["the heart is enlarged.", "no pleural effusion.", "left apical pneumothorax.", "the lungs are clear."]
    a, b = ReportTokenizer.train(texts, 200), ReportTokenizer.train(list(reversed(texts)) * 2, 200)
    assert [a.tok.id_to_token(i) for i in range(len(SPECIAL_TOKENS))] == SPECIAL_TOKENS
    assert a.tok.get_vocab() == ReportTokenizer.train(texts, 200).tok.get_vocab()
    ids = a.encode("Left apical pneumothorax.")
    assert ids[0] == BOS and ids[-1] == EOS and PAD not in ids
    assert a.tok.token_to_id("pneumothorax") in ids  # frequent words stay whole
    assert a.decode(ids) == "left apical pneumothorax."
    assert a.decode(a.encode("the pleura")) == "the pleura"  # an unseen word is spelled in pieces
    assert a.encode("one two three four", max_len=4)[-1] == EOS
    anon = a.encode("seen by dr. [ANON] on [ANON].")
    assert anon.count(4) == 2 and a.decode(anon).count("[ANON]") == 2  # the placeholder stays one token
    a.save(tmp_path / "tok.json")
    assert ReportTokenizer.load(tmp_path / "tok.json").encode("no effusion.") == a.encode("no effusion.")
    with pytest.raises(ValueError, match="tok.json|nope.json"):
        ReportTokenizer.load(tmp_path / "nope.json")
    with pytest.raises(ValueError, match="too small"):
        ReportTokenizer.train(texts, 10)
    assert b.vocab_size > 0


def test_toy_reports_describe_the_images():
    spec = next(study_spec(0, i) for i in range(200) if "cardiomegaly" in study_spec(0, i)["findings"])
    assert "enlarged" in spec["text"] or "cardiomegaly" in spec["text"]
    tok = ReportTokenizer.train([study_spec(0, i)["text"] for i in range(50)], 300)
    idx = [i for i in range(200) if study_spec(0, i)["findings"] == []][:1] + \
          [i for i in range(200) if study_spec(0, i)["findings"] == ["cardiomegaly"]][:1]
    ds = ToyStudies(idx, 0, 64, tok)
    normal, big = ds[0]["images"][0, 0], ds[1]["images"][0, 0]
    centre = (slice(36, 44), slice(24, 27))  # left of the heart's centre: heart tissue only when enlarged
    assert big[centre].mean() > normal[centre].mean() + 0.15
    assert torch.equal(ds[0]["images"], ToyStudies(idx, 0, 64, tok)[0]["images"])  # reproducible


def test_horizontal_flip_mirrors_the_films_and_swaps_sides_in_the_report():
    from refers_lite.data.reports.report_tokenizer import ReportTokenizer
    text = "small left pleural effusion. the right lung is clear."
    tok = ReportTokenizer.train([text, "small right pleural effusion. the left lung is clear."], vocab_size=200)
    img = torch.arange(2 * 1 * 4 * 4, dtype=torch.uint8).reshape(2, 1, 4, 4)
    base = [{"images": img, "report_ids": tok.encode(text), "text": text, "study_id": f"s{i}"} for i in range(40)]
    ds = MultiViewStudies(base, 2, seed=0, hflip_prob=0.5, report_tokenizer=tok)
    flipped = kept = 0
    for i in range(40):
        it = ds[(i, 0)]
        if it["text"] == text:
            kept += 1
            assert it["report_ids"] == tok.encode(text)
            assert sorted(it["images"].flatten().tolist()) == sorted(img.flatten().tolist())
        else:
            flipped += 1
            assert it["text"] == "small right pleural effusion. the left lung is clear."
            assert it["report_ids"] == tok.encode(it["text"])
            assert torch.equal(it["images"].flip(-1)[0], img[0]) or torch.equal(it["images"].flip(-1)[0], img[1])
    assert 8 < flipped < 32 and flipped + kept == 40
    assert ds[(5, 0)]["text"] == ds[(5, 0)]["text"]  # the same (index, epoch) flips the same way
    with pytest.raises(ValueError, match="report tokenizer"):
        MultiViewStudies(base, 2, hflip_prob=0.5)
