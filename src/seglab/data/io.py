"""Reading image files as they lie, keeping their geometry, and writing files atomically.

Any problem with a file becomes a one-line `SeglabError` that names it. What is written back in
an input's own format and geometry (masks, maps, probabilities) is in `seglab.data.write`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import tifffile
from PIL import Image

from seglab.case import Case
from seglab.errors import SeglabError

_FORMATS = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".gif": "gif",
    ".bmp": "bmp",
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".nrrd": "itk",
    ".mha": "itk",
    ".mhd": "itk",
    ".dcm": "dicom",
}
# A .dcm file is one slice of a series: it is read through its folder, so it is no image of its own.
IMAGE_SUFFIXES: tuple[str, ...] = tuple(s for s in _FORMATS if s != ".dcm")
PILLOW_FORMATS = ("png", "jpeg", "gif", "bmp")

Meta = dict[str, Any]


def suffix_of(path: Path | str) -> str:
    """The file's ending in lower case, `.nii.gz` counting as one ending ('' when none)."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def read_image(path: Path, case_id: str | None = None, keep_integers: bool = False) -> Case:
    """Read an image or volume as a float32 `Case` (C, *spatial) with its spacing and geometry;
    with `keep_integers`, integer pixels keep their stored type (for inference, which converts
    window by window: an 8000² uint8 image is 64 MB, 256 MB in float32)."""
    path = Path(path)
    array, spacing, meta = _read(path, label=False)
    if array.dtype.kind in "fc":
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise SeglabError(f"{path}: {bad} of {array.size} values are NaN or infinite")
    case_id = case_id or stem_of(path, meta["format"])
    if not (keep_integers and array.dtype.kind in "iu"):
        array = array.astype(np.float32)
    return Case(case_id, array, spacing, meta=meta)


def read_label(path: Path) -> np.ndarray:
    """Read a mask file as an int64 array (*spatial) of its raw stored values, without any mapping.

    Palette images give their palette indices (as Pascal VOC masks store their classes).
    """
    return read_label_with_spacing(path)[0]


def read_label_with_spacing(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """`read_label` and the file's voxel spacing, from one read (for spacing-aware scoring)."""
    path = Path(path)
    array, spacing, _ = _read(path, label=True)
    if array.shape[0] > 1:
        if not (array == array[:1]).all():
            raise SeglabError(
                f"{path}: label has {array.shape[0]} different channels; a colour-coded mask "
                "needs a colour -> class mapping"
            )
    array = array[0]
    if array.dtype.kind == "f":
        rounded = np.rint(array)
        off = ~(np.abs(array - rounded) <= 1e-3)  # nibabel scaling gives 0.99999997; NaN is off
        if off.any():
            raise SeglabError(f"{path}: label values are not integers (e.g. {array[off][0]:g})")
        array = rounded
    return array.astype(np.int64), spacing


def output_folder(path: Path) -> Path:
    """`path` as a folder to write into, created if missing; one clear error when it is a file,
    cannot be created, or cannot be written (checked before any work, so nothing is left
    half-written)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SeglabError(f"{path}: is a file, not a folder; choose another output folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SeglabError(f"{path}: cannot create the output folder ({error.strerror})")
    if not os.access(path, os.W_OK | os.X_OK):
        raise SeglabError(f"{path}: the output folder is not writable")
    return path


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to `path` (same ending, so writers recognise the format);
    rename it onto `path` when the block succeeds, remove it when it fails.

    A reader never sees a half-written file, and a failed write leaves nothing behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{secrets.token_hex(4)}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file (UTF-8) atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _read(path: Path, label: bool) -> tuple[np.ndarray, tuple[float, ...], Meta]:
    """The array (C, *spatial) in its stored dtype, the spacing and the meta of an image."""
    if not path.exists():
        raise SeglabError(f"{path}: no such file or folder")
    fmt = "dicom" if path.is_dir() else _FORMATS.get(suffix_of(path))
    if fmt is None:
        raise SeglabError(
            f"{path}: unknown image format; supported: {' '.join(IMAGE_SUFFIXES)} "
            "or a folder of .dcm files"
        )
    try:
        if fmt in PILLOW_FORMATS:
            array, spacing, meta = _read_pillow(path, label)
        elif fmt == "tiff":
            array, spacing, meta = _read_tiff(path)
        elif fmt == "nifti":
            array, spacing, meta = _read_nifti(path)
        elif fmt == "dicom":
            image, files = _read_dicom(path)
            array, spacing, meta = _from_sitk(image)
            meta["dicom_files"] = files  # in the volume's slice order, for DICOM SEG output
        else:
            array, spacing, meta = _from_sitk(sitk.ReadImage(str(path)))
        if array.ndim not in (3, 4):
            raise ValueError(f"unsupported array shape {array.shape}")
    except Exception as exc:  # each library raises its own kinds of error for a bad file
        raise SeglabError(f"{path}: cannot read image ({_reason(exc)})") from exc
    meta.update(path=str(path), format=fmt, shape=tuple(array.shape[1:]))
    return array, spacing, meta


def _read_pillow(path: Path, label: bool) -> tuple[np.ndarray, tuple[float, ...], Meta]:
    """PNG, JPEG, GIF (first frame), BMP. Spacing is 1: a DPI is a print size, not a spacing."""
    with Image.open(path) as image:
        image.load()  # Pillow decodes lazily: a truncated file fails here, inside the try
        mode = image.mode
        if mode in ("P", "PA") and not label:
            image = image.convert("RGB")
        elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            image = image.convert("RGB")
        array = np.asarray(image)
    if array.ndim == 3:
        array = np.moveaxis(array, -1, 0)
        if mode in ("P", "PA") and not label and (array == array[:1]).all():
            array = array[:1]  # a grey palette
        elif mode in ("RGBA", "LA", "PA"):
            array = _drop_opaque_alpha(array)
    else:
        array = array[None]
    return array, (1.0, 1.0), {"mode": mode}


def _read_tiff(path: Path) -> tuple[np.ndarray, tuple[float, ...], Meta]:
    """One page (grey or RGB[A] samples) -> 2D; a stack of pages -> 3D (1, Z, H, W).

    The spacing comes from ImageJ metadata or unitless resolution tags; an inch or cm resolution
    is a DPI and, as for PNG, is not used.
    """
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        array, axes = series.asarray(), series.axes
        tags, imagej = tif.pages[0].tags, tif.imagej_metadata or {}
        channel = next((axes.index(a) for a in "SC" if a in axes), None)
        array = array[None] if channel is None else np.moveaxis(array, channel, 0)
        if "S" in axes and array.shape[0] in (2, 4):
            array = _drop_opaque_alpha(array)
        spacing = [1.0] * (array.ndim - 1)
        unit = tags.get("ResolutionUnit")
        if imagej or (unit is not None and unit.value == 1):
            for axis, name in ((-1, "XResolution"), (-2, "YResolution")):
                tag = tags.get(name)
                if tag is not None and tag.value[0]:
                    spacing[axis] = tag.value[1] / tag.value[0]
        if len(spacing) == 3:
            spacing[0] = float(imagej.get("spacing", 1.0))
    return array, tuple(spacing), {}


def _read_nifti(path: Path) -> tuple[np.ndarray, tuple[float, ...], Meta]:
    """Array in nibabel's (X, Y, Z) order; a 4D (X, Y, Z, C) NIfTI gives C channels."""
    image = nib.load(path)
    array = np.asanyarray(image.dataobj)
    spacing = tuple(float(z) for z in image.header.get_zooms()[: min(array.ndim, 3)])
    array = np.moveaxis(array, -1, 0) if array.ndim == 4 else array[None]
    return array, spacing, {"affine": image.affine.copy(), "header": image.header.copy()}


def _read_dicom(path: Path) -> tuple[sitk.Image, list[str]]:
    """The series in a folder, or the series a .dcm file belongs to (read through its folder),
    and its files in slice order. When a folder holds several series, the one with the most
    slices is read.
    """
    folder = path if path.is_dir() else path.parent
    reader = sitk.ImageSeriesReader()
    warnings_shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK prints "No Series were found" itself
    try:
        series = [
            reader.GetGDCMSeriesFileNames(str(folder), series_id)
            for series_id in reader.GetGDCMSeriesIDs(str(folder))
        ]
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings_shown)
    if path.is_file():
        series = [files for files in series if any(os.path.samefile(f, path) for f in files)]
    if not series:
        raise ValueError("no DICOM series found" + (" holding this file" if path.is_file() else ""))
    files = list(max(series, key=len))
    reader.SetFileNames(files)
    return reader.Execute(), files


def _from_sitk(image: sitk.Image) -> tuple[np.ndarray, tuple[float, ...], Meta]:
    """Array in SimpleITK's (Z, Y, X) order with the spacing reversed to match."""
    array = sitk.GetArrayFromImage(image)
    array = np.moveaxis(array, -1, 0) if image.GetNumberOfComponentsPerPixel() > 1 else array[None]
    meta = {
        "origin": image.GetOrigin(),
        "direction": image.GetDirection(),
        "sitk_spacing": image.GetSpacing(),
    }
    return array, tuple(float(s) for s in reversed(image.GetSpacing())), meta


def _drop_opaque_alpha(array: np.ndarray) -> np.ndarray:
    """Drop the last (alpha) channel when it is opaque everywhere: it carries nothing."""
    opaque = np.iinfo(array.dtype).max if array.dtype.kind in "ui" else 1.0
    return array[:-1] if (array[-1] == opaque).all() else array


def _reason(exc: Exception) -> str:
    """A short reason: the last line of the message (SimpleITK puts its C++ source line first)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = lines[-1] if lines else type(exc).__name__
    return reason if len(reason) <= 200 else reason[:197] + "..."


def stem_of(path: Path, fmt: str) -> str:
    """The name of an image: the file name less its ending; a DICOM series' folder name."""
    if fmt == "dicom":
        return path.parent.name if path.is_file() else path.name
    suffix = suffix_of(path)
    return path.name[: -len(suffix)] if suffix else path.name
