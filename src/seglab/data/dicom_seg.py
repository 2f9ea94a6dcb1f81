"""Masks of DICOM series as DICOM Segmentation objects (SEG), through highdicom.

A PACS or a DICOM viewer reads a SEG beside the series it segments, not a NIfTI file: each class
(semantic runs) or each object (instance runs) present in the mask becomes one binary segment,
labelled with its name, referencing the series' own slices (and so their geometry, patient and
study). The segment types are local codes ("99SEGLAB", as DICOM allows for a site's own codes)
because seglab's classes are the user's names, not SNOMED concepts.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from seglab import __version__
from seglab.case import Case
from seglab.data.io import atomic_path
from seglab.errors import SeglabError

LOCAL_SCHEME = "99SEGLAB"
SERIES_NUMBER = 9900  # seglab's SEG series: far from a scanner's own numbers


def write_dicom_seg(mask: np.ndarray, like: Case, out_dir: Path,
                    names: dict[int, str]) -> Path:
    """Writes OUT_DIR/<series>_seg.dcm: one segment per value of `mask` (Z, Y, X, in the slice
    order the series was read in) that `names` names (value -> label); values that are absent
    are left out, and an empty mask gives one empty segment, so that the file always exists."""
    files = like.meta.get("dicom_files")
    if not files:
        raise SeglabError(f"{like.meta.get('path')}: not a DICOM series; no DICOM SEG to write")
    sources = [pydicom.dcmread(f) for f in files]
    values = [v for v in names if np.any(mask == v)] or [next(iter(names))]
    frames = np.stack([mask == v for v in values], axis=-1).astype(np.uint8)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="seglab", version=__version__, family=codes.cid7162.ArtificialIntelligence)
    descriptions = [hd.seg.SegmentDescription(
        segment_number=number, segment_label=names[value][:64],
        segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=hd.sr.CodedConcept(f"V{value}", LOCAL_SCHEME,
                                                   names[value][:64]),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm) for number, value in enumerate(values, start=1)]
    try:
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=frames,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions, series_instance_uid=hd.UID(),
            series_number=SERIES_NUMBER, sop_instance_uid=hd.UID(), instance_number=1,
            manufacturer="seglab", manufacturer_model_name="seglab",
            software_versions=__version__, device_serial_number="none",
            omit_empty_frames=False)
    except (ValueError, AttributeError, TypeError) as error:
        raise SeglabError(f"{Path(files[0]).parent}: cannot write a DICOM SEG for this series "
                          f"({error})") from error
    out = Path(out_dir) / f"{Path(files[0]).parent.name}_seg.dcm"
    with atomic_path(out) as tmp:
        seg.save_as(tmp)
    return out


def seg_beside(mask: np.ndarray, case: Case, out: Path, names: dict[int, str]) -> list[Path]:
    """`write_dicom_seg` for a mask already written as NIfTI: a series that cannot carry a SEG
    (e.g. no frame of reference) keeps the NIfTI, with a warning."""
    names = {k: v for k, v in names.items() if k > 0}
    if not names:
        return []
    try:
        return [write_dicom_seg(mask, case, out, names)]
    except SeglabError as error:
        warnings.warn(f"{error}; the mask is in the .nii.gz beside it", stacklevel=2)
        return []
