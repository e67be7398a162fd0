import re
from pathlib import Path

import numpy as np
import pytest
import torch

from refers_lite.training.checkpoint import (CheckpointError, export_image_encoder, load_checkpoint, load_image_encoder,
                                             load_refers, save_checkpoint)
from refers_lite.config import get_config
from refers_lite.models import RadiographClassifier
from refers_lite.training.pretrain import pretrain


class Evil:  # an arbitrary object: torch.load(weights_only=True) must refuse to unpickle it
    pass


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    pretrain(get_config("smoke", {"train": {"max_steps": 4}}), out, progress=False)
    return out


def test_export_then_strict_load_round_trip(run, tmp_path):
    enc_path = export_image_encoder(run / "best.pt", tmp_path / "encoder.pt")
    clf = RadiographClassifier.from_pretrained(enc_path, num_outputs=14).eval()
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


# -- no loader runs code from a file (issue 18) ---------------------------------------------------------------

PACKAGE = Path(__file__).resolve().parents[1] / "refers_lite"


def _torch_load_calls(source: str) -> list[str]:
    """The text of every ``torch.load(...)`` call in ``source``, up to its closing parenthesis."""
    calls = []
    for m in re.finditer(r"torch\.(?:serialization\.)?load\(", source):
        depth, i = 1, m.end()
        while depth and i < len(source):
            depth += {"(": 1, ")": -1}.get(source[i], 0)
            i += 1
        calls.append(source[m.start():i])
    return calls


def test_every_torch_load_in_the_package_is_weights_only():
    files = sorted(PACKAGE.rglob("*.py"))
    calls = {f"{f.relative_to(PACKAGE)}: {c}": c for f in files for c in _torch_load_calls(f.read_text())}
    assert calls, "found no torch.load call at all: the scan is broken"
    unsafe = [k for k, c in calls.items() if not re.search(r"weights_only\s*=\s*True", c)]
    assert not unsafe, f"torch.load without weights_only=True: {unsafe}"
    for f in files:
        assert not re.search(r"weights_only\s*=\s*False", f.read_text()), f"{f}: weights_only=False"
    assert _torch_load_calls("x = torch.load(p, map_location=f(0))\ny = 1") == ["torch.load(p, map_location=f(0))"]


class RunsCode:  # what an attacker's best.pt holds: unpickling it calls print and writes a file
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (_effects, (str(self.marker),))


def _effects(marker: str):
    print("PWNED")
    Path(marker).write_text("ran")


def _finetune_payload(marker: Path) -> dict:
    from refers_lite.training.finetune import FINETUNE_FORMAT
    return {"format": FINETUNE_FORMAT, "model": {}, "classes": ["a"], "task": "binary", "step": 0,
            "finetune": {}, "run": {"encoder": "scratch"}, "hook": RunsCode(marker)}


def _assert_refused(excinfo, path: Path, marker: Path, capsys) -> None:
    err = excinfo.value
    msg = str(err)
    assert str(path) in msg and "not a refers_lite checkpoint, or saved by untrusted code" in msg, msg
    for advice in ("weights_only", "safe_globals"):  # PyTorch's ways round the check are not passed on
        assert advice not in msg, msg
    assert err.__cause__ is None and err.__suppress_context__  # nor shown in a traceback
    assert not marker.exists() and "PWNED" not in capsys.readouterr().out  # nothing ran


def test_the_payload_runs_code_when_loaded_unsafely(tmp_path, capsys):
    """The fixture is real: what the package used to do (weights_only=False) runs it."""
    marker = tmp_path / "ran.txt"
    torch.save(_finetune_payload(marker), tmp_path / "best.pt")
    torch.load(tmp_path / "best.pt", weights_only=False)
    assert marker.read_text() == "ran" and "PWNED" in capsys.readouterr().out


def test_load_checkpoint_refuses_code_without_passing_on_torchs_advice(tmp_path, capsys):
    marker = tmp_path / "ran.txt"
    path = tmp_path / "best.pt"
    torch.save(_finetune_payload(marker), path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    _assert_refused(e, path, marker, capsys)


def test_cam_refuses_a_best_pt_that_would_run_code(tmp_path, capsys):
    from refers_lite.evaluation.cam import CamModel
    marker = tmp_path / "ran.txt"
    torch.save(_finetune_payload(marker), tmp_path / "best.pt")
    with pytest.raises(CheckpointError) as e:
        CamModel.from_run(tmp_path)
    _assert_refused(e, tmp_path / "best.pt", marker, capsys)


class _Images(torch.utils.data.Dataset):  # 8 random 16 x 16 radiographs, one binary label
    task, classes, name = "binary", ["finding"], "tiny"

    def __len__(self):
        return 8

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return {"image": torch.randint(0, 256, (1, 16, 16), dtype=torch.uint8, generator=g),
                "labels": torch.tensor([float(i % 2)]), "index": i}

    def labels_matrix(self):
        return np.array([[i % 2] for i in range(8)], dtype=np.float32)


def _finetuner(out_dir: Path):
    from refers_lite.models.classifier import RadiographClassifier
    from refers_lite.training.finetune import Finetuner, get_finetune_config
    from refers_lite.models.radiograph_transformer import RadiographTransformer
    torch.manual_seed(0)
    enc = RadiographTransformer(image_size=16, patch_size=8, width=16, depth=1, heads=2)
    cfg = get_finetune_config("smoke", {"min_steps": 2, "batch_size": 4})
    return Finetuner(cfg, RadiographClassifier(enc, 1), _Images(), _Images(), _Images(), 0, out_dir, progress=False)


def test_finetuning_saves_a_plain_best_pt_and_refuses_one_that_would_run_code(tmp_path, monkeypatch, capsys):
    from refers_lite.training.finetune import Finetuner
    _finetuner(tmp_path / "ok").fit()
    best = torch.load(tmp_path / "ok" / "best.pt", weights_only=True)  # what is saved loads safely
    assert best["classes"] == ["finding"] and best["run"]["name"] == "tiny"
    marker = tmp_path / "ran.txt"
    path = tmp_path / "evil" / "best.pt"
    monkeypatch.setattr(Finetuner, "_save_best", lambda self, step: torch.save(_finetune_payload(marker), path))
    with pytest.raises(CheckpointError) as e:
        _finetuner(tmp_path / "evil").fit()  # the best checkpoint is re-read for the test split
    _assert_refused(e, path, marker, capsys)


def test_lsp_refuses_a_best_pt_that_would_run_code(tmp_path, monkeypatch, capsys):
    import refers_lite.baselines.lsp as lsp
    marker = tmp_path / "ran.txt"
    path = tmp_path / "lsp" / "run" / "best.pt"

    class Trained:  # the training loop, replaced by one that leaves an attacker's best.pt
        def __init__(self, *args, **kwargs):
            pass

        def fit(self):
            path.parent.mkdir(parents=True)
            torch.save(_finetune_payload(marker), path)

    monkeypatch.setattr(lsp, "Finetuner", Trained)
    monkeypatch.setattr(lsp, "SourceRadiographs", lambda root, split, renders=1: None)
    with pytest.raises(CheckpointError) as e:
        lsp.pretrain_lsp("vit", "smoke", tmp_path / "source", tmp_path / "lsp", progress=False)
    _assert_refused(e, path, marker, capsys)
    assert not (tmp_path / "lsp" / "encoder.pt").exists()


def _pickled_globals(path: Path) -> set[str]:
    """Every ``module.name`` the pickle of a torch zip checkpoint (``<name>/data.pkl``) would import to load."""
    import pickletools
    import zipfile
    with zipfile.ZipFile(path) as z:
        [pkl] = [n for n in z.namelist() if n.endswith("/data.pkl")]
        stream = z.read(pkl)
    found, strings = set(), []
    for op, arg, _ in pickletools.genops(stream):
        if op.name in ("GLOBAL", "INST"):
            found.add(arg.replace(" ", "."))
        elif op.name == "STACK_GLOBAL":
            found.add(".".join(strings[-2:]))
        elif isinstance(arg, str):
            strings.append(arg)
    return found


def test_no_checkpoint_names_a_module_of_the_package_so_a_new_layout_loads_old_ones(run, tmp_path):
    """Issue 17: checkpoints hold tensors and plain data only, so moving modules (training/, data/reports/...)
    cannot break loading a checkpoint written before the move: no pickle names anything under ``refers_lite``."""
    export_image_encoder(run / "best.pt", tmp_path / "encoder.pt")
    _finetuner(tmp_path / "ft").fit()
    for p in [run / "best.pt", run / "last.pt", tmp_path / "encoder.pt", tmp_path / "ft" / "best.pt"]:
        names = _pickled_globals(p)
        assert any(n.startswith("torch.") for n in names)  # the scan sees torch's rebuild functions
        assert not [n for n in names if n.startswith("refers_lite")], f"{p.name} pickles {sorted(names)}"
