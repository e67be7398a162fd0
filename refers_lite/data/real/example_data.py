"""Generated input for ``refers-lite data import``: the book's worked example, the tests and the benchmark.

PLACEHOLDER PICTURES, NOT RADIOGRAPHS: smooth grey gradients with a bright blob; the reports are a few
plausible sentences unrelated to the pixels. What is real is the *layout*: file formats and headers as a PACS
export or MIMIC-CXR-JPG ships them.

* :func:`write_example_folder`: a folder of mixed DICOM (MONOCHROME1 with a VOI window, MONOCHROME2 with a
  ViewPosition, one without a file suffix), 8- and 16-bit PNG and JPEG files, with ``reports.csv``
  (study_id, patient_id, image, view, report) -- and, on purpose, rows the importer must skip: a missing file, a
  corrupt file, an empty and a too-short report, a study with no image. Also ``labels.csv`` (image, labels) for
  fine-tuning.
* :func:`write_mimic_tree`: MIMIC-CXR-JPG + reports in the official layout
  (``files/p1x/p<subject>/s<study>/<dicom_id>.jpg``, ``files/.../s<study>.txt``,
  ``mimic-cxr-2.0.0-metadata.csv.gz``, ``mimic-cxr-2.0.0-split.csv.gz``), for the import benchmark.

``python -m refers_lite.data.real.example_data OUT [--mimic N]`` writes one of them.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import io
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["write_example_folder", "write_mimic_tree", "placeholder_picture"]

_SENTENCES = (
    ("The heart is normal in size.", "Heart size is normal.", "The heart is mildly enlarged."),
    ("No pleural effusion.", "Small right pleural effusion.", "Small left pleural effusion."),
    ("The lungs are clear.", "Mild bibasilar atelectasis.", "There is a nodule in the right upper lobe."),
    ("No acute osseous abnormality.", "Degenerative changes of the thoracic spine."),
)
CLASSES = ("Cardiomegaly", "Effusion", "Nodule")


def placeholder_picture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """(h, w) float64 in [0, 1]: a vertical gradient, a bright blob, mild noise. Not a radiograph."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)  # (h, w) each
    cy, cx = rng.uniform(0.3, 0.7, 2) * np.array([h, w]) / max(h, w)
    blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.01)
    img = 0.25 + 0.4 * yy / yy.max() + 0.3 * blob + 0.03 * rng.standard_normal((h, w))
    return np.clip(img, 0, 1)


def _report(rng: np.random.Generator) -> tuple[str, list[str]]:
    picks = [group[int(rng.integers(len(group)))] for group in _SENTENCES]
    labels = sorted(c for c, hit in (("Cardiomegaly", "enlarged" in picks[0]),
                                     ("Effusion", not picks[1].startswith("No")),
                                     ("Nodule", "nodule" in picks[2])) if hit)
    return "FINDINGS: " + " ".join(picks[:3]) + "\nIMPRESSION: " + picks[3], labels


def _write_dicom(path: Path, unit: np.ndarray, *, photometric: str = "MONOCHROME2", bits: int = 12,
                 window: tuple[float, float] | None = None, view_position: str | None = None,
                 orientation: str | None = None) -> None:
    """A single-frame DICOM (explicit VR little endian) of ``unit`` (h, w) in [0, 1] (dense = bright), stored as
    MONOCHROME1 (inverted) or MONOCHROME2 with ``bits`` bits."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    stored = np.round((1 - unit if photometric == "MONOCHROME1" else unit) * (2 ** bits - 1)).astype("<u2")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[path.name])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "DX", "EXAMPLE"
    ds.Rows, ds.Columns = int(stored.shape[0]), int(stored.shape[1])
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if view_position is not None:
        ds.ViewPosition = view_position
    if orientation is not None:
        ds.PatientOrientation = orientation.split("\\")
    ds.PixelData = stored.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(path, enforce_file_format=True)
    else:  # pydicom 2.4
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)


def _save(path: Path, unit: np.ndarray, kind: str, k: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "png8":
        Image.fromarray(np.round(unit * 255).astype(np.uint8)).save(path)
    elif kind == "png16":
        Image.fromarray(np.round(unit * 65535).astype(np.uint16)).save(path)  # mode I;16
    elif kind == "jpg":
        Image.fromarray(np.round(unit * 255).astype(np.uint8)).save(path, format="JPEG", quality=90)
    elif kind == "dcm_m1":  # MONOCHROME1 with a VOI window narrower than the data
        _write_dicom(path, unit, photometric="MONOCHROME1", window=(2048.0, 3000.0), view_position="PA")
    elif kind == "dcm_m2":  # MONOCHROME2, lateral by its ViewPosition
        _write_dicom(path, unit, view_position="LL")
    elif kind == "dcm_orient":  # no ViewPosition: PatientOrientation says frontal (rows run L -> R)
        _write_dicom(path, unit, orientation="L\\F", bits=16)
    else:
        raise ValueError(kind)


_KINDS = {"png8": ".png", "png16": ".png", "jpg": ".jpg", "dcm_m1": ".dcm", "dcm_m2": ".dcm", "dcm_orient": ""}


def write_example_folder(root, n_studies: int = 12, size: int = 96, seed: int = 0) -> Path:
    """``root/images/...`` and ``root/reports.csv`` + ``root/labels.csv`` (module doc); returns ``root``.

    Study k has one or two images in the formats cycling through DICOM M1 / M2 / no-suffix, PNG 8 / 16 bit and
    JPEG; views are in the table for PNG / JPEG and left to the DICOM header for DICOM files. The last five
    studies carry one problem each (missing file, corrupt file, empty report, two-word report, no image)."""
    if n_studies < 6:
        raise ValueError(f"n_studies must be >= 6 (five problem studies and a good one), got {n_studies}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    kinds = list(_KINDS)
    rows, label_rows = [], []
    for k in range(n_studies):
        sid, patient = f"S{k:04d}", f"P{k // 2:03d}"  # two studies per patient
        report, labels = _report(rng)
        n_img = 1 + k % 2
        problem = k - (n_studies - 5)  # 0..4 for the last five studies
        for j in range(n_img):
            kind = kinds[(k + j) % len(kinds)]
            rel = f"images/{patient}/{sid}_{j}{_KINDS[kind]}"
            if problem != 0 or j > 0:  # study -5: its only image is never written (missing_file)
                unit = placeholder_picture(size, size - 8 * (k % 3), rng)
                _save(root / rel, unit, kind, k)
            if problem == 1 and j == 0:  # corrupt: bytes that are no image
                (root / rel).write_bytes(b"not an image\x00" * 8)
            view = "" if kind.startswith("dcm") else ("frontal" if j == 0 else "lateral")
            if problem == 4:
                continue  # a study listed with no image at all
            rows.append({"study_id": sid, "patient_id": patient, "image": rel, "view": view,
                         "report": {2: "", 3: "Normal chest."}.get(problem, report)})
            label_rows.append({"image": rel, "patient_id": patient, "labels": ";".join(labels)})
        if problem == 4:
            rows.append({"study_id": sid, "patient_id": patient, "image": "", "view": "", "report": report})
    _write_csv(root / "reports.csv", ["study_id", "patient_id", "image", "view", "report"], rows)
    _write_csv(root / "labels.csv", ["image", "patient_id", "labels"], label_rows)
    return root


def _write_csv(path: Path, columns: list[str], rows: list[dict], gz: bool = False) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, columns, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
            f.write(buf.getvalue())
    else:
        path.write_text(buf.getvalue(), encoding="utf-8")


_MIMIC_META = ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows",
               "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
               "PatientOrientationCodeSequence_CodeMeaning"]


def write_mimic_tree(root, n_images: int = 2000, size: tuple[int, int] = (512, 420), seed: int = 0,
                     images_per_study: int = 2) -> Path:
    """A MIMIC-CXR-JPG + reports tree of ``n_images`` JPEGs of ``size`` = (h, w) in the official layout, two
    images (PA, LATERAL) per study, two studies per subject, split 90 / 5 / 5 by subject; returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    meta, split = [], []
    base = None
    n_studies = -(-n_images // images_per_study)
    made = 0
    for s in range(n_studies):
        subject, study = f"{10000000 + s // 2}", f"{50000000 + s}"
        folder = root / "files" / f"p{subject[:2]}" / f"p{subject}"
        folder.mkdir(parents=True, exist_ok=True)
        report, _ = _report(rng)
        (folder / f"s{study}.txt").write_text(f"                                 FINAL REPORT\n EXAMINATION:  CHEST (PA "
                                              f"AND LAT)\n\n {report.replace(chr(10), chr(10) + chr(10) + ' ')}\n",
                                              encoding="utf-8")
        sp = "test" if (s // 2) % 20 == 19 else "validate" if (s // 2) % 20 == 18 else "train"
        for j in range(images_per_study):
            if made == n_images:
                break
            h, w = size
            if base is None:  # one base picture 5/4 the size, with film grain; each image a shifted window of it
                small = np.round(placeholder_picture(max(8, h // 4), max(8, w // 4), rng) * 255).astype(np.uint8)
                big = np.asarray(Image.fromarray(small).resize((w * 5 // 4, h * 5 // 4), Image.Resampling.BICUBIC))
                grain = rng.integers(-6, 7, big.shape, dtype=np.int16)  # so JPEGs are not unrealistically small
                base = np.clip(big.astype(np.int16) + grain, 0, 255).astype(np.uint8)  # (5h/4, 5w/4)
            dy, dx = int(rng.integers(0, h // 4 + 1)), int(rng.integers(0, w // 4 + 1))
            picture = base[dy:dy + h, dx:dx + w]  # (h, w) uint8
            dicom_id = f"{made:08x}-{seed:08x}-{s:08x}-{j:08x}-00000000"
            Image.fromarray(picture).save(_mkdir(folder / f"s{study}") / f"{dicom_id}.jpg", quality=95)
            view = "PA" if j == 0 else "LATERAL"
            meta.append([dicom_id, subject, study, "CHEST (PA AND LAT)", view, size[0], size[1], 21800506, 213014.531,
                         "CHEST (PA AND LAT)", "postero-anterior" if j == 0 else "lateral", "Erect"])
            split.append([dicom_id, study, subject, sp])
            made += 1
    _write_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", _MIMIC_META, [dict(zip(_MIMIC_META, r)) for r in meta],
               gz=True)
    cols = ["dicom_id", "study_id", "subject_id", "split"]
    _write_csv(root / "mimic-cxr-2.0.0-split.csv.gz", cols, [dict(zip(cols, r)) for r in split], gz=True)
    return root


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Write generated input for `refers-lite data import` (placeholder "
                                             "pictures, real layouts).")
    ap.add_argument("out", type=Path)
    ap.add_argument("--studies", type=int, default=12, help="example folder: studies (default 12)")
    ap.add_argument("--mimic", type=int, default=None, metavar="N", help="write a MIMIC-CXR-JPG tree of N images")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if a.mimic:
        write_mimic_tree(a.out, a.mimic, seed=a.seed)
        print(f"wrote a MIMIC-CXR-JPG tree of {a.mimic} images to {a.out}")
    else:
        write_example_folder(a.out, a.studies, seed=a.seed)
        print(f"wrote {a.out / 'reports.csv'}, {a.out / 'labels.csv'} and {a.out / 'images'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
