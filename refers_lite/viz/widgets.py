"""The CAM explorer: an ipywidgets panel over :mod:`refers_lite.evaluation.cam` (Figure 3, interactively).

Choose a dataset (a domain folder), a split and an image, or upload a PNG, JPEG or DICOM; pick a
class (the dropdown shows the model's probability for each, highest first), a map method, the
threshold that turns the map into boxes and the overlay's opacity.  The picture shows the map,
the predicted boxes (green) and the ground-truth boxes of the class (red); the readout gives
their IoU.

Responsive by construction: a map is computed once per (image, class, method) and cached; the
threshold and the opacity only redraw (connected components of a cached map and an RGB blend,
milliseconds).  A bad upload shows a message in the panel instead of raising.

    from refers_lite.evaluation.cam import CamModel
    from refers_lite.viz.widgets import CamExplorer
    explorer = CamExplorer(CamModel.from_run("runs/.../nih"), {"nih": "data/synthetic/nih"})
    explorer  # displays in Jupyter

Every control is an attribute (``explorer.threshold.value = 0.7``), so the panel can be driven
from Python (and is, in the tests).
"""
from __future__ import annotations

import hashlib
import html
import io
import tempfile
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Mapping

import ipywidgets as W
import numpy as np

from ..evaluation.cam import MAP_METHODS, CamModel, best_iou, boxes_from_map, overlay

__all__ = ["CamExplorer", "decode_upload"]

UPLOAD_TYPES = ".png,.jpg,.jpeg,.dcm,.dicom"


def decode_upload(name: str, content: bytes, size: int) -> np.ndarray:
    """An uploaded file -> (size, size) uint8 image (letterboxed as the real datasets are).

    DICOM is recognised by its ``.dcm`` / ``.dicom`` name or by the ``DICM`` marker at byte 128;
    anything else goes to PIL.  Raises :class:`~refers_lite.data.real.real_radiograph.ImageReadError`
    (or ``ValueError``) naming the file and the problem."""
    from ..data.real.real_radiograph import DICOM_SUFFIXES, ImageReadError, letterbox, read_image
    if not content:
        raise ImageReadError(name, "the file is empty")
    suffix = Path(name).suffix.lower()
    if content[128:132] == b"DICM" and suffix not in DICOM_SUFFIXES:
        suffix = ".dcm"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(content)
        try:
            img = read_image(path)
        except ImageReadError as e:
            raise ImageReadError(name, e.reason) from None
    return letterbox(img, size)[0]


class CamExplorer:
    """The panel; ``datasets``: display name -> domain folder (``DomainImages`` roots)."""

    def __init__(self, cam_model: CamModel, datasets: Mapping[str, str | Path] | None = None,
                 splits: tuple[str, ...] = ("test", "validation", "train"), method: str = "gradcam",
                 threshold: float = 0.5, opacity: float = 0.5, image_size: int = 256, scale: int = 2,
                 boxed_first: bool = True, max_cached_maps: int = 256):
        if method not in MAP_METHODS:
            raise ValueError(f"unknown map method {method!r}; choose one of {', '.join(MAP_METHODS)}")
        self.cm, self.datasets = cam_model, {k: Path(v) for k, v in (datasets or {}).items()}
        self.image_size, self.scale, self.boxed_first = image_size, scale, boxed_first
        self.map_cache: OrderedDict[tuple, np.ndarray] = OrderedDict()  # (image key, class, method) -> (S, S) map
        self.max_cached_maps = max_cached_maps  # least recently used maps go first (256 KB each at 256 px)
        self.prob_cache: dict[str, np.ndarray] = {}  # image key -> (K,) probabilities
        self.maps_computed = 0  # how many maps were computed (not served from the cache)
        self._domains: dict[tuple[str, str], object] = {}
        self._quiet = False
        self.key: str | None = None  # the current image: "dataset/split/image_id" or "upload:<sha1>"
        self.pixels: np.ndarray | None = None  # (S, S) uint8
        self.true_boxes: list[dict] = []  # ground truth of the current image (label + x0, y0, x1, y1)
        self.pred_boxes: list[tuple] = []
        self.current_iou: float | None = None

        style = {"description_width": "70px"}
        self.dataset = W.Dropdown(options=list(self.datasets), description="dataset", style=style)
        self.split = W.Dropdown(options=list(splits), description="split", style=style,
                                layout=W.Layout(width="190px"))
        self.image = W.Dropdown(options=[], description="image", style=style, layout=W.Layout(width="340px"))
        self.upload = W.FileUpload(accept=UPLOAD_TYPES, multiple=False, description="upload PNG/JPEG/DICOM",
                                   layout=W.Layout(width="220px"))
        self.cls = W.Dropdown(options=[], description="class", style=style, layout=W.Layout(width="300px"))
        self.method = W.Dropdown(options=list(MAP_METHODS), value=method, description="map", style=style,
                                 layout=W.Layout(width="200px"))
        self.threshold = W.FloatSlider(value=threshold, min=0.05, max=1.0, step=0.05, description="threshold",
                                       continuous_update=True, readout_format=".2f", style=style)
        self.opacity = W.FloatSlider(value=opacity, min=0.0, max=1.0, step=0.05, description="opacity",
                                     continuous_update=True, readout_format=".2f", style=style)
        self.picture = W.Image(format="png", layout=W.Layout(width=f"{image_size * scale}px"))
        self.readout = W.HTML()
        self.message = W.HTML()
        for w, name in ((self.dataset, "dataset"), (self.split, "split"), (self.image, "image"),
                        (self.upload, "upload"), (self.cls, "class"), (self.method, "method"),
                        (self.threshold, "threshold"), (self.opacity, "opacity"), (self.picture, "picture"),
                        (self.readout, "readout"), (self.message, "message")):
            w.add_class(f"refers-cam-{name}")
        legend = W.HTML("<span style='color:#28dc28'>&#9632;</span> predicted (map &ge; threshold) &nbsp; "
                        "<span style='color:#ff2828'>&#9632;</span> ground truth")
        self.widget = W.VBox([W.HBox([self.dataset, self.split, self.image]),
                              W.HBox([self.upload, self.cls, self.method]),
                              W.HBox([self.threshold, self.opacity]), self.message,
                              W.HBox([self.picture, W.VBox([self.readout, legend])])])
        self.widget.add_class("refers-cam-explorer")

        self.dataset.observe(self._on_source, "value")
        self.split.observe(self._on_source, "value")
        self.image.observe(self._on_image, "value")
        self.upload.observe(self._on_upload, "value")
        self.cls.observe(self._on_map, "value")
        self.method.observe(self._on_map, "value")
        self.threshold.observe(self._on_draw, "value")
        self.opacity.observe(self._on_draw, "value")
        if self.datasets:
            self._on_source()

    # -- display

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    # -- helpers

    @contextmanager
    def _hold(self):
        """Change several controls without each change redrawing."""
        old, self._quiet = self._quiet, True
        try:
            yield
        finally:
            self._quiet = old

    def _domain(self):
        from ..data.loading.domain_dataset import DomainImages
        k = (self.dataset.value, self.split.value)
        if k not in self._domains:
            self._domains[k] = DomainImages(self.datasets[k[0]], k[1], uint8=True)
        return self._domains[k]

    def _say(self, text: str = "", error: bool = False) -> None:
        colour = "#b00020" if error else "#555"
        self.message.value = f"<span style='color:{colour}'>{html.escape(text)}</span>" if text else ""

    # -- events

    def _on_source(self, change=None) -> None:
        if self._quiet or not self.dataset.value:
            return
        try:
            ds = self._domain()
        except (OSError, ValueError) as e:
            self._say(f"cannot open {self.dataset.value} / {self.split.value}: {e}", error=True)
            return
        opts = []
        for i, iid in enumerate(ds.image_ids):
            labels = sorted({b["label"] for b in ds.boxes(iid) if b["label"] in self.cm.classes})
            opts.append((f"{iid} · {', '.join(labels)}" if labels else iid, i, bool(labels)))
        if self.boxed_first:
            opts.sort(key=lambda t: not t[2])
        with self._hold():
            self.image.options = [(label, i) for label, i, _ in opts]
            self.image.value = opts[0][1] if opts else None
        self._on_image()

    def _on_image(self, change=None) -> None:
        if self._quiet or self.image.value is None:
            return
        ds = self._domain()
        i = self.image.value
        iid = ds.image_ids[i]
        item = ds[i]["image"][0].numpy()  # (S, S) uint8
        boxes = [b for b in ds.boxes(iid) if b["label"] in self.cm.classes]
        self._set_image(f"{self.dataset.value}/{self.split.value}/{iid}", item, boxes)
        self._say()

    def _on_upload(self, change=None) -> None:
        files = self.upload.value
        if not files:
            return
        f = files[0]
        name, content = f["name"], bytes(f["content"])
        self.upload.value = ()  # the bytes are not kept in the widget state; the same file can come again
        try:
            img = decode_upload(name, content, self.image_size)
        except Exception as e:  # a bad upload is a message in the panel, never a traceback
            self._say(f"could not use {name}: {getattr(e, 'reason', None) or e}", error=True)
            return
        self._set_image("upload:" + hashlib.sha1(content).hexdigest(), img, [])
        self._say(f"{name}: uploaded, no ground-truth boxes")

    def _set_image(self, key: str, pixels: np.ndarray, boxes: list[dict]) -> None:
        self.key, self.pixels, self.true_boxes = key, pixels, boxes
        if key not in self.prob_cache:
            self.prob_cache[key] = self.cm.probabilities(pixels)[0]  # (K,)
        probs = self.prob_cache[key]
        order = np.argsort(-probs, kind="stable")
        options = [(f"{self.cm.classes[k]} · {probs[k]:.2f}", int(k)) for k in order]
        default = self.cm.classes.index(boxes[0]["label"]) if boxes else int(order[0])
        with self._hold():
            self.cls.options = options
            self.cls.value = default
        self._on_map()

    def current_map(self) -> np.ndarray:
        """The (S, S) map of the current image, class and method (computed once, then cached)."""
        k = (self.key, self.cls.value, self.method.value)
        if k in self.map_cache:
            self.map_cache.move_to_end(k)
        else:
            self.map_cache[k] = self.cm.maps(self.pixels, self.cls.value, self.method.value)[0]
            self.maps_computed += 1
            while len(self.map_cache) > self.max_cached_maps:
                self.map_cache.popitem(last=False)
        return self.map_cache[k]

    def _on_map(self, change=None) -> None:
        if self._quiet or self.pixels is None or self.cls.value is None:
            return
        self.current_map()
        self._on_draw()

    def _on_draw(self, change=None) -> None:
        if self._quiet or self.pixels is None or self.cls.value is None:
            return
        from PIL import Image
        cam = self.current_map()
        label = self.cm.classes[self.cls.value]
        truth = [(b["x0"], b["y0"], b["x1"], b["y1"]) for b in self.true_boxes if b["label"] == label]
        self.pred_boxes = boxes_from_map(cam, self.threshold.value)
        rgb = overlay(self.pixels, cam, self.opacity.value, pred_boxes=self.pred_boxes, true_boxes=truth,
                      scale=self.scale)
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="png")
        self.picture.value = buf.getvalue()
        n = len(self.pred_boxes)
        pred = f"{n} predicted box{'es' if n != 1 else ''} at threshold {self.threshold.value:.2f}"
        if not cam.any():
            pred += " (the map is zero everywhere: no positive evidence for this class)"
        if truth:
            ious = [best_iou(self.pred_boxes, t) for t in truth]
            self.current_iou = float(np.mean(ious))
            per = ", ".join(f"{v:.2f}" for v in ious)
            self.readout.value = (f"<b>{html.escape(label)}</b><br><span class='refers-iou'>IoU "
                                  f"{self.current_iou:.2f}</span> (per ground-truth box: {per})<br>{pred}")
        else:
            self.current_iou = None
            self.readout.value = (f"<b>{html.escape(label)}</b><br><span class='refers-iou'>IoU: no ground-truth "
                                  f"box of this class</span><br>{pred}")
