"""Is REFERS learning? Three checks of a pre-trained model on a held-out source split.

Task 2 at chance looks like a loss of ln b; these checks say why and how far from it a model is:

* **Retrieval** (:func:`~refers_lite.evaluation.retrieval.distinct_report_recall`): image -> report Recall@10 over the
  split's *distinct* report texts (a report with the same text as the true one is a hit), against its random
  baseline K / (distinct texts).
* **Collapse**: the mean pairwise cosine similarity of the studies' features v^k (and of the study side of
  Eq. 2, after the projection head where there is one). Near 1, every study is nearly the same vector and
  Eq. 2 has almost no gradient (``book/demo_diagnosis.md``, section 3). A vector common to every study (an
  offset, present at random initialisation already) also lifts the cosine without losing what sets studies apart:
  the share of the features' energy in their mean, and the effective rank of what is left (RankMe), tell the
  two apart (:func:`common_part`).
* **Source probe** (:func:`source_probe`): a linear probe (``linear_probe.fit_probe``) of the frozen image
  encoder's aggregation embedding, per image, predicting the findings rendered into its study's films;
  fitted on the training split (C chosen on validation), scored by mean ROC-AUC on ``split``. Compared with
  the same architecture at random initialisation, it measures what pre-training put into the features.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..evaluation.linear_probe import fit_probe
from ..evaluation.metrics import mean_auc, per_class_auc
from ..evaluation.retrieval import distinct_report_recall

__all__ = ["mean_pairwise_cosine", "common_part", "study_report_checks", "source_probe", "consistency_chance"]


def mean_pairwise_cosine(x: torch.Tensor) -> float:
    """Mean cosine similarity over all pairs i != j of the rows of x (N, D)."""
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors (N, D), got shape {tuple(x.shape)}")
    z = F.normalize(x.double(), dim=-1)
    n = z.shape[0]
    s = z.sum(0)
    return float(((s @ s) - n) / (n * (n - 1)))  # sum over i != j of z_i . z_j, without the N x N matrix


def common_part(x: torch.Tensor) -> dict:
    """How much of x (N, D) is one vector common to every row, and how many directions the rest spans:

    * ``common share``: ||mean||^2 / mean ||x_i||^2 (1: every row the same vector; near 0: no offset);
    * ``effective rank``: exp of the entropy of the normalised singular values of the centred rows (RankMe,
      Garrido et al. 2023): 1 when the rows differ along one direction only, up to min(N, D).
    (The cosine of the centred rows says nothing: their mean pairwise cosine is about -1 / (N - 1) whatever
    the rows are.)"""
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors (N, D), got shape {tuple(x.shape)}")
    x = x.double()
    mean = x.mean(0)  # (D,)
    sv = torch.linalg.svdvals(x - mean)  # (min(N, D),)
    p = sv / sv.sum().clamp_min(1e-300)
    entropy = -(p * p.clamp_min(1e-300).log()).sum()
    return {"common share": float(mean @ mean / x.pow(2).sum(1).mean().clamp_min(1e-300)),
            "effective rank": float(entropy.exp())}


def consistency_chance(n: int, batch: int) -> float:
    """Eq. 2's loss for a model that knows nothing, over n studies in batches of ``batch`` (the last one
    smaller; batches of one are skipped): ln b per batch, weighted by b, as validation averages it."""
    sizes = [min(batch, n - i) for i in range(0, n, batch)]
    sizes = [b for b in sizes if b >= 2]
    return sum(b * math.log(b) for b in sizes) / sum(sizes)


@torch.no_grad()
def study_report_checks(model, cfg, dataset, k: int = 10, seed: int = 0) -> dict:
    """Retrieval and collapse on a source split (a ``SourceStudies``); ``model`` a REFERS with Task 2."""
    from ..evaluation.joint_space import JointSpace
    space = JointSpace(model, cfg)
    fused, texts = [], []
    for batch in space.source_studies(dataset, seed=seed):
        x = space.prepare(batch["images"])
        fused.append(model.encode_study(x, batch["view_mask"].to(space.device)).fused.float().cpu())
        texts += batch["text"]
    v = torch.cat(fused)  # (N, V*D)
    joint = torch.cat([model.joint_study(f.to(space.device)).float().cpu()
                       for f in v.split(space.batch_size)])  # (N, V*D): what Eq. 2 compares
    t = space.embed_texts(texts)
    recall, distinct = distinct_report_recall(space.similarity(joint, t).numpy(), texts, (k,))
    # the same retrieval scored on v^k itself (Eq. 2 as the paper writes it; what a head-less model is trained on)
    recall_v = recall if model.study_projection is None else \
        distinct_report_recall(space.similarity(v, t).numpy(), texts, (k,))[0]
    common = common_part(v)
    return {f"R@{k}": recall[k], f"R@{k} chance": min(k, distinct) / distinct, "distinct reports": distinct,
            f"R@{k} v": recall_v[k],
            "cosine v": mean_pairwise_cosine(v), "cosine joint": mean_pairwise_cosine(joint),
            "cosine t": mean_pairwise_cosine(t),
            "common share v": common["common share"], "effective rank v": common["effective rank"]}


@torch.no_grad()
def _image_features(encoder, dataset, image_size: int, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Aggregation embeddings of every image of a source split (central crop) and the study of each."""
    from ..config import AugmentConfig
    augment = AugmentConfig().augmenter(image_size)
    items, study = dataset.image_items()
    device = next(encoder.parameters()).device
    encoder.eval()
    feats = []
    for i in range(0, len(items), batch_size):
        x = torch.from_numpy(dataset.cache.images(items[i:i + batch_size])).unsqueeze(1).to(device)  # (b, 1, S, S)
        agg, _ = encoder(augment(x, train=False))
        feats.append(agg.float().cpu().numpy())
    return np.concatenate(feats), study


def source_probe(encoder, root: str | Path, image_size: int, split: str = "test", max_train_images: int = 3000,
                 seed: int = 0) -> dict:
    """Linear probe of a frozen image encoder on the rendered findings of the source domain (module doc).

    Findings with fewer than 10 positive images in the training subset are left out. Returns
    ``{"mean AUC", "findings", "per finding"}`` on ``split``."""
    from ..data.loading.source_studies import SourceStudies
    sets = {s: SourceStudies(root, s) for s in ("train", "validation", split)}
    names, _ = sets["train"].rendered_findings()
    data = {}
    for s, ds in sets.items():
        own, y = ds.rendered_findings()
        y = np.stack([y[:, own.index(n)] if n in own else np.zeros(len(ds), np.float32) for n in names], 1)
        X, study = _image_features(encoder, ds, image_size)
        data[s] = (X, y[study])
    X, y = data["train"]
    if len(X) > max_train_images:
        keep = np.random.default_rng(seed).choice(len(X), max_train_images, replace=False)
        X, y = X[keep], y[keep]
    cols = [j for j in range(len(names)) if y[:, j].sum() >= 10]
    probe, _ = fit_probe(X, y[:, cols], data["validation"][0], data["validation"][1][:, cols])
    Xs, ys = data[split]
    aucs = per_class_auc(ys[:, cols], probe.predict(Xs), [names[j] for j in cols])
    return {"mean AUC": mean_auc(aucs), "findings": [names[j] for j in cols], "per finding": aucs}
