"""A real radiograph file (DICOM, PNG, JPEG) -> our image format: uint8 ``(S, S)``, dense = bright.

Everything that turns one file on disk into the square image the models see lives here; the
dataset readers (:mod:`refers_lite.data.real.real_datasets`) use it for every image, and
:func:`load_real_radiograph` applies it to the one real chest radiograph that can be had offline:
``RG1_UNCR.dcm`` from the PyPI package ``pydicom-data==1.0.0`` (MIT), an adult PA chest film
(CR, Philips, 1955 x 1841 pixels, 15 bits stored, MONOCHROME1). No findings are known for it.

Fetch it with ``make assets`` (or ``python data_scripts/fetch_assets.py``): the file is taken out
of the pinned wheel and checked by sha256 (:mod:`refers_lite.data.assets`, asset
``"chest_radiograph"``). When the asset is absent but ``pydicom-data`` is installed,
``pydicom.data.get_testdata_file('RG1_UNCR.dcm', download=False)`` is used instead (never a download).

DICOM -> [0, 1] (:func:`dicom_to_unit`), the usual display pipeline:

1. stored values -> modality LUT (``apply_modality_lut``: rescale slope / intercept or a Modality LUT);
2. -> VOI LUT (``apply_voi_lut``: the file's VOI LUT or window centre / width; unchanged when it has
   neither);
3. -> min-max to [0, 1] over the image (a window narrower than the data is reproduced exactly,
   since the VOI step clamps to it; a constant image gives zeros);
4. MONOCHROME1 (low value = white on film) is inverted, ``1 - x``, so that dense = bright as in
   MONOCHROME2 and in our renderer's output; a ``PresentationLUTShape`` of ``INVERSE`` flips once more.
   Any other photometric interpretation (RGB, palette, ...) is refused.

PNG / JPEG (:func:`read_image`): read with PIL (EXIF orientation applied); RGB(A) / palette images
are converted to luminance (``"L"``); 16-bit images are min-max scaled to 0..255.

Square resize (:func:`letterbox`): **aspect-preserving, padded** -- the longer side is resized to
``S`` (PIL bilinear, antialiased), the image is centred and the rest filled with 0 (black, like
collimated film borders). Nothing is cropped away, so every box and every labelled lesion stays in
the image; :class:`Placement` maps pixel coordinates of the source image to the square image.

Unreadable input raises :class:`ImageReadError` naming the file and the problem.
"""

from __future__ import annotations

import warnings

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "DICOM_SUFFIXES",
    "ImageReadError",
    "Placement",
    "RealRadiograph",
    "dicom_to_unit",
    "letterbox",
    "load_real_radiograph",
    "read_dicom",
    "read_dicom_dataset",
    "read_image",
    "real_radiograph_path",
    "unit_to_uint8",
]

DICOM_SUFFIXES = (".dcm", ".dicom")
ASSET_NAME = "chest_radiograph"  # key in refers_lite.data.assets.ASSETS
TESTDATA_NAME = "RG1_UNCR.dcm"


class ImageReadError(ValueError):
    """An image file could not be read (missing, corrupt, truncated, not a grayscale radiograph)."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(str(path), reason)  # args stay (path, reason): picklable across worker processes
        self.path, self.reason = str(path), reason

    def __str__(self) -> str:
        return f"cannot read image {self.path}: {self.reason}"


# ----------------------------------------------------------------------------- DICOM


def _lut_functions():
    try:  # pydicom >= 3
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pydicom 2.4
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut
    return apply_modality_lut, apply_voi_lut


def unit_to_uint8(x: np.ndarray) -> np.ndarray:
    """[0, 1] float (H, W) -> uint8 0..255 (rounded, clipped)."""
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def dicom_to_unit(ds, *, name: str = "<dataset>") -> np.ndarray:
    """float32 (H, W) in [0, 1], dense = bright, from a pydicom Dataset (steps in the module doc).

    ``name`` (the file) is used in error messages.
    """
    apply_modality_lut, apply_voi_lut = _lut_functions()
    mode = str(getattr(ds, "PhotometricInterpretation", "")).strip().upper()
    if mode not in ("MONOCHROME1", "MONOCHROME2"):
        raise ImageReadError(name, f"photometric interpretation {mode or 'missing'!r} is not a grayscale "
                                   "radiograph (expected MONOCHROME1 or MONOCHROME2)")
    try:
        arr = ds.pixel_array
    except Exception as e:  # truncated pixel data, missing decoder, no PixelData element
        raise ImageReadError(name, f"pixel data could not be decoded ({type(e).__name__}: {e})") from e
    if arr.ndim != 2:
        raise ImageReadError(name, f"expected one 2-D frame, got pixel array of shape {arr.shape}")
    x = _min_max_unit(apply_voi_lut(apply_modality_lut(arr, ds), ds).astype(np.float64), name)  # (H, W)
    invert = mode == "MONOCHROME1"
    if str(getattr(ds, "PresentationLUTShape", "")).strip().upper() == "INVERSE":
        invert = not invert
    if invert:
        x = 1.0 - x
    return x.astype(np.float32)


def read_dicom_dataset(path: str | Path):
    """The pydicom Dataset of a DICOM file (pixels not decoded yet); ImageReadError naming the file."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "no such file")
    try:
        return pydicom.dcmread(path)
    except InvalidDicomError as e:
        raise ImageReadError(path, f"not a DICOM file ({e})") from e
    except Exception as e:  # truncated header, bad element lengths
        raise ImageReadError(path, f"corrupt DICOM ({type(e).__name__}: {e})") from e


def read_dicom(path: str | Path) -> np.ndarray:
    """float32 (H, W) in [0, 1], dense = bright, from a DICOM file; ImageReadError naming the file."""
    return dicom_to_unit(read_dicom_dataset(path), name=str(path))


# ----------------------------------------------------------------------------- PNG / JPEG / any


def _min_max_unit(a: np.ndarray, name: str) -> np.ndarray:
    """(H, W) numbers -> [0, 1] by the image's own range. Pixels that are not finite (NaN, inf: a float TIFF's
    missing values) do not set the range; they become 0 with a warning naming the file; an image with no finite
    pixel is an error."""
    finite = np.isfinite(a)
    if not finite.any():
        raise ImageReadError(name, "no finite pixel value (every pixel is NaN or infinite)")
    if not finite.all():
        warnings.warn(f"{name}: {int((~finite).sum()):,} of {a.size:,} pixels are NaN or infinite; shown black",
                      stacklevel=3)
    lo, hi = float(a[finite].min()), float(a[finite].max())
    x = np.where(finite, a, lo)
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def _pil_to_uint8(img: Image.Image, name: str = "<image>") -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return unit_to_uint8(_min_max_unit(np.asarray(img, dtype=np.float64), name))  # (H, W)
    if img.mode != "L":
        img = img.convert("RGBA").convert("L") if img.mode in ("P", "PA", "LA") else img.convert("L")
    return np.asarray(img, dtype=np.uint8).copy()


def read_image(path: str | Path, *, draft_size: int | None = None) -> np.ndarray:
    """uint8 (H, W), dense = bright, from a PNG / JPEG / other PIL-readable file or a DICOM
    (``.dcm`` / ``.dicom``). Raises :class:`ImageReadError` naming the file for a missing, truncated
    or corrupt file.

    ``draft_size``: the image will be shrunk to fit ``draft_size`` pixels anyway, so a JPEG may be decoded
    at 1/2, 1/4 or 1/8 scale as long as both sides stay >= ``draft_size`` (PIL's ``draft``: the DCT
    scaling of libjpeg, several times faster on a 3000-pixel film). Other formats ignore it."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return unit_to_uint8(read_dicom(path))
    if not path.is_file():
        raise ImageReadError(path, "no such file")
    try:
        with Image.open(path) as img:
            if draft_size and img.format == "JPEG":
                img.draft(img.mode, (int(draft_size), int(draft_size)))
            img.load()  # decodes everything now: a truncated file fails here, not later
            img = ImageOps.exif_transpose(img)
            out = _pil_to_uint8(img, str(path))
    except UnidentifiedImageError as e:
        raise ImageReadError(path, "not an image PIL can identify (corrupt or wrong format)") from e
    except Image.DecompressionBombError as e:  # a header that claims far more pixels than any radiograph has
        raise ImageReadError(path, f"refused: {e}") from e
    except (OSError, ValueError, SyntaxError) as e:  # truncated / broken data streams
        raise ImageReadError(path, f"corrupt image data ({type(e).__name__}: {e})") from e
    if out.ndim != 2 or min(out.shape) < 1:
        raise ImageReadError(path, f"unexpected decoded shape {out.shape}")
    return out


# ----------------------------------------------------------------------------- square resize


@dataclass(frozen=True)
class Placement:
    """Where a source image (H, W) went in the square (S, S) image: ``x' = x * sx + ox``."""

    src_hw: tuple[int, int]
    size: int
    sx: float
    sy: float
    ox: int
    oy: int

    @classmethod
    def fit(cls, src_hw: tuple[int, int], size: int) -> "Placement":
        h, w = int(src_hw[0]), int(src_hw[1])
        if h < 1 or w < 1 or size < 1:
            raise ValueError(f"bad shapes: source {src_hw}, size {size}")
        scale = size / max(h, w)
        nh, nw = max(1, min(size, round(h * scale))), max(1, min(size, round(w * scale)))
        return cls((h, w), int(size), nw / w, nh / h, (size - nw) // 2, (size - nh) // 2)

    @property
    def inner_hw(self) -> tuple[int, int]:
        """(h, w) of the resized image inside the square (the rest is padding)."""
        return round(self.src_hw[0] * self.sy), round(self.src_hw[1] * self.sx)

    def map_box(self, x0: float, y0: float, x1: float, y1: float,
                frame_hw: tuple[float, float] | None = None) -> tuple[float, float, float, float]:
        """A box in source pixels (or in a ``frame_hw`` = (H, W) coordinate frame of the same picture,
        e.g. NIH boxes given on the 1024 x 1024 original) -> square-image pixels, clipped to [0, S]."""
        fx = self.src_hw[1] / frame_hw[1] if frame_hw else 1.0
        fy = self.src_hw[0] / frame_hw[0] if frame_hw else 1.0
        s = float(self.size)
        xs = sorted((x0 * fx * self.sx + self.ox, x1 * fx * self.sx + self.ox))
        ys = sorted((y0 * fy * self.sy + self.oy, y1 * fy * self.sy + self.oy))
        return (min(max(xs[0], 0.0), s), min(max(ys[0], 0.0), s), min(max(xs[1], 0.0), s), min(max(ys[1], 0.0), s))


def letterbox(img: np.ndarray, size: int = 256) -> tuple[np.ndarray, Placement]:
    """uint8 (H, W) -> (uint8 (size, size), Placement): aspect-preserving resize, centred, zero padding."""
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D image (H, W), got shape {img.shape}")
    p = Placement.fit(img.shape, size)
    nh, nw = p.inner_hw
    small = np.asarray(Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8)).resize(
        (nw, nh), Image.Resampling.BILINEAR))  # (nh, nw)
    out = np.zeros((size, size), dtype=np.uint8)  # (S, S)
    out[p.oy:p.oy + nh, p.ox:p.ox + nw] = small
    return out, p


# ----------------------------------------------------------------------------- the RG1 radiograph


@dataclass(eq=False)
class RealRadiograph:
    """The real radiograph in our format.

    image:       uint8 (S, S), dense = bright, letterboxed (the format of the image caches).
    pixels:      float32 (S, S) in [0, 1] (``image / 255``), for models.
    full:        float32 (H, W) in [0, 1] at the file's resolution (before resizing).
    placement:   how ``full`` went into ``image``.
    path:        the DICOM file read.
    photometric: the file's PhotometricInterpretation (MONOCHROME1 for RG1_UNCR).
    """

    image: np.ndarray
    pixels: np.ndarray
    full: np.ndarray
    placement: Placement
    path: Path
    photometric: str


def real_radiograph_path(dest: str | Path | None = None) -> Path:
    """``RG1_UNCR.dcm``: the pinned asset under ``dest`` (sha256-checked), else the installed
    ``pydicom-data`` copy; raises AssetMissingError telling how to fetch it. Never downloads."""
    from ..assets import AssetMissingError, asset_path

    try:
        return asset_path(ASSET_NAME, dest, verify=True)
    except AssetMissingError as missing:
        try:
            from pydicom.data import get_testdata_file

            found = get_testdata_file(TESTDATA_NAME, download=False)
        except Exception:  # pydicom absent or its data plugin broken: report the asset as missing
            found = None
        if found:
            return Path(found)
        raise AssetMissingError(f"{missing} -- or `pip install pydicom-data==1.0.0` (MIT), whose "
                                f"{TESTDATA_NAME} pydicom.data.get_testdata_file finds offline") from None


def load_real_radiograph(size: int = 256, dest: str | Path | None = None, *, path: str | Path | None = None
                         ) -> RealRadiograph:
    """The real adult PA chest radiograph RG1_UNCR.dcm (or the DICOM at ``path``) in our format."""
    import pydicom

    path = Path(path) if path is not None else real_radiograph_path(dest)
    full = read_dicom(path)  # (H, W)
    image, placement = letterbox(unit_to_uint8(full), size)  # (S, S)
    mode = str(pydicom.dcmread(path, stop_before_pixels=True).PhotometricInterpretation)
    return RealRadiograph(image=image, pixels=image.astype(np.float32) / 255.0, full=full,
                          placement=placement, path=path, photometric=mode)
