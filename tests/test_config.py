import json
import re

import pytest

from refers_lite.config import PROFILES, Config, ConfigError, get_config, parse_overrides


@pytest.mark.parametrize("profile", list(PROFILES))
def test_profiles_validate_and_round_trip(profile, tmp_path):
    cfg = get_config(profile)
    assert cfg.profile == profile
    cfg.save(tmp_path / "c.json")
    assert Config.load(tmp_path / "c.json") == cfg


def test_paper_profile_is_the_papers_setting():
    c = get_config("paper")
    m, t = c.model, c.train
    assert (m.image_size, m.patch_size, m.width, m.depth, m.heads) == (224, 16, 768, 12, 12)
    assert m.image_size // m.patch_size == 14 and m.act == "relu" and m.agg_mode == "concat" and m.num_views == 3
    assert (t.batch_size, t.max_steps, t.warmup_steps) == (32, 300_000, 10_000)
    assert (t.lr_vision, t.lr_text, t.momentum, t.weight_decay) == (3e-3, 3e-4, 0.9, 1e-4)
    d = c.data  # pre-trains on the rendered IU source domain with the paper's augmentation
    assert d.source == "source" and d.augment and d.hflip_prob == 0.5
    assert (round(d.crop_fraction * 256), d.max_rotation_deg) == (224, 10.0)


@pytest.mark.parametrize("key, value, match", [("data.source", "mimic", "data.source"),
                                               ("data.hflip_prob", "1.5", "hflip_prob"),
                                               ("data.crop_fraction", "0", "crop_fraction")])
def test_bad_data_settings_are_named(key, value, match):
    with pytest.raises(ConfigError, match=match):
        get_config("smoke", [f"{key}={value}"])


def test_unknown_keys_are_errors_that_name_them():
    with pytest.raises(ConfigError, match="model.agg_mod"):
        get_config("smoke", {"model": {"agg_mod": "add"}})
    with pytest.raises(ConfigError, match="unknown key.*optimiser"):
        get_config("smoke", {"optimiser": {}})
    with pytest.raises(ConfigError, match="unknown profile"):
        get_config("large")


@pytest.mark.parametrize("override, msg", [
    ({"model": {"agg_mode": "sum"}}, "agg_mode"),
    ({"model": {"width": 30, "heads": 4}}, "divisible"),
    ({"model": {"image_size": 30}}, "multiple"),
    ({"train": {"max_steps": "ten"}}, "max_steps"),
    ({"train": {"precision": "fp8"}}, "precision"),
    ({"loss": {"use_generation": False, "use_consistency": False}}, "at least one"),
    ({"loss": {"temperature": 0}}, "temperature"),
    ({"train": {"batch_size": 1.5}}, "integer"),
    ({"train": {"optimizer": "lamb"}}, "optimizer"),
])
def test_bad_values_are_rejected(override, msg):
    with pytest.raises(ConfigError, match=msg):
        get_config("smoke", override)


def test_cli_overrides_are_parsed_and_typed():
    cfg = get_config("smoke", ["train.max_steps=7", "model.agg_mode=add", "loss.use_generation=false",
                               "train.lr_vision=1e-2", "train.max_steps=8"])
    assert cfg.train.max_steps == 8 and cfg.model.agg_mode == "add"
    assert cfg.loss.use_generation is False and cfg.train.lr_vision == 1e-2
    with pytest.raises(ConfigError, match="section.key"):
        parse_overrides(["max_steps=3"])
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_overrides(["train.max_steps"])


def test_load_names_the_file(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps({"model": {"nope": 1}}))
    with pytest.raises(ConfigError, match="bad.json.*model.nope"):
        Config.load(p)
    p.write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json.*not valid JSON"):
        Config.load(p)


def test_every_profile_is_known_to_every_part_of_the_project():
    """A profile is a row in several registries (model, fine-tuning, grid, chapters, data build, evaluation, the
    ConvNet baselines, the CLI): one missing is a KeyError deep inside a chapter."""
    from refers_lite.cli import PROFILE_NAMES
    from refers_lite.config import PROFILES
    from refers_lite.data.synthesis.domain_build import BUILD_PROFILES
    from refers_lite.evaluation.evaluate import EVAL_PROFILES
    from refers_lite.experiments import CHAPTER_GRIDS, EXPERIMENT_PROFILES
    from refers_lite.training.finetune import FINETUNE_PROFILES
    from refers_lite.models.conv_encoder import CONVNET_OF_PROFILE
    names = set(PROFILES)
    assert names == {"smoke", "demo", "gpu", "paper"}
    for registry in (FINETUNE_PROFILES, EXPERIMENT_PROFILES, BUILD_PROFILES, EVAL_PROFILES, CONVNET_OF_PROFILE,
                     *CHAPTER_GRIDS.values()):
        assert set(registry) == names
    assert set(PROFILE_NAMES) == names


def test_the_gpu_profile_is_the_course_recipe_at_a_larger_size():
    demo, gpu, paper = get_config("demo"), get_config("gpu"), get_config("paper")
    for key in ("stem", "study_projection", "text_encoder", "text_freeze_layers"):
        assert getattr(gpu.model, key) == getattr(demo.model, key), key
    assert demo.model.image_size < gpu.model.image_size == paper.model.image_size
    assert demo.model.width < gpu.model.width < paper.model.width
    assert gpu.data.source == "source" and gpu.train.batch_size > demo.train.batch_size
    assert gpu.loss.temperature == demo.loss.temperature == 0.2 != paper.loss.temperature


def test_the_gpu_profile_builds_and_runs_a_step_on_a_cpu():
    import torch
    from refers_lite.models import REFERS
    cfg = get_config("gpu", {"model": {"text_encoder": "random", "text_freeze_layers": 0}})  # no MiniLM download
    torch.manual_seed(0)
    model = REFERS.from_config(cfg).train()
    m = cfg.model
    out = model(torch.rand(2, m.num_views, 1, m.image_size, m.image_size), None,
                torch.randint(3, m.vocab_size, (2, 12)), torch.randint(5, 100, (2, 9)), torch.ones(2, 9, dtype=torch.long))
    out.losses.total.backward()
    assert torch.isfinite(out.losses.total) and out.study.shape == (2, m.num_views * m.width)
    assert model.encoder.patch_embed.num_patches == (224 // 16) ** 2


@pytest.mark.parametrize("key, value, says", [
    ("model.heads", "0", "model.heads must be >= 1"),
    ("model.width", "0", "model.width must be >= 1"),
    ("model.decoder_heads", "0", "model.decoder_heads must be >= 1"),
    ("train.num_workers", "-3", "train.num_workers must be >= 0"),
    ("train.device", "tpu", "train.device must be auto, cpu, mps, cuda or cuda:N"),
    ("train.batch_size", "2.5", "train.batch_size must be a whole number"),
    ("train.weight_decay", "-1", "train.weight_decay must be >= 0"),
    ("train.val_every", "-5", "train.val_every must be >= 0"),
    ("train.lr_vision", "inf", "train.lr_vision must be a finite number, got inf"),
])
def test_bad_settings_name_their_key(key, value, says):
    with pytest.raises(ConfigError, match=re.escape(says)):
        get_config("smoke", [f"{key}={value}"])


def test_good_devices_and_whole_floats_pass():
    assert get_config("smoke", ["train.device=cuda:1"]).train.device == "cuda:1"
    assert get_config("smoke", ["train.batch_size=4.0"]).train.batch_size == 4
