"""Retrieval (refers_lite.evaluation.retrieval): Recall@K on constructed similarity matrices with known answers, ties in
expectation, the random baseline, and the joint space's study and report embeddings on a placeholder source."""
import numpy as np
import pytest
import torch

from refers_lite.config import get_config
from refers_lite.data.loading.source_studies import SourceStudies, write_placeholder_source
from refers_lite.evaluation.joint_space import JointSpace
from refers_lite.models import REFERS
from refers_lite.evaluation.retrieval import expected_ranks, random_recall, recall_at_k, retrieval

# rows: queries (studies), columns: candidates (reports); query i's partner is candidate i
SIM = np.array([[0.9, 0.1, 0.2, 0.3],  # partner first: rank 1
                [0.5, 0.4, 0.1, 0.0],  # one above: rank 2
                [0.9, 0.8, 0.1, 0.7],  # three above: rank 4
                [0.2, 0.6, 0.9, 0.3]])  # two above: rank 3


def test_recall_at_k_of_a_matrix_with_known_ranks():
    assert expected_ranks(SIM).tolist() == [1, 2, 4, 3]
    assert recall_at_k(SIM, ks=(1, 2, 3, 4, 10)) == {1: 0.25, 2: 0.5, 3: 0.75, 4: 1.0, 10: 1.0}
    # the other direction reads the columns; ties count half: column 0 (0.9 ties row 2), 2 (0.1 ties row 1), 3
    assert expected_ranks(SIM.T).tolist() == [1.5, 3, 3.5, 2.5]
    assert recall_at_k(SIM.T, ks=(1, 2)) == {1: pytest.approx(0.5 / 4), 2: pytest.approx(1.5 / 4)}


def test_ties_count_in_expectation_so_a_constant_matrix_is_exactly_chance():
    n = 10
    flat = np.full((n, n), 0.3)
    for k in (1, 5, 10):
        assert recall_at_k(flat, ks=(k,))[k] == pytest.approx(random_recall(k, n)) == pytest.approx(k / n)
    assert recall_at_k(np.eye(n), ks=(1,))[1] == 1.0  # a perfect model
    assert recall_at_k(-np.eye(n), ks=(1, 9))[1] == 0.0 and recall_at_k(-np.eye(n), ks=(9,))[9] == 0.0
    # one tie with the partner: top-1 half the time, top-2 always
    assert recall_at_k(np.array([[1.0, 1.0, 0.0]]), ks=(1, 2), targets=np.array([0])) == {1: 0.5, 2: 1.0}


def test_targets_for_a_rectangular_matrix_and_clear_errors():
    sim = np.array([[0.1, 0.2, 0.9], [0.8, 0.1, 0.3]])  # 2 queries, 3 candidates
    assert recall_at_k(sim, ks=(1,), targets=np.array([2, 0])) == {1: 1.0}
    assert recall_at_k(sim, ks=(1, 2), targets=np.array([0, 2])) == {1: 0.0, 2: 0.5}
    with pytest.raises(ValueError, match="square"):
        recall_at_k(sim)
    with pytest.raises(ValueError, match="NaN"):
        recall_at_k(np.array([[np.nan]]))
    with pytest.raises(ValueError, match="K must be"):
        recall_at_k(SIM, ks=(0,))
    assert random_recall(10, 4) == 1.0 and random_recall(1, 4) == 0.25


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return write_placeholder_source(tmp_path_factory.mktemp("src") / "source", n_studies=30, image_size=32, seed=1)


@pytest.fixture(scope="module")
def space():
    cfg = get_config("smoke")
    torch.manual_seed(0)
    return JointSpace(REFERS.from_config(cfg), cfg, batch_size=4)


def test_study_and_report_embeddings_are_paired_and_do_not_depend_on_batching(source, space):
    ds = SourceStudies(source, "test")
    v, t, texts, ids = space.embed_source(ds, seed=0)
    d = space.model.fusion.out_dim
    assert v.shape == (len(ds), d) and t.shape == (len(ds), d)
    assert texts == ds.texts and ids == ds.study_ids  # study i with its own report i
    big = JointSpace(space.model, space.cfg, batch_size=64)
    v2, t2, _, _ = big.embed_source(ds, seed=0)
    assert torch.allclose(v, v2, atol=1e-5) and torch.allclose(t, t2, atol=1e-5)
    # similarity is Eq. 2's logits: cos / tau
    sim = space.similarity(v, t)
    assert sim.abs().max() <= 1 / space.temperature + 1e-4
    assert torch.allclose(sim[0, 1], torch.nn.functional.cosine_similarity(v[0], t[1], dim=0) / space.temperature,
                          atol=1e-5)


class _PerfectSpace:
    """Embeds study i and report i at the same point: retrieval must be perfect (up to identical reports)."""
    temperature = 0.1

    def embed_source(self, ds, seed=0):
        rng = np.random.default_rng(0)
        codes = {t: rng.standard_normal(8) for t in sorted(set(ds.texts))}
        e = torch.tensor(np.stack([codes[t] for t in ds.texts]), dtype=torch.float32)
        return e, e.clone(), list(ds.texts), list(ds.study_ids)

    def similarity(self, v, t):
        return torch.nn.functional.normalize(v, dim=-1) @ torch.nn.functional.normalize(t, dim=-1).t() / 0.1


def test_retrieval_on_a_source_split_against_the_random_baseline(source, space):
    res = retrieval(_PerfectSpace(), source, "test")
    n = len(SourceStudies(source, "test"))
    assert res.n == n and res.random == {k: min(k, n) / n for k in (1, 5, 10)}
    # studies sharing a report text are tied: each finds its own report first 1 / (group size) of the time
    groups = {t: res.texts.count(t) for t in res.texts}
    assert res.image_to_report[1] == pytest.approx(np.mean([1 / groups[t] for t in res.texts]))
    assert res.report_to_image[10] == 1.0 and res.median_rank_i2r <= 1.5
    frame = res.to_frame()
    assert list(frame.index) == ["image -> report", "report -> image", "random (K / N)", "random, 95 % upper bound"]
    assert frame.loc["random (K / N)", "R@1"] == pytest.approx(1 / n)
    top = res.top_reports(0, k=3)
    assert len(top) == 3 and top[0][2] == res.texts[0] and top[0][1] >= top[1][1] >= top[2][1]
    real = retrieval(space, source, "test")  # the untrained model: it runs, the numbers are in range
    assert all(0 <= r <= 1 for r in (*real.image_to_report.values(), *real.report_to_image.values()))


def test_the_chance_interval_of_recall_is_binomial():
    from scipy.stats import binom
    from refers_lite.evaluation.retrieval import chance_interval
    lo, hi = chance_interval(10, 400)
    assert lo < 10 / 400 < hi and (lo * 400, hi * 400) == tuple(binom.ppf([0.025, 0.975], 400, 10 / 400))
    assert chance_interval(10, 5) == (1.0, 1.0)  # K >= N: always a hit
    # a constant similarity matrix scores inside it
    assert lo <= recall_at_k(np.zeros((400, 400)), ks=(10,))[10] <= hi
