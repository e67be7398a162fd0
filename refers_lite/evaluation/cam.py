"""Class activation maps of the fine-tuned radiograph transformer, boxes from them, and their IoU
against ground-truth boxes (paper, Figure 3 and "REFERS provides reliable evidences").

The paper shows CAMs (Zhou et al., 2016) of REFERS fine-tuned on NIH ChestX-ray and VinBigData,
draws boxes "by applying a fixed confidence threshold to attention maps" (green) next to the
radiologists' boxes (red) and says their IoUs are "mostly higher than 0.5". It gives neither the
CAM variant nor the threshold. This module measures the same things for our models.

Maps
    ``pytorch_grad_cam`` (the grad-cam package) computes Grad-CAM and its relatives
    (:data:`CAM_METHODS`); :func:`attention_rollout` (Abnar & Zuidema, 2020) uses the
    transformer's own attention.  Every map is min-max normalised to [0, 1] and brought back to
    the stored image (:meth:`CamModel.maps`).

Where Grad-CAM looks, and the reshape it needs
    The classifier (``RadiographClassifier``, :mod:`refers_lite.models.classifier`) reads only the **aggregation
    embedding**: token 0 of the final layer.  The final layer's *patch* tokens never reach it, so
    their gradient is exactly zero and a CAM there is blank.  The last place where patch tokens
    still feed the prediction is the input of the last block, i.e. right after the **recurrent
    concatenation** has joined the aggregation embedding to every patch token
    (``Linear([z_i; z_agg])``, :class:`~refers_lite.models.radiograph_transformer.RecurrentConcatenation`);
    the last block's self-attention is where the aggregation token gathers from them.
    :func:`cam_target_layers` is therefore ``encoder.blocks[-1].norm1`` by default (its output is
    what that attention reads), for every ``agg_mode``; ``layers="all"`` averages the maps of
    every block's ``norm1`` (grad-cam's multi-layer mean).  Their output is ``(B, 1 + N, D)``: the
    aggregation token first, then the N patch tokens in row-major order of the ``(gh, gw)`` patch
    grid (timm's ``PatchEmbed`` flattens ``(B, D, gh, gw)`` that way).  :func:`tokens_to_grid`
    drops token 0 and folds the rest into ``(B, D, gh, gw)``, the "channels x height x width" that
    grad-cam's 2-D code expects.  A layer without the aggregation token (``patch_embed``,
    ``rec_concat.proj``: ``(B, N, D)``) is folded without dropping anything.

    Measured (tests/test_cam.py and the CAM chapter): with a 4-block transformer fine-tuned on a
    rendered pleural effusion, the last block's Grad-CAM points into the effusion's box 2-3x as
    often as a random map; with a 2-block one it does not beat chance (the first block has already
    spread the finding over every token).  Attention rollout is class-agnostic and did not beat
    chance there either.

Preprocessing
    Exactly the fine-tuning's evaluation transform (:class:`~refers_lite.data.loading.gpu_augment.StudyAugment`
    with ``train=False``): the central ``crop_fraction`` window of the stored image, resized to the
    model's input.  A map therefore covers that window; :func:`place_in_image` resizes it
    (bilinear) into the window of the stored image and leaves 0 outside.

Boxes and scores
    :func:`boxes_from_map`: the map ``>= threshold`` -> connected components (8-connected,
    ``scipy.ndimage.label``) -> one box per component, ``(x0, y0, x1, y1)`` in pixels with
    ``x1, y1`` exclusive (the convention of ``boxes.csv``).  :func:`box_iou` is torchvision's.
    A ground-truth box scores the best IoU of any predicted box (0 when there is none).
    :func:`pointing_hit` (the map's maximum inside the box; "pointing game", Zhang et al., 2016)
    is compared with random maps (:func:`random_maps`: uniform noise on the same token grid,
    placed the same way) in :func:`localization_table`, so "better than chance" is measured.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["CAM_METHODS", "MAP_METHODS", "CamModel", "attention_rollout", "box_iou", "boxes_from_map",
           "cam_target_layers", "best_iou", "energy_inside", "iou_by_threshold", "localization_table", "overlay",
           "place_in_image", "plot_cam_grid", "pointing_hit", "random_maps", "summarise_localization",
           "tokens_to_grid"]


def _cam_classes() -> dict:
    import pytorch_grad_cam as pgc
    return {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "xgradcam": pgc.XGradCAM,
            "layercam": pgc.LayerCAM, "hirescam": pgc.HiResCAM, "eigencam": pgc.EigenCAM}


CAM_METHODS = ("gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam")  # grad-cam classes
MAP_METHODS = CAM_METHODS + ("rollout",)  # + attention rollout
Box = tuple[float, float, float, float]  # (x0, y0, x1, y1), x1 / y1 exclusive


# -- the token -> grid reshape -------------------------------------------------------------------


def tokens_to_grid(tokens: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
    """(B, 1 + N, D) with the aggregation token first, or (B, N, D) patch tokens -> (B, D, gh, gw).

    ``N = gh * gw`` patch tokens in row-major grid order (timm ``PatchEmbed``)."""
    gh, gw = grid_size
    if tokens.ndim != 3:
        raise ValueError(f"expected tokens (B, L, D), got shape {tuple(tokens.shape)}")
    n = gh * gw
    if tokens.shape[1] == n + 1:
        tokens = tokens[:, 1:]  # drop the aggregation embedding: (B, N, D)
    elif tokens.shape[1] != n:
        raise ValueError(f"{tokens.shape[1]} tokens do not fit a {gh}x{gw} patch grid (expected {n} or {n + 1})")
    return tokens.reshape(tokens.shape[0], gh, gw, tokens.shape[2]).permute(0, 3, 1, 2)  # (B, D, gh, gw)


def cam_target_layers(model: nn.Module, layers: str | int | Sequence[int] = "last") -> list[nn.Module]:
    """The layers Grad-CAM reads: the first LayerNorm of blocks (the tokens their attention reads).

    ``"last"``: the last block's, right after the recurrent concatenation (see the module doc);
    ``"all"``: every block's (grad-cam averages the per-layer maps); an int or ints: those blocks."""
    enc = getattr(model, "encoder", model)
    if not hasattr(enc, "blocks") or not hasattr(enc, "grid_size"):
        raise TypeError(f"CAMs here need the radiograph transformer; got an encoder of type {type(enc).__name__}")
    depth = len(enc.blocks)
    if layers == "last":
        idx = [depth - 1]
    elif layers == "all":
        idx = list(range(depth))
    else:
        idx = [layers] if isinstance(layers, int) else list(layers)
        if not idx or any(not isinstance(i, int) or not -depth <= i < depth for i in idx):
            raise ValueError(f"layers must be 'last', 'all' or block indices in [-{depth}, {depth}), got {layers!r}")
    return [enc.blocks[i].norm1 for i in idx]


# -- attention rollout ---------------------------------------------------------------------------


def _recurrent_mixing(encoder, L: int, device) -> torch.Tensor | None:
    """(L, L) token mixing of the step before the last block: patch_i <- a * patch_i + (1 - a) * agg.

    ``concat``: ``a = |W_patch| / (|W_patch| + |W_agg|)`` (Frobenius norms of the two halves of the
    projection); ``add``: ``a = 1/2``; ``none``: no mixing."""
    mode = encoder.agg_mode
    if mode == "none":
        return None
    if mode == "concat":
        w = encoder.rec_concat.proj.weight.detach()  # (D, 2D)
        d = w.shape[0]
        wp, wa = w[:, :d].norm(), w[:, d:].norm()
        a = float(wp / (wp + wa).clamp_min(1e-12))
    else:
        a = 0.5
    m = torch.eye(L, device=device) * a
    m[0, 0] = 1.0
    m[1:, 0] = 1.0 - a
    return m  # rows sum to 1


@torch.no_grad()
def attention_rollout(model: nn.Module, x: torch.Tensor, head_fusion: str = "mean") -> torch.Tensor:
    """Attention rollout of the aggregation token over the patch grid: (B, 1, H, W) -> (B, gh, gw) in [0, 1].

    Per block: heads fused (mean or max), the residual added as ``0.5 A + 0.5 I``, rows renormalised,
    the blocks multiplied in order; the recurrent concatenation's mixing (``_recurrent_mixing``) is
    inserted before the last block.  Row 0 (the aggregation token), patch columns."""
    enc = getattr(model, "encoder", model)
    if head_fusion not in ("mean", "max"):
        raise ValueError(f"head_fusion must be 'mean' or 'max', got {head_fusion!r}")
    enc.set_store_attention(True)
    try:
        model(x)
        maps = enc.attention_maps()  # depth x (B, h, L, L)
    finally:
        enc.set_store_attention(False)
    B, _, L, _ = maps[0].shape
    eye = torch.eye(L, device=x.device)
    rollout = eye.expand(B, L, L).clone()  # (B, L, L)
    mix = _recurrent_mixing(enc, L, x.device)
    for i, attn in enumerate(maps):
        if i == len(maps) - 1 and mix is not None:
            rollout = mix @ rollout
        a = attn.mean(1) if head_fusion == "mean" else attn.amax(1)  # (B, L, L)
        a = 0.5 * a + 0.5 * eye
        a = a / a.sum(-1, keepdim=True)
        rollout = a @ rollout  # (B, L, L)
    gh, gw = enc.grid_size
    r = rollout[:, 0, 1:].reshape(B, gh, gw)  # (B, gh, gw)
    lo = r.amin((1, 2), keepdim=True)
    hi = r.amax((1, 2), keepdim=True)
    return (r - lo) / (hi - lo).clamp_min(1e-12)


# -- maps on the stored image --------------------------------------------------------------------


def crop_window(image_size: int, crop_fraction: float) -> tuple[float, float]:
    """The evaluation transform's central window in pixels of a square ``image_size`` image: (start, stop)."""
    return (1 - crop_fraction) / 2 * image_size, (1 + crop_fraction) / 2 * image_size


def place_in_image(maps: torch.Tensor | np.ndarray, image_size: int, crop_fraction: float) -> np.ndarray:
    """(B, h, w) maps of the model's view -> (B, S, S) float32: resized (bilinear) into the central
    window the model saw; 0 outside it."""
    m = torch.as_tensor(np.asarray(maps, dtype=np.float32))
    if m.ndim != 3:
        raise ValueError(f"expected maps (B, h, w), got shape {tuple(m.shape)}")
    lo, hi = crop_window(image_size, crop_fraction)
    a, b = int(round(lo)), int(round(hi))
    out = torch.zeros(m.shape[0], image_size, image_size)
    out[:, a:b, a:b] = F.interpolate(m[:, None], size=(b - a, b - a), mode="bilinear", align_corners=False)[:, 0]
    return out.clamp_(0, 1).numpy()


@dataclass
class CamModel:
    """A fine-tuned classifier (images -> logits), its classes and its evaluation transform.

    ``model``: ``RadiographClassifier`` (or any module with ``.encoder`` = the radiograph transformer and
    ``.image_size``); ``crop_fraction``: the fine-tuning's (its ``FinetuneConfig.crop_fraction``)."""

    model: nn.Module
    classes: list[str]
    task: str = "multilabel"
    crop_fraction: float = 224 / 256
    layers: str | int | Sequence[int] = "last"  # Grad-CAM's target blocks (cam_target_layers)

    def __post_init__(self):
        from ..data.loading.gpu_augment import StudyAugment
        self.model.eval()
        self.encoder = self.model.encoder
        cam_target_layers(self.model, self.layers)  # checks the model and the layers
        self.device = next(self.model.parameters()).device
        self.transform = StudyAugment(self.encoder.image_size, crop_fraction=self.crop_fraction)

    @classmethod
    def from_run(cls, run_dir: str | Path, encoder: str | Path | None = None, device: str = "cpu") -> "CamModel":
        """A fine-tuning run folder (``finetune(...)``: ``best.pt`` + ``config.json``).  The encoder
        file named in ``config.json`` (or ``encoder``) gives the architecture; ``best.pt`` the weights."""
        from ..models.classifier import RadiographClassifier
        from ..training.finetune import build_encoder, load_finetune_checkpoint
        run_dir = Path(run_dir)
        path = run_dir / "best.pt"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: not a finished fine-tuning run folder")
        ckpt = load_finetune_checkpoint(path)  # weights-only: a file that would run code is refused
        ft = ckpt.get("finetune", {})
        if encoder is None:
            encoder = ckpt.get("run", {}).get("encoder")
            if encoder is None and (run_dir / "config.json").is_file():
                encoder = json.loads((run_dir / "config.json").read_text()).get("encoder")
        if encoder is None:
            raise ValueError(f"{path}: the run does not name its encoder; pass encoder=")
        model = RadiographClassifier(build_encoder(encoder, ft.get("profile", "smoke")), len(ckpt["classes"]),
                           ft.get("head_norm", "none"))
        model.load_state_dict(ckpt["model"])
        return cls(model.to(device), list(ckpt["classes"]), ckpt.get("task", "multilabel"),
                   float(ft.get("crop_fraction", 224 / 256)))

    # -- inputs

    def prepare(self, images) -> torch.Tensor:
        """Stored images uint8 (S, S), (B, S, S) or (B, 1, S, S) -> model input (B, 1, h, w) in [0, 1]."""
        x = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
        if x.ndim == 2:
            x = x[None, None]
        elif x.ndim == 3:
            x = x[:, None]
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected grayscale images (S, S), (B, S, S) or (B, 1, S, S), got {tuple(x.shape)}")
        return self.transform(x.to(self.device), train=False)  # (B, 1, h, w)

    @torch.no_grad()
    def probabilities(self, images) -> np.ndarray:
        """(B, K) class probabilities (sigmoid; softmax for a multiclass domain)."""
        logits = self.model(self.prepare(images)).float()
        return (logits.softmax(-1) if self.task == "multiclass" else logits.sigmoid()).cpu().numpy()

    # -- maps

    def grid_maps(self, images, class_index: int | Sequence[int], method: str = "gradcam") -> np.ndarray:
        """Maps at the model's resolution, (B, h, w) in [0, 1] (rollout: the (B, gh, gw) token grid)."""
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
        if method not in MAP_METHODS:
            raise ValueError(f"unknown map method {method!r}; choose one of {', '.join(MAP_METHODS)}")
        x = self.prepare(images)  # (B, 1, h, w)
        ks = [class_index] * x.shape[0] if np.ndim(class_index) == 0 else list(class_index)
        if len(ks) != x.shape[0] or any(not 0 <= int(k) < len(self.classes) for k in ks):
            raise ValueError(f"class_index {class_index!r}: need one index in [0, {len(self.classes)}) per image")
        if method == "rollout":
            return attention_rollout(self.model, x).cpu().numpy()
        grid = tuple(self.encoder.grid_size)
        cam = _cam_classes()[method](model=self.model, target_layers=cam_target_layers(self.model, self.layers),
                                     reshape_transform=lambda t: tokens_to_grid(t, grid))
        try:
            with torch.enable_grad():
                out = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(k)) for k in ks])  # (B, h, w)
        finally:
            cam.activations_and_grads.release()
            self.model.zero_grad(set_to_none=True)
        return np.asarray(out, dtype=np.float32)

    def maps(self, images, class_index: int | Sequence[int], method: str = "gradcam") -> np.ndarray:
        """Maps on the stored images, (B, S, S) float32 in [0, 1] (0 outside the model's window)."""
        x = np.asarray(images)
        size = x.shape[-1]
        return place_in_image(self.grid_maps(images, class_index, method), size, self.crop_fraction)


def random_maps(n: int, grid_size: tuple[int, int], image_size: int, crop_fraction: float,
                seed: int = 0) -> np.ndarray:
    """(n, S, S) chance-level maps: uniform noise on the token grid, placed like a CAM."""
    rng = np.random.default_rng(seed)
    return place_in_image(rng.random((n, *grid_size), dtype=np.float32), image_size, crop_fraction)


# -- boxes and scores ----------------------------------------------------------------------------


def boxes_from_map(cam: np.ndarray, threshold: float = 0.5, min_area: int = 1) -> list[Box]:
    """Connected components (8-connected) of ``cam >= threshold`` -> boxes (x0, y0, x1, y1), x1 / y1
    exclusive, largest first; components under ``min_area`` pixels are dropped."""
    from scipy import ndimage
    cam = np.asarray(cam)
    if cam.ndim != 2:
        raise ValueError(f"expected one (H, W) map, got shape {cam.shape}")
    labels, n = ndimage.label(cam >= threshold, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return []
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]  # (n,)
    out = []
    for k, sl in enumerate(ndimage.find_objects(labels)):
        if sl is not None and areas[k] >= min_area:
            out.append((areas[k], (float(sl[1].start), float(sl[0].start), float(sl[1].stop), float(sl[0].stop))))
    return [b for _, b in sorted(out, key=lambda t: -t[0])]


def box_iou(a: Sequence[Box], b: Sequence[Box]) -> np.ndarray:
    """(len(a), len(b)) IoU of boxes (x0, y0, x1, y1) (``torchvision.ops.box_iou``)."""
    from torchvision.ops import box_iou as tv_box_iou
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    return tv_box_iou(torch.tensor(a, dtype=torch.float64).reshape(-1, 4),
                      torch.tensor(b, dtype=torch.float64).reshape(-1, 4)).numpy()


def best_iou(predicted: Sequence[Box], truth: Box) -> float:
    """IoU of a ground-truth box with its best-matching predicted box (0 when none is predicted)."""
    return float(box_iou([truth], predicted).max()) if len(predicted) else 0.0


def _box_slices(box: Box, shape: tuple[int, int]) -> tuple[slice, slice]:
    x0, y0, x1, y1 = box
    return (slice(max(int(np.floor(y0)), 0), min(int(np.ceil(y1)), shape[0])),
            slice(max(int(np.floor(x0)), 0), min(int(np.ceil(x1)), shape[1])))


def pointing_hit(cam: np.ndarray, box: Box) -> bool:
    """Is the map's maximum inside the box (pixel centres; ties: the first maximum)?  A constant map
    (an empty one included) points nowhere: never a hit."""
    if np.max(cam) <= np.min(cam):
        return False
    y, x = np.unravel_index(int(np.argmax(cam)), cam.shape)
    x0, y0, x1, y1 = box
    return bool(x0 <= x + 0.5 <= x1 and y0 <= y + 0.5 <= y1)


def energy_inside(cam: np.ndarray, box: Box) -> float:
    """The fraction of the map's total inside the box (0 for an all-zero map)."""
    total = float(np.sum(cam))
    return float(np.sum(cam[_box_slices(box, cam.shape)])) / total if total > 0 else 0.0


# -- a whole split -------------------------------------------------------------------------------


def localization_table(cm: CamModel, dataset, method: str = "gradcam", threshold: float | Sequence[float] = 0.5,
                       max_images: int | None = None, n_random: int = 32, seed: int = 0,
                       batch_size: int = 32):
    """One row per ground-truth box (and threshold) of the images of ``dataset`` (a :class:`DomainImages`)
    that have boxes of the model's classes, scoring the map of the box's class (one map per image and
    class, whatever the number of thresholds):

    ``iou`` (best predicted box at ``threshold``), ``n_pred`` (predicted boxes), ``empty_map`` (the map is 0
    everywhere: Grad-CAM found no positive evidence for the class), ``hit`` (pointing game; never for an
    empty map),
    ``energy`` (map mass inside the box), ``random_hit`` / ``random_energy`` (mean over ``n_random``
    random maps), ``prob`` (the model's probability of the class), ``box_area`` (fraction of the image).
    Returns a pandas DataFrame."""
    import pandas as pd
    thresholds = [float(threshold)] if np.ndim(threshold) == 0 else [float(t) for t in threshold]
    rows, todo = [], []
    for i, iid in enumerate(dataset.image_ids):
        by_class: dict[str, list[Box]] = {}
        for b in dataset.boxes(iid):
            if b["label"] in cm.classes:
                by_class.setdefault(b["label"], []).append((b["x0"], b["y0"], b["x1"], b["y1"]))
        if by_class:
            todo.append((i, iid, by_class))
    if max_images is not None:
        todo = todo[:max_images]
    size = int(dataset.domain["image_size"])
    rand = random_maps(n_random, tuple(cm.encoder.grid_size), size, cm.crop_fraction, seed)  # (R, S, S)
    jobs = [(i, iid, label, boxes) for i, iid, by_class in todo for label, boxes in by_class.items()]  # one map each
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        imgs = np.stack([_stored_image(dataset, i) for i, *_ in chunk])  # (b, S, S)
        ks = [cm.classes.index(label) for _, _, label, _ in chunk]
        maps = cm.maps(imgs, ks, method)  # (b, S, S)
        probs = cm.probabilities(imgs)  # (b, K)
        for j, ((i, iid, label, boxes), k) in enumerate(zip(chunk, ks)):
            preds = {t: boxes_from_map(maps[j], t) for t in thresholds}
            for box in boxes:
                common = {"image_id": iid, "label": label, "empty_map": bool(maps[j].max() <= 0),
                          "hit": pointing_hit(maps[j], box),
                          "energy": energy_inside(maps[j], box),
                          "random_hit": float(np.mean([pointing_hit(r, box) for r in rand])),
                          "random_energy": float(np.mean([energy_inside(r, box) for r in rand])),
                          "prob": float(probs[j, k]), "box_area": (box[2] - box[0]) * (box[3] - box[1]) / size ** 2}
                for t, pred in preds.items():
                    rows.append({**common, "threshold": t, "iou": best_iou(pred, box), "n_pred": len(pred)})
    return pd.DataFrame(rows, columns=["image_id", "label", "threshold", "iou", "n_pred", "empty_map", "hit",
                                       "energy", "random_hit", "random_energy", "prob", "box_area"])


def summarise_localization(table):
    """Per class (one threshold): boxes, mean IoU, the fraction with IoU > 0.5, pointing-game hit rate
    of the map and of random maps, map mass inside the box (map, random), the fraction of empty maps;
    an ``all`` row over every box."""
    import pandas as pd
    cols = ["boxes", "mean_iou", "iou_gt_0.5", "hit_rate", "random_hit_rate", "energy", "random_energy", "empty_maps"]
    if len(table) == 0:
        return pd.DataFrame(columns=cols)
    if table["threshold"].nunique() > 1:
        raise ValueError("the table holds several thresholds: select one (table[table.threshold == t]) "
                         "or use iou_by_threshold")

    def agg(g) -> dict:
        return {"boxes": len(g), "mean_iou": g["iou"].mean(), "iou_gt_0.5": (g["iou"] > 0.5).mean(),
                "hit_rate": g["hit"].mean(), "random_hit_rate": g["random_hit"].mean(),
                "energy": g["energy"].mean(), "random_energy": g["random_energy"].mean(),
                "empty_maps": g["empty_map"].mean()}
    per = pd.DataFrame({label: agg(g) for label, g in table.groupby("label")} | {"all": agg(table)}).T[cols]
    per["boxes"] = per["boxes"].astype(int)
    return per


def iou_by_threshold(table):
    """Mean IoU and the fraction of boxes with IoU > 0.5 at each threshold of a localization table."""
    g = table.groupby("threshold")["iou"]
    return g.mean().to_frame("mean_iou").assign(**{"iou_gt_0.5": g.apply(lambda v: float((v > 0.5).mean()))})


def _stored_image(dataset, i: int) -> np.ndarray:
    """(S, S) uint8 image ``i`` of a DomainImages (uint8 or float items)."""
    img = dataset[i]["image"]  # (1, S, S)
    a = img[0].numpy()
    return a if a.dtype == np.uint8 else np.round(np.clip(a, 0, 1) * 255).astype(np.uint8)


# -- pictures ------------------------------------------------------------------------------------


def overlay(image: np.ndarray, cam: np.ndarray | None, opacity: float = 0.5, cmap: str = "magma",
            pred_boxes: Sequence[Box] = (), true_boxes: Sequence[Box] = (), scale: int = 1,
            line: int = 2) -> np.ndarray:
    """(S, S) uint8 image + (S, S) map in [0, 1] -> (S*scale, S*scale, 3) uint8 RGB: the map blended in
    with weight ``opacity * map`` (transparent where the map is 0), predicted boxes green,
    ground-truth boxes red (as in Figure 3)."""
    import matplotlib
    from PIL import Image, ImageDraw
    if not 0 <= opacity <= 1:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    gray = np.repeat(np.asarray(image, dtype=np.float32)[..., None] / 255.0, 3, axis=-1)  # (S, S, 3)
    if cam is not None:
        colour = matplotlib.colormaps[cmap](np.clip(cam, 0, 1))[..., :3]  # (S, S, 3)
        w = (opacity * np.clip(cam, 0, 1))[..., None]
        gray = (1 - w) * gray + w * colour
    pic = Image.fromarray(np.round(gray * 255).astype(np.uint8))
    if scale != 1:
        pic = pic.resize((pic.width * scale, pic.height * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(pic)
    for boxes, col in ((true_boxes, (255, 40, 40)), (pred_boxes, (40, 220, 40))):
        for x0, y0, x1, y1 in boxes:
            draw.rectangle([x0 * scale, y0 * scale, x1 * scale - 1, y1 * scale - 1], outline=col, width=line)
    return np.asarray(pic)


def plot_cam_grid(samples: Sequence[dict], ncols: int = 4, threshold: float = 0.5, opacity: float = 0.6):
    """A Figure 3-like grid: per sample the image with ground-truth (red) and predicted (green) boxes,
    and the map.  ``samples``: dicts with ``image`` (S, S) uint8, ``cam`` (S, S), ``true_boxes``,
    ``label`` and optionally ``prob``; boxes and IoU are computed at ``threshold``."""
    import matplotlib.pyplot as plt
    n = len(samples)
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, 2 * ncols, figsize=(2.0 * 2 * ncols, 2.25 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for j, s in enumerate(samples):
        r, c = divmod(j, ncols)
        pred = boxes_from_map(s["cam"], threshold)
        iou = max((best_iou(pred, t) for t in s["true_boxes"]), default=float("nan"))
        axes[r, 2 * c].imshow(overlay(s["image"], None, pred_boxes=pred, true_boxes=s["true_boxes"], scale=2))
        axes[r, 2 * c + 1].imshow(overlay(s["image"], s["cam"], opacity, pred_boxes=(), scale=2))
        prob = f" p={s['prob']:.2f}" if "prob" in s else ""
        axes[r, 2 * c].set_title(f"{s['label']}{prob}", fontsize=8)
        axes[r, 2 * c + 1].set_title(f"IoU {iou:.2f}", fontsize=8)
    fig.tight_layout()
    return fig
