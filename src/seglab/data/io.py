"""Reading and writing image files as they lie, keeping their geometry.

A prediction is written back in the input's own format and geometry: a PNG mask for a PNG, JPEG,
GIF or BMP image, a TIFF for a TIFF, a NIfTI carrying the input's affine and header for a NIfTI, a
NIfTI carrying the series geometry for a DICOM series. Any problem with a file becomes a one-line
`SeglabError` that names it.
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
_PILLOW_FORMATS = ("png", "jpeg", "gif", "bmp")
# Format or input ending -> mask ending, where the mask cannot take the input's own ending.
_MASK_SUFFIXES = {**dict.fromkeys(_PILLOW_FORMATS, ".png"), "dicom": ".nii.gz", ".mhd": ".mha"}

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
    case_id = case_id or _stem(path, meta["format"])
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


def mask_path(like: Case, out_dir: Path) -> Path:
    """Where `write_mask` writes the mask of the image `like`: named after it, in `out_dir`."""
    fmt, source = like.meta["format"], Path(like.meta["path"])
    suffix = _MASK_SUFFIXES.get(fmt) or _MASK_SUFFIXES.get(suffix_of(source), suffix_of(source))
    out = Path(out_dir) / f"{_stem(source, fmt)}{suffix}"
    if out.resolve() == source.resolve():
        raise SeglabError(f"{out}: the mask would overwrite the input image; choose another folder")
    return out


def write_mask(
    mask: np.ndarray, like: Case, out_dir: Path, value_map: dict[int, int] | None = None
) -> Path:
    """Write an integer mask (*spatial) in the format and geometry of the image `like`.

    The file is named after the input. JPEG, GIF and BMP inputs give a PNG (a mask must be
    lossless), a DICOM series a .nii.gz, a .mhd a single-file .mha (a header and its .raw cannot
    be renamed into place together). `value_map` maps class index -> stored value, e.g. {1: 255}.
    """
    array = _mask_array(mask, like, value_map)
    fmt, out = like.meta["format"], mask_path(like, out_dir)
    with atomic_path(out) as tmp:
        if fmt in _PILLOW_FORMATS:
            Image.fromarray(array).save(tmp, format="PNG")  # uint8 -> L, uint16 -> I;16
        elif fmt == "tiff":
            _write_tiff(array, like, tmp)
        elif fmt == "nifti":
            nib.save(_nifti_like(array, like), tmp)
        else:
            image = sitk.GetImageFromArray(array)
            image.SetOrigin(like.meta["origin"])
            image.SetSpacing(like.meta["sitk_spacing"])
            image.SetDirection(like.meta["direction"])
            sitk.WriteImage(image, str(tmp), True)
    return out


def write_maps(maps: dict[str, np.ndarray], like: Case, out_dir: Path) -> list[Path]:
    """Write float maps (*spatial each, e.g. uncertainty) next to a mask: one NIfTI per map with
    the input's affine (`<stem>_<name>.nii.gz`) for a 3D NIfTI input, else one compressed
    `<stem>_maps.npz` holding each map under its name."""
    stem = _stem(Path(like.meta["path"]), like.meta["format"])
    for name, value in maps.items():
        if value.shape != like.shape:
            raise ValueError(f"map {name} {value.shape} does not match the image {like.shape}")
    if like.meta["format"] == "nifti" and like.dims == 3:
        written = []
        for name, value in maps.items():
            out = Path(out_dir) / f"{stem}_{name}.nii.gz"
            with atomic_path(out) as tmp:
                nib.save(_nifti_like(np.asarray(value, np.float32), like), tmp)
            written.append(out)
        return written
    out = Path(out_dir) / f"{stem}_maps.npz"
    with atomic_path(out) as tmp:
        np.savez_compressed(tmp, **{k: np.asarray(v, np.float32) for k, v in maps.items()})
    return [out]


def write_probabilities(probs: np.ndarray, like: Case, out_dir: Path) -> Path:
    """Write class probabilities (K, *spatial) next to a mask: a 4D NIfTI with the input's affine
    for a 3D NIfTI input, else a compressed `<stem>_probs.npz` holding "probabilities"."""
    probs = np.asarray(probs, dtype=np.float32)
    if probs.shape[1:] != like.shape:
        raise ValueError(f"probabilities {probs.shape} do not match the image's shape {like.shape}")
    stem = _stem(Path(like.meta["path"]), like.meta["format"])
    if like.meta["format"] == "nifti" and like.dims == 3:
        out = Path(out_dir) / f"{stem}_probs.nii.gz"
        with atomic_path(out) as tmp:
            nib.save(_nifti_like(np.moveaxis(probs, 0, -1), like), tmp)
    else:
        out = Path(out_dir) / f"{stem}_probs.npz"
        with atomic_path(out) as tmp:
            np.savez_compressed(tmp, probabilities=probs)
    return out


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
        if fmt in _PILLOW_FORMATS:
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


def _stem(path: Path, fmt: str) -> str:
    """The name of an image: the file name less its ending; a DICOM series' folder name."""
    if fmt == "dicom":
        return path.parent.name if path.is_file() else path.name
    suffix = suffix_of(path)
    return path.name[: -len(suffix)] if suffix else path.name


def _mask_array(mask: np.ndarray, like: Case, value_map: dict[int, int] | None) -> np.ndarray:
    """The mask with `value_map` applied, as uint8 (or uint16 for values above 255)."""
    mask = np.asarray(mask)
    if mask.dtype.kind not in "biu":
        raise ValueError(f"a mask must hold integers, not {mask.dtype}")
    if mask.shape != like.shape:
        raise ValueError(f"mask shape {mask.shape} does not match the image's shape {like.shape}")
    if value_map and mask.size:
        mask = _mapped(mask.view(np.uint8) if mask.dtype == bool else mask, value_map)
    low, high = (int(mask.min()), int(mask.max())) if mask.size else (0, 0)
    if low < 0 or high > 65535:
        raise ValueError(f"mask values {low}..{high} do not fit in 16 bits")
    return mask.astype(np.uint8 if high <= 255 else np.uint16, copy=False)


def _mapped(mask: np.ndarray, value_map: dict[int, int]) -> np.ndarray:
    """`mask` through `value_map`, by a lookup table in the stored type: no wider copy of the
    mask (an 8000² mask is 64 MB as uint8, 512 MB in int64)."""
    low = int(mask.min())
    table = np.arange(max(int(mask.max()), *value_map) + 1, dtype=np.int64)
    table[list(value_map)] = list(value_map.values())
    if low < 0 or table.min() < 0 or table.max() > 65535:
        raise ValueError(f"mask values mapped by {value_map} do not fit in 16 bits")
    return table.astype(np.uint8 if table.max() <= 255 else np.uint16)[mask]


def _write_tiff(array: np.ndarray, like: Case, tmp: Path) -> None:
    """A page, or a stack of pages for 3D, with the spacing as ImageJ reads it."""
    spacing = like.spacing
    options: dict[str, Any] = {"resolution": (1 / spacing[-1], 1 / spacing[-2])}
    if array.ndim == 3:
        options.update(imagej=True, metadata={"spacing": spacing[0], "axes": "ZYX"})
    else:
        options.update(resolutionunit="NONE")
    tifffile.imwrite(tmp, array, photometric="minisblack", **options)


def _nifti_like(data: np.ndarray, like: Case) -> nib.Nifti1Image:
    """A NIfTI image of `data` with the affine and (a copy of) the header of `like`."""
    header = like.meta["header"].copy()
    header.set_data_dtype(data.dtype)
    header["cal_min"] = header["cal_max"] = 0  # the input's display window would hide the classes
    kind = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    return kind(data, like.meta["affine"], header)
