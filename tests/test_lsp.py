"""LSP baselines (refers_lite.baselines.lsp) and the ConvNet encoder."""
import pytest
import torch

from refers_lite.baselines.lsp import pretrain_lsp
from refers_lite.training.checkpoint import load_image_encoder
from refers_lite.data.loading.source_studies import (TOKENIZER_FILE, SourceRadiographs, SourceStudies,
                                                     write_placeholder_source)
from refers_lite.data.reports.structured_labels import LABELS
from refers_lite.training.finetune import finetune, get_finetune_config
from refers_lite.models.conv_encoder import ConvEncoder
from refers_lite.models.radiograph_transformer import RadiographTransformer
from test_finetune import _domain


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return write_placeholder_source(tmp_path_factory.mktemp("lsp") / "source", n_studies=30, image_size=40, seed=1)


@pytest.mark.parametrize("renders", [1, 2])
def test_every_radiograph_carries_its_studys_structured_labels(source, tmp_path, renders):
    if renders > 1:  # every film of every render served, each with its study's labels
        source = write_placeholder_source(tmp_path / "source", n_studies=30, image_size=40, seed=1, renders=renders)
    studies = SourceStudies(source, "train", renders=renders)
    images = SourceRadiographs(source, "train", renders=renders)
    assert len(images) == studies.n_images and images.classes == list(LABELS)
    y = studies.structured_labels()
    assert len(y) == studies.n_studies and len(studies) == renders * studies.n_studies
    k = 0
    for s in range(len(studies)):
        views = studies[s]["images"]  # (n, 1, S, S) uint8
        for v in range(views.shape[0]):
            item = images[k]
            assert torch.equal(item["labels"], torch.from_numpy(y[s % studies.n_studies]))
            assert torch.equal(item["image"], views[v])
            k += 1
    assert k == len(images) and y.sum() > 0  # the placeholder reports do mention findings


@pytest.mark.parametrize("arch, kind", [("vit", RadiographTransformer),
                                        pytest.param("convnet", ConvEncoder, marks=pytest.mark.slow)])
def test_lsp_pretraining_exports_an_encoder_that_fine_tunes(source, tmp_path, arch, kind):
    cfg = get_finetune_config("smoke", {"min_steps": 6, "epochs": 2, "batch_size": 8})
    path = pretrain_lsp(arch, "smoke", source, tmp_path / "lsp", cfg=cfg, progress=False)
    enc = load_image_encoder(path)
    assert isinstance(enc, kind)
    best = torch.load(tmp_path / "lsp" / "run" / "best.pt", weights_only=True)["model"]
    for k, v in enc.state_dict().items():  # the exported weights are the best checkpoint's encoder
        assert torch.equal(v, best[f"encoder.{k}"]), k
    stamp = path.stat().st_mtime_ns
    assert pretrain_lsp(arch, "smoke", source, tmp_path / "lsp", cfg=cfg, progress=False) == path
    assert path.stat().st_mtime_ns == stamp  # reused, not retrained
    domain = _domain(tmp_path / "dom")
    res = finetune(path, domain, 1.0, 0, tmp_path / "ft", cfg=get_finetune_config("smoke"), progress=False)
    assert set(res.test_auc) == {"blob", "stripe"}


def test_conv_encoder_shapes():
    enc = ConvEncoder("resnet18", image_size=64)
    pooled, tokens = enc(torch.rand(2, 1, 64, 64))
    assert pooled.shape == (2, enc.width) and tokens.shape == (2, 4, enc.width)
    with pytest.raises(ValueError, match="expects images"):
        enc(torch.rand(2, 3, 64, 64))


def test_radiographs_need_no_report_tokenizer(tmp_path):
    """Issue 17: one per-image source dataset for LSP and MoCo; it reads films and labels, never the reports'
    token ids, so a folder without a report tokenizer opens (SourceStudies refuses it)."""
    root = write_placeholder_source(tmp_path / "source", n_studies=12, image_size=16, seed=0)
    (root / TOKENIZER_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="report tokenizer"):
        SourceStudies(root, "train")
    images = SourceRadiographs(root, "train")
    studies = SourceStudies(root, "train", report_tokenizer=False)
    assert "report_ids" not in studies[0] and len(images) == studies.n_images
    assert images.labels_matrix().shape == (len(images), len(LABELS))
