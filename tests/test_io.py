"""Reading images as they lie and writing masks back in the input's format and geometry."""

from __future__ import annotations

from pathlib import Path

import highdicom
import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import tifffile
from PIL import Image

from seglab.data import io, write
from seglab.data.dicom_seg import seg_beside, write_dicom_seg
from seglab.data.io import (
    atomic_path,
    output_folder,
    read_image,
    read_label,
    suffix_of,
    write_text_atomic,
)
from seglab.data.write import write_mask, write_probabilities
from seglab.errors import SeglabError

RNG = np.random.default_rng(0)


def _grey(h: int = 6, w: int = 5) -> np.ndarray:
    return RNG.integers(0, 256, (h, w), dtype=np.uint8)


def _rgb(h: int = 6, w: int = 5) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _affine() -> np.ndarray:
    """Spacing (0.8, 0.8, 2.5), rotated 30 degrees about z, with an offset."""
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([0.8, 0.8, 2.5])
    affine[:3, 3] = [-10.0, 20.5, 3.0]
    return affine


def _dicom_series(folder: Path, volume: np.ndarray, spacing: tuple[float, float, float]) -> None:
    """Write volume (Z, Y, X) int16 as one .dcm file per slice; spacing in (x, y, z) order."""
    folder.mkdir()
    origin = (-5.0, 12.0, 30.0)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(volume.shape[0]):
        image = sitk.GetImageFromArray(volume[z])
        image.SetSpacing(spacing[:2])
        tags = {
            "0008|0060": "CT",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": "1.2.826.0.1.3680043.2.1125.1.2",
            "0020|0052": "1.2.826.0.1.3680043.2.1125.1.3",  # frame of reference
            "0010|0020": "P001",
            "0008|0018": f"1.2.826.0.1.3680043.2.1125.1.2.{z + 1}",
            "0020|0013": str(z + 1),
            "0020|0032": f"{origin[0]}\\{origin[1]}\\{origin[2] + z * spacing[2]}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": f"{spacing[1]}\\{spacing[0]}",
            "0018|0050": str(spacing[2]),
        }
        for key, value in tags.items():
            image.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice{z:03d}.dcm"))
        writer.Execute(image)


# -- 2D round trips -------------------------------------------------------------------------------


def test_grey_png_reads_as_one_channel_hw_with_unit_spacing(tmp_path: Path) -> None:
    pixels = _grey()
    Image.fromarray(pixels).save(tmp_path / "a.png", dpi=(300, 300))
    case = read_image(tmp_path / "a.png")
    assert case.case_id == "a"
    assert case.image.dtype == np.float32 and case.image.shape == (1, 6, 5)
    assert np.array_equal(case.image[0], pixels)
    assert case.spacing == (1.0, 1.0)
    assert case.label is None
    assert case.meta["format"] == "png" and case.meta["mode"] == "L"
    assert case.meta["shape"] == (6, 5) and case.meta["path"] == str(tmp_path / "a.png")


def test_rgb_png_reads_as_three_channels(tmp_path: Path) -> None:
    pixels = _rgb()
    Image.fromarray(pixels).save(tmp_path / "a.png")
    case = read_image(tmp_path / "a.png", case_id="x")
    assert case.case_id == "x" and case.image.shape == (3, 6, 5)
    assert np.array_equal(case.image, np.moveaxis(pixels, -1, 0))


def test_rgba_png_drops_an_opaque_alpha_and_keeps_a_real_one(tmp_path: Path) -> None:
    opaque = np.dstack([_rgb(), np.full((6, 5), 255, np.uint8)])
    Image.fromarray(opaque).save(tmp_path / "opaque.png")
    assert read_image(tmp_path / "opaque.png").image.shape == (3, 6, 5)
    opaque[0, 0, 3] = 10
    Image.fromarray(opaque).save(tmp_path / "alpha.png")
    assert read_image(tmp_path / "alpha.png").image.shape == (4, 6, 5)


def test_jpeg_reads_as_rgb_with_its_size(tmp_path: Path) -> None:
    Image.fromarray(_rgb(7, 9)).save(tmp_path / "a.jpg", quality=90)
    case = read_image(tmp_path / "a.jpg")
    assert case.image.shape == (3, 7, 9) and case.meta["format"] == "jpeg"


def test_gif_reads_its_first_frame_grey_palette_as_one_channel(tmp_path: Path) -> None:
    frames = [Image.fromarray(_grey()), Image.fromarray(_grey())]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    case = read_image(tmp_path / "a.gif")
    assert case.meta["format"] == "gif" and case.image.shape == (1, 6, 5)
    assert np.array_equal(case.image[0], np.asarray(frames[0]))


def test_colour_palette_gif_reads_as_rgb(tmp_path: Path) -> None:
    indices = np.array([[0, 1], [1, 0]], np.uint8)
    image = Image.fromarray(indices, mode=None).convert("P")
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.save(tmp_path / "a.gif")
    case = read_image(tmp_path / "a.gif")
    assert case.image.shape == (3, 2, 2)
    assert case.image[:, 0, 0].tolist() == [255, 0, 0]
    assert case.image[:, 0, 1].tolist() == [0, 0, 255]


def test_bmp_round_trips_rgb(tmp_path: Path) -> None:
    pixels = _rgb()
    Image.fromarray(pixels).save(tmp_path / "a.bmp")
    case = read_image(tmp_path / "a.bmp")
    assert case.meta["format"] == "bmp"
    assert np.array_equal(case.image, np.moveaxis(pixels, -1, 0))


def test_16_bit_png_keeps_values_above_255(tmp_path: Path) -> None:
    pixels = np.array([[0, 1000], [65535, 3]], np.uint16)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    case = read_image(tmp_path / "a.png")
    assert case.image.shape == (1, 2, 2) and np.array_equal(case.image[0], pixels)


def test_tiff_grey_and_rgb_read_as_2d(tmp_path: Path) -> None:
    grey, rgb = _grey().astype(np.uint16) * 100, _rgb()
    tifffile.imwrite(tmp_path / "g.tif", grey)
    tifffile.imwrite(tmp_path / "c.tiff", rgb)
    grey_case = read_image(tmp_path / "g.tif")
    assert grey_case.image.shape == (1, 6, 5) and np.array_equal(grey_case.image[0], grey)
    out = write_mask(grey > 5000, grey_case, tmp_path / "pred")
    assert out.name == "g.tif" and np.array_equal(read_label(out), grey > 5000)
    case = read_image(tmp_path / "c.tiff")
    assert case.image.shape == (3, 6, 5) and case.spacing == (1.0, 1.0)
    assert np.array_equal(case.image, np.moveaxis(rgb, -1, 0))


@pytest.mark.parametrize("compression", ["lzw", "deflate", "zstd", "jpeg"])
def test_compressed_tiffs_read_as_the_image_they_store(tmp_path: Path, compression: str) -> None:
    yy, xx = np.mgrid[:24, :32]
    rgb = np.stack([yy * 10, xx * 8, 255 - xx * 8], axis=-1).astype(np.uint8)  # smooth ramps
    tifffile.imwrite(tmp_path / "c.tif", rgb, compression=compression, photometric="rgb")
    case = read_image(tmp_path / "c.tif")
    assert case.image.shape == (3, 24, 32)
    tolerance = 4 if compression == "jpeg" else 0  # JPEG-in-TIFF is lossy
    assert np.abs(case.image - np.moveaxis(rgb, -1, 0)).mean() <= tolerance


def test_nan_voxels_are_refused_naming_the_file(tmp_path: Path) -> None:
    volume = np.ones((4, 5, 6), np.float32)
    volume[1, 1, 1] = np.nan
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "v.nii.gz")
    with pytest.raises(SeglabError, match=r"v.nii.gz: 1 of 120 values are NaN or infinite"):
        read_image(tmp_path / "v.nii.gz")


def test_an_output_folder_is_made_or_refused_with_its_reason(tmp_path: Path) -> None:
    assert output_folder(tmp_path / "a" / "b").is_dir()
    (tmp_path / "f").write_text("")
    with pytest.raises(SeglabError, match="f: is a file, not a folder"):
        output_folder(tmp_path / "f")
    with pytest.raises(SeglabError, match=r"cannot create the output folder \(Not a directory\)"):
        output_folder(tmp_path / "f" / "g")


def test_multipage_tiff_reads_as_a_volume_with_imagej_spacing(tmp_path: Path) -> None:
    stack = RNG.integers(0, 100, (4, 6, 5), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "plain.tif", stack, photometric="minisblack")
    case = read_image(tmp_path / "plain.tif")
    assert case.image.shape == (1, 4, 6, 5) and case.spacing == (1.0, 1.0, 1.0)
    assert np.array_equal(case.image[0], stack)
    tifffile.imwrite(
        tmp_path / "ij.tif", stack, imagej=True, resolution=(2.0, 4.0),
        metadata={"spacing": 2.5, "axes": "ZYX"},
    )
    case = read_image(tmp_path / "ij.tif")
    assert case.spacing == pytest.approx((2.5, 0.25, 0.5))
    out = write_mask((stack > 50).astype(np.uint8), case, tmp_path / "out")
    assert out.name == "ij.tif"
    assert read_image(out).spacing == pytest.approx(case.spacing)
    assert np.array_equal(read_label(out), stack > 50)


# -- masks for 2D inputs --------------------------------------------------------------------------


def test_png_mask_has_the_input_size_and_values(tmp_path: Path) -> None:
    Image.fromarray(_rgb(6, 5)).save(tmp_path / "img.png")
    case = read_image(tmp_path / "img.png")
    mask = RNG.integers(0, 3, (6, 5))
    out = write_mask(mask, case, tmp_path / "pred")
    assert out == tmp_path / "pred" / "img.png"
    with Image.open(out) as saved:
        assert saved.mode == "L" and saved.size == (5, 6)
    assert np.array_equal(read_label(out), mask)
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == ["img.png"]


def test_jpeg_input_gives_a_lossless_png_mask(tmp_path: Path) -> None:
    Image.fromarray(_rgb()).save(tmp_path / "photo.jpeg")
    mask = RNG.integers(0, 2, (6, 5))
    out = write_mask(mask, read_image(tmp_path / "photo.jpeg"), tmp_path / "pred")
    assert out.name == "photo.png" and np.array_equal(read_label(out), mask)


def test_value_map_is_applied_before_writing(tmp_path: Path) -> None:
    Image.fromarray(_grey()).save(tmp_path / "a.png")
    mask = RNG.integers(0, 2, (6, 5))
    out = write_mask(mask, read_image(tmp_path / "a.png"), tmp_path / "pred", value_map={1: 255})
    assert np.array_equal(read_label(out), mask * 255)


def test_value_map_keeps_unnamed_classes_and_widens_only_as_needed(tmp_path: Path) -> None:
    like = read_image(_saved_grey(tmp_path))
    mask = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    assert write._mask_array(mask, like, {0: 255, 1: 0}).tolist() == [[255, 0, 2], [2, 0, 255]]
    assert write._mask_array(mask, like, {0: 255, 1: 0}).dtype == np.uint8
    assert write._mask_array(mask, like, {2: 300}).dtype == np.uint16
    assert write._mask_array(mask == 1, like, {1: 7}).tolist() == [[0, 7, 0], [0, 7, 0]]
    with pytest.raises(ValueError, match="16 bits"):
        write._mask_array(mask, like, {1: 70000})


def _saved_grey(tmp_path: Path) -> Path:
    Image.fromarray(np.zeros((2, 3), np.uint8)).save(tmp_path / "like.png")
    return tmp_path / "like.png"


def test_integer_images_keep_their_stored_type_only_when_asked(tmp_path: Path) -> None:
    Image.fromarray(_grey()).save(tmp_path / "a.png")
    kept = read_image(tmp_path / "a.png", keep_integers=True)
    converted = read_image(tmp_path / "a.png")
    assert kept.image.dtype == np.uint8 and converted.image.dtype == np.float32
    assert np.array_equal(kept.image, converted.image)


def test_mask_values_above_255_give_a_16_bit_png(tmp_path: Path) -> None:
    Image.fromarray(_grey(2, 2)).save(tmp_path / "a.png")
    mask = np.array([[0, 300], [1, 2]])
    out = write_mask(mask, read_image(tmp_path / "a.png"), tmp_path / "pred")
    assert np.array_equal(read_label(out), mask)


def test_mask_is_refused_where_it_would_overwrite_the_input(tmp_path: Path) -> None:
    Image.fromarray(_grey()).save(tmp_path / "a.png")
    with pytest.raises(SeglabError, match="overwrite"):
        write_mask(np.zeros((6, 5), int), read_image(tmp_path / "a.png"), tmp_path)


def test_2d_probabilities_go_to_a_compressed_npz(tmp_path: Path) -> None:
    Image.fromarray(_grey()).save(tmp_path / "a.png")
    probs = RNG.random((3, 6, 5), dtype=np.float32)
    out = write_probabilities(probs, read_image(tmp_path / "a.png"), tmp_path / "pred")
    assert out.name == "a_probs.npz"
    with np.load(out) as saved:
        assert np.array_equal(saved["probabilities"], probs)


# -- NIfTI ----------------------------------------------------------------------------------------


def test_nifti_spacing_and_mask_keep_the_affine(tmp_path: Path) -> None:
    volume = RNG.normal(size=(5, 4, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, _affine()), tmp_path / "ct.nii.gz")
    case = read_image(tmp_path / "ct.nii.gz")
    assert case.case_id == "ct" and case.meta["format"] == "nifti"
    assert case.image.shape == (1, 5, 4, 3) and np.allclose(case.image[0], volume)
    assert case.spacing == pytest.approx((0.8, 0.8, 2.5))
    mask = RNG.integers(0, 3, (5, 4, 3))
    out = write_mask(mask, case, tmp_path / "pred")
    assert out.name == "ct.nii.gz"
    saved = nib.load(out)
    assert saved.shape == (5, 4, 3) and np.allclose(saved.affine, _affine())
    assert saved.get_data_dtype() == np.uint8
    assert np.array_equal(np.asanyarray(saved.dataobj), mask)


def test_nifti_mask_from_a_scaled_input_stores_plain_integers(tmp_path: Path) -> None:
    image = nib.Nifti1Image(RNG.integers(0, 100, (3, 3, 2)).astype(np.int16), _affine())
    image.header.set_slope_inter(0.5, -3.0)
    nib.save(image, tmp_path / "scaled.nii")
    case = read_image(tmp_path / "scaled.nii")
    mask = RNG.integers(0, 2, (3, 3, 2))
    out = write_mask(mask, case, tmp_path / "pred")
    assert out.name == "scaled.nii"
    assert np.array_equal(read_label(out), mask)


def test_4d_nifti_gives_channels_and_4d_probabilities(tmp_path: Path) -> None:
    volume = RNG.normal(size=(5, 4, 3, 2)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, _affine()), tmp_path / "mr.nii.gz")
    case = read_image(tmp_path / "mr.nii.gz")
    assert case.image.shape == (2, 5, 4, 3) and case.spacing == pytest.approx((0.8, 0.8, 2.5))
    assert np.allclose(case.image[1], volume[..., 1])
    probs = RNG.random((3, 5, 4, 3), dtype=np.float32)
    out = write_probabilities(probs, case, tmp_path / "pred")
    assert out.name == "mr_probs.nii.gz"
    saved = nib.load(out)
    assert saved.shape == (5, 4, 3, 3) and np.allclose(saved.affine, _affine())
    assert np.allclose(saved.get_fdata()[..., 2], probs[2])


# -- DICOM and ITK --------------------------------------------------------------------------------


def test_dicom_series_reads_as_a_volume_and_its_mask_keeps_the_geometry(tmp_path: Path) -> None:
    volume = RNG.integers(0, 1000, (4, 8, 8)).astype(np.int16)
    _dicom_series(tmp_path / "series1", volume, (0.7, 0.7, 2.0))
    case = read_image(tmp_path / "series1")
    assert case.case_id == "series1" and case.meta["format"] == "dicom"
    assert case.image.shape == (1, 4, 8, 8) and np.array_equal(case.image[0], volume)
    assert case.spacing == pytest.approx((2.0, 0.7, 0.7))
    one_file = read_image(tmp_path / "series1" / "slice002.dcm")
    assert one_file.image.shape == (1, 4, 8, 8) and one_file.case_id == "series1"
    mask = RNG.integers(0, 2, (4, 8, 8))
    out = write_mask(mask, case, tmp_path / "pred")
    assert out.name == "series1.nii.gz"
    saved = sitk.ReadImage(str(out))
    assert saved.GetSpacing() == pytest.approx((0.7, 0.7, 2.0))
    assert saved.GetOrigin() == pytest.approx(case.meta["origin"])
    assert saved.GetDirection() == pytest.approx(case.meta["direction"])
    assert np.array_equal(sitk.GetArrayFromImage(saved), mask)


def test_a_dicom_series_mask_becomes_a_seg_whose_segments_lie_on_their_own_slices(
        tmp_path: Path) -> None:
    volume = RNG.integers(0, 1000, (4, 8, 8)).astype(np.int16)
    _dicom_series(tmp_path / "series1", volume, (0.7, 0.7, 2.0))
    case = read_image(tmp_path / "series1")
    mask = np.zeros((4, 8, 8), np.uint8)
    mask[1:3, 2:5, 2:6], mask[3, :2, :2] = 1, 2
    out = write_dicom_seg(mask, case, tmp_path / "pred", {1: "liver", 2: "tumour", 3: "cyst"})
    assert out.name == "series1_seg.dcm"
    seg = highdicom.seg.segread(out)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["liver", "tumour"]  # cyst: absent
    uids = [pydicom.dcmread(f).SOPInstanceUID for f in case.meta["dicom_files"]]
    pixels = seg.get_pixels_by_source_instance(uids, segment_numbers=[1, 2])
    assert np.array_equal(pixels[..., 0], mask == 1) and np.array_equal(pixels[..., 1], mask == 2)


def test_a_series_that_cannot_carry_a_seg_keeps_its_nifti_with_a_warning(tmp_path: Path) -> None:
    volume = RNG.integers(0, 1000, (3, 8, 8)).astype(np.int16)
    _dicom_series(tmp_path / "series1", volume, (0.7, 0.7, 2.0))
    case = read_image(tmp_path / "series1")
    for path in case.meta["dicom_files"]:  # a series without a frame of reference
        data = pydicom.dcmread(path)
        del data.FrameOfReferenceUID
        data.save_as(path)
    with pytest.warns(UserWarning, match="Frame Of Reference.*the mask is in the .nii.gz"):
        assert seg_beside(np.ones((3, 8, 8), np.uint8), case, tmp_path, {1: "organ"}) == []
    assert not list(tmp_path.glob("*_seg.dcm"))


@pytest.mark.parametrize(("suffix", "mask_suffix"), [(".nrrd", ".nrrd"), (".mhd", ".mha")])
def test_itk_files_round_trip_through_simpleitk(
    tmp_path: Path, suffix: str, mask_suffix: str
) -> None:
    image = sitk.GetImageFromArray(RNG.normal(size=(3, 4, 5)).astype(np.float32))
    image.SetSpacing((0.5, 0.6, 3.0))
    image.SetOrigin((1.0, 2.0, 3.0))
    sitk.WriteImage(image, str(tmp_path / f"vol{suffix}"))
    case = read_image(tmp_path / f"vol{suffix}")
    assert case.meta["format"] == "itk" and case.spacing == pytest.approx((3.0, 0.6, 0.5))
    mask = RNG.integers(0, 2, (3, 4, 5))
    out = write_mask(mask, case, tmp_path / "pred")
    assert out.name == f"vol{mask_suffix}"
    assert [p.name for p in out.parent.iterdir()] == [out.name]
    assert sitk.ReadImage(str(out)).GetOrigin() == pytest.approx((1.0, 2.0, 3.0))
    assert np.array_equal(read_label(out), mask)


# -- labels ---------------------------------------------------------------------------------------


def test_read_label_mode_1_png_gives_0_and_1(tmp_path: Path) -> None:
    bits = RNG.integers(0, 2, (6, 5)).astype(bool)
    Image.fromarray(bits).save(tmp_path / "m.png")
    label = read_label(tmp_path / "m.png")
    assert label.dtype == np.int64 and np.array_equal(label, bits.astype(int))


def test_read_label_grey_rgb_gives_one_channel(tmp_path: Path) -> None:
    values = RNG.integers(0, 3, (6, 5)).astype(np.uint8)
    Image.fromarray(np.dstack([values] * 3)).save(tmp_path / "m.png")
    assert np.array_equal(read_label(tmp_path / "m.png"), values)


def test_read_label_palette_png_gives_its_indices(tmp_path: Path) -> None:
    indices = RNG.integers(0, 3, (6, 5)).astype(np.uint8)
    image = Image.fromarray(indices).convert("P")
    image.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
    image.save(tmp_path / "voc.png")
    assert np.array_equal(read_label(tmp_path / "voc.png"), indices)


def test_read_label_float_nifti_with_integer_values_gives_integers(tmp_path: Path) -> None:
    values = RNG.integers(0, 3, (4, 4, 2))
    image = nib.Nifti1Image(values.astype(np.float32) - 1e-7 * values, _affine())
    nib.save(image, tmp_path / "seg.nii.gz")
    label = read_label(tmp_path / "seg.nii.gz")
    assert label.dtype == np.int64 and np.array_equal(label, values)


def test_read_label_refuses_non_integer_values(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.array([[[0.0, 0.5]]], np.float32), np.eye(4)), tmp_path / "s.nii")
    with pytest.raises(SeglabError, match=r"s\.nii: label values are not integers \(e\.g\. 0\.5\)"):
        read_label(tmp_path / "s.nii")


def test_read_label_refuses_a_colour_coded_mask(tmp_path: Path) -> None:
    Image.fromarray(_rgb()).save(tmp_path / "colour.png")
    with pytest.raises(SeglabError, match=r"colour\.png: .*colour -> class mapping"):
        read_label(tmp_path / "colour.png")


# -- errors ---------------------------------------------------------------------------------------


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SeglabError, match=r"nothere\.png: no such file or folder"):
        read_image(tmp_path / "nothere.png")


def test_random_bytes_png_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "junk.png").write_bytes(RNG.bytes(300))
    with pytest.raises(SeglabError, match=r"junk\.png: cannot read image \(.+\)"):
        read_image(tmp_path / "junk.png")


def test_truncated_png_is_a_clear_error(tmp_path: Path) -> None:
    Image.fromarray(RNG.integers(0, 256, (64, 64), dtype=np.uint8)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(SeglabError, match=r"cut\.png: cannot read image \(.+\)"):
        read_image(tmp_path / "cut.png")
    with pytest.raises(SeglabError, match=r"cut\.png: cannot read image"):
        read_label(tmp_path / "cut.png")


@pytest.mark.parametrize("name", ["bad.nii.gz", "bad.tif", "bad.nrrd", "bad.dcm"])
def test_corrupt_files_of_other_formats_are_clear_errors(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"not an image at all" * 10)
    with pytest.raises(SeglabError, match=rf"{name}: cannot read image \(.+\)"):
        read_image(tmp_path / name)


def test_unknown_suffix_names_the_file_and_the_supported_formats(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(SeglabError, match=r"notes\.txt: unknown image format.*\.png.*\.nii\.gz"):
        read_image(tmp_path / "notes.txt")


def test_suffixes() -> None:
    assert suffix_of(Path("a/b.NII.GZ")) == ".nii.gz" and suffix_of("x.Png") == ".png"
    assert suffix_of("noending") == ""
    assert ".nii.gz" in io.IMAGE_SUFFIXES and ".dcm" not in io.IMAGE_SUFFIXES


# -- atomic writing -------------------------------------------------------------------------------


def test_failed_mask_write_leaves_no_file_and_no_temp(tmp_path: Path, monkeypatch) -> None:
    Image.fromarray(_grey()).save(tmp_path / "a.png")
    case = read_image(tmp_path / "a.png")

    def half_write(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", half_write)
    with pytest.raises(OSError, match="disk full"):
        write_mask(np.zeros((6, 5), int), case, tmp_path / "pred")
    assert list((tmp_path / "pred").iterdir()) == []


def test_atomic_path_renames_on_success_and_cleans_up_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "report.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.parent == target.parent and tmp.name.endswith("-report.json")
            tmp.write_text("partial")
            raise RuntimeError("midway")
    assert list(target.parent.iterdir()) == []
    write_text_atomic(target, "{}\n")
    assert target.read_text() == "{}\n"
    assert [p.name for p in target.parent.iterdir()] == ["report.json"]
