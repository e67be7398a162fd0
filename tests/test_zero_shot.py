"""Zero-shot classification (refers_lite.evaluation.zero_shot): the pair softmax, the prompt table, a toy model
whose similarities give a known AUC, and how a single radiograph becomes a one-view study
(refers_lite.evaluation.joint_space)."""
import math

import numpy as np
import pytest
import torch

from refers_lite.config import get_config
from refers_lite.data.loading.domain_dataset import DomainImages
from refers_lite.data.reports.structured_labels import LABEL_INDEX, labels_from_text
from refers_lite.data.synthesis.target_domains import TARGET_DOMAINS
from refers_lite.evaluation.joint_space import JointSpace
from refers_lite.models import REFERS
from refers_lite.evaluation.zero_shot import (PROMPTS, normalize_name, prompt_pair, zero_shot_domain,
                                              zero_shot_probabilities)
from test_finetune import _domain


def test_the_pair_softmax_is_a_sigmoid_of_the_similarity_difference():
    v = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])  # three images
    pos, neg = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])  # one class
    p = zero_shot_probabilities(v, pos, neg, temperature=0.1)  # (3, 1)
    assert p.shape == (3, 1)
    assert p[0, 0] == pytest.approx(1 / (1 + math.exp(-10)))  # cos 1 vs 0, / 0.1
    assert p[1, 0] == pytest.approx(1 / (1 + math.exp(10)))  # the norm does not matter: cosine
    assert p[2, 0] == pytest.approx(0.5)  # as close to both prompts
    assert zero_shot_probabilities(v, pos, neg, 1.0)[0, 0] == pytest.approx(1 / (1 + math.exp(-1)))
    with pytest.raises(ValueError, match="one width"):
        zero_shot_probabilities(v, pos, torch.zeros(2, 2), 0.1)


def test_every_target_class_has_a_written_prompt_pair_that_the_label_extractor_reads_right():
    for info in TARGET_DOMAINS.values():
        for c in info.classes:
            assert normalize_name(c) in PROMPTS, f"{info.name}: class {c!r} falls back to the generic prompts"
    checked = 0
    for key, pair in PROMPTS.items():
        assert pair.positive != pair.negative
        if pair.label is None:
            continue
        j = LABEL_INDEX[pair.label]
        assert labels_from_text(pair.positive)[j] == 1, f"{key}: {pair.positive!r} is not read as {pair.label}"
        assert labels_from_text(pair.negative)[j] == 0, f"{key}: {pair.negative!r} is read as {pair.label}"
        checked += 1
    assert checked >= 20


def test_prompt_lookup_by_name_and_the_generic_fallback():
    assert normalize_name("Pleural_Thickening") == "pleural thickening" and normalize_name("Nodule/Mass") == "nodule mass"
    assert prompt_pair("Cardiomegaly").positive == "heart size is enlarged."
    assert prompt_pair("Cardiomegaly").negative == "heart size is normal."
    assert (prompt_pair("Blob").positive, prompt_pair("Blob").negative) == ("there is blob.", "there is no blob.")
    assert prompt_pair("Blob", {"Blob": ("a", "b")}).positive == "a"  # user prompts first
    with pytest.raises(ValueError, match="no letters"):
        prompt_pair("//")


@pytest.fixture(scope="module")
def domain(tmp_path_factory):
    return _domain(tmp_path_factory.mktemp("zs") / "dom")  # classes blob (a bright square) and stripe (a dark band)


class _BlobSpace:
    """A toy joint space: sees blobs (a bright square) in the pixels, is blind to stripes, and knows four sentences.

    Image embedding: (cos a, sin a, 1, 1) with a = 0 for a blob, pi/2 without; 'there is blob.' is e0,
    'there is no blob.' e1, both stripe prompts (0, 0, 1, 1) +- a little: blob AUC 1, stripe AUC 0.5 (constant score)."""
    temperature = 0.1

    def embed_images(self, images):
        blob = (images.flatten(1).amax(1) > 200).float()  # (N,) uint8 pixels: the square is 230, noise ~90
        a = (1 - blob) * math.pi / 2
        return torch.stack([a.cos(), a.sin(), torch.ones_like(a), torch.ones_like(a)], dim=1)

    def embed_texts(self, texts):
        table = {"there is blob.": [1.0, 0, 0, 0], "there is no blob.": [0, 1.0, 0, 0],
                 "there is stripe.": [0, 0, 1.0, 1.1], "there is no stripe.": [0, 0, 1.1, 1.0]}
        return torch.tensor([table[t] for t in texts])


def test_zero_shot_on_a_toy_model_gives_the_auc_its_similarities_were_built_for(domain):
    res = zero_shot_domain(_BlobSpace(), domain)
    y = DomainImages(domain, "test").labels_matrix()
    assert res.classes == ["blob", "stripe"] and res.labels.tolist() == y.tolist()
    assert res.auc == {"blob": 1.0, "stripe": 0.5} and res.mean_auc == 0.75
    assert res.prompts[0].positive == "there is blob."
    assert np.allclose(res.scores[:, 1], res.scores[0, 1])  # blind to stripes: one score for all
    # the prompts swapped: every blob image now prefers 'no blob': AUC 0
    swapped = zero_shot_domain(_BlobSpace(), domain, prompts={"blob": ("there is no blob.", "there is blob.")})
    assert swapped.auc["blob"] == 0.0
    frame = res.to_frame()
    assert frame["auc"].tolist() == [1.0, 0.5] and frame["positives"].tolist() == y.sum(0).astype(int).tolist()


def test_a_single_radiograph_is_a_study_of_one_view():
    cfg = get_config("smoke")
    torch.manual_seed(0)
    model = REFERS.from_config(cfg).eval()
    images = torch.randint(0, 256, (3, 1, 40, 40), dtype=torch.uint8)
    repeat, mask = JointSpace(model, cfg), JointSpace(model, cfg, single_view="mask")
    assert repeat.temperature == cfg.loss.temperature
    model.criterion.temperature = lambda: torch.tensor(0.05, requires_grad=True)  # a learned tau, as the loss has it
    assert JointSpace(model, cfg).temperature == pytest.approx(0.05)
    del model.criterion.temperature
    x = repeat.prepare(images)  # (3, 1, 32, 32): the central crop at the model's size
    assert x.shape == (3, 1, cfg.model.image_size, cfg.model.image_size) and 0 <= x.min() and x.max() <= 1
    V, D = cfg.model.num_views, cfg.model.width
    with torch.no_grad():
        want = model.encode_study(x[:, None].expand(3, V, 1, 32, 32)).fused  # the image in every slot
        only = model.encode_study(torch.cat([x[:, None], torch.zeros(3, V - 1, 1, 32, 32)], 1),
                                  torch.tensor([[True] + [False] * (V - 1)] * 3)).fused
    assert torch.allclose(repeat.embed_images(images), want, atol=1e-5)
    got = mask.embed_images(images)
    assert torch.allclose(got, only, atol=1e-5) and got[:, D:].abs().max() == 0  # the masked slots are zero
    assert not torch.allclose(got, want, atol=1e-3)
    with pytest.raises(ValueError, match="single_view"):
        JointSpace(model, cfg, single_view="both")
    with pytest.raises(ValueError, match="single radiographs"):
        repeat.embed_images(images[None])


def test_the_chance_range_of_the_mean_auc_narrows_with_more_test_images():
    from refers_lite.evaluation.zero_shot import chance_mean_auc
    rng = np.random.default_rng(0)
    small, big = rng.integers(0, 2, (12, 2)), rng.integers(0, 2, (600, 2))
    lo_s, hi_s = chance_mean_auc(small, n=60)
    lo_b, hi_b = chance_mean_auc(big, n=60)
    assert lo_s < lo_b < 0.5 < hi_b < hi_s and hi_b - lo_b < 0.1 < hi_s - lo_s
    assert chance_mean_auc(small, n=60) == (lo_s, hi_s)  # seeded
    assert all(math.isnan(x) for x in chance_mean_auc(np.ones((5, 1))))  # no AUC: no range
