#!/usr/bin/env python
"""Fetch the JavaScript the built book needs, pinned, into a local folder, so it works offline.

    python book/_tools/fetch_book_js.py --dest _build/book_js

By default a Jupyter Book page loads three things from CDNs: MathJax (the equations), and, on a
page with widgets, require.js and the widget manager (myst-nb). Offline, or behind a firewall, the
equations then stay raw LaTeX and the widget areas stay blank. The book serves them itself:
``_config.yml`` puts this folder on ``html_static_path``, names the two widget files in
``nb_ipywidgets_js`` and MathJax in ``mathjax_path`` (the Makefile copies the folder into the build
as ``book_js/``).

Everything comes from the npm registry, each package pinned by version and by the sha256 of its
tarball (which covers every file taken out of it):

* ``require.js`` of ``requirejs`` (MIT);
* ``embed-amd.js`` = ``dist/embed-amd.js`` of ``@jupyter-widgets/html-manager`` (BSD-3-Clause),
  the 1.x line that pairs with ipywidgets 8 (its controls ^5.0 are those of jupyterlab-widgets 3);
* ``mathjax/`` = ``es5/tex-mml-chtml.js`` of ``mathjax`` 3 (Apache-2.0) with the web fonts its
  CommonHTML output loads relative to it (``es5/output/chtml/fonts/woff-v2/``).

A tarball is fetched with ``npm pack`` when npm is installed, otherwise from the registry's tarball
URL with Python (the same bytes). ``MANIFEST.json`` records the sha256 of every file written;
a second run that finds them all intact downloads nothing.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

MANIFEST = "MANIFEST.json"


@dataclass(frozen=True)
class NpmPackage:
    package: str
    version: str
    sha256: str  # of the registry tarball
    licence: str
    members: dict = field(default_factory=dict)  # path in the tarball -> path under dest ("/" ending: a folder)

    @property
    def spec(self) -> str:
        return f"{self.package}@{self.version}"

    @property
    def tarball_url(self) -> str:
        base = self.package.rsplit("/", 1)[-1]
        return f"https://registry.npmjs.org/{self.package}/-/{base}-{self.version}.tgz"


PACKAGES = (
    NpmPackage("requirejs", "2.3.8", "777158e89275e16bd51aec3ef714fbcb5dc45789e7078659933bc814916d7dec", "MIT",
               {"package/require.js": "require.js"}),
    NpmPackage("@jupyter-widgets/html-manager", "1.0.15",
               "2b9d65cb7913e1c7d671757a10008b32c9c2448d4429513371e55c07d6107638", "BSD-3-Clause",
               {"package/dist/embed-amd.js": "embed-amd.js"}),
    NpmPackage("mathjax", "3.2.2", "1b9c0a1c44df864e915690558e72adb9cc5203360daefd385084ced3b6c64c09", "Apache-2.0",
               {"package/es5/tex-mml-chtml.js": "mathjax/tex-mml-chtml.js",
                "package/es5/output/chtml/fonts/woff-v2/": "mathjax/output/chtml/fonts/woff-v2/"}),
)
WIDGET_FILES = ("require.js", "embed-amd.js")  # what _config.yml names in nb_ipywidgets_js
MATHJAX_FILE = "mathjax/tex-mml-chtml.js"  # what _config.yml names in mathjax_path


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tarball(pkg: NpmPackage) -> bytes:
    if shutil.which("npm"):
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run(["npm", "pack", "--silent", pkg.spec, "--pack-destination", tmp],
                                 capture_output=True, text=True)
            tgz = sorted(Path(tmp).glob("*.tgz"))
            if out.returncode == 0 and len(tgz) == 1:
                return tgz[0].read_bytes()
            print(f"npm pack {pkg.spec} failed ({out.stderr.strip()[-300:]}); downloading the tarball instead")
    with urllib.request.urlopen(pkg.tarball_url, timeout=120) as r:
        return r.read()


def _extract(pkg: NpmPackage, data: bytes) -> dict[str, bytes]:
    """{path under dest: bytes} of the package's members."""
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for info in tar.getmembers():
            if not info.isfile():
                continue
            for src, dst in pkg.members.items():
                if info.name == src or (src.endswith("/") and info.name.startswith(src)):
                    rel = dst + info.name[len(src):] if src.endswith("/") else dst
                    out[rel] = tar.extractfile(info).read()
    missing = [src for src in pkg.members if not any(
        (src.endswith("/") and rel.startswith(pkg.members[src])) or rel == pkg.members[src] for rel in out)]
    if missing:
        raise SystemExit(f"error: {pkg.spec}: {missing} not in its tarball")
    return out


def _intact(dest: Path, files: dict[str, str]) -> bool:
    return bool(files) and all((dest / rel).is_file() and sha256_bytes((dest / rel).read_bytes()) == h
                               for rel, h in files.items())


def fetch(pkg: NpmPackage, dest: Path, force: bool = False) -> dict[str, str]:
    """Write the package's members under ``dest``; returns {path: sha256} (also kept in MANIFEST.json)."""
    manifest_path = dest / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    entry = manifest.get(pkg.spec, {})
    if not force and entry.get("tarball_sha256") == pkg.sha256 and _intact(dest, entry.get("files", {})):
        return entry["files"]
    print(f"fetching {pkg.spec}", flush=True)
    try:
        data = _tarball(pkg)
    except OSError as e:
        raise SystemExit(f"error: cannot fetch {pkg.spec} from the npm registry ({e})")
    got = sha256_bytes(data)
    if got != pkg.sha256:
        raise SystemExit(f"error: {pkg.spec}: its tarball has sha256 {got}, expected {pkg.sha256}; refusing to use it")
    files = {}
    for rel, content in _extract(pkg, data).items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(content)
        tmp.replace(path)
        files[rel] = sha256_bytes(content)
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    manifest[pkg.spec] = {"tarball_sha256": pkg.sha256, "licence": pkg.licence, "files": files}
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", default="_build/book_js", help="folder to fetch into (default: _build/book_js)")
    ap.add_argument("--force", action="store_true", help="download again even if present")
    args = ap.parse_args(argv)
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    for pkg in PACKAGES:
        files = fetch(pkg, dest, args.force)
        size = sum((dest / rel).stat().st_size for rel in files)
        print(f"  {pkg.spec:38s} {len(files):3d} file(s) {size:>11,d} bytes  ({pkg.licence})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
