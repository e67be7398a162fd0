"""From a plain dataset of studies to model batches.

The pre-training loop accepts any ``torch.utils.data.Dataset`` whose items are dicts:

* ``"images"``: float tensor (n_i, C, H, W), all n_i >= 1 radiographs of the study;
* ``"report_ids"``: the report in the report transformer's vocabulary, BOS ... EOS (list or tensor);
* ``"text"``: the report as text, for the text encoder's own tokenizer;
* optionally ``"study_id"``.

:class:`MultiViewStudies` wraps such a dataset and draws the model's V views per study
(:func:`~refers_lite.data.loading.views.sample_views`) with a generator seeded by (seed, epoch, index),
so that a batch depends only on its position in the run: the property exact resume needs. The
same generator decides the paper's horizontal flip: the study's images are mirrored and 'left'
and 'right' are swapped in its report (:func:`~refers_lite.data.reports.side_swap.swap_sides`), which is
then re-encoded for the report transformer.
:class:`ResumableSampler` yields those (index, epoch) keys from any position, shards them across
ranks, and :class:`StudyCollator` pads and tokenises.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..reports.side_swap import swap_sides
from .views import sample_views


class MultiViewStudies(Dataset):
    def __init__(self, base: Dataset, num_views: int, seed: int = 0, name: str = "dataset", hflip_prob: float = 0.0,
                 report_tokenizer=None, max_report_len: int = 128):
        self.base, self.num_views, self.seed, self.name = base, num_views, seed, name
        self.hflip_prob, self.report_tokenizer, self.max_report_len = hflip_prob, report_tokenizer, max_report_len
        if hflip_prob > 0 and report_tokenizer is None:
            raise ValueError(f"{name}: horizontal flips (hflip_prob={hflip_prob}) need the report tokenizer to "
                             f"re-encode the side-swapped report; the dataset has no 'report_tokenizer'")

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        item = self.base[index]
        images = item.get("images") if isinstance(item, dict) else None
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] < 1:
            raise ValueError(f"{self.name}[{index}]: 'images' must be a tensor (n_views>=1, C, H, W), got "
                             f"{type(images).__name__ if not isinstance(images, torch.Tensor) else tuple(images.shape)}")
        rng = np.random.default_rng([self.seed, epoch, index])
        views = sample_views(images.shape[0], self.num_views, rng)
        images, report_ids, text = images[views], item["report_ids"], item["text"]  # (V, C, H, W)
        if self.hflip_prob > 0 and rng.random() < self.hflip_prob:
            images = images.flip(-1)  # the patient's left moves to the other side of the film
            text = swap_sides(text)
            report_ids = self.report_tokenizer.encode(text, self.max_report_len)
        return {"images": images, "report_ids": report_ids, "text": text, "study_id": item.get("study_id", index)}


class ResumableSampler(Sampler):
    """Shuffled (index, epoch) keys, reproducible per epoch, startable at any sample, rank-sharded."""

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        self.n, self.seed, self.shuffle, self.rank, self.world_size = n, seed, shuffle, rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """``start``: how many of this rank's samples of the epoch were already consumed."""
        self.epoch, self.start = epoch, start

    def _order(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        per_rank = self.n // self.world_size  # equal shards: every rank steps the same number of times
        # Strided: the j-th batches of all ranks together are the j-th global batch of one process
        # (the same studies), so W processes train on what one process would.
        return order[self.rank::self.world_size][:per_rank]

    def __len__(self) -> int:
        return max(0, self.n // self.world_size - self.start)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for i in self._order()[self.start:]:
            yield (i, self.epoch)


class StudyCollator:
    """List of studies -> batch dict of tensors (images, view_mask, report_ids, text_ids, text_mask)."""

    def __init__(self, text_tokenizer=None, text_max_len: int = 128, max_report_len: int = 128, pad_id: int = 0,
                 eos_id: int = 2, fixed_length: bool = False):
        self.text_tokenizer, self.text_max_len = text_tokenizer, text_max_len
        self.max_report_len, self.pad_id, self.eos_id = max_report_len, pad_id, eos_id
        # fixed_length: pad reports and texts to their maximum lengths, so every batch has one shape
        # (a compiled model then compiles once instead of once per report length)
        self.fixed_length = fixed_length

    @classmethod
    def from_config(cls, cfg, text_tokenizer=None) -> "StudyCollator":
        """The collator a run of ``cfg`` uses (text tokenised only when Task 2 is on)."""
        m = cfg.model
        return cls(text_tokenizer if cfg.loss.use_consistency else None, m.text_max_len, m.max_report_len,
                   m.pad_id, m.eos_id, fixed_length=cfg.train.compile)

    def __call__(self, items: Sequence[dict]) -> dict[str, Any]:
        if not items:
            raise ValueError("empty batch")
        shapes = {tuple(it["images"].shape) for it in items}
        if len(shapes) != 1:
            raise ValueError(f"studies in a batch must share one image shape, got {sorted(shapes)}")
        images = torch.stack([it["images"] for it in items])  # (B, V, C, H, W); uint8 stays uint8 (4x less to copy)
        view_mask = torch.ones(images.shape[:2], dtype=torch.bool)  # (B, V)
        reports = [torch.as_tensor(it["report_ids"], dtype=torch.long)[: self.max_report_len].clone() for it in items]
        for j, r in enumerate(reports):
            if r.numel() < 2:
                raise ValueError(f"study {items[j].get('study_id')}: report has {r.numel()} token(s); "
                                 f"need at least BOS and EOS")
            if r[-1] != self.eos_id:  # truncated: close it
                r[-1] = self.eos_id
        T = self.max_report_len if self.fixed_length else max(r.numel() for r in reports)
        report_ids = torch.full((len(items), T), self.pad_id, dtype=torch.long)  # (B, T)
        for j, r in enumerate(reports):
            report_ids[j, : r.numel()] = r
        batch = {"images": images, "view_mask": view_mask, "report_ids": report_ids,
                 "study_id": [it.get("study_id") for it in items]}
        if self.text_tokenizer is not None:
            enc = self.text_tokenizer([it["text"] for it in items], padding="max_length" if self.fixed_length else True,
                                      truncation=True, max_length=self.text_max_len, return_tensors="pt")
            batch["text_ids"], batch["text_mask"] = enc["input_ids"], enc["attention_mask"]  # (B, L)
        return batch
