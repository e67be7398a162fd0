"""The joint study-report space of Task 2 (Eq. 2), as something to measure with.

Pre-training pulls the fused study feature v^k (view fusion over the radiograph transformer's
aggregation embeddings, (B, V*D)) and the projected BERT report feature t^k (B, V*D) together: a
study and its own report get a high ``cos(v^k, t^k) / tau``. Once trained, that space can be used
without any fine-tuning: a radiograph can be compared with any sentence (zero-shot classification,
``evaluation/zero_shot.py``) and a study with any report (retrieval, ``evaluation/retrieval.py``).

:class:`JointSpace` wraps a pre-trained :class:`~refers_lite.models.REFERS` for that: it prepares
images exactly as pre-training's evaluation does (the central crop of ``StudyAugment``, no
augmentation), runs the model in eval mode without gradients, in batches, on the model's device.

A single radiograph (a target domain's image) is a study of one view. Pre-training never masks
views: a study with one image shows it in all V slots (``data/views.py``, the paper's rule), so
``single_view="repeat"`` (default) feeds it that way, all slots real. ``single_view="mask"`` puts it
in the first slot and masks the other V-1 (``encode_study``'s ``view_mask``): the fusion then gives
it weight 1 and v^k is ``[f; 0; ...; 0]``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data.loading.studies import MultiViewStudies, StudyCollator

__all__ = ["JointSpace", "SINGLE_VIEW_MODES", "domain_images"]

SINGLE_VIEW_MODES = ("repeat", "mask")


class JointSpace:
    """Image and text embeddings of a pre-trained REFERS in the space of Eq. 2.

    ``model``: a REFERS built with the text encoder (``loss.use_consistency``); ``cfg``: its config
    (``checkpoint.load_refers`` returns both); ``text_tokenizer``: the text encoder's tokenizer
    (default: loaded for ``cfg.model.text_encoder``, offline for "minilm" / "random").
    """

    def __init__(self, model, cfg, text_tokenizer=None, batch_size: int = 64, single_view: str = "repeat"):
        if single_view not in SINGLE_VIEW_MODES:
            raise ValueError(f"single_view must be one of {SINGLE_VIEW_MODES}, got {single_view!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.cfg = model.eval(), cfg
        self.batch_size, self.single_view = int(batch_size), single_view
        self.num_views = cfg.model.num_views
        crit = getattr(model, "criterion", None)  # a learned tau lives in the loss module (temperature())
        tau = crit.temperature() if callable(getattr(crit, "temperature", None)) else cfg.loss.temperature
        self.temperature = float(tau.detach() if torch.is_tensor(tau) else tau)  # tau of Eq. 2
        self.augment = cfg.data.augmenter(cfg.model.image_size)
        self._text_tokenizer = text_tokenizer

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def has_text(self) -> bool:
        return self.model.text_encoder is not None

    @property
    def text_tokenizer(self):
        if self._text_tokenizer is None:
            from ..models.text_encoder import load_text_tokenizer
            self._text_tokenizer = load_text_tokenizer(self.cfg.model.text_encoder)
        return self._text_tokenizer

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or [0, 1] float) films (..., C, S, S) -> model input (..., C, H, W), the central crop."""
        images = images.to(self.device)
        if images.dtype == torch.uint8 or images.shape[-1] != self.cfg.model.image_size:
            images = self.augment(images, train=False)
        return images

    @torch.no_grad()
    def embed_studies(self, images: torch.Tensor, view_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Studies (B, V, C, S, S) (uint8 or float), view_mask (B, V) -> the study side of Eq. 2 (B, V*D): v^k, or
        v^k through the study projection head where the model has one; float32 on the CPU."""
        out = []
        for i in range(0, images.shape[0], self.batch_size):
            x = self.prepare(images[i:i + self.batch_size])  # (b, V, C, H, W)
            m = None if view_mask is None else view_mask[i:i + self.batch_size].to(self.device)
            out.append(self.model.joint_study(self.model.encode_study(x, m).fused).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, self.model.fusion.out_dim)

    def as_studies(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Single radiographs (N, C, S, S) -> one-view studies (N, V, C, S, S) and their view mask (N, V)."""
        if images.ndim != 4:
            raise ValueError(f"expected single radiographs (N, C, S, S), got shape {tuple(images.shape)}")
        n, V = images.shape[0], self.num_views
        studies = images.unsqueeze(1).expand(n, V, *images.shape[1:])  # (N, V, C, S, S)
        mask = torch.ones(n, V, dtype=torch.bool)
        if self.single_view == "mask":
            studies = studies.clone()
            studies[:, 1:] = 0
            mask[:, 1:] = False
        return studies, mask

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """Single radiographs (N, C, S, S) -> v (N, V*D): each as a study of one view (see the module doc)."""
        studies, mask = self.as_studies(images)
        return self.embed_studies(studies, mask)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts -> t (M, V*D): the text encoder and its projection, as Eq. 2 sees a report."""
        if not self.has_text:
            raise RuntimeError("this model was built without the text encoder (loss.use_consistency=false): it has "
                               "no joint image-text space")
        texts = [str(t) for t in texts]
        out = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.text_tokenizer(texts[i:i + self.batch_size], padding=True, truncation=True,
                                      max_length=self.cfg.model.text_max_len, return_tensors="pt")
            t = self.model.text_encoder(enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device))
            out.append(t.float().cpu())  # (b, V*D)
        return torch.cat(out) if out else torch.zeros(0, self.model.fusion.out_dim)

    def similarity(self, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """cos(v_i, t_j) / tau for every pair: (N, D) x (M, D) -> (N, M) (Eq. 2's logits)."""
        return F.normalize(v.float(), dim=-1) @ F.normalize(t.float(), dim=-1).t() / self.temperature

    def source_studies(self, dataset, seed: int = 0):
        """Yield collated batches (images (b, V, C, S, S) uint8, view_mask (b, V), report_ids, texts, study ids)
        of a source-domain split, V views drawn per study by pre-training's rule with a fixed ``seed``."""
        views = MultiViewStudies(dataset, self.num_views, seed=seed, name=repr(dataset))
        collate = StudyCollator(max_report_len=self.cfg.model.max_report_len, pad_id=self.cfg.model.pad_id,
                                eos_id=self.cfg.model.eos_id)
        for i in range(0, len(views), self.batch_size):
            items = [views[j] for j in range(i, min(i + self.batch_size, len(views)))]
            batch = collate(items)
            batch["text"] = [it["text"] for it in items]
            yield batch

    def embed_source(self, dataset, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[str], list[str]]:
        """A source split -> (v (N, V*D), t (N, V*D), report texts, study ids), study i paired with report i."""
        vs, texts, ids = [], [], []
        for batch in self.source_studies(dataset, seed):
            vs.append(self.embed_studies(batch["images"], batch["view_mask"]))
            texts += batch["text"]
            ids += [str(s) for s in batch["study_id"]]
        v = torch.cat(vs) if vs else torch.zeros(0, self.model.fusion.out_dim)
        return v, self.embed_texts(texts), texts, ids


def domain_images(dataset) -> tuple[torch.Tensor, np.ndarray]:
    """All images of a ``DomainImages(uint8=True)`` split as (N, 1, S, S) uint8 and its (N, C) labels."""
    if len(dataset) == 0:
        raise ValueError(f"{dataset!r}: no images")
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))])  # (N, 1, S, S)
    return images, dataset.labels_matrix()
