"""Class activation maps (refers_lite.evaluation.cam): the token -> grid reshape, boxes, IoU, and whether the
CAM of a rendered finding points into its box more often than a random map (measured)."""
import json

import numpy as np
import pytest
import torch
from scipy.stats import binomtest

from refers_lite.evaluation.cam import (CAM_METHODS, MAP_METHODS, CamModel, attention_rollout, best_iou, box_iou,
                                        boxes_from_map, cam_target_layers, energy_inside, iou_by_threshold,
                                        localization_table, overlay, place_in_image, plot_cam_grid, pointing_hit,
                                        random_maps, summarise_localization, tokens_to_grid)
from refers_lite.data.loading.gpu_augment import StudyAugment
from refers_lite.models.classifier import RadiographClassifier
from refers_lite.models.radiograph_transformer import RadiographTransformer


def _tiny(agg_mode="concat", depth=2, size=32, patch=8, seed=0, classes=3):
    torch.manual_seed(seed)
    return RadiographClassifier(RadiographTransformer(image_size=size, patch_size=patch, width=16, depth=depth, heads=2,
                                            agg_mode=agg_mode), classes).eval()


# -- the reshape -----------------------------------------------------------------------------------


def test_tokens_to_grid_drops_the_aggregation_token_and_keeps_row_major_order():
    gh, gw, D = 3, 4, 2
    tok = torch.zeros(1, 1 + gh * gw, D)
    tok[0, 0] = -7  # the aggregation embedding
    for r in range(gh):
        for c in range(gw):
            tok[0, 1 + r * gw + c] = torch.tensor([r, c], dtype=torch.float32)
    g = tokens_to_grid(tok, (gh, gw))
    assert g.shape == (1, D, gh, gw)
    rr, cc = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    assert torch.equal(g[0, 0], rr.float()) and torch.equal(g[0, 1], cc.float())
    assert torch.equal(tokens_to_grid(tok[:, 1:], (gh, gw)), g)  # a layer without the aggregation token
    with pytest.raises(ValueError, match="do not fit a 3x4 patch grid"):
        tokens_to_grid(tok[:, 2:], (gh, gw))


def test_the_reshape_matches_where_the_transformer_puts_each_patch():
    model = _tiny(size=32, patch=8)
    enc = model.encoder
    x = torch.rand(1, 1, 32, 32)
    y = x.clone()
    y[0, 0, 16:24, 8:16] += 1.0  # patch row 2, column 1 of the 4 x 4 grid
    with torch.no_grad():
        diff = (tokens_to_grid(enc.patch_embed(y), enc.grid_size) - tokens_to_grid(enc.patch_embed(x), enc.grid_size))
    changed = diff.abs().sum(1)[0] > 1e-6  # (4, 4)
    assert changed.nonzero().tolist() == [[2, 1]]


def test_the_final_patch_tokens_get_no_gradient_and_the_target_layer_does():
    """Why Grad-CAM reads the last block's input: the head sees only the aggregation token."""
    model = _tiny()
    store = {}

    def keep(name):
        def hook(_m, _i, out):
            out.retain_grad()
            store[name] = out
        return hook
    h1 = model.encoder.norm.register_forward_hook(keep("final"))
    h2 = cam_target_layers(model)[0].register_forward_hook(keep("target"))
    model(torch.rand(2, 1, 32, 32))[:, 1].sum().backward()
    h1.remove(), h2.remove()
    assert store["final"].grad[:, 1:].abs().max() == 0  # final patch tokens: exactly zero
    assert store["final"].grad[:, 0].abs().max() > 0
    assert store["target"].grad[:, 1:].abs().amax(-1).min() > 0  # every patch token reaches the logit
    assert cam_target_layers(model, "all") == [b.norm1 for b in model.encoder.blocks]
    with pytest.raises(ValueError, match="layers must be"):
        cam_target_layers(model, 5)
    with pytest.raises(TypeError, match="radiograph transformer"):
        cam_target_layers(torch.nn.Linear(2, 2))


# -- maps on the image -----------------------------------------------------------------------------


def test_place_in_image_is_the_inverse_of_the_evaluation_crop():
    """A bright square sent through the evaluation transform and placed back lands where it was."""
    S, crop = 64, 0.875
    img = np.zeros((S, S), np.uint8)
    img[20:30, 36:46] = 255
    x = StudyAugment(32, crop_fraction=crop)(torch.from_numpy(img)[None, None], train=False)  # (1, 1, 32, 32)
    back = place_in_image(x[:, 0].numpy(), S, crop)[0]
    ys, xs = np.nonzero(back > 0.5)
    assert abs(ys.min() - 20) <= 1 and abs(ys.max() - 29) <= 1 and abs(xs.min() - 36) <= 1 and abs(xs.max() - 45) <= 1
    full = place_in_image(np.ones((1, 8, 8)), 256, crop)[0]
    assert full[16:240, 16:240].min() == 1 and full[:16].max() == 0 and full[240:].max() == 0


@pytest.mark.parametrize("agg_mode", ["concat", "add", "none"])
def test_every_method_gives_normalised_maps_on_the_stored_image(agg_mode):
    model = _tiny(agg_mode, depth=2)
    cm = CamModel(model, ["a", "b", "c"], crop_fraction=0.875)
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (2, 48, 48), dtype=np.uint8)
    for method in MAP_METHODS:
        m = cm.maps(imgs, [0, 2], method)
        assert m.shape == (2, 48, 48) and m.dtype == np.float32 and m.min() >= 0 and m.max() <= 1 + 1e-6
        assert m[:, :3].max() == 0  # outside the model's central window
    one = cm.maps(imgs[1], 2, "gradcam")[0]
    assert np.allclose(cm.maps(imgs, [0, 2], "gradcam")[1], one, atol=1e-5)  # per-image targets in a batch
    with torch.no_grad():  # class 1 := -class 0: its Grad-CAM is the other half of class 0's before the ReLU
        model.head.weight[1] = -model.head.weight[0]
    m0, m1 = cm.grid_maps(imgs, 0, "gradcam"), cm.grid_maps(imgs, 1, "gradcam")
    assert (m0 * m1).max() == 0 and (m0 + m1).reshape(2, -1).max(1).min() > 0.99
    assert len(CAM_METHODS) >= 3 and "gradcam" in CAM_METHODS and "rollout" in MAP_METHODS
    with pytest.raises(ValueError, match="unknown map method"):
        cm.maps(imgs, 0, "nope")
    with pytest.raises(ValueError, match="class_index"):
        cm.maps(imgs, 3, "gradcam")


def test_attention_rollout_of_one_block_is_the_aggregation_tokens_attention():
    model = _tiny("none", depth=1)
    x = torch.rand(2, 1, 32, 32)
    enc = model.encoder
    enc.set_store_attention(True)
    with torch.no_grad():
        model(x)
    att = enc.attention_maps()[0].mean(1)[:, 0, 1:]  # (B, N)
    enc.set_store_attention(False)
    want = (att - att.amin(1, keepdim=True)) / (att.amax(1, keepdim=True) - att.amin(1, keepdim=True))
    got = attention_rollout(model, x)
    assert got.shape == (2, 4, 4)
    assert torch.allclose(got.reshape(2, -1), want, atol=1e-5)
    assert all(b.attn.store_attention is False for b in enc.blocks)  # switched back off


# -- boxes and scores on known masks ---------------------------------------------------------------


def test_boxes_from_map_on_known_masks():
    m = np.zeros((20, 30))
    m[2:5, 3:9] = 0.9  # 3 x 6 = 18 pixels
    m[10:18, 20:28] = 0.6  # 64 pixels
    m[18, 28] = 0.7  # touches the second block diagonally: same 8-connected component
    m[0, 29] = 0.95  # a single pixel
    assert boxes_from_map(m, 0.5) == [(20.0, 10.0, 29.0, 19.0), (3.0, 2.0, 9.0, 5.0), (29.0, 0.0, 30.0, 1.0)]
    assert boxes_from_map(m, 0.8) == [(3.0, 2.0, 9.0, 5.0), (29.0, 0.0, 30.0, 1.0)]
    assert boxes_from_map(m, 0.5, min_area=2) == [(20.0, 10.0, 29.0, 19.0), (3.0, 2.0, 9.0, 5.0)]
    assert boxes_from_map(m, 0.99) == []
    with pytest.raises(ValueError, match="one \\(H, W\\) map"):
        boxes_from_map(np.zeros((2, 3, 4)))


def test_iou_and_scores_by_hand():
    assert box_iou([(0, 0, 10, 10)], [(0, 0, 10, 10), (5, 0, 15, 10), (20, 20, 30, 30)]).tolist() == \
        [[1.0, pytest.approx(50 / 150), 0.0]]
    assert best_iou([(5, 0, 15, 10), (0, 0, 10, 8)], (0, 0, 10, 10)) == pytest.approx(0.8)
    assert best_iou([], (0, 0, 10, 10)) == 0.0
    assert box_iou([], [(0, 0, 1, 1)]).shape == (0, 1)
    cam = np.zeros((10, 10))
    cam[6, 7] = 1.0
    cam[1, 1] = 0.5
    assert pointing_hit(cam, (5, 5, 10, 10)) and not pointing_hit(cam, (0, 0, 5, 5))
    assert not pointing_hit(np.zeros((10, 10)), (0, 0, 10, 10))  # an empty map points nowhere
    assert energy_inside(cam, (5, 5, 10, 10)) == pytest.approx(1 / 1.5)
    assert energy_inside(np.zeros((4, 4)), (0, 0, 2, 2)) == 0.0


def test_random_maps_hit_a_box_about_as_often_as_its_share_of_the_grid():
    r = random_maps(400, (8, 8), 64, 0.875, seed=1)
    box = (4, 4, 32, 32)  # the top-left quarter of the window's 8 x 8 cells: 16 of 64 cells
    rate = np.mean([pointing_hit(m, box) for m in r])
    assert 0.17 < rate < 0.33


def test_overlay_and_grid_draw_boxes_in_their_colours():
    img = np.full((16, 16), 100, np.uint8)
    rgb = overlay(img, np.zeros((16, 16)), 0.5, pred_boxes=[(2, 2, 8, 8)], true_boxes=[(9, 9, 15, 15)], line=1)
    assert rgb.shape == (16, 16, 3)
    assert tuple(rgb[2, 4]) == (40, 220, 40) and tuple(rgb[9, 12]) == (255, 40, 40)
    assert tuple(rgb[12, 12]) == (100, 100, 100)  # inside a box, map 0: the image unchanged
    hot = overlay(img, np.ones((16, 16)), 1.0)
    assert not np.array_equal(hot[5, 5], rgb[5, 5])
    with pytest.raises(ValueError, match="opacity"):
        overlay(img, None, 1.5)
    import matplotlib
    matplotlib.use("Agg")
    sample = {"image": img, "cam": np.eye(16), "true_boxes": [(0, 0, 8, 8)], "label": "x", "prob": 0.3}
    fig = plot_cam_grid([sample] * 3, ncols=2)
    assert len(fig.axes) == 8


# -- a rendered finding: does the CAM find it? -----------------------------------------------------

FIND, N, SIZE = "pleural_effusion", 240, 64


def _render_finding_domain(root):
    """``N`` radiographs of one rendered patient at ``SIZE`` px; every other one with a severe unilateral
    pleural effusion (left and right in turn) and its box; NIH-like acquisition (varied shift, rotation,
    exposure, noise)."""
    from refers_lite.data.loading.image_cache import ImageCache, build_cache
    from refers_lite.data.loading.label_ratios import ratio_subsets, split_items, write_split_files
    from refers_lite.data.synthesis.render import FindingRequest, ImageItem, render_item_shard

    items = [ImageItem(f"e{i:04d}", patient=0, view="pa", lesion_seed=i, acquisition="nih", acq_seed=i,
                       requests=(FindingRequest(FIND, side=("left", "right")[(i // 2) % 2], severity="severe"),)
                       if i % 2 == 0 else ()) for i in range(N)]
    extra = [{FIND: int(i % 2 == 0)} for i in range(N)]
    build_cache(root / "cache", N, lambda idx: render_item_shard(idx, items, extra, SIZE),
                fingerprint={"test_cam": FIND, "n": N}, image_size=SIZE, shard_size=N, progress=False)
    cache = ImageCache.open(root / "cache")
    ids = list(cache.index["image_id"])
    rows = ["image_id,label,x0,y0,x1,y1"] + [
        f"{iid},{FIND},{x0},{y0},{x1},{y1}" for iid, bx in zip(ids, cache.index["boxes"])
        for _lab, x0, y0, x1, y1, _side in json.loads(bx)]
    (root / "boxes.csv").write_text("\n".join(rows) + "\n")
    y = cache.index[[FIND]].to_numpy()
    splits = split_items(ids, y)
    pos = {k: i for i, k in enumerate(ids)}
    write_split_files(root / "splits", splits, ratio_subsets(splits["train"], y[[pos[i] for i in splits["train"]]]))
    (root / "domain.json").write_text(json.dumps({"name": "effusion", "task": "binary", "classes": [FIND],
                                                  "image_size": SIZE, "source": "test", "attribution": "test"}))
    return root


@pytest.fixture(scope="module")
def effusion_run(tmp_path_factory):
    from refers_lite.training.checkpoint import ENCODER_FORMAT, save_checkpoint
    from refers_lite.config import get_config
    from refers_lite.data.assets import AssetMissingError
    from refers_lite.training.finetune import finetune, get_finetune_config

    tmp = tmp_path_factory.mktemp("cam")
    try:
        root = _render_finding_domain(tmp / "effusion")
    except AssetMissingError as e:
        pytest.skip(f"chest CT asset missing (make assets): {e}")
    # A 4-block radiograph transformer (recurrent concatenation), random start, saved as an encoder file.
    cfg = get_config("smoke", {"model": {"image_size": 64, "patch_size": 8, "width": 64, "depth": 4, "heads": 4}})
    torch.manual_seed(0)
    enc = RadiographTransformer.from_config(cfg.model)
    path = save_checkpoint({"format": ENCODER_FORMAT, "config": cfg.to_dict(), "state_dict": enc.state_dict()},
                           tmp / "encoder.pt")
    ft = get_finetune_config("smoke", {"min_steps": 200, "epochs": 3, "batch_size": 16, "optimizer": "adam",
                                       "lr": 1e-3})
    res = finetune(path, root, 1.0, 0, tmp / "run", cfg=ft, progress=False)
    return root, tmp / "run", res


@pytest.mark.slow
def test_the_cam_of_a_rendered_effusion_points_into_its_box_more_often_than_random_maps(effusion_run):
    from refers_lite.data.loading.domain_dataset import DomainImages
    root, run, res = effusion_run
    cm = CamModel.from_run(run)
    assert cm.classes == [FIND] and len(cm.encoder.blocks) == 4 and cm.task == "binary"
    assert res.test_mean_auc > 0.6, f"the classifier did not learn the finding (test AUC {res.test_mean_auc:.2f})"
    test = DomainImages(root, "test", uint8=True)
    sweep = localization_table(cm, test, "gradcam", threshold=(0.3, 0.5, 0.7), n_random=64, seed=0)
    table = sweep[sweep.threshold == 0.5]
    s = summarise_localization(table).loc["all"]
    assert list(iou_by_threshold(sweep).index) == [0.3, 0.5, 0.7]
    assert iou_by_threshold(sweep).loc[0.5, "mean_iou"] == pytest.approx(s["mean_iou"])
    with pytest.raises(ValueError, match="several thresholds"):
        summarise_localization(sweep)
    n = int(s["boxes"])
    hits = int(table["hit"].sum())
    p = binomtest(hits, n, float(s["random_hit_rate"]), alternative="greater").pvalue
    print(f"\nGrad-CAM pointing game on {n} held-out effusion boxes: {hits / n:.2f} vs random maps "
          f"{s['random_hit_rate']:.2f} (binomial p = {p:.1e}); mean IoU {s['mean_iou']:.2f}, "
          f"IoU > 0.5: {s['iou_gt_0.5']:.2f}; test AUC {res.test_mean_auc:.2f}")
    assert n >= 20
    assert hits / n > s["random_hit_rate"] and p < 0.01
    assert set(summarise_localization(table).columns) >= {"mean_iou", "iou_gt_0.5", "hit_rate", "random_hit_rate",
                                                          "empty_maps"}
    assert not table.loc[table["empty_map"], "hit"].any()


@pytest.mark.filterwarnings("ignore:NIH ChestX-ray14.*not on disk")  # the look-alike lists one absent file
def test_radiologist_boxes_of_a_prepared_real_dataset_are_scored(tmp_path):
    """A real dataset prepared on disk (here a look-alike of NIH's tables, BBox_List_2017 included) is
    a domain folder like the rendered ones: its radiologists' boxes are what the maps are scored on."""
    import pandas as pd

    from fixtures_real import make_nih
    from refers_lite.data.loading.domain_dataset import DomainImages
    from refers_lite.data.real.real_datasets import NIH_CLASSES, prepare_real_domain

    out = tmp_path / "nih_real"
    prepare_real_domain("nih", make_nih(tmp_path / "raw"), out, image_size=64, progress=False)
    cm = CamModel(_tiny(classes=len(NIH_CLASSES)), list(NIH_CLASSES))
    n_boxes = len((out / "boxes.csv").read_text().strip().splitlines()) - 1
    assert n_boxes > 0
    table = pd.concat([localization_table(cm, DomainImages(out, split, uint8=True), "gradcam", n_random=4)
                       for split in ("train", "validation", "test")])
    assert len(table) == n_boxes and set(table["label"]) <= set(NIH_CLASSES)
    assert table["iou"].between(0, 1).all() and table["random_hit"].between(0, 1).all()
