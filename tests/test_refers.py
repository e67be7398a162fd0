import pytest
import torch

from conftest import model_inputs
from refers_lite.config import get_config
from refers_lite.models import REFERS


def build(cfg, seed=0):
    torch.manual_seed(seed)
    return REFERS.from_config(cfg)


@pytest.mark.parametrize("agg_mode", ["concat", "add", "none"])
def test_forward_shapes_every_agg_mode(agg_mode, batch):
    cfg = get_config("smoke", {"model": {"agg_mode": agg_mode}})
    out = build(cfg)(**model_inputs(batch))
    B, V, D = 4, cfg.model.num_views, cfg.model.width
    assert out.study.shape == (B, V * D) and out.report.shape == (B, V * D)
    assert out.view_weights.shape == (B, V)
    torch.testing.assert_close(out.view_weights.sum(-1), torch.ones(B))
    assert out.logits.shape == (B, batch["report_ids"].shape[1] - 1, cfg.model.vocab_size)
    assert torch.isfinite(out.losses.total)


def test_gradients_reach_every_trainable_parameter(batch):
    cfg = get_config("smoke", {"model": {"decoder_dropout": 0.0}})
    model = build(cfg)
    with torch.no_grad():  # let the aggregation half of the recurrent concatenation act
        model.encoder.rec_concat.proj.weight.normal_(0, 0.02)
    model(**model_inputs(batch)).losses.total.backward()
    dead = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert dead == []


def test_text_encoder_learns_from_both_contrastive_directions(batch):
    cfg = get_config("smoke", {"loss": {"use_generation": False}})
    model = build(cfg)
    out = model(**model_inputs(batch))
    v, t = out.study, out.report
    logits = torch.nn.functional.normalize(v, dim=-1) @ torch.nn.functional.normalize(t, dim=-1).t() / 0.1
    labels = torch.arange(4)
    params = [p for p in model.text_encoder.parameters() if p.requires_grad]
    g_i2t = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, labels), params, retain_graph=True)
    g_t2i = torch.autograd.grad(torch.nn.functional.cross_entropy(logits.t(), labels), params, retain_graph=True)
    g_sum = torch.autograd.grad(out.losses.total, params)
    for a, b, s in zip(g_i2t, g_t2i, g_sum):
        torch.testing.assert_close(s, 0.5 * (a + b))
    assert sum(float(g.abs().sum()) for g in g_t2i) > 0


def test_ablation_switches_drop_the_modules(batch):
    gen_only = build(get_config("smoke", {"loss": {"use_consistency": False}}))
    assert gen_only.text_encoder is None
    out = gen_only(images=batch["images"], view_mask=batch["view_mask"], report_ids=batch["report_ids"])
    assert out.report is None and out.losses.consistency is None
    con_only = build(get_config("smoke", {"loss": {"use_generation": False}}))
    assert con_only.decoder is None
    with pytest.raises(RuntimeError, match="without the report transformer"):
        con_only.generate(batch["images"])


def test_generation_from_images_alone(batch, toy):
    _, _, tok = toy
    model = build(get_config("smoke")).eval()
    for beams in (1, 2):
        out = model.generate(batch["images"], batch["view_mask"], max_len=12, num_beams=beams)
        assert out.shape[0] == 4 and out.shape[1] <= 12
        assert (out[:, 0] == 1).all() and (out == 2).any(1).all()
        assert all(isinstance(tok.decode(r), str) for r in out)


def test_padded_views_do_not_change_the_study(batch):
    model = build(get_config("smoke")).eval()
    imgs, mask = batch["images"].clone(), batch["view_mask"].clone()
    mask[:, 2] = False
    out1 = model(imgs, mask, batch["report_ids"], batch["text_ids"], batch["text_mask"])
    imgs[:, 2] = torch.randn_like(imgs[:, 2])
    out2 = model(imgs, mask, batch["report_ids"], batch["text_ids"], batch["text_mask"])
    torch.testing.assert_close(out1.study, out2.study)
    torch.testing.assert_close(out1.logits, out2.logits)
    assert (out1.view_weights[:, 2] == 0).all()


def test_only_real_views_are_encoded(batch):
    model = build(get_config("smoke")).eval()
    mask = batch["view_mask"].clone()
    mask[0, 1:] = False
    mask[1, 2] = False
    calls, encode = [], model.encoder.forward_tokens
    model.encoder.forward_tokens = lambda x: calls.append(x.shape[0]) or encode(x)
    fused = model.encode_study(batch["images"], mask).fused
    assert calls == [int(mask.sum())]  # 9 of the 12 films, not all of them
    every = encode(batch["images"].flatten(0, 1)).unflatten(0, mask.shape)  # the old way
    torch.testing.assert_close(fused, model.fusion(every[:, :, 0], mask)[0])


def test_padding_never_enters_the_conv_stems_batch_statistics(batch):
    cfg = get_config("smoke", {"model": {"stem": "conv"}})
    model, mask = build(cfg).train(), batch["view_mask"].clone()
    mask[:, 2] = False
    images = batch["images"].clone()
    images[:, 2] = 0.0  # blank padding, as the loaders write it
    bn = next(m for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))
    model.encode_study(images, mask)
    alone = build(cfg).train()
    alone_bn = next(m for m in alone.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))
    alone.encoder.forward_tokens(images[:, :2].flatten(0, 1))  # the real films only
    torch.testing.assert_close(bn.running_mean, alone_bn.running_mean)
    torch.testing.assert_close(bn.running_var, alone_bn.running_var)


def test_bad_inputs_are_clear_errors(batch):
    model = build(get_config("smoke"))
    x = batch["images"]
    with pytest.raises(ValueError, match=r"\(B, V, C, H, W\)"):
        model(x[:, 0], None, batch["report_ids"], batch["text_ids"], batch["text_mask"])
    with pytest.raises(ValueError, match="empty batch"):
        model(x[:0], None, batch["report_ids"][:0], batch["text_ids"][:0], batch["text_mask"][:0])
    with pytest.raises(ValueError, match="expected 3 views"):
        model(x[:, :2], None, batch["report_ids"], batch["text_ids"], batch["text_mask"])
    with pytest.raises(ValueError, match="report_ids"):
        model(x, None, None, batch["text_ids"], batch["text_mask"])
    with pytest.raises(ValueError, match="text_ids"):
        model(x, None, batch["report_ids"], None, None)


def test_gradient_checkpointing_gives_the_same_gradients(smoke_cfg, batch):
    """Recomputing activations in the backward trades time for memory and changes nothing else."""
    grads = []
    for on in (False, True):
        torch.manual_seed(0)
        model = REFERS.from_config(smoke_cfg).train()
        for m in model.modules():  # no dropout: both runs must see the same network
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        model.set_grad_checkpointing(on)
        model(**model_inputs(batch)).losses.total.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        if on:
            assert model.encoder.grad_checkpointing
            assert model.text_encoder.backbone.is_activation_checkpointing \
                if hasattr(model.text_encoder.backbone, "is_activation_checkpointing") \
                else model.text_encoder.backbone.is_gradient_checkpointing
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-5, atol=1e-6, msg=lambda m: f"{n}: {m}")


def test_refers_with_a_resnet_trains_both_tasks_and_exports_an_encoder_that_fine_tuning_loads(tmp_path, toy,
                                                                                             text_tokenizer):
    """Table 3's first row: the same REFERS with a timm ResNet in place of the radiograph transformer."""
    from refers_lite.training.checkpoint import export_image_encoder, load_image_encoder, load_refers
    from refers_lite.models.conv_encoder import ConvEncoder
    from refers_lite.training.pretrain import pretrain
    cfg = get_config("smoke", {"model": {"encoder": "resnet18"}, "train": {"max_steps": 2, "ckpt_every": 2}})
    res = pretrain(cfg, tmp_path / "run", train_set=toy[0], val_set=toy[1], progress=False)
    enc_path = export_image_encoder(res.last_checkpoint, tmp_path / "encoder.pt")
    enc = load_image_encoder(enc_path)
    assert isinstance(enc, ConvEncoder) and enc.arch == "resnet18" and enc.width == cfg.model.width
    pooled, tokens = enc(torch.rand(2, 1, cfg.model.image_size, cfg.model.image_size))
    assert pooled.shape == (2, cfg.model.width) and tokens.shape[-1] == cfg.model.width
    model, _ = load_refers(res.last_checkpoint)  # strict: every key of the ResNet REFERS
    assert torch.equal(model.encoder.proj.weight, enc.proj.weight)


def test_every_part_is_built_from_its_config_section():
    """Issue 17: each model class takes its config section (``X.from_config(cfg.model)``), not a long positional
    list; REFERS assembles its parts through them."""
    from refers_lite.models.report_transformer import ReportTransformer
    from refers_lite.models.view_fusion import ViewFusion
    cfg = get_config("smoke", {"model": {"fusion_hidden": 24, "decoder_depth": 2}})
    m = cfg.model
    fusion = ViewFusion.from_config(m)
    assert (fusion.dim, fusion.num_views, fusion.mlp[0].out_features) == (m.width, m.num_views, 24)
    dec = ReportTransformer.from_config(m)
    assert (dec.vocab_size, dec.max_len, len(dec.decoder.layers)) == (m.vocab_size, m.max_report_len, 2)
    assert dec.memory_proj.in_features == m.width
    model = REFERS.from_config(cfg)
    assert model.fusion.mlp[0].out_features == 24 and len(model.decoder.decoder.layers) == 2
    assert model.text_encoder.proj.out_features == model.fusion.out_dim == m.num_views * m.width
