"""How many steps does a linear head need to find what a demo encoder's frozen features carry?

The demo fine-tuning (70-150 SGD steps of 32 images) scores near 0.5 on every target domain, while a
converged logistic regression on the same encoder's frozen features
(``refers_lite/evaluation/linear_probe.py``) scores far above it. This script puts the two side by side on one
domain, with the encoder frozen so that only the head's optimisation differs:

* how alike the images' aggregation embeddings are (mean cosine similarity between images, mean
  per-dimension standard deviation): a transformer at initialisation maps every film to almost the
  same vector, so the signal is a small variation around a large constant;
* the logistic regression of the linear probe at each regularisation strength C (validation and
  test mean AUC);
* a linear head on the standardised features trained with Adam: full batch, after 30 ... 3000 steps,
  and mini-batches of 32 for the demo fine-tuning's number of steps.

    python benchmarks/head_steps_at_demo.py --domain data/synthetic/shenzhen [--encoder runs/.../encoder.pt]

``--input`` asks whether the near-constant embedding comes from the films themselves (every film is
rendered from one CT, so the anatomy they share could drown the findings): ``minus-mean`` subtracts the
training split's mean image from every film before the encoder, ``standardised`` also divides by the
per-pixel standard deviation (what the pixel reference, ``baselines/pixels.py``, does to its pixels).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from refers_lite.config import AugmentConfig
from refers_lite.data.loading.domain_dataset import DomainImages
from refers_lite.training.finetune import build_encoder
from refers_lite.evaluation.linear_probe import CS, extract_features, fit_probe
from refers_lite.evaluation.metrics import mean_auc, per_class_auc

SPLITS = ("train", "validation", "test")


def head_auc(head: torch.nn.Linear, Z: dict, Y: dict, classes) -> tuple[float, float]:
    with torch.no_grad():
        return tuple(mean_auc(per_class_auc(Y[s], head(Z[s]).numpy(), classes)) for s in ("validation", "test"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--domain", default="data/synthetic/shenzhen")
    ap.add_argument("--encoder", default="scratch", help="'scratch' (random init, seed --seed) or an exported encoder")
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--minibatch-steps", type=int, default=70, help="the demo fine-tuning's steps on this domain")
    ap.add_argument("--input", choices=("raw", "minus-mean", "standardised"), default="raw",
                    help="films as the fine-tuning sees them, or centred / standardised per pixel on the training split")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    encoder = build_encoder(args.encoder, args.profile)
    sets = {s: DomainImages(args.domain, s, uint8=True) for s in SPLITS}
    classes = sets["train"].classes
    crop = AugmentConfig().augmenter(encoder.image_size)  # the central crop extract_features uses
    augment = crop
    if args.input != "raw":
        train = torch.cat([crop(b["image"], train=False) for b in DataLoader(sets["train"], batch_size=256)])
        mu = train.mean(0, keepdim=True)  # (1, 1, H, W): the training split's mean image
        sd = train.std(0, keepdim=True) + 1e-3 if args.input == "standardised" else 1.0

        def augment(x, train=False):
            return (crop(x, train=False) - mu) / sd
    X = {s: extract_features(encoder, ds, augment=augment) for s, ds in sets.items()}  # (N, D) each
    Y = {s: ds.labels_matrix() for s, ds in sets.items()}  # (N, K) 0/1
    Xn = X["train"] / np.linalg.norm(X["train"], axis=1, keepdims=True)
    print(f"{args.domain}: {', '.join(f'{s} {len(X[s])}' for s in SPLITS)}; encoder {args.encoder}; input {args.input}")
    print(f"aggregation embeddings: mean cosine similarity between images {float((Xn @ Xn.T).mean()):.4f}, "
          f"mean per-dimension std {float(X['train'].std(0).mean()):.4f}")

    print("\nlogistic regression (the linear probe), converged, per C:")
    for C in CS:
        model, val = fit_probe(X["train"], Y["train"], X["validation"], Y["validation"], Cs=(C,))
        test = mean_auc(per_class_auc(Y["test"], model.predict(X["test"]), classes))
        print(f"  C={C:<5g} validation {val:.3f}  test {test:.3f}")

    mean, scale = X["train"].mean(0), X["train"].std(0) + 1e-12
    Z = {s: torch.tensor((X[s] - mean) / scale, dtype=torch.float32) for s in SPLITS}  # standardised (N, D)
    y = torch.tensor(Y["train"], dtype=torch.float32)  # (N, K)

    print(f"\nlinear head on the standardised features, Adam lr {args.lr:g}, full batch:")
    torch.manual_seed(args.seed)
    head = torch.nn.Linear(Z["train"].shape[1], y.shape[1])
    opt = torch.optim.Adam(head.parameters(), args.lr)
    marks = (30, 100, 300, 1000, 3000)
    for step in range(1, marks[-1] + 1):
        loss = F.binary_cross_entropy_with_logits(head(Z["train"]), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in marks:
            val, test = head_auc(head, Z, Y, classes)
            print(f"  {step:>5} steps  validation {val:.3f}  test {test:.3f}")

    print(f"\nthe same head, mini-batches of 32, {args.minibatch_steps} steps (the demo fine-tuning's budget):")
    torch.manual_seed(args.seed)
    head = torch.nn.Linear(Z["train"].shape[1], y.shape[1])
    opt = torch.optim.Adam(head.parameters(), args.lr)
    g = torch.Generator().manual_seed(args.seed)
    for _ in range(args.minibatch_steps):
        idx = torch.randint(0, len(y), (32,), generator=g)
        loss = F.binary_cross_entropy_with_logits(head(Z["train"][idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    val, test = head_auc(head, Z, Y, classes)
    print(f"  validation {val:.3f}  test {test:.3f}")


if __name__ == "__main__":
    main()
