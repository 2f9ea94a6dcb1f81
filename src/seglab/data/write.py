"""Predictions written back in the input's own format and geometry: a PNG mask for a PNG, JPEG,
GIF or BMP image, a TIFF for a TIFF, a NIfTI carrying the input's affine and header for a NIfTI, a
NIfTI carrying the series geometry for a DICOM series; probability and uncertainty maps beside
them. Every file is written under a temporary name, then renamed (`atomic_path`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import tifffile
from PIL import Image

from seglab.case import Case
from seglab.data.io import PILLOW_FORMATS, atomic_path, stem_of, suffix_of
from seglab.errors import SeglabError

# Format or input ending -> mask ending, where the mask cannot take the input's own ending.
_MASK_SUFFIXES = {**dict.fromkeys(PILLOW_FORMATS, ".png"), "dicom": ".nii.gz", ".mhd": ".mha"}


def mask_path(like: Case, out_dir: Path) -> Path:
    """Where `write_mask` writes the mask of the image `like`: named after it, in `out_dir`."""
    fmt, source = like.meta["format"], Path(like.meta["path"])
    suffix = _MASK_SUFFIXES.get(fmt) or _MASK_SUFFIXES.get(suffix_of(source), suffix_of(source))
    out = Path(out_dir) / f"{stem_of(source, fmt)}{suffix}"
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
        if fmt in PILLOW_FORMATS:
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
    stem = stem_of(Path(like.meta["path"]), like.meta["format"])
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
    stem = stem_of(Path(like.meta["path"]), like.meta["format"])
    if like.meta["format"] == "nifti" and like.dims == 3:
        out = Path(out_dir) / f"{stem}_probs.nii.gz"
        with atomic_path(out) as tmp:
            nib.save(_nifti_like(np.moveaxis(probs, 0, -1), like), tmp)
    else:
        out = Path(out_dir) / f"{stem}_probs.npz"
        with atomic_path(out) as tmp:
            np.savez_compressed(tmp, probabilities=probs)
    return out


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
