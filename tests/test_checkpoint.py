import pytest
import torch

from refers_lite.checkpoint import (CheckpointError, export_image_encoder, load_checkpoint, load_image_encoder,
                                    load_refers, save_checkpoint)
from refers_lite.config import get_config
from refers_lite.models import RadiographClassifier
from refers_lite.train import pretrain


class Evil:  # an arbitrary object: torch.load(weights_only=True) must refuse to unpickle it
    pass


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    pretrain(get_config("smoke", {"train": {"max_steps": 4}}), out, progress=False)
    return out


def test_export_then_strict_load_round_trip(run, tmp_path):
    enc_path = export_image_encoder(run / "best.pt", tmp_path / "encoder.pt")
    clf = RadiographClassifier.from_pretrained(enc_path, num_classes=14).eval()
    ckpt = load_checkpoint(run / "best.pt")
    trained = {k[len("encoder."):]: v for k, v in ckpt["model"].items() if k.startswith("encoder.")}
    got = clf.encoder.state_dict()
    assert got.keys() == trained.keys() and len(got) > 20
    assert all(torch.equal(got[k], trained[k]) for k in got)  # every key, not 0 of 200
    logits = clf(torch.randn(2, 1, 32, 32))
    assert logits.shape == (2, 14)


def test_wrong_checkpoint_fails_loudly_listing_keys(run, tmp_path):
    enc_path = export_image_encoder(run / "last.pt", tmp_path / "encoder.pt")
    ckpt = torch.load(enc_path, weights_only=True)
    ckpt["config"]["model"]["agg_mode"] = "none"  # a model without the recurrent concatenation
    ckpt["state_dict"]["head.weight"] = torch.zeros(3)
    save_checkpoint(ckpt, tmp_path / "wrong.pt")
    with pytest.raises(CheckpointError) as e:
        load_image_encoder(tmp_path / "wrong.pt")
    msg = str(e.value)
    assert "wrong.pt" in msg and "unexpected keys" in msg and "rec_concat.proj.weight" in msg and "head.weight" in msg
    ckpt["config"]["model"]["agg_mode"] = "concat"
    ckpt["config"]["model"]["width"] = 64
    save_checkpoint(ckpt, tmp_path / "wider.pt")
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_image_encoder(tmp_path / "wider.pt")


def test_pretraining_checkpoint_is_not_an_encoder(run):
    with pytest.raises(CheckpointError, match="refers-lite export"):
        load_image_encoder(run / "last.pt")


def test_corrupt_missing_and_unsafe_files_are_named(tmp_path, run):
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes((run / "last.pt").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt.pt: cannot read"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="missing.pt: no such"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"format": "refers_lite.pretrain.v1", "x": Evil()}, tmp_path / "unsafe.pt")
    with pytest.raises(CheckpointError, match="unsafe.pt"):  # weights_only=True refuses arbitrary objects
        load_checkpoint(tmp_path / "unsafe.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a refers_lite checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_saved_config_is_validated_on_load(run, tmp_path):
    enc_path = export_image_encoder(run / "last.pt", tmp_path / "e.pt")
    ckpt = torch.load(enc_path, weights_only=True)
    ckpt["config"]["model"]["mystery"] = 1
    save_checkpoint(ckpt, tmp_path / "e2.pt")
    with pytest.raises(CheckpointError, match="e2.pt: its saved config is invalid.*model.mystery"):
        load_image_encoder(tmp_path / "e2.pt")


def test_whole_model_reloads_from_a_training_checkpoint(run):
    model, cfg = load_refers(run / "last.pt")
    sd = load_checkpoint(run / "last.pt")["model"]
    assert cfg.train.max_steps == 4 and not model.training
    assert all(torch.equal(v, sd[k]) for k, v in model.state_dict().items())
