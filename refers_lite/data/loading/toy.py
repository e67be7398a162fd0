"""Toy studies: synthetic multi-view chest-like images whose templated reports describe them.

These exist so the pre-training loop can be run, tested and *seen to learn* before the real
report corpus and the CT-derived radiographs are in place, and in CI where seconds matter. They
are not chest X-rays and the course never presents them as such.

Each study has a frontal and a lateral view (sometimes only one, sometimes extra frontal
repeats, roughly as in the IU collection), drawn from a schematic thorax: two lung fields, a
heart, a diaphragm. Findings change the picture and the report together:

    cardiomegaly           wider heart                      "the heart is enlarged."
    effusion (L/R)         bright fluid at that lung base   "small left pleural effusion."
    nodule (L/R)           bright spot in that lung         "nodule in the right upper lobe."
    pneumothorax (L/R)     dark apex without markings       "left apical pneumothorax."

The patient's left is on the image's right in a frontal view, as on a real PA radiograph.
Every study is a pure function of (seed, index): no state, fully reproducible.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from ...config import Config
from ..reports.report_tokenizer import ReportTokenizer

FINDINGS = ("cardiomegaly", "effusion_left", "effusion_right", "nodule_left", "nodule_right",
            "pneumothorax_left", "pneumothorax_right")

_SENTENCES = {
    "cardiomegaly": ["the heart is enlarged.", "cardiomegaly.", "the cardiac silhouette is enlarged."],
    "effusion_left": ["small left pleural effusion.", "there is a left pleural effusion."],
    "effusion_right": ["small right pleural effusion.", "there is a right pleural effusion."],
    "nodule_left": ["nodule in the left upper lobe.", "there is a left lung nodule."],
    "nodule_right": ["nodule in the right upper lobe.", "there is a right lung nodule."],
    "pneumothorax_left": ["left apical pneumothorax.", "there is a small left pneumothorax."],
    "pneumothorax_right": ["right apical pneumothorax.", "there is a small right pneumothorax."],
}
_NORMAL = {
    "heart": ["the heart size is normal.", "normal heart size.", "the cardiomediastinal silhouette is normal."],
    "effusion": ["no pleural effusion.", "no effusion."],
    "pneumothorax": ["no pneumothorax."],
    "lungs": ["the lungs are clear.", "no focal airspace disease."],
}


def study_spec(seed: int, index: int) -> dict:
    """Findings, report text and view count of study ``index`` (pure function of seed, index)."""
    rng = np.random.default_rng([seed, index, 7])
    findings = [f for f in FINDINGS if rng.random() < 0.22]
    if "pneumothorax_left" in findings and "effusion_left" in findings:
        findings.remove("pneumothorax_left")
    if "pneumothorax_right" in findings and "effusion_right" in findings:
        findings.remove("pneumothorax_right")
    pick = lambda opts: opts[int(rng.integers(len(opts)))]  # noqa: E731
    sents = [pick(_SENTENCES["cardiomegaly"]) if "cardiomegaly" in findings else pick(_NORMAL["heart"])]
    sents += [pick(_SENTENCES[f]) for f in findings if f != "cardiomegaly"]
    if not any(f.startswith("effusion") for f in findings):
        sents.append(pick(_NORMAL["effusion"]))
    if not any(f.startswith("pneumothorax") for f in findings):
        sents.append(pick(_NORMAL["pneumothorax"]))
    if not any(f.startswith("nodule") for f in findings):
        sents.append(pick(_NORMAL["lungs"]))
    n_views = int(rng.choice([1, 2, 3, 4], p=[0.12, 0.80, 0.06, 0.02]))
    return {"findings": findings, "text": " ".join(sents), "n_views": n_views}


def _ellipse(yy, xx, cy, cx, ry, rx):
    return (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) <= 1.0


def render_view(findings: list[str], lateral: bool, size: int, rng: np.random.Generator) -> np.ndarray:
    """One schematic radiograph in [0, 1] (bright = dense), (size, size) float32."""
    yy, xx = np.mgrid[0:1:size * 1j, 0:1:size * 1j]
    dy, dx = rng.normal(0, 0.02, 2)  # patient position
    yy, xx = yy + dy, xx + dx
    img = np.full((size, size), 0.15, np.float32)
    img[_ellipse(yy, xx, 0.55, 0.5, 0.5, 0.42)] = 0.6  # body
    big_heart = "cardiomegaly" in findings
    if not lateral:
        lungs = {"right": (0.48, 0.30), "left": (0.48, 0.70)}  # patient's right on the image's left
        for side, (cy, cx) in lungs.items():
            img[_ellipse(yy, xx, cy, cx, 0.30, 0.14)] = 0.22
        hr = 0.17 if big_heart else 0.11
        img[_ellipse(yy, xx, 0.62, 0.55, 0.12, hr)] = 0.75  # heart, towards the patient's left
        for side, (cy, cx) in lungs.items():
            if f"effusion_{side}" in findings:
                img[_ellipse(yy, xx, cy, cx, 0.30, 0.14) & (yy > cy + 0.14)] = 0.7
            if f"nodule_{side}" in findings:
                img[_ellipse(yy, xx, cy - 0.12, cx, 0.04, 0.04)] = 0.9
            if f"pneumothorax_{side}" in findings:
                img[_ellipse(yy, xx, cy, cx, 0.30, 0.14) & (yy < cy - 0.12)] = 0.02
    else:
        img[_ellipse(yy, xx, 0.48, 0.5, 0.30, 0.28)] = 0.25  # superimposed lungs
        hr = 0.16 if big_heart else 0.10
        img[_ellipse(yy, xx, 0.60, 0.36, 0.13, hr)] = 0.72  # heart, anterior
        if any(f.startswith("effusion") for f in findings):
            img[_ellipse(yy, xx, 0.48, 0.5, 0.30, 0.28) & (yy > 0.64) & (xx > 0.5)] = 0.68  # posterior sulcus
        if any(f.startswith("nodule") for f in findings):
            img[_ellipse(yy, xx, 0.36, 0.58, 0.04, 0.04)] = 0.9
        if any(f.startswith("pneumothorax") for f in findings):
            img[_ellipse(yy, xx, 0.48, 0.5, 0.30, 0.28) & (yy < 0.30)] = 0.05
    img[yy > 0.80] = 0.65  # below the diaphragm
    img = img * rng.uniform(0.85, 1.15) + rng.normal(0, 0.04, img.shape)  # exposure and noise
    return np.clip(img, 0, 1).astype(np.float32)


class ToyStudies(Dataset):
    """Studies ``indices`` of the toy corpus, with report ids from ``report_tokenizer``."""

    def __init__(self, indices: list[int], seed: int, image_size: int, report_tokenizer: ReportTokenizer,
                 max_report_len: int = 128, specs: list[dict] | None = None):
        self.indices, self.seed, self.size = list(indices), seed, image_size
        self.specs = specs if specs is not None else [study_spec(seed, i) for i in self.indices]
        self.report_ids = [report_tokenizer.encode(s["text"], max_report_len) for s in self.specs]
        self.report_tokenizer = report_tokenizer

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        spec, idx = self.specs[i], self.indices[i]
        rng = np.random.default_rng([self.seed, idx, 11])
        views = [render_view(spec["findings"], lateral=(v == 1), size=self.size, rng=rng)
                 for v in range(spec["n_views"])]
        images = torch.from_numpy(np.stack(views))[:, None]  # (n_views, 1, S, S)
        return {"images": images, "report_ids": self.report_ids[i], "text": spec["text"],
                "study_id": f"toy-{idx:05d}", "findings": spec["findings"]}


def build_toy_datasets(cfg: Config) -> tuple[ToyStudies, ToyStudies, ReportTokenizer]:
    """Train/validation split of the toy corpus and a report tokenizer trained on the train split."""
    d, m = cfg.data, cfg.model
    n_val = max(2, int(round(d.num_studies * d.val_fraction)))
    if d.num_studies - n_val < 2:
        raise ValueError(f"data.num_studies={d.num_studies} leaves fewer than 2 training studies")
    order = np.random.default_rng([d.seed, 1]).permutation(d.num_studies).tolist()
    val_idx, train_idx = sorted(order[:n_val]), sorted(order[n_val:])
    train_specs = [study_spec(d.seed, i) for i in train_idx]
    tok = ReportTokenizer.train((s["text"] for s in train_specs), vocab_size=m.vocab_size)
    train = ToyStudies(train_idx, d.seed, m.image_size, tok, m.max_report_len, specs=train_specs)
    val = ToyStudies(val_idx, d.seed, m.image_size, tok, m.max_report_len)
    return train, val, tok
