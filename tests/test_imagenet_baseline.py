"""ImageNet initialisation (refers_lite.baselines.imagenet): timm ViT weights in the radiograph transformer,
and a clear 'not available' offline or at sizes without ImageNet weights. Never touches the network."""
import pytest
import timm
import torch
from timm.models.vision_transformer import VisionTransformer

from refers_lite.baselines import imagenet as im
from refers_lite.training.checkpoint import load_image_encoder
from refers_lite.config import ModelConfig, get_config


def _timm_vit(m: ModelConfig, seed: int = 0) -> VisionTransformer:
    torch.manual_seed(seed)
    vit = VisionTransformer(img_size=m.image_size, patch_size=m.patch_size, in_chans=m.in_chans, embed_dim=m.width,
                            depth=m.depth, num_heads=m.heads, mlp_ratio=m.mlp_ratio, num_classes=0)
    with torch.no_grad():  # timm starts the [CLS] token near zero and biases at zero: make every weight count
        for p in vit.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return vit.eval()


@pytest.mark.parametrize("agg_mode", ["concat", "none"])
def test_the_radiograph_transformer_computes_what_the_timm_vit_computes(agg_mode):
    m = ModelConfig(image_size=32, patch_size=8, width=32, depth=2, heads=2, act="gelu", agg_mode=agg_mode)
    vit = _timm_vit(m)
    enc = im.radiograph_transformer_from_timm(vit, m).eval()
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        want = vit.forward_features(x)  # (B, 1 + N, D), [CLS] first, final norm applied
        agg, patches = enc(x)
    torch.testing.assert_close(agg, want[:, 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(patches, want[:, 1:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(enc.agg_token, vit.cls_token)
    # an untouched radiograph transformer does not (the weights did move)
    assert not torch.allclose(type(enc).from_config(m).eval()(x)[0], agg, atol=1e-3)


def test_a_vit_of_another_shape_or_activation_is_refused_by_name():
    m = ModelConfig(image_size=32, patch_size=8, width=32, depth=2, heads=2, act="gelu")
    with pytest.raises(ValueError, match=r"my-vit: .*depth 3 \(timm\) vs 2"):
        im.radiograph_transformer_from_timm(_timm_vit(ModelConfig(image_size=32, patch_size=8, width=32, depth=3,
                                                                  heads=2)), m, "my-vit")
    with pytest.raises(ValueError, match="GELU"):
        im.radiograph_transformer_from_timm(_timm_vit(m), ModelConfig(image_size=32, patch_size=8, width=32,
                                                                      depth=2, heads=2, act="relu"))


def test_no_imagenet_weights_at_the_small_profiles_and_none_offline(tmp_path, monkeypatch):
    out = tmp_path / "encoder.pt"
    for profile in ("smoke", "demo"):
        with pytest.raises(im.ImageNetUnavailable, match=f"no ImageNet-pre-trained ViT exists at the {profile}"):
            im.imagenet_encoder(profile, out)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    called = []
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: called.append(a))
    with pytest.raises(im.ImageNetUnavailable, match="HF_HUB_OFFLINE"):
        im.imagenet_encoder("paper", out)
    assert not called and not out.exists()  # refused before asking the hub, and nothing written


def test_a_failed_download_is_not_available_and_a_loaded_one_is_a_strict_encoder_file(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setitem(im.IMAGENET_VIT_OF_PROFILE, "smoke", "a-vit")
    out = tmp_path / "encoder.pt"

    def offline(name, pretrained, **kw):
        raise OSError("We couldn't connect to 'https://huggingface.co'")
    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(im.ImageNetUnavailable, match="timm could not load a-vit: OSError"):
        im.imagenet_encoder("smoke", out)
    assert not out.exists()

    m = get_config("smoke", {"model": {"act": "gelu"}}).model
    asked = {}

    def hub(name, pretrained, **kw):  # stands in for the download; timm builds the same class
        asked.update(name=name, pretrained=pretrained, **kw)
        return _timm_vit(m, seed=1)
    monkeypatch.setattr(timm, "create_model", hub)
    im.imagenet_encoder("smoke", out)
    assert asked == {"name": "a-vit", "pretrained": True, "num_classes": 0, "in_chans": m.in_chans,
                     "img_size": m.image_size}
    enc = load_image_encoder(out)
    x = torch.randn(2, 1, m.image_size, m.image_size)
    with torch.no_grad():
        torch.testing.assert_close(enc.eval()(x)[0], _timm_vit(m, seed=1).forward_features(x)[:, 0],
                                   rtol=1e-5, atol=1e-5)
