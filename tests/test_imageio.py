"""Reading radiographs: formats, normalisation per bit depth, pixel size, and every bad input."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from core.errors import ImageLoadError, WeldreviewWarning
from core.imageio import load_radiograph, normalise, write_png

SHAPE = (200, 240)


def _ramp(max_value: int, dtype) -> np.ndarray:
    rng = np.random.default_rng(4)
    a = rng.integers(0, max_value + 1, SHAPE)
    a[0, 0], a[0, 1] = 0, max_value
    return a.astype(dtype)


def _error(path, **kw) -> str:
    with pytest.raises(ImageLoadError) as info:
        load_radiograph(path, **kw)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg
    return msg


def test_8bit_tiff_divided_by_255(tmp_path):
    raw = _ramp(255, np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", raw)
    rad = load_radiograph(tmp_path / "a.tif")
    assert rad.image.dtype == np.float32 and rad.bit_depth == 8
    np.testing.assert_allclose(rad.image, raw / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(rad.raw, raw)
    assert rad.pixel_size_um is None and len(rad.sha256) == 64 and rad.warnings == []


def test_16bit_tiff_keeps_every_level(tmp_path):
    raw = _ramp(65535, np.uint16)
    raw[5, 5], raw[5, 6] = 30000, 30001
    tifffile.imwrite(tmp_path / "a.tif", raw)
    rad = load_radiograph(tmp_path / "a.tif")
    assert rad.bit_depth == 16
    np.testing.assert_allclose(rad.image, raw / 65535.0, rtol=1e-6)
    assert rad.image[5, 6] > rad.image[5, 5]  # never squeezed to 8 bits
    assert len(np.unique(rad.image)) == len(np.unique(raw))


def test_12bit_in_16bit_container_uses_full_range(tmp_path):
    raw = _ramp(4095, np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", raw)
    rad = load_radiograph(tmp_path / "a.tif")
    assert rad.bit_depth == 12 and rad.image.max() == 1.0  # not 4095 / 65535 = 0.0625


def test_declared_bits_win_over_the_maximum(tmp_path):
    raw = _ramp(900, np.uint16)  # smallest rule alone would say 10 bits
    tifffile.imwrite(tmp_path / "a.tif", raw, extratags=[(281, "H", 1, 4095, False)])
    rad = load_radiograph(tmp_path / "a.tif")
    assert rad.bit_depth == 12
    np.testing.assert_allclose(rad.image.max(), 900 / 4095, rtol=1e-6)
    assert normalise(raw)[1] == 10


def test_tiff_pixel_size_from_resolution_tags(tmp_path):
    raw = _ramp(4095, np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", raw, resolution=(250.0, 250.0), resolutionunit="CENTIMETER")
    assert load_radiograph(tmp_path / "a.tif").pixel_size_um == pytest.approx(40.0)
    assert load_radiograph(tmp_path / "a.tif", pixel_size_um=99.0).pixel_size_um == pytest.approx(40.0)


def test_pixel_size_from_caller_when_file_is_silent(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", _ramp(255, np.uint8))
    assert load_radiograph(tmp_path / "a.tif", pixel_size_um=40.3).pixel_size_um == 40.3


def test_multipage_tiff_first_page_with_warning(tmp_path):
    pages = np.stack([_ramp(4095, np.uint16), np.zeros(SHAPE, np.uint16)])
    tifffile.imwrite(tmp_path / "a.tif", pages)
    with pytest.warns(WeldreviewWarning, match="first page"):
        rad = load_radiograph(tmp_path / "a.tif")
    np.testing.assert_array_equal(rad.raw, pages[0])
    assert rad.warnings


def test_png_8_and_16_bit_with_pixel_size(tmp_path):
    raw8 = _ramp(255, np.uint8)
    Image.fromarray(raw8).save(tmp_path / "a.png", dpi=(635, 635))  # 25000 px/m = 40 um
    rad = load_radiograph(tmp_path / "a.png")
    np.testing.assert_allclose(rad.image, raw8 / 255.0, rtol=1e-6)
    assert rad.pixel_size_um == pytest.approx(40.0, rel=1e-3)
    raw16 = _ramp(16383, np.uint16)
    write_png(tmp_path / "b.png", raw16)
    rad = load_radiograph(tmp_path / "b.png")
    assert rad.bit_depth == 14 and rad.raw.dtype == np.uint16
    np.testing.assert_allclose(rad.image, raw16 / 16383.0, rtol=1e-6)


def test_dicom_bits_stored_and_pixel_spacing(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    raw = _ramp(1000, np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = raw.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelSpacing = [0.05, 0.05]
    ds.PixelData = raw.tobytes()
    path = tmp_path / "a.dcm"
    ds.save_as(path, enforce_file_format=True)
    rad = load_radiograph(path)
    assert rad.bit_depth == 12 and rad.pixel_size_um == pytest.approx(50.0)
    np.testing.assert_allclose(rad.image, raw / 4095.0, rtol=1e-6)


def test_float_in_unit_range_used_as_is(tmp_path):
    raw = np.random.default_rng(1).random(SHAPE, dtype=np.float32)
    tifffile.imwrite(tmp_path / "a.tif", raw)
    rad = load_radiograph(tmp_path / "a.tif")
    np.testing.assert_array_equal(rad.image, raw)


@pytest.mark.parametrize("channels", [3, 4])
def test_colour_converted_to_grey_with_warning(tmp_path, channels):
    grey = _ramp(255, np.uint8)
    rgb = np.repeat(grey[:, :, None], channels, axis=2)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    with pytest.warns(WeldreviewWarning, match="converted to grey"):
        rad = load_radiograph(tmp_path / "a.png")
    np.testing.assert_array_equal(rad.raw, grey)


def test_not_an_image(tmp_path):
    (tmp_path / "notes.tif").write_text("this is a text file, not a radiograph\n")
    assert "not an image" in _error(tmp_path / "notes.tif")


def test_missing_and_empty_files(tmp_path):
    assert "cannot read" in _error(tmp_path / "absent.tif")
    (tmp_path / "empty.png").write_bytes(b"")
    assert "empty" in _error(tmp_path / "empty.png")


def test_truncated_tiff_and_png(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", _ramp(65535, np.uint16))
    data = (tmp_path / "a.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 3])
    assert "truncated" in _error(tmp_path / "cut.tif")
    write_png(tmp_path / "a.png", _ramp(255, np.uint8))
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    assert "truncated" in _error(tmp_path / "cut.png")


def test_one_pixel_and_small_images(tmp_path):
    tifffile.imwrite(tmp_path / "one.tif", np.array([[7]], np.uint16))
    assert "1-pixel" in _error(tmp_path / "one.tif")
    tifffile.imwrite(tmp_path / "small.tif", _ramp(255, np.uint8)[:150])
    assert "smaller than 192 px" in _error(tmp_path / "small.tif")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_float_nan_or_inf(tmp_path, bad):
    raw = np.random.default_rng(2).random(SHAPE, dtype=np.float32)
    raw[10, 10] = bad
    tifffile.imwrite(tmp_path / "a.tif", raw)
    assert "NaN or Inf" in _error(tmp_path / "a.tif")


def test_float_outside_unit_range(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.linspace(-1, 3, SHAPE[0] * SHAPE[1],
                                                     dtype=np.float32).reshape(SHAPE))
    assert "not [0, 1]" in _error(tmp_path / "a.tif")


def test_constant_image(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.full(SHAPE, 1234, np.uint16))
    assert "constant" in _error(tmp_path / "a.tif")


def test_write_png_round_trip(tmp_path):
    rgb = np.random.default_rng(3).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    write_png(tmp_path / "c.png", rgb)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "c.png")), rgb)
