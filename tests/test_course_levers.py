"""The options that let REFERS learn at course scale (``model.stem``, ``model.study_projection``,
``loss.duplicate_positives``, ``loss.vk_consistency_weight``): each changes what it says and nothing else; the
paper's choice stays the default."""
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import model_inputs
from refers_lite.config import ConfigError, get_config
from refers_lite.losses import consistency_loss
from refers_lite.models import REFERS
from refers_lite.models.radiograph_transformer import ConvStem, RadiographTransformer
from refers_lite.models.refers import same_text


def test_paper_defaults_are_unchanged():
    m, lo = get_config("paper").model, get_config("paper").loss
    assert (m.stem, m.study_projection, lo.duplicate_positives) == ("patch", "none", False)
    assert lo.vk_consistency_weight == 0.0


@pytest.mark.parametrize("patch", [2, 4, 8, 16])
def test_conv_stem_reaches_the_patch_grid(patch):
    stem = ConvStem(64, patch, 1, 32)
    out = stem(torch.rand(3, 1, 64, 64))
    assert out.shape == (3, (64 // patch) ** 2, 32) and stem.num_patches == out.shape[1]
    assert stem.grid_size == (64 // patch, 64 // patch)


def test_conv_stem_radiograph_transformer_tokens_and_errors():
    enc = RadiographTransformer(32, 8, 1, 32, 2, 2, stem="conv")
    agg, patches = enc(torch.rand(2, 1, 32, 32))
    assert agg.shape == (2, 32) and patches.shape == (2, 16, 32)
    with pytest.raises(ValueError, match="power-of-two"):
        ConvStem(36, 6, 1, 32)
    with pytest.raises(ConfigError, match="model.stem"):
        get_config("smoke", {"model": {"stem": "resnet"}})
    with pytest.raises(ConfigError, match="power-of-two"):
        get_config("smoke", {"model": {"stem": "conv", "patch_size": 6, "image_size": 36}})


def test_duplicate_positives_without_duplicates_is_eq2():
    torch.manual_seed(0)
    v, t = torch.randn(5, 8), torch.randn(5, 8)
    torch.testing.assert_close(consistency_loss(v, t, 0.1, same=torch.eye(5, dtype=torch.bool)),
                               consistency_loss(v, t, 0.1))


def test_duplicate_positives_spread_the_target_over_same_text_partners():
    torch.manual_seed(1)
    v, t = torch.randn(3, 4), torch.randn(3, 4)  # reports 0 and 1 are the same text (embedded apart: dropout)
    same = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    logits = F.normalize(v, dim=-1) @ F.normalize(t, dim=-1).T / 0.1
    lsm_r, lsm_c = logits.log_softmax(1), logits.log_softmax(0)
    # row 0's target: half on report 0, half on report 1 (the same text); likewise by columns
    i2t = -(0.5 * (lsm_r[0, 0] + lsm_r[0, 1]) + 0.5 * (lsm_r[1, 0] + lsm_r[1, 1]) + lsm_r[2, 2]) / 3
    t2i = -(0.5 * (lsm_c[0, 0] + lsm_c[1, 0]) + 0.5 * (lsm_c[0, 1] + lsm_c[1, 1]) + lsm_c[2, 2]) / 3
    got = consistency_loss(v, t, 0.1, same=same)
    assert float(got) == pytest.approx(float(0.5 * (i2t + t2i)), rel=1e-5)
    assert float(got) != pytest.approx(float(consistency_loss(v, t, 0.1)), rel=1e-3)


def test_duplicate_positives_change_nothing_when_same_texts_embed_alike():
    """A measured dead end, proved: when identical texts get identical embeddings (a deterministic text
    encoder), the soft targets give exactly Eq. 2's loss, so its gradient along anything the model can
    change is the same. The option differs from Eq. 2 only through dropout in the text encoder."""
    torch.manual_seed(2)
    v, t = torch.randn(4, 6), torch.randn(4, 6)
    t[2] = t[0]
    same = torch.eye(4, dtype=torch.bool)
    same[0, 2] = same[2, 0] = True
    torch.testing.assert_close(consistency_loss(v, t, 0.1, same=same), consistency_loss(v, t, 0.1))


def test_same_text_ignores_padding_and_finds_identical_reports():
    ids = torch.tensor([[5, 6, 7, 0], [5, 6, 7, 0], [5, 6, 0, 0], [5, 6, 7, 8]])
    mask = ids.ne(0)
    same = same_text(ids, mask)
    assert same.tolist() == [[True, True, False, False], [True, True, False, False],
                             [False, False, True, False], [False, False, False, True]]


def test_study_projection_feeds_task2_only(batch):
    cfg = get_config("smoke", {"model": {"study_projection": "mlp"}, "loss": {"duplicate_positives": True}})
    torch.manual_seed(0)
    model = REFERS.from_config(cfg)
    out = model(**model_inputs(batch))
    assert out.study.shape == out.report.shape and torch.isfinite(out.losses.total)
    out.losses.consistency.backward()
    head = model.study_projection.net[0].weight
    assert head.grad is not None and head.grad.abs().sum() > 0
    # the head is not part of the image encoder that fine-tuning receives
    assert not any(n.startswith("study_projection") for n, _ in model.encoder.named_parameters())
    # without Task 2 there is no head
    cfg2 = get_config("smoke", {"model": {"study_projection": "mlp"}, "loss": {"use_consistency": False}})
    assert REFERS.from_config(cfg2).study_projection is None


def test_vk_consistency_adds_eq2_on_vk_beside_the_head(batch):
    """``loss.vk_consistency_weight``: the total gains w * Eq. 2 on v^k itself against the same t^k (the paper's
    form); its gradient reaches the encoder without passing through the head; 0 leaves the loss as it was."""
    over = {"model": {"study_projection": "mlp"}, "loss": {"vk_consistency_weight": 0.5}}
    torch.manual_seed(0)
    model = REFERS.from_config(get_config("smoke", over)).eval()  # eval: the head's BatchNorm is deterministic
    out = model(**model_inputs(batch))
    tau = model.criterion.temperature()
    assert torch.allclose(out.losses.consistency_vk, consistency_loss(out.study, out.report, tau))
    head_eq2 = consistency_loss(model.joint_study(out.study), out.report, tau)
    assert torch.allclose(out.losses.consistency, head_eq2)  # the head's Eq. 2 is unchanged
    assert not torch.allclose(out.losses.consistency_vk, out.losses.consistency)
    assert torch.allclose(out.losses.total, out.losses.generation + out.losses.consistency
                          + 0.5 * out.losses.consistency_vk)
    assert "loss_consistency_vk" in out.losses.as_floats()
    out.losses.consistency_vk.backward()
    assert model.study_projection.net[0].weight.grad is None  # v^k's term does not go through the head
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    # weight 0 (the default): no such term, nothing logged
    torch.manual_seed(0)
    plain = REFERS.from_config(get_config("smoke", {"model": {"study_projection": "mlp"}})).eval()
    out0 = plain(**model_inputs(batch))
    assert out0.losses.consistency_vk is None and "loss_consistency_vk" not in out0.losses.as_floats()
    assert torch.allclose(out0.losses.total, out0.losses.generation + out0.losses.consistency)


def test_vk_consistency_without_a_head_or_task2_changes_nothing(batch):
    """Without a head Eq. 2 is on v^k already (chapter 04's exercise on the paper's Eq. 2), and without Task 2
    there is nothing to add (chapter 07's ablation): the weight is then ignored, not doubled; bad weights are
    refused."""
    for over in ({}, {"loss": {"use_consistency": False}}):
        outs = []
        for w in (0.0, 1.0):
            cfg = get_config("smoke", {"model": {"study_projection": "none" if not over else "mlp"},
                                       "loss": {"vk_consistency_weight": w, **over.get("loss", {})}})
            torch.manual_seed(0)
            outs.append(REFERS.from_config(cfg).eval()(**model_inputs(batch)).losses)
        assert outs[1].consistency_vk is None and torch.equal(outs[0].total, outs[1].total)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="vk_consistency_weight"):
            get_config("smoke", {"model": {"study_projection": "mlp"}, "loss": {"vk_consistency_weight": bad}})


def test_a_run_named_before_an_option_existed_keeps_its_name():
    """``Config.identity`` (what names a run folder) leaves a later option out at its old behaviour, so a run
    made before it existed is found again; set to anything else, it names another run."""
    from refers_lite.config import LATER_OPTIONS
    from refers_lite.experiments import _digest
    cfg = get_config("demo")
    before = cfg.to_dict()
    for section, key in LATER_OPTIONS:
        del before[section][key]  # the config as it was written before these options
    assert _digest(cfg.identity()) == _digest(before)
    other = get_config("demo", {"loss": {"vk_consistency_weight": 1.0}})
    assert other.identity()["loss"]["vk_consistency_weight"] == 1.0
    assert _digest(other.identity()) != _digest(cfg.identity())
    assert cfg.to_dict()["loss"]["vk_consistency_weight"] == 0.0  # saved configs keep every option


def test_study_projection_needs_two_studies_in_training():
    from refers_lite.models.projection_head import StudyProjection
    head = StudyProjection(8).train()
    with pytest.raises(ValueError, match="at least 2 studies"):
        head(torch.randn(1, 8))
    assert head.eval()(torch.randn(1, 8)).shape == (1, 8)
    assert math.isclose(float(StudyProjection(8, "none")(torch.ones(2, 8)).sum()), 16.0)


def test_a_wholly_frozen_text_encoder_remembers_features_and_gives_the_same_output(text_tokenizer):
    from refers_lite.models.text_encoder import _REMEMBERED, TextEncoder
    torch.manual_seed(0)
    enc = TextEncoder("random", out_dim=8, freeze_layers=2, random_width=16, random_depth=2, random_heads=2)
    assert enc.frozen and not any(p.requires_grad for p in enc.backbone.parameters())
    enc.train()
    assert not enc.backbone.training  # no dropout in a frozen backbone
    b = text_tokenizer(["no effusion.", "small left effusion.", "no effusion."], padding=True, return_tensors="pt")
    _REMEMBERED.clear()  # nothing remembered by other tests' encoders of the same weights
    pooled_rows = []
    enc.pool = lambda ids, mask: pooled_rows.append(ids.shape[0]) or TextEncoder.pool(enc, ids, mask)
    out = enc(b["input_ids"], b["attention_mask"])
    assert pooled_rows == [2] and len(enc._memo) == 2  # two distinct reports, each computed once
    del enc.pool
    with torch.no_grad():
        direct = enc.proj(enc.pool(b["input_ids"], b["attention_mask"]))
    torch.testing.assert_close(out, direct)
    out.sum().backward()
    assert enc.proj.weight.grad is not None  # the projection still learns
    enc.freeze_layers(1)
    assert not enc.frozen and not enc._memo


def test_frozen_text_features_are_shared_between_encoders_with_the_same_weights_only(text_tokenizer):
    from refers_lite.models.text_encoder import TextEncoder
    kw = dict(out_dim=8, freeze_layers=2, random_width=16, random_depth=2, random_heads=2)
    torch.manual_seed(3)
    first = TextEncoder("random", **kw)
    b = text_tokenizer(["a report only these tests write.", "another one."], padding=True, return_tensors="pt")
    first(b["input_ids"], b["attention_mask"])
    torch.manual_seed(3)
    same = TextEncoder("random", **kw)  # another run's encoder, the same frozen weights
    assert same._memo is first._memo and len(same._memo) >= 2
    calls = []
    same.pool = lambda *a: calls.append(1) or TextEncoder.pool(same, *a)
    same(b["input_ids"], b["attention_mask"])
    assert calls == []  # answered from what the first encoder computed
    torch.manual_seed(4)
    other = TextEncoder("random", **kw)
    assert other._memo is not first._memo  # other weights, other features
    state = other.state_dict()
    same.load_state_dict(state)  # new weights loaded into an encoder that has remembered features
    assert same._memo is other._memo
    with torch.no_grad():
        direct = same.proj(TextEncoder.pool(same, b["input_ids"], b["attention_mask"]))
    torch.testing.assert_close(same(b["input_ids"], b["attention_mask"]), direct)


def test_scratch_uses_the_architecture_refers_was_pre_trained_with(tmp_path):
    """Training from scratch is compared with REFERS on equal terms: a REFERS variant with a convolutional stem
    is compared with a randomly initialised encoder that has the same stem."""
    from pathlib import Path

    from refers_lite.data.loading.source_studies import write_placeholder_source
    from refers_lite.experiments import Grid
    from refers_lite.training.finetune import build_encoder
    from refers_lite.models.radiograph_transformer import ConvStem
    root = Path(tmp_path) / "data"
    write_placeholder_source(root / "source", n_studies=8, image_size=32, seed=0)
    plain = Grid("smoke", root, tmp_path / "g", ("scratch",), (), ())
    assert plain.scratch_model() == {}
    conv = Grid("smoke", root, tmp_path / "g", ("scratch",), (), (), pretrain_overrides={"model": {"stem": "conv"}})
    assert conv.scratch_model() == {"stem": "conv"}
    assert isinstance(build_encoder("scratch", "smoke", conv.scratch_model()).patch_embed, ConvStem)
    assert not isinstance(build_encoder("scratch", "smoke").patch_embed, ConvStem)


def test_a_run_written_before_the_new_settings_resumes(tmp_path):
    """A checkpoint whose saved config lacks settings added since (model.stem, ...) resumes: they take their
    defaults, which is what the run used."""
    from refers_lite.training.checkpoint import load_checkpoint, save_checkpoint
    from refers_lite.training.pretrain import pretrain
    cfg = get_config("smoke", {"train": {"max_steps": 4, "ckpt_every": 2}})
    pretrain(cfg, tmp_path, progress=False, stop_after=2)
    ckpt = load_checkpoint(tmp_path / "last.pt")
    for sec, key in (("model", "stem"), ("model", "study_projection"), ("loss", "duplicate_positives"),
                     ("loss", "vk_consistency_weight")):
        del ckpt["config"][sec][key]
    save_checkpoint(ckpt, tmp_path / "last.pt")
    res = pretrain(cfg, tmp_path, progress=False)
    assert res.step == 4


def test_the_demo_profile_is_the_measured_course_recipe():
    """``benchmarks/course_levers.py`` measures every lever from the former demo recipe; its ``conv_simple`` (the
    course recipe the book's table reports) with three renders of every report and tau = 0.2
    (``conv_simple_r3_tau02``) must be exactly what the ``demo`` profile now trains, on the films the demo build
    renders."""
    import copy
    import importlib.util
    from pathlib import Path
    from refers_lite.config import deep_update
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "course_levers.py"
    spec = importlib.util.spec_from_file_location("course_levers", path)
    levers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(levers)
    former = get_config("demo", levers.FORMER_DEMO)
    assert (former.model.stem, former.train.batch_size, former.data.augment, former.data.renders,
            former.loss.temperature) == ("patch", 16, True, 1, 0.1)
    course = get_config("demo", deep_update(copy.deepcopy(levers.FORMER_DEMO), levers.VARIANTS["conv_simple_r3_tau02"]))
    assert course.to_dict() == get_config("demo").to_dict()
    from refers_lite.data.synthesis.domain_build import BUILD_PROFILES
    assert BUILD_PROFILES["demo"].source_renders == course.data.renders == 3
