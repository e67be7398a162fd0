"""LSP: label-supervised pre-training on the source domain (the paper's Tables 1-3 baselines).

The paper's strongest baselines pre-train on the same source radiographs as REFERS, but from
structured labels instead of the free-text reports: "LSP (Transformer)" with the radiograph
transformer, "LSP (ConvNet)" with a ResNet. Here the structured labels are those of the report
corpus (``data/structured_labels.py``): from the IU studies' MeSH tags, assigned by people, as the
``labels`` column of the source domain's ``studies.csv`` (the report-text extractor's labels for a
folder without it). Every radiograph of a study gets the study's labels; the model is the encoder
with a linear head, trained with multi-label binary cross-entropy by the fine-tuning loop
(``finetune.Finetuner``: warm-up + cosine, the device-side augmentation; for the transformer the fine-tuning
SGD 3e-3 at ``paper`` and REFERS's own AdamW and learning rate at the course profiles, where SGD left it at
0.54 mean validation AUC on the source labels after 1,800 demo steps against 0.68 with AdamW, in two ``make
book`` builds, see ``benchmarks/lsp_optimizer.py``; Adam 1e-4 for the ResNet), keeping the checkpoint with the
best validation AUC on the source validation split. Its encoder is exported in the format ``refers-lite export``
writes, so the target-domain fine-tuning treats it exactly like REFERS's.

The paper gives no LSP schedule; ``pretrain_lsp`` takes the steps and batch from the caller (the
experiment grid gives LSP the radiographs REFERS sees: its steps and its studies x views per step).
"""
from __future__ import annotations

from pathlib import Path


from ..training.checkpoint import save_image_encoder
from ..config import get_config
from ..data.loading.source_studies import SourceRadiographs
from ..data.reports.structured_labels import LABELS
from ..models.classifier import RadiographClassifier
from ..training.finetune import FinetuneConfig, Finetuner, get_finetune_config, load_finetune_checkpoint
from ..training.runtime import seed_everything


def build_encoder_for(arch: str, profile: str):
    """``"vit"``: the radiograph transformer of the profile; ``"convnet"``: the profile's ResNet (timm)."""
    m = get_config(profile).model
    if arch == "vit":
        from ..models.radiograph_transformer import RadiographTransformer
        return RadiographTransformer.from_config(m), "vit"
    if arch == "convnet":
        from ..models.conv_encoder import CONVNET_OF_PROFILE, ConvEncoder
        name = CONVNET_OF_PROFILE[profile]
        return ConvEncoder.from_config(m, arch=name), name
    raise ValueError(f"arch must be 'vit' or 'convnet', got {arch!r}")


def pretrain_lsp(arch: str, profile: str, source_root: str | Path, out_dir: str | Path,
                 cfg: FinetuneConfig | None = None, seed: int = 0, progress: bool = True,
                 renders: int | None = None) -> Path:
    """Label-supervised pre-training; returns ``out_dir/encoder.pt`` (reused when it exists).

    ``cfg``: the training loop's settings (default: the profile's fine-tuning config, with Adam 1e-4
    for the ConvNet as the paper fine-tunes ResNets). An interrupted run starts again from its start.
    ``renders``: the training films of how many renders of each study (None: the profile's ``data.renders``)."""
    out_dir = Path(out_dir)
    encoder_path = out_dir / "encoder.pt"
    if encoder_path.is_file():
        return encoder_path
    if cfg is None:
        cfg = get_finetune_config(profile, {"optimizer": "adam", "lr": 1e-4} if arch == "convnet" else None)
    if renders is None:
        renders = get_config(profile).data.renders
    from ..training.run_lock import claim_run_folder, run_lock
    claim_run_folder(out_dir, "lsp", check_only=True)  # not another kind's folder, before anything is written
    with run_lock(out_dir, log=None, wait=False):
        claim_run_folder(out_dir, "lsp", {"arch": arch, "profile": profile, "finetune": cfg.to_dict(),
                                          "source": str(source_root), "renders": renders, "seed": seed})
        return _train_lsp(arch, profile, source_root, out_dir, encoder_path, cfg, seed, progress, renders)


def _train_lsp(arch, profile, source_root, out_dir: Path, encoder_path: Path, cfg: FinetuneConfig, seed: int,
               progress: bool, renders: int) -> Path:
    sets = [SourceRadiographs(source_root, split, renders=renders if split == "train" else 1)
            for split in ("train", "validation", "test")]  # training: the films REFERS is given
    seed_everything(seed)
    encoder, arch_name = build_encoder_for(arch, profile)
    model = RadiographClassifier(encoder, len(LABELS))
    Finetuner(cfg, model, *sets, seed, out_dir / "run", progress=progress,
              run_info={"method": f"lsp_{arch}", "arch": arch_name, "source": str(source_root)}).fit()
    best = load_finetune_checkpoint(out_dir / "run" / "best.pt")
    state = {k[len("encoder."):]: v for k, v in best["model"].items() if k.startswith("encoder.")}
    save_image_encoder(encoder_path, get_config(profile).to_dict(), state, best["step"], arch=arch_name,
                       method=f"lsp_{arch}")
    return encoder_path
