"""Radiographs per second of the DRR renderer on a CT-sized synthetic phantom.

Phantom: 512 x 512 x 133 float32 attenuation volume, spacing (0.703, 0.703, 2.5) mm, L-A-S
(like the target chest CT): an elliptic body of soft tissue, two air-filled lungs, a heart
(anterior, left), a spine of bone cylinders (posterior).  Times frontal (PA) and lateral renders at
256 x 256 from the full volume and from ``prepare_volume`` downsamplings, plus the display transform.

    python benchmarks/drr_render.py [--threads 2] [--size 256] [--repeats 10] [--device cpu|cuda]

Prints one table and a JSON line.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from refers_lite.data.synthesis.drr import prepare_volume, render, to_radiograph

SHAPE, SPACING = (512, 512, 133), (0.703, 0.703, 2.5)


def phantom(device: str = "cpu") -> torch.Tensor:
    """(X, Y, Z) attenuation per mm of a crude chest."""
    axes = [((torch.arange(n, device=device) + 0.5) * s - n * s / 2) for n, s in zip(SHAPE, SPACING)]
    x, y, z = torch.meshgrid(*axes, indexing="ij")
    mu = torch.zeros(SHAPE, device=device)
    mu[(x / 160) ** 2 + (y / 110) ** 2 <= 1] = 0.02  # body
    for side in (-1, 1):  # lungs, left lung smaller
        mu[((x - side * 70) / (55 if side < 0 else 50)) ** 2 + ((y + 5) / 75) ** 2 + ((z - 20) / 140) ** 2 <= 1] = 0.001
    mu[((x - 20) / 55) ** 2 + ((y - 35) / 45) ** 2 + ((z + 30) / 60) ** 2 <= 1] = 0.021  # heart
    mu[(x**2 + (y + 80) ** 2 <= 18**2) & (torch.remainder(z, 30) < 24)] = 0.04  # vertebral bodies
    del x, y, z
    return mu


def rate(fn, repeats: int, device: str) -> float:
    fn()  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / repeats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    mu = phantom(args.device)
    results = []
    for label, target in [("full 512x512x133", None), ("pooled 1.4 mm (256x256x133)", 1.4),
                          ("pooled 2.1/2.5 mm (170x170x133)", (2.1, 2.1, 2.5))]:
        t = time.perf_counter()
        pv = prepare_volume(mu, SPACING, target)
        prep = time.perf_counter() - t
        for view in ("pa", "lateral"):
            pv.layout(1 if view == "pa" else 0)  # per-view layout is cached once per patient
            sec = rate(lambda: render(pv, view=view, size=args.size), args.repeats, args.device)
            results.append(dict(volume=label, shape=list(pv.mu.shape), view=view, method="slices",
                                prepare_s=round(prep, 3), render_ms=round(sec * 1e3, 1),
                                per_s=round(1 / sec, 1)))
    pv = prepare_volume(mu, SPACING, 1.4)
    sec = rate(lambda: render(pv, view="pa", size=args.size, rotation_deg=10.0, n_samples=256), 1, args.device)
    results.append(dict(volume="pooled 1.4 mm (256x256x133)", shape=list(pv.mu.shape), view="pa, rotated 10 deg",
                        method="raymarch 256 samples", prepare_s=0.0, render_ms=round(sec * 1e3, 1),
                        per_s=round(1 / sec, 2)))
    li = render(pv, view="pa", size=args.size)
    g = torch.Generator(device=li.device).manual_seed(0)
    sec = rate(lambda: to_radiograph(li, blur_sigma_px=1.0, noise_std=0.01, generator=g), args.repeats, args.device)
    print(f"device={args.device} threads={torch.get_num_threads()} size={args.size}")
    print(f"{'volume':34s} {'view':20s} {'method':22s} {'render ms':>9s} {'per s':>7s} {'prep s':>7s}")
    for r in results:
        print(f"{r['volume']:34s} {r['view']:20s} {r['method']:22s} {r['render_ms']:9.1f} {r['per_s']:7.1f} "
              f"{r['prepare_s']:7.3f}")
    print(f"to_radiograph (blur + noise + window): {sec * 1e3:.1f} ms")
    print(json.dumps(dict(device=args.device, threads=torch.get_num_threads(), size=args.size, renders=results,
                          to_radiograph_ms=round(sec * 1e3, 2))))


if __name__ == "__main__":
    main()
