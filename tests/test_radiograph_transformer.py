import pytest
import torch

from refers_lite.models.radiograph_transformer import RadiographTransformer


def tiny(agg_mode="concat", **kw):
    torch.manual_seed(0)
    return RadiographTransformer(image_size=32, patch_size=8, in_chans=1, width=32, depth=2, heads=2,
                                 agg_mode=agg_mode, **kw)


@pytest.mark.parametrize("agg_mode", ["concat", "add", "none"])
def test_shapes(agg_mode):
    enc = tiny(agg_mode)
    agg, patches = enc(torch.randn(3, 1, 32, 32))
    assert agg.shape == (3, 32) and patches.shape == (3, 16, 32)
    assert enc.grid_size == (4, 4)


def test_paper_grid_is_14_by_14():
    enc = RadiographTransformer(image_size=224, patch_size=16, width=64, depth=1, heads=2)
    assert enc.grid_size == (14, 14) and enc.pos_embed.shape == (1, 197, 64)


def test_aggregation_embedding_starts_at_zero_and_positions_random():
    enc = tiny()
    assert torch.count_nonzero(enc.agg_token) == 0
    assert enc.pos_embed.std() > 0.005


def test_recurrent_concatenation_starts_as_plain_vit_then_differs():
    plain, concat = tiny("none"), tiny("concat")
    concat.load_state_dict({**plain.state_dict(), **{k: v for k, v in concat.state_dict().items()
                                                     if k.startswith("rec_concat")}})
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(concat(x)[0], plain(x)[0])  # identity start: a plain ViT
    with torch.no_grad():
        concat.rec_concat.proj.weight[:, 32:].normal_(0, 0.1)  # let the aggregation half act
    assert not torch.allclose(concat(x)[0], plain(x)[0], atol=1e-4)
    # the aggregation token really reaches every patch: changing it changes all patch outputs
    out1 = concat.forward_tokens(x)
    with torch.no_grad():
        concat.agg_token.add_(1.0)
    out2 = concat.forward_tokens(x)
    assert (out1[:, 1:] - out2[:, 1:]).abs().amax(-1).min() > 0


def test_add_mode_is_the_official_variant():
    plain, add = tiny("none"), tiny("add")
    add.load_state_dict(plain.state_dict())
    x = torch.randn(2, 1, 32, 32)
    assert not torch.allclose(add(x)[0], plain(x)[0])


def test_stored_attention_matches_fast_path_and_rows_sum_to_one():
    enc = tiny().eval()
    x = torch.randn(2, 1, 32, 32)
    fast = enc.forward_tokens(x)
    enc.set_store_attention(True)
    slow = enc.forward_tokens(x)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    maps = enc.attention_maps()
    assert len(maps) == 2 and maps[0].shape == (2, 2, 17, 17)
    torch.testing.assert_close(maps[-1].sum(-1), torch.ones(2, 2, 17))
    enc.set_store_attention(False)
    enc.forward_tokens(x)
    with pytest.raises(RuntimeError, match="set_store_attention"):
        enc.attention_maps()


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (2, 1, 64, 64), (1, 32, 32)])
def test_wrong_input_shapes_are_clear_errors(shape):
    with pytest.raises(ValueError, match=r"expects images of shape \(B, 1, 32, 32\)"):
        tiny()(torch.randn(*shape))


def test_gelu_option():
    enc = tiny(act="gelu")
    assert isinstance(enc.blocks[0].mlp.act, torch.nn.GELU)
    assert isinstance(tiny().blocks[0].mlp.act, torch.nn.ReLU)


def test_cpu_bf16_attention_kernel_choice_keeps_the_numbers():
    """On a CPU under bf16 autocast the math SDPA kernel is chosen (faster there); its output matches PyTorch's
    own kernel choice and the explicit softmax(QK^T / sqrt(d)) V that attention maps use, to bf16 precision."""
    from refers_lite.models import radiograph_transformer as rt
    torch.manual_seed(0)
    attn = rt.Attention(64, 4)
    x = torch.randn(6, 17, 64)
    outs = {}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outs["math"] = attn(x).float()
        rt.MATH_ATTENTION_ON_CPU_BF16 = False
        try:
            outs["own"] = attn(x).float()
        finally:
            rt.MATH_ATTENTION_ON_CPU_BF16 = True
        attn.store_attention = True
        outs["explicit"] = attn(x).float()
    assert attn.attention_map.shape == (6, 4, 17, 17)
    scale = outs["explicit"].abs().mean()
    for name in ("math", "own"):
        assert (outs[name] - outs["explicit"]).abs().mean() < 0.02 * scale, name
