import math

import numpy as np
import pytest
import torch

from refers_lite.config import LossConfig
from refers_lite.losses import REFERSLoss, consistency_loss, language_model_loss


def _hand_infonce(v, t, tau):
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    t = t / np.linalg.norm(t, axis=1, keepdims=True)
    s = v @ t.T / tau
    i2t = -np.mean([s[k, k] - math.log(np.exp(s[k]).sum()) for k in range(len(s))])
    t2i = -np.mean([s[k, k] - math.log(np.exp(s[:, k]).sum()) for k in range(len(s))])
    return 0.5 * (i2t + t2i)


def test_consistency_loss_equals_hand_computed_eq2():
    v = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    t = np.array([[2.0, 0.5], [0.1, 1.0], [-1.0, 1.0]])
    got = consistency_loss(torch.tensor(v), torch.tensor(t), 0.1)
    assert float(got) == pytest.approx(_hand_infonce(v, t, 0.1), rel=1e-6)
    # a 2x2 case by hand: cos = [[1, 0], [0, 1]] / tau=1 -> both directions -log(e / (e + 1))
    eye = torch.eye(2)
    assert float(consistency_loss(eye, eye, 1.0)) == pytest.approx(-math.log(math.e / (math.e + 1)))


def test_consistency_loss_is_symmetric_and_cosine_based():
    torch.manual_seed(0)
    v, t = torch.randn(5, 7), torch.randn(5, 7)
    torch.testing.assert_close(consistency_loss(v, t, 0.2), consistency_loss(t, v, 0.2))
    torch.testing.assert_close(consistency_loss(3 * v, 0.5 * t, 0.2), consistency_loss(v, t, 0.2))


def test_both_directions_carry_gradient_to_both_encoders():
    """gradcheck: the analytic gradient is the true gradient of the full symmetric loss.
    The official code turns the text->image term into a Python float (.item()), so its gradient
    would miss that term and this check would fail."""
    torch.manual_seed(0)
    v = torch.randn(4, 6, dtype=torch.double, requires_grad=True)
    t = torch.randn(4, 6, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: consistency_loss(a, b, 0.1), (v, t))
    # and the text->image direction alone moves the text features
    logits = torch.nn.functional.normalize(v, dim=-1) @ torch.nn.functional.normalize(t, dim=-1).t() / 0.1
    t2i = torch.nn.functional.cross_entropy(logits.t(), torch.arange(4))
    (g_t,) = torch.autograd.grad(t2i, t)
    assert g_t.abs().sum() > 0


def test_language_model_loss_ignores_padding_and_matches_hand_nll():
    logits = torch.log(torch.tensor([[[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], [[0.3, 0.3, 0.4], [0.5, 0.25, 0.25]]]))
    targets = torch.tensor([[1, 2], [2, 0]])  # 0 = padding
    want = -(math.log(0.2) + math.log(0.8) + math.log(0.4)) / 3
    assert float(language_model_loss(logits, targets, pad_id=0)) == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="disagree"):
        language_model_loss(logits, targets[:, :1], 0)


def test_total_is_the_weighted_sum_and_switches_work():
    torch.manual_seed(0)
    logits, targets = torch.randn(2, 3, 5), torch.randint(1, 5, (2, 3))
    v, t = torch.randn(2, 4), torch.randn(2, 4)
    gen, con = language_model_loss(logits, targets, 0), consistency_loss(v, t, 0.1)
    out = REFERSLoss(LossConfig(generation_weight=0.5, consistency_weight=2.0), 0)(logits, targets, v, t)
    torch.testing.assert_close(out.total, 0.5 * gen + 2.0 * con)
    only_gen = REFERSLoss(LossConfig(use_consistency=False), 0)(logits, targets, None, None)
    assert only_gen.consistency is None and torch.equal(only_gen.total, only_gen.generation)
    only_con = REFERSLoss(LossConfig(use_generation=False), 0)(None, None, v, t)
    assert only_con.generation is None and set(only_con.as_floats()) == {"loss", "loss_consistency"}


def test_shape_errors():
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        consistency_loss(torch.randn(2, 3), torch.randn(3, 3), 0.1)


def test_a_learned_temperature_starts_at_tau_trains_and_is_clamped():
    torch.manual_seed(0)
    v, t = torch.randn(6, 8), torch.randn(6, 8)
    fixed = REFERSLoss(LossConfig(use_generation=False, temperature=0.2), pad_id=0)
    learned = REFERSLoss(LossConfig(use_generation=False, temperature=0.2, learn_temperature=True), pad_id=0)
    assert not list(fixed.parameters()) and len(list(learned.parameters())) == 1
    out = learned(None, None, v, t)
    assert out.temperature == pytest.approx(0.2)  # starts at the configured tau, and is logged
    assert float(out.total) == pytest.approx(float(fixed(None, None, v, t).total), rel=1e-6)
    out.total.backward()
    assert learned.log_inv_temperature.grad is not None and float(learned.log_inv_temperature.grad) != 0.0
    with torch.no_grad():
        learned.log_inv_temperature.fill_(math.log(1e4))  # tau = 1e-4 asked for: clamped at 0.01
    assert learned(None, None, v, t).temperature == pytest.approx(REFERSLoss.MIN_TEMPERATURE)
