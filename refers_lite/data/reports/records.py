"""The study record every report source (IU X-ray, MIMIC-CXR) produces, and the pre-training
data path consumes: one patient study, its radiographs with their views, and its report."""
from __future__ import annotations

from dataclasses import dataclass, field

VIEWS = ("frontal", "lateral", "unknown")


@dataclass
class ImageRef:
    image_id: str  # e.g. IU "CXR1000_IM-0003-1001", MIMIC dicom_id
    view: str  # one of VIEWS
    path: str | None = None  # path of the image file relative to the dataset root, when known

    def __post_init__(self):
        if self.view not in VIEWS:
            raise ValueError(f"image {self.image_id}: unknown view {self.view!r}; expected one of {VIEWS}")


@dataclass
class StudyRecord:
    study_id: str  # IU report id ("1000" for ecgen-radiology/1000.xml); MIMIC "s50414267"
    findings: str  # raw FINDINGS section ("" when absent)
    impression: str  # raw IMPRESSION section ("" when absent)
    images: list[ImageRef] = field(default_factory=list)
    mesh: list[str] = field(default_factory=list)  # raw MeSH major tags (IU), e.g. "Cardiomegaly/mild"
    source: str = "iu"  # "iu" | "mimic"
    subject_id: str | None = None  # patient (MIMIC); splits are made per patient where known

    @property
    def raw_text(self) -> str:
        """FINDINGS then IMPRESSION: the only two sections the paper keeps."""
        return " ".join(s.strip() for s in (self.findings, self.impression) if s and s.strip())
