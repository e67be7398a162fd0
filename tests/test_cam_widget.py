"""The CAM explorer (refers_lite.viz.widgets) driven from Python: image, class, method, threshold, opacity
and uploads; the picture and the IoU readout follow, maps are cached per (image, class, method)."""
import datetime
import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from fixtures_real import picture, write_corrupt, write_dicom
from refers_lite.evaluation.cam import CamModel, best_iou, boxes_from_map
from refers_lite.data.loading.image_cache import build_cache
from refers_lite.data.loading.label_ratios import ratio_subsets, split_items, write_split_files
from refers_lite.models.classifier import RadiographClassifier
from refers_lite.models.radiograph_transformer import RadiographTransformer
from refers_lite.viz.widgets import CamExplorer, decode_upload

SIZE, N, CLASSES = 64, 40, ["blob", "band"]


def _items(indices):
    out = []
    for i in indices:
        rng = np.random.default_rng(i)
        img = rng.normal(90, 10, (SIZE, SIZE))
        meta = {"image_id": f"w{i:02d}", "blob": int(i % 2 == 0), "band": int(i % 3 == 0)}
        if meta["blob"]:
            y, x = (int(v) for v in rng.integers(10, SIZE - 26, 2))
            img[y:y + 16, x:x + 16] = 220
            meta["box"] = [x, y, x + 16, y + 16]
        out.append((np.clip(img, 0, 255).astype(np.uint8), meta))
    return out


@pytest.fixture(scope="module")
def domain(tmp_path_factory):
    root = tmp_path_factory.mktemp("widget") / "toy"
    def render(idx):
        return [(im, {k: v for k, v in m.items() if k != "box"}) for im, m in _items(idx)]
    build_cache(root / "cache", N, render, fingerprint={"w": 1}, image_size=SIZE, shard_size=N, progress=False)
    rows = ["image_id,label,x0,y0,x1,y1"] + [f"{m['image_id']},blob,{','.join(map(str, m['box']))}"
                                               for _, m in _items(range(N)) if "box" in m]
    (root / "boxes.csv").write_text("\n".join(rows) + "\n")
    ids = [f"w{i:02d}" for i in range(N)]
    y = np.array([[int(i % 2 == 0), int(i % 3 == 0)] for i in range(N)])
    splits = split_items(ids, y)
    pos = {k: i for i, k in enumerate(ids)}
    write_split_files(root / "splits", splits, ratio_subsets(splits["train"], y[[pos[i] for i in splits["train"]]]))
    (root / "domain.json").write_text(json.dumps({"name": "toy", "task": "multilabel", "classes": CLASSES,
                                                  "image_size": SIZE, "source": "test", "attribution": "none"}))
    return root


@pytest.fixture
def explorer(domain):
    torch.manual_seed(0)
    model = RadiographClassifier(RadiographTransformer(image_size=32, patch_size=4, width=16, depth=2, heads=2), 2)
    # EigenCAM: never all zero, even for this untrained model (Grad-CAM of a random model often is)
    return CamExplorer(CamModel(model, CLASSES), {"toy": domain}, image_size=SIZE, method="eigencam")


def _iou_text(e):
    m = re.search(r"IoU ([0-9.]+)", e.readout.value)
    return float(m.group(1)) if m else None


def _upload(e, name, content):
    e.upload.value = ({"name": name, "type": "", "size": len(content), "content": memoryview(content),
                       "last_modified": datetime.datetime.now(datetime.timezone.utc)},)


def test_it_opens_on_an_image_with_a_box_and_shows_map_boxes_and_iou(explorer):
    e = explorer
    assert e.key.startswith("toy/test/") and e.true_boxes and e.cm.classes[e.cls.value] == "blob"
    assert e.picture.value[:8] == b"\x89PNG\r\n\x1a\n"
    shown = Image.open(io.BytesIO(e.picture.value))
    assert shown.size == (2 * SIZE, 2 * SIZE)
    truth = [(b["x0"], b["y0"], b["x1"], b["y1"]) for b in e.true_boxes]
    want = np.mean([best_iou(boxes_from_map(e.current_map(), e.threshold.value), t) for t in truth])
    assert _iou_text(e) == pytest.approx(want, abs=0.005) and e.current_iou == pytest.approx(want)
    assert e.maps_computed == 1
    # the class dropdown lists every class with its probability, the most probable first
    probs = e.cm.probabilities(e.pixels)[0]
    shown_probs = [float(label.rsplit("· ", 1)[1]) for label, _ in e.cls.options]
    assert shown_probs == sorted(shown_probs, reverse=True)
    assert shown_probs == pytest.approx(sorted(probs.round(2), reverse=True), abs=0.006)


def test_moving_the_threshold_redraws_and_rescoring_without_recomputing_the_map(explorer):
    e = explorer
    cam = e.current_map()
    before = e.picture.value
    seen = set()
    for t in np.arange(0.05, 1.0001, 0.05):
        e.threshold.value = round(float(t), 2)
        assert e.pred_boxes == boxes_from_map(cam, e.threshold.value)
        seen.add(_iou_text(e))
    assert e.maps_computed == 1  # one map, many thresholds
    assert len(seen) >= 2, "the IoU readout never changed with the threshold"
    assert e.picture.value != before
    pic = e.picture.value
    e.opacity.value = 0.0 if e.opacity.value else 0.9
    assert e.picture.value != pic and e.maps_computed == 1


def test_maps_are_cached_per_image_class_and_method(explorer):
    e = explorer
    first_class = e.cls.value
    other = 1 - first_class
    e.cls.value = other
    assert e.maps_computed == 2 and "no ground-truth box" in e.readout.value  # no boxes of this class
    e.cls.value = first_class
    assert e.maps_computed == 2  # from the cache
    e.method.value = "rollout"
    assert e.maps_computed == 3
    e.method.value = "eigencam"
    assert e.maps_computed == 3
    key = e.key
    e.image.value = e.image.options[1][1]
    assert e.key != key and e.maps_computed == 4
    e.split.value = "validation"
    assert e.key.startswith("toy/validation/") and e.maps_computed == 5
    e.max_cached_maps = 2  # the least recently used maps are dropped
    e.method.value = "rollout"
    assert len(e.map_cache) == 2 and e.maps_computed == 6


def test_uploads_png_and_dicom_and_bad_files_show_a_message(explorer, tmp_path):
    e = explorer
    buf = io.BytesIO()
    Image.fromarray(picture(80, 50, seed=4)).save(buf, format="PNG")
    _upload(e, "film.png", buf.getvalue())
    assert e.key.startswith("upload:") and e.pixels.shape == (SIZE, SIZE) and e.true_boxes == []
    assert "no ground-truth box" in e.readout.value and "film.png" in e.message.value
    assert e.upload.value == ()  # the bytes are not kept
    key, pic = e.key, e.picture.value

    _upload(e, "notes.png", write_corrupt(tmp_path / "bad.png").read_bytes())
    assert "could not use notes.png" in e.message.value and "not an image" in e.message.value
    assert e.key == key and e.picture.value == pic  # the last good image stays

    dcm = write_dicom(tmp_path / "a.dcm", (np.arange(40 * 30, dtype=np.uint16).reshape(40, 30) * 3)).read_bytes()
    _upload(e, "study.dcm", dcm[: len(dcm) - 500])  # pixel data cut short
    assert "could not use study.dcm" in e.message.value
    _upload(e, "other.dcm", b"\0" * 300)
    assert "not a DICOM file" in e.message.value
    _upload(e, "empty.jpg", b"")
    assert "empty" in e.message.value

    _upload(e, "named_wrong.bin", dcm)  # a DICOM is recognised by its DICM marker, whatever its name
    assert e.key.startswith("upload:") and e.key != key and "named_wrong.bin" in e.message.value


def test_decode_upload_letterboxes_to_the_square():
    buf = io.BytesIO()
    Image.fromarray(np.full((20, 40), 200, np.uint8)).save(buf, format="PNG")
    img = decode_upload("wide.png", buf.getvalue(), 32)
    assert img.shape == (32, 32) and img[:8].max() == 0 and img[16, 16] == 200  # padded above and below
