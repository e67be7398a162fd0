"""A real radiograph file -> our image format: DICOM display pipeline, MONOCHROME1 inversion, square
resize with padding, clear errors; and the real RG1_UNCR.dcm chest film from pydicom-data."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from fixtures_real import picture, write_corrupt, write_dicom, write_png
from refers_lite.data.assets import AssetMissingError
from refers_lite.data.real.real_radiograph import (ImageReadError, Placement, letterbox, load_real_radiograph, read_dicom,
                                              read_image, real_radiograph_path)


def _rg1_or_skip():
    try:
        return real_radiograph_path()
    except AssetMissingError as e:
        pytest.skip(f"RG1_UNCR.dcm not available (run `make assets` or `pip install pydicom-data==1.0.0`): {e}")


def test_real_chest_radiograph_in_our_format():
    path = _rg1_or_skip()
    r = load_real_radiograph()
    assert r.path == path and r.photometric == "MONOCHROME1"
    assert r.full.shape == (1955, 1841) and r.full.dtype == np.float32
    assert 0.0 <= r.full.min() and r.full.max() <= 1.0
    assert r.image.shape == (256, 256) and r.image.dtype == np.uint8
    assert r.pixels.dtype == np.float32 and np.allclose(r.pixels * 255, r.image)
    # wider than tall after the 1955 x 1841 film is fitted: 7 columns of padding on each side
    assert r.placement.ox == 7 and r.placement.oy == 0
    assert r.image[:, :7].max() == 0 and r.image[:, -7:].max() == 0
    # dense = bright: the mediastinum and spine (centre) are brighter than the aerated lungs beside them
    centre = r.image[64:192, 120:136].mean()
    lungs = (r.image[64:192, 60:90].mean() + r.image[64:192, 170:200].mean()) / 2
    assert centre > lungs + 40


def test_monochrome1_and_monochrome2_of_the_same_data_are_inverted(tmp_path):
    stored = picture(40, 30, seed=1).astype(np.uint16) * 16  # (40, 30), 12-bit values
    m2 = read_dicom(write_dicom(tmp_path / "m2.dcm", stored, "MONOCHROME2"))
    m1 = read_dicom(write_dicom(tmp_path / "m1.dcm", stored, "MONOCHROME1"))
    assert m1.shape == m2.shape == (40, 30) and m1.dtype == np.float32
    np.testing.assert_allclose(m1, 1.0 - m2, atol=1e-6)
    assert m2.min() == 0.0 and m2.max() == 1.0  # min-max after the VOI step
    # MONOCHROME2: the bright rectangle of the stored picture stays bright; MONOCHROME1: it turns dark
    bright = stored == stored.max()
    assert m2[bright].mean() == 1.0 and m1[bright].mean() == 0.0


def test_window_of_the_file_is_applied(tmp_path):
    stored = np.tile(np.arange(0, 4000, 100, dtype=np.uint16), (8, 1))  # (8, 40), 0..3900
    x = read_dicom(write_dicom(tmp_path / "w.dcm", stored, window=(2000.0, 1000.0)))  # window 1500..2500
    below, above = stored[0] < 1400, stored[0] > 2600
    assert (x[:, below] == 0).all() and (x[:, above] == 1).all()
    inside = x[0, (stored[0] > 1600) & (stored[0] < 2400)]
    assert (np.diff(inside) > 0).all()  # linear ramp inside the window


def test_corrupt_and_unsupported_dicom_name_the_file(tmp_path):
    bad = write_corrupt(tmp_path / "garbage.dcm")
    with pytest.raises(ImageReadError, match="garbage.dcm") as e:
        read_dicom(bad)
    assert e.value.path == str(bad)
    good = write_dicom(tmp_path / "cut.dcm", picture(64, 64).astype(np.uint16))
    data = good.read_bytes()
    good.write_bytes(data[: len(data) - 3000])  # pixel data cut short
    with pytest.raises(ImageReadError, match=r"cut\.dcm.*pixel data"):
        read_image(good)
    rgb = write_dicom(tmp_path / "rgb.dcm", picture(8, 8).astype(np.uint16), photometric="RGB")
    with pytest.raises(ImageReadError, match=r"rgb\.dcm.*'RGB' is not a grayscale radiograph"):
        read_dicom(rgb)
    with pytest.raises(ImageReadError, match="no such file"):
        read_dicom(tmp_path / "absent.dcm")
    # the error survives a trip to and from a worker process
    err = pickle.loads(pickle.dumps(e.value))
    assert str(err) == str(e.value) and err.path == str(bad)


def test_read_image_png_modes_and_corruption(tmp_path):
    gray = write_png(tmp_path / "g.png", 30, 20, seed=2)
    np.testing.assert_array_equal(read_image(tmp_path / "g.png"), gray)
    write_png(tmp_path / "rgb.png", 30, 20, seed=2, mode="RGB")
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.png"), gray)  # grey stored as RGB reads back the same
    sixteen = (np.arange(12 * 10, dtype=np.uint16).reshape(12, 10) * 100 + 500)
    Image.fromarray(sixteen).save(tmp_path / "16.png")
    x = read_image(tmp_path / "16.png")
    assert x.dtype == np.uint8 and x.min() == 0 and x.max() == 255  # 16-bit: min-max to 0..255
    for kind in ("garbage", "truncated"):
        bad = write_corrupt(tmp_path / f"{kind}.png", kind)
        with pytest.raises(ImageReadError, match=f"{kind}.png"):
            read_image(bad)


def test_letterbox_pads_and_maps_boxes():
    img = np.full((100, 50), 200, dtype=np.uint8)  # (H, W): tall
    out, p = letterbox(img, 64)
    assert out.shape == (64, 64) and out.dtype == np.uint8
    assert p.inner_hw == (64, 32) and (p.ox, p.oy) == (16, 0)
    assert out[:, :16].max() == 0 and out[:, 48:].max() == 0 and (out[:, 16:48] == 200).all()
    assert p.map_box(0, 0, 50, 100) == (16.0, 0.0, 48.0, 64.0)  # the whole picture
    assert p.map_box(10, 20, 30, 40) == pytest.approx((22.4, 12.8, 35.2, 25.6))
    # a box given on a (1000, 500) frame of the same picture (NIH boxes refer to the 1024 originals)
    assert p.map_box(100, 200, 300, 400, frame_hw=(1000, 500)) == pytest.approx((22.4, 12.8, 35.2, 25.6))
    assert p.map_box(-10, -10, 500, 500) == (16.0 - 6.4, 0.0, 64.0, 64.0)  # clipped to the square
    wide, q = letterbox(np.zeros((10, 40), np.uint8), 256)
    assert (q.ox, q.oy) == (0, 96) and q.inner_hw == (64, 256)
    assert Placement.fit((256, 256), 256).map_box(1, 2, 3, 4) == (1.0, 2.0, 3.0, 4.0)
    with pytest.raises(ValueError, match="2-D"):
        letterbox(np.zeros((4, 4, 3), np.uint8))


def test_missing_asset_falls_back_to_pydicom_data_and_never_downloads(tmp_path, monkeypatch):
    import pydicom.data

    calls = []

    def fake_get(name, read=False, download=True):
        calls.append((name, download))
        return None

    monkeypatch.setattr(pydicom.data, "get_testdata_file", fake_get)
    with pytest.raises(AssetMissingError, match=r"make assets.*pydicom-data==1\.0\.0"):
        real_radiograph_path(tmp_path / "no_assets")
    assert calls == [("RG1_UNCR.dcm", False)]
    local = write_dicom(tmp_path / "RG1_UNCR.dcm", picture(20, 16).astype(np.uint16), "MONOCHROME1")
    monkeypatch.setattr(pydicom.data, "get_testdata_file", lambda name, read=False, download=True: str(local))
    assert real_radiograph_path(tmp_path / "no_assets") == local
    r = load_real_radiograph(32, tmp_path / "no_assets")
    assert r.image.shape == (32, 32) and r.photometric == "MONOCHROME1"


def test_float_tiff_with_nan_pixels_and_a_decompression_bomb(tmp_path):
    """Issue 18 (#8, #13): a NaN pixel no longer turns a float TIFF black (it is shown black, with a warning naming
    the file); a header claiming 40000 x 40000 pixels is an ImageReadError naming the file, not PIL's own error."""
    from refers_lite.data.real.real_radiograph import read_image
    a = np.linspace(0, 1000, 64 * 48, dtype=np.float32).reshape(64, 48)  # (H, W) a smooth ramp
    a[5, 7] = np.nan
    path = tmp_path / "ramp.tif"
    Image.fromarray(a, mode="F").save(path)
    with pytest.warns(UserWarning, match=r"ramp.tif: 1 of 3,072 pixels are NaN"):
        out = read_image(path)
    assert out.shape == (64, 48) and out[5, 7] == 0 and out.max() == 255 and out[-1, -1] == 255
    assert np.all(np.diff(out[:, 0].astype(int)) >= 0)  # the ramp survives
    Image.fromarray(np.full((4, 4), np.nan, np.float32), mode="F").save(tmp_path / "empty.tif")
    with pytest.raises(ImageReadError, match="empty.tif: no finite pixel"):
        read_image(tmp_path / "empty.tif")
    bomb = tmp_path / "bomb.png"
    Image.new("1", (40000, 40000)).save(bomb)  # 1-bit: a few hundred kB on disk, 1.6 billion pixels
    with pytest.raises(ImageReadError, match="bomb.png: refused: .*decompression bomb"):
        read_image(bomb)
