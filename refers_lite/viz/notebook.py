"""What every chapter of the book does before and after its lesson, in one place.

    chapter = setup_chapter(PROFILE, DATA_DIR, RUNS_DIR, SEED, domains=("source",), reports=True)
    ...
    record_run(chapter)

:func:`setup_chapter` starts the clock, seeds torch, makes the pinned assets present (the same
:func:`refers_lite.data.assets.fetch_assets` that ``make assets`` calls: nothing is downloaded when they
are there, so on a machine with only ``pip``, such as Colab, the chapter fetches them itself), builds the
rendered domains the chapter needs when they are missing and, if asked, the report vocabulary.
:func:`record_run` prints the chapter's last line: profile, device, versions and wall time.

:func:`cells_missing_figures` is the book's guard against figures that silently vanish: the code cells
of an executed notebook that draw a figure but hold no image output (tests/test_book_html.py runs it on
every executed chapter).
"""
from __future__ import annotations

import platform
import re
import sys
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from .. import REPOSITORY_URL, __version__


@dataclass
class Chapter:
    """The set-up of one chapter's run (what :func:`record_run` reports)."""
    profile: str
    data_dir: Path | None
    runs_dir: Path | None
    seed: int
    t_start: float
    on_colab: bool

    def elapsed(self) -> float:
        return time.time() - self.t_start

    def short(self, text: object) -> str:
        """``text`` with the absolute data and runs folders written as ``DATA_DIR`` and ``RUNS_DIR`` (and the
        data's parent as ``DATA_DIR/..``), so that a page never shows the paths of the machine that built it."""
        out = str(text)
        for root, name in ((self.runs_dir, "RUNS_DIR"), (self.data_dir, "DATA_DIR"),
                           (self.data_dir.parent if self.data_dir is not None else None, "DATA_DIR/..")):
            if root is not None:
                for spelling in dict.fromkeys((str(root), str(Path(root).resolve()))):
                    if spelling not in (".", ""):
                        out = out.replace(spelling, name)
        return out

    def log(self, message: object) -> None:
        """Print ``message`` with the chapter's folders shortened (:meth:`short`): the ``log`` of library calls."""
        print(self.short(message))


def on_colab() -> bool:
    """True inside a Google Colab kernel."""
    return "google.colab" in sys.modules


def install_requirement(url: str = REPOSITORY_URL) -> str:
    """The pip requirement a chapter's Colab cell installs: the package from the repository."""
    return f"refers_lite @ git+{url}"


def ensure_assets(dest: str | Path | None = None, log: Callable[[str], None] = print) -> dict[str, Path]:
    """Every pinned asset's path; the missing ones are fetched into ``dest`` by
    :func:`~refers_lite.data.assets.fetch_assets`, the function ``make assets`` runs. ``dest`` defaults to
    :func:`~refers_lite.data.assets.default_assets_dir`: ``$REFERS_LITE_ASSETS``, else ``assets/`` of the
    checkout, else (an installed package, as on Colab) ``~/.cache/refers_lite/assets``."""
    from ..data.assets import ASSETS, AssetMissingError, asset_path, default_assets_dir, fetch_assets
    dest = default_assets_dir() if dest is None else dest
    paths, missing = {}, []
    for name in ASSETS:
        try:
            paths[name] = asset_path(name, dest)
        except AssetMissingError:
            missing.append(name)
    if missing:
        log(f"fetching the pinned assets {', '.join(missing)} into {dest} (once)")
        paths.update(fetch_assets(dest, names=missing, log=log))
    return paths


def missing_domains(data_dir: str | Path, domains: Iterable[str]) -> list[str]:
    """The domains of ``domains`` that have no finished build under ``data_dir``."""
    return [d for d in domains if not (Path(data_dir) / d / "domain.json").is_file()]


def setup_chapter(profile: str, data_dir: str | Path | None = None, runs_dir: str | Path | None = None,
                  seed: int = 0, *, domains: Sequence[str] = (), reports: bool = False, assets: bool = True,
                  log: Callable[[str], None] = print) -> Chapter:
    """Start a chapter: clock, torch seed, assets, the rendered ``domains`` (built at ``profile`` into
    ``data_dir`` when missing) and, with ``reports``, the report splits and vocabulary next to the data
    (``data_dir/../iu_xray``, reused when present)."""
    import torch
    t_start = time.time()
    torch.manual_seed(seed)
    data = Path(data_dir) if data_dir is not None else None
    chapter = Chapter(profile, data, Path(runs_dir) if runs_dir is not None else None, seed, t_start, on_colab())
    if log is print:
        log = chapter.log
    if assets:
        ensure_assets(log=log)
    if domains:
        if data is None:
            raise ValueError("setup_chapter: domains need a data_dir")
        todo = missing_domains(data, domains)
        if todo:
            from ..data.synthesis.domain_build import build_domains
            log(f"building the {', '.join(todo)} domain(s) at {profile} (minutes at demo; `make data` does it "
                f"beforehand)")
            build_domains(profile, data, only=list(todo), seed=seed, progress=False, log=log)
    if reports:
        if data is None:
            raise ValueError("setup_chapter: reports need a data_dir")
        from ..data.reports.report_dataset import prepare_reports
        prepare_reports(data.parent / "iu_xray", seed=seed)
    return chapter


def record_run(chapter: Chapter, packages: Sequence[str] = (), show: bool = True) -> str:
    """The chapter's record: profile, device, python, torch, the named ``packages``, refers_lite and wall
    time (printed unless ``show`` is false; returned)."""
    import torch
    device = "cuda" if torch.cuda.is_available() else "cpu"
    parts = [f"profile {chapter.profile}", f"device {device}", f"python {platform.python_version()}",
             f"torch {torch.__version__}"]
    for name in packages:
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} not installed")
    parts += [f"refers_lite {__version__}", f"wall time {chapter.elapsed():.0f} s"]
    line = "; ".join(parts)
    if show:
        print(line)
    return line


# -- the guard: every figure a cell draws is in its outputs ------------------------------------------
# A cell draws a figure when it shows one (plt.show(), display(fig)), ends on a figure (`fig` alone on the
# last line), plots with pandas (.plot(...), .plot.bar(...)) or calls a plotting function of refers_lite.viz
# and the figure modules (plot_*, *_figure, contact_sheet, domain_samples). A cell that only saves or
# closes its figures (savefig into a widget, plt.close without a show) is not drawing one.
_DRAWS = re.compile(r"plt\.show\(|display\(\s*fig\b|(?m:^fig\s*$)|\.plot(\.\w+)?\(|\bplot_\w+\(|\w+_figure\(|"
                    r"\bcontact_sheet\(|\bdomain_samples\(|display\(\s*Image\(")
_STRINGS = re.compile(r'("""|\'\'\')[\s\S]*?\1|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'')
IMAGE_MIMES = ("image/png", "image/svg+xml", "image/jpeg")


def draws_figure(source: str) -> bool:
    """Whether a code cell's source draws a figure that should appear in its outputs (module comment)."""
    code = _STRINGS.sub('""', "\n".join("" if line.lstrip().startswith(("%", "!")) else line
                                         for line in source.splitlines()))
    code = "\n".join(line.split("#", 1)[0] for line in code.splitlines())
    if not _DRAWS.search(code):
        return False
    return not ("plt.close(" in code and "plt.show(" not in code)


def has_image(outputs: Iterable[Mapping]) -> bool:
    return any(any(m in (o.get("data") or {}) for m in IMAGE_MIMES) for o in outputs)


def cells_missing_figures(nb: Mapping) -> list[int]:
    """Indices (among all cells) of the code cells of an executed notebook that draw a figure but hold no
    image output."""
    out = []
    for i, cell in enumerate(nb["cells"]):
        if cell.get("cell_type") != "code":
            continue
        src = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        if draws_figure(src) and not has_image(cell.get("outputs", [])):
            out.append(i)
    return out


# -- the executed copies the book is built from -------------------------------------------------------
INJECTED_TAG = "injected-parameters"  # the cell papermill adds after the `parameters` cell
HIDDEN_TAG = "remove-cell"


def hide_injected_parameters(nb_path: str | Path) -> int:
    """Tag papermill's injected-parameters cells of an executed notebook ``remove-cell`` (in place), so the
    book never shows the build machine's paths; returns how many cells were tagged."""
    import json
    path = Path(nb_path)
    nb = json.loads(path.read_text(encoding="utf-8"))
    n = 0
    for cell in nb["cells"]:
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if INJECTED_TAG in tags and HIDDEN_TAG not in tags:
            tags.append(HIDDEN_TAG)
            n += 1
    if n:
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return n
