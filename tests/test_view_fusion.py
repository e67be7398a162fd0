import pytest
import torch

from refers_lite.models.view_fusion import ViewFusion


@pytest.mark.parametrize("V", [1, 2, 3, 5])
def test_weights_sum_to_one_for_any_number_of_views(V):
    torch.manual_seed(0)
    fusion = ViewFusion(dim=8, num_views=V, hidden=16)
    feats = torch.randn(4, V, 8)
    fused, w = fusion(feats)
    assert fused.shape == (4, V * 8) and w.shape == (4, V)
    torch.testing.assert_close(w.sum(-1), torch.ones(4))
    assert (w > 0).all()
    # v^k is the concatenation of the weighted views
    torch.testing.assert_close(fused, (feats * w[..., None]).reshape(4, -1))


def test_padded_views_get_zero_weight_and_do_not_matter():
    torch.manual_seed(0)
    fusion = ViewFusion(dim=8, num_views=3, hidden=16)
    feats = torch.randn(2, 3, 8)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    fused, w = fusion(feats, mask)
    assert (w[~mask] == 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(2))
    feats2 = feats.clone()
    feats2[~mask] = 1e3  # garbage in the padding
    fused2, w2 = fusion(feats2, mask)
    torch.testing.assert_close(fused, fused2)
    torch.testing.assert_close(w, w2)


def test_weights_depend_on_the_views():
    torch.manual_seed(0)
    fusion = ViewFusion(dim=8, num_views=3, hidden=16)
    _, w1 = fusion(torch.randn(1, 3, 8))
    _, w2 = fusion(torch.randn(1, 3, 8))
    assert not torch.allclose(w1, w2)


def test_bad_inputs():
    fusion = ViewFusion(dim=8, num_views=3)
    with pytest.raises(ValueError, match=r"\(B, 3, 8\)"):
        fusion(torch.randn(2, 2, 8))
    with pytest.raises(ValueError, match="at least one real view"):
        fusion(torch.randn(2, 3, 8), torch.tensor([[True, False, False], [False, False, False]]))
    with pytest.raises(ValueError, match="view_mask must have shape"):
        fusion(torch.randn(2, 3, 8), torch.ones(3, 3, dtype=torch.bool))
