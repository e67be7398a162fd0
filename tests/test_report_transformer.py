import itertools

import pytest
import torch

from refers_lite.models.report_transformer import ReportTransformer

PAD, BOS, EOS = 0, 1, 2


def decoder(vocab=12, max_len=16, seed=0):
    torch.manual_seed(seed)
    return ReportTransformer(vocab, memory_dim=8, width=16, depth=2, heads=2, ffn=32, max_len=max_len,
                             dropout=0.0).eval()


def test_logits_shape_and_tied_output_embedding():
    dec = decoder()
    logits = dec(torch.randint(3, 12, (2, 5)), torch.randn(2, 7, 8))
    assert logits.shape == (2, 5, 12)
    assert not hasattr(dec, "lm_head")  # the output layer is the token embedding itself


def test_causal_future_tokens_do_not_change_past_predictions():
    dec = decoder()
    mem = torch.randn(1, 7, 8)
    a = torch.tensor([[BOS, 5, 6, 7, 8]])
    b = torch.tensor([[BOS, 5, 6, 9, 10]])
    torch.testing.assert_close(dec(a, mem)[:, :3], dec(b, mem)[:, :3])


def test_memory_mask_hides_masked_tokens():
    dec = decoder()
    tok = torch.tensor([[BOS, 5, 6]])
    mem = torch.randn(1, 6, 8)
    mask = torch.tensor([[True, True, True, False, False, False]])
    mem2 = mem.clone()
    mem2[:, 3:] = 100.0
    torch.testing.assert_close(dec(tok, mem, mask), dec(tok, mem2, mask))


def _check_well_formed(out, max_len):
    assert out.shape[1] <= max_len
    for row in out.tolist():
        assert row[0] == BOS
        assert EOS in row, row
        end = row.index(EOS)
        assert all(t == PAD for t in row[end + 1:])
        assert all(t not in (PAD, BOS, EOS) for t in row[1:end])


@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize("max_len", [2, 5, 16])
def test_generation_is_well_formed(num_beams, max_len):
    dec = decoder()
    out = dec.generate(torch.randn(3, 7, 8), max_len=max_len, num_beams=num_beams)
    _check_well_formed(out, max_len)


@torch.no_grad()
def _seq_logprob(dec, mem, seq):
    logits = dec(torch.tensor([seq[:-1]]), mem).log_softmax(-1)[0]
    return sum(float(logits[i, t]) for i, t in enumerate(seq[1:]))


def test_greedy_picks_the_argmax_at_every_step():
    dec = decoder()
    mem = torch.randn(1, 7, 8)
    out = dec.generate(mem, max_len=6, num_beams=1)[0].tolist()
    seq = [BOS]
    while seq[-1] != EOS and len(seq) < 6:
        logits = dec(torch.tensor([seq]), mem)[0, -1]
        logits[[PAD, BOS]] = float("-inf")
        if len(seq) == 5:
            seq.append(EOS)
        else:
            seq.append(int(logits.argmax()))
    assert out[: len(seq)] == seq


def test_exhaustive_beam_finds_the_most_likely_report():
    """With more beams than possible prefixes, beam search is exact: compare against enumeration."""
    vocab, max_len = 6, 4  # words 3, 4, 5; reports BOS w{0..2} EOS
    dec = decoder(vocab=vocab, max_len=max_len, seed=3)
    mem = torch.randn(1, 5, 8)
    candidates = [[BOS, *ws, EOS] for n in range(0, max_len - 1) for ws in itertools.product([3, 4, 5], repeat=n)]
    best = max(candidates, key=lambda s: _seq_logprob(dec, mem, s))
    out = dec.generate(mem, max_len=max_len, num_beams=64, length_penalty=0.0)[0].tolist()
    out = out[: out.index(EOS) + 1]
    assert out == best
    greedy = dec.generate(mem, max_len=max_len, num_beams=1)[0].tolist()
    greedy = greedy[: greedy.index(EOS) + 1]
    assert _seq_logprob(dec, mem, out) >= _seq_logprob(dec, mem, greedy) - 1e-6


def test_too_long_reports_are_refused():
    with pytest.raises(ValueError, match="max_len=16"):
        decoder()(torch.ones(1, 17, dtype=torch.long), torch.randn(1, 3, 8))
