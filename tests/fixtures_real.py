"""Tiny on-disk look-alikes of the real datasets: the released file names, folder layouts and CSV
headers (copied from the real tables), a handful of small images each. Used by test_real_datasets.py
and test_real_radiograph.py; every builder writes under the folder it is given and returns it."""
from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

import numpy as np
from PIL import Image

# ---------------------------------------------------------------------------------- images


def picture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A deterministic uint8 (h, w) picture: a vertical gradient plus a bright rectangle."""
    rng = np.random.default_rng(seed)
    img = np.linspace(20, 120, h, dtype=np.float64)[:, None].repeat(w, axis=1)  # (h, w)
    y0, x0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
    img[y0:y0 + h // 4, x0:x0 + w // 4] = 230
    return img.astype(np.uint8)


def write_png(path: Path, h: int = 48, w: int = 48, seed: int = 0, mode: str = "L") -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = picture(h, w, seed)
    pil = Image.fromarray(img)
    if mode != "L":
        pil = pil.convert(mode)
    pil.save(path)
    return img


def write_jpg(path: Path, h: int = 48, w: int = 48, seed: int = 0, rgb: bool = False) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = picture(h, w, seed)
    pil = Image.fromarray(img).convert("RGB") if rgb else Image.fromarray(img)
    pil.save(path, format="JPEG", quality=95)
    return img


def write_corrupt(path: Path, kind: str = "garbage") -> Path:
    """``garbage``: bytes that are no image; ``truncated``: a real PNG cut in the middle of its data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "garbage":
        path.write_bytes(b"this is not an image file\x00\x01\x02" * 4)
    else:
        buf = io.BytesIO()
        Image.fromarray(picture(64, 64, 3)).save(buf, format="PNG")
        data = buf.getvalue()
        path.write_bytes(data[: len(data) // 2])
    return path


def write_dicom(path: Path, stored: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int = 12,
                window: tuple[float, float] | None = None, modality: str = "DX") -> Path:
    """A minimal valid single-frame DICOM (explicit VR little endian) with ``stored`` uint16 pixels (H, W)."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(path.name)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientID = "TEST"
    ds.Rows, ds.Columns = int(stored.shape[0]), int(stored.shape[1])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = np.ascontiguousarray(stored, dtype="<u2").tobytes()
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(path, enforce_file_format=True)
    else:  # pydicom 2.4
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)
    return path


def _write_csv(path: Path, header: str, rows: list[list], gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    buf.write(header + "\n")
    w = csv.writer(buf, lineterminator="\n")
    w.writerows(rows)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
            f.write(buf.getvalue())
    else:
        path.write_text(buf.getvalue(), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------- NIH ChestX-ray14

# The real headers (Data_Entry_2017_v2020.csv; BBox_List_2017.csv): note the commas inside brackets.
NIH_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
              "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
NIH_BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"
NIH_ROWS = [  # image, labels, follow-up, patient, age, sex, view
    ("00000001_000.png", "Cardiomegaly", 0, 1, 57, "M", "PA"),
    ("00000001_001.png", "Cardiomegaly|Emphysema", 1, 1, 58, "M", "PA"),
    ("00000002_000.png", "No Finding", 0, 2, 80, "M", "PA"),
    ("00000003_000.png", "Effusion|Infiltration|Pleural_Thickening", 0, 3, 74, "F", "AP"),
    ("00000004_000.png", "Mass|Nodule", 0, 4, 82, "M", "AP"),
    ("00000005_000.png", "Pneumothorax", 0, 5, 69, "F", "PA"),
    ("00000005_001.png", "Hernia|Pneumonia", 1, 5, 69, "F", "PA"),
    ("00000006_000.png", "Atelectasis|Consolidation|Edema|Fibrosis", 0, 6, 55, "F", "PA"),
    ("00000007_000.png", "No Finding", 0, 7, 33, "M", "PA"),
]
NIH_ABSENT = "00000008_000.png"  # listed in the table, not on disk
# boxes on the 1024 x 1024 originals: x, y, w, h
NIH_BOXES = [("00000001_000.png", "Cardiomegaly", 512.0, 256.0, 256.0, 128.0),
             ("00000003_000.png", "Infiltrate", 100.0, 200.0, 300.0, 400.0),
             ("00000004_000.png", "Nodule", 0.0, 0.0, 1024.0, 1024.0)]


def make_nih(root: Path, gz: bool = False) -> Path:
    rows = [[n, lab, f, p, a, s, v, 1024, 1024, 0.143, 0.143] for n, lab, f, p, a, s, v in NIH_ROWS]
    rows.append([NIH_ABSENT, "No Finding", 0, 8, 40, "F", "PA", 1024, 1024, 0.143, 0.143])
    suffix = ".gz" if gz else ""
    _write_csv(root / f"Data_Entry_2017_v2020.csv{suffix}", NIH_HEADER, rows, gz=gz)
    _write_csv(root / f"BBox_List_2017.csv{suffix}", NIH_BBOX_HEADER, [list(b) for b in NIH_BOXES], gz=gz)
    for k, (name, *_rest) in enumerate(NIH_ROWS):
        size = 1024 if k == 0 else 64  # one at the real size; the others small (boxes still refer to 1024)
        write_png(root / "images" / name, size, size, seed=k)
    return root


# ---------------------------------------------------------------------------------- VinBigData

VINDR_HEADER = "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max"  # Kaggle train.csv
# image ids are 32 hex digits in the real set
VINDR_IDS = ["9a5094b2563a1ef3ff50dc5c7ff71345", "051132a778e61a86eb147c7c6f564dfe",
             "50a418190bc3fb1ef1633bf9678929b3", "21a10246a5ec7af151081d0cd6d65dc9",
             "1c32170b4af4ce1a3030eb8167753b06", "47ed17dcb2cbeec15182ed335a8b5a9e"]
VINDR_ROWS = [
    [VINDR_IDS[0], "Cardiomegaly", 3, "R10", 15.0, 40.0, 45.0, 60.0],
    [VINDR_IDS[0], "Aortic enlargement", 0, "R9", 25.0, 10.0, 35.0, 20.0],
    [VINDR_IDS[0], "Pleural effusion", 10, "R8", 5.0, 50.0, 20.0, 75.0],
    [VINDR_IDS[1], "Nodule/Mass", 8, "R9", 10.0, 20.0, 30.0, 60.0],
    [VINDR_IDS[1], "Other lesion", 9, "R10", 40.0, 40.0, 50.0, 50.0],
    [VINDR_IDS[2], "No finding", 14, "R11", "", "", "", ""],
    [VINDR_IDS[2], "No finding", 14, "R7", "", "", "", ""],
    [VINDR_IDS[3], "Pleural thickening", 11, "R8", 1.0, 1.0, 10.0, 10.0],
    [VINDR_IDS[3], "Pulmonary fibrosis", 13, "R9", 2.0, 2.0, 20.0, 20.0],
    [VINDR_IDS[3], "ILD", 5, "R10", 3.0, 3.0, 30.0, 30.0],
    [VINDR_IDS[4], "Lung Opacity", 7, "R9", 10.0, 10.0, 20.0, 20.0],
    [VINDR_IDS[4], "Pneumothorax", 12, "R8", 30.0, 5.0, 55.0, 40.0],
    [VINDR_IDS[5], "No finding", 14, "R9", "", "", "", ""],
]
VINDR_SHAPE = (80, 60)  # (rows, columns): taller than wide, so the square image is padded left and right


def make_vindr(root: Path, physionet: bool = False) -> Path:
    csv_path = root / ("annotations/annotations_train.csv" if physionet else "train.csv")
    if physionet:  # PhysioNet's annotations_train.csv: no class_id column, rad_id second
        rows = [[r[0], r[3], r[1], *r[4:]] for r in VINDR_ROWS]
        _write_csv(csv_path, "image_id,rad_id,class_name,x_min,y_min,x_max,y_max", rows)
    else:
        _write_csv(csv_path, VINDR_HEADER, VINDR_ROWS)
    for k, iid in enumerate(VINDR_IDS):
        stored = (picture(*VINDR_SHAPE, seed=10 + k).astype(np.uint16) * 16)  # 12-bit values
        write_dicom(root / "train" / f"{iid}.dicom", stored, "MONOCHROME1" if k % 2 else "MONOCHROME2")
    return root


# ---------------------------------------------------------------------------------- Shenzhen


def make_shenzhen(root: Path, n: int = 10) -> Path:
    """``<root>/ChinaSet_AllFiles/CXR_png/CHNCXR_0001_0.png`` ...: first half normal, second half TB."""
    base = root / "ChinaSet_AllFiles"
    for k in range(1, n + 1):
        label = int(k > n // 2)
        write_png(base / "CXR_png" / f"CHNCXR_{k:04d}_{label}.png", 40 + k, 36, seed=20 + k,
                  mode="RGB" if k == 1 else "L")  # one stored as RGB, as a few real ones are
        (base / "ClinicalReadings").mkdir(parents=True, exist_ok=True)
        (base / "ClinicalReadings" / f"CHNCXR_{k:04d}_{label}.txt").write_text(
            "male 35yrs\n" + ("normal\n" if not label else "PTB in the right upper field\n"))
    return root


# ---------------------------------------------------------------------------------- COVID-19 image data collection

COVID_HEADER = ("patientid,offset,sex,age,finding,RT_PCR_positive,survival,intubated,intubation_present,went_icu,"
                "in_icu,needed_supplemental_O2,extubated,temperature,pO2_saturation,leukocyte_count,"
                "neutrophil_count,lymphocyte_count,view,modality,date,location,folder,filename,doi,url,license,"
                "clinical_notes,other_notes")
COVID_ROWS = [  # patientid, finding, view, modality, folder, filename
    ("2", "Pneumonia/Viral/COVID-19", "PA", "X-ray", "images", "auntminnie-a-2020_01_28_23_51_6665_2020_01_28_Vietnam_coronavirus.jpeg"),
    ("2", "Pneumonia/Viral/COVID-19", "AP Supine", "X-ray", "images", "covid-19-pneumonia-2.jpg"),
    ("3", "Pneumonia/Viral/COVID-19", "L", "X-ray", "images", "covid-19-lateral.jpg"),
    ("4", "Pneumonia/Viral/COVID-19", "Axial", "CT", "volumes", "covid-ct.nii.gz"),
    ("5", "Pneumonia/Bacterial/Streptococcus", "PA", "X-ray", "images", "streptococcus-pneumoniae-1.jpg"),
    ("6", "Pneumonia/Bacterial/Klebsiella", "AP", "X-ray", "images", "klebsiella-1.png"),
    ("7", "Pneumonia/Viral/SARS", "PA", "X-ray", "images", "SARS-10.1148rg.242035193-g04mr34g0-Fig8a-day0.jpeg"),
    ("8", "Pneumonia/Fungal/Pneumocystis", "PA", "X-ray", "images", "pneumocystis-1.jpg"),
    ("9", "No Finding", "PA", "X-ray", "images", "normal-1.png"),
    ("10", "todo", "PA", "X-ray", "images", "todo-1.jpg"),
    ("11", "Pneumonia/Viral/COVID-19", "AP semi erect", "X-ray", "images", "covid-19-semi-erect.jpg"),
    ("12", "Tuberculosis", "PA", "X-ray", "images", "tb-1.jpg"),
]


def make_covid(root: Path) -> Path:
    rows = []
    for k, (pid, finding, view, modality, folder, fname) in enumerate(COVID_ROWS):
        rows.append([pid, k, "M", 50, finding, "Y" if "COVID" in finding else "", "", "", "", "", "", "", "",
                     "", "", "", "", "", view, modality, "2020", "Somewhere", folder, fname, "", "", "CC BY 4.0",
                     "notes", ""])
        if folder == "images":
            path = root / "images" / fname
            if fname.endswith(".png"):
                write_png(path, 50, 40 + k, seed=30 + k)
            else:
                write_jpg(path, 44, 52, seed=30 + k, rgb=k % 2 == 0)
    _write_csv(root / "metadata.csv", COVID_HEADER, rows)
    return root


# ---------------------------------------------------------------------------------- MIMIC-CXR-JPG

MIMIC_META_HEADER = ("dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,"
                     "StudyDate,StudyTime,ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,"
                     "PatientOrientationCodeSequence_CodeMeaning")
MIMIC_SPLIT_HEADER = "dicom_id,study_id,subject_id,split"
MIMIC_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 FINDINGS:  The lungs are clear.  No pleural effusion or pneumothorax.

 IMPRESSION:  No acute cardiopulmonary process.
"""
# dicom_id, subject, study, view, split; study s50000003 has no report, s50000004 no image on disk
MIMIC_IMAGES = [
    ("02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "10000032", "50414267", "PA", "train"),
    ("174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962", "10000032", "50414267", "LATERAL", "train"),
    ("2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", "10000033", "50000002", "AP", "validate"),
    ("3b3377a9-b0ded155-c0de8eb9-c124d10e-82c5caab", "10000034", "50000003", "PA", "test"),
    ("4c4477a9-b0ded155-c0de8eb9-c124d10e-82c5caab", "10000035", "50000004", "PA", "test"),
]


def make_mimic(root: Path) -> Path:
    meta, split = [], []
    for k, (d, subj, study, view, sp) in enumerate(MIMIC_IMAGES):
        meta.append([d, subj, study, "CHEST (PA AND LAT)", view, 3056, 2544, 21800506, 213014.531,
                     "CHEST (PA AND LAT)", "postero-anterior", "Erect"])
        split.append([d, study, subj, sp])
        folder = root / "files" / f"p{subj[:2]}" / f"p{subj}"
        if study != "50000003":
            (folder).mkdir(parents=True, exist_ok=True)
            (folder / f"s{study}.txt").write_text(MIMIC_REPORT, encoding="utf-8")
        if study != "50000004":
            write_jpg(folder / f"s{study}" / f"{d}.jpg", 60, 50, seed=40 + k)
    _write_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", MIMIC_META_HEADER, meta, gz=True)
    _write_csv(root / "mimic-cxr-2.0.0-split.csv.gz", MIMIC_SPLIT_HEADER, split, gz=True)
    return root
