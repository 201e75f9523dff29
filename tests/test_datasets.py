"""Dataset loading (GDXray layout and plain pairs) and image-level splits."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from skimage import io

from core.datasets import GDXRAY_TWINS, load_dataset, split_by_image
from core.errors import ImageLoadError

SHAPE = (200, 260)


def write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    io.imsave(path, array, check_contrast=False)
    return path


def grey8(seed):
    return np.random.default_rng(seed).integers(0, 256, SHAPE, dtype=np.uint8)


def mask8(seed):
    mask = np.zeros(SHAPE, np.uint8)
    r = 20 + seed * 10
    mask[r:r + 5, 40:60] = 255
    return mask


def make_gdxray(root):
    """A tiny folder in the GDXray layout: two masked W0001 images, three W0003 radiographs."""
    for k, number in enumerate((1, 9)):
        write_png(root / "W0001" / f"W0001_{number:04d}.png", grey8(k))
        write_png(root / "W0002" / f"W0002_{number:04d}.png", mask8(k))
    for number in (GDXRAY_TWINS[1], GDXRAY_TWINS[9], 20):
        write_png(root / "W0003" / f"W0003_{number:04d}.png", grey8(number))
    return root


def test_gdxray_layout_pairs_masks_and_groups_twins(tmp_path):
    data = {d.name: d for d in load_dataset(make_gdxray(tmp_path))}
    assert set(data) == {"W0001_0001", "W0001_0009", "W0003_0068", "W0003_0006", "W0003_0020"}
    first = data["W0001_0001"]
    assert first.image.dtype == np.float32 and first.image.shape == SHAPE
    np.testing.assert_allclose(first.image, grey8(0) / 255.0, atol=1e-7)
    np.testing.assert_array_equal(first.mask, mask8(0) > 0)
    assert data["W0003_0020"].mask is None
    # a W0001 crop and the W0003 radiograph it comes from share a group
    assert data["W0001_0001"].group == data["W0003_0068"].group
    assert data["W0001_0009"].group == data["W0003_0006"].group
    assert len({d.group for d in data.values()}) == 3
    masked = load_dataset(tmp_path, include_unmasked=False)
    assert [d.name for d in masked] == ["W0001_0001", "W0001_0009"]
    # the round-robin films have flaws no mask marks, except those with no indication at all
    assert [d.flaws_unmasked for d in data.values()] == [False, False, True, True, True]
    write_png(tmp_path / "W0003" / "W0003_0023.png", grey8(23))
    assert not {d.name: d for d in load_dataset(tmp_path)}["W0003_0023"].flaws_unmasked


def test_gdxray_image_without_its_mask_is_refused(tmp_path):
    make_gdxray(tmp_path)
    (tmp_path / "W0002" / "W0002_0009.png").unlink()
    with pytest.raises(ImageLoadError, match="W0001_0009.*no mask"):
        load_dataset(tmp_path)


def test_plain_pairs_with_mixed_formats(tmp_path):
    write_png(tmp_path / "weld_a.png", grey8(1))
    write_png(tmp_path / "weld_a_mask.png", mask8(1))
    raw16 = np.random.default_rng(2).integers(0, 65536, SHAPE, dtype=np.uint16)
    raw16[0, 0] = 65535  # full 16-bit range, so the bit-depth rule divides by 65535
    tifffile.imwrite(tmp_path / "weld_b.tif", raw16)
    write_png(tmp_path / "weld_b_mask.png", mask8(2))
    write_png(tmp_path / "weld_c.png", grey8(3))
    data = {d.name: d for d in load_dataset(tmp_path)}
    assert set(data) == {"weld_a", "weld_b", "weld_c"}
    np.testing.assert_allclose(data["weld_b"].image, raw16 / 65535.0, atol=1e-7)
    np.testing.assert_array_equal(data["weld_b"].mask, mask8(2) > 0)
    assert data["weld_c"].mask is None
    assert len({d.group for d in data.values()}) == 3
    assert [d.name for d in load_dataset(tmp_path, include_unmasked=False)] == ["weld_a", "weld_b"]


def test_plain_pairs_errors_name_the_file(tmp_path):
    write_png(tmp_path / "weld_a.png", grey8(1))
    write_png(tmp_path / "weld_a_mask.png", np.zeros((SHAPE[0], SHAPE[1] - 4), np.uint8))
    (item,) = load_dataset(tmp_path)
    with pytest.raises(ImageLoadError, match="weld_a_mask.png.*shape"):
        item.mask
    write_png(tmp_path / "lonely_mask.png", mask8(0))
    with pytest.raises(ImageLoadError, match="lonely_mask.png.*without a radiograph"):
        load_dataset(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageLoadError, match="no radiographs"):
        load_dataset(empty)
    with pytest.raises(ImageLoadError, match="not a folder"):
        load_dataset(tmp_path / "missing")


def test_split_by_names_moves_whole_groups(tmp_path):
    data = load_dataset(make_gdxray(tmp_path))
    train, test = split_by_image(data, test_names=["W0003_0068"])
    assert {d.name for d in test} == {"W0003_0068", "W0001_0001"}
    assert {d.group for d in train}.isdisjoint({d.group for d in test})
    assert len(train) + len(test) == len(data)
    with pytest.raises(ValueError, match="not in the dataset: W9999"):
        split_by_image(data, test_names=["W9999"])
    with pytest.raises(ValueError, match="exactly one"):
        split_by_image(data)


@pytest.mark.parametrize("seed", range(5))
def test_random_split_never_mixes_groups(tmp_path, seed):
    data = load_dataset(make_gdxray(tmp_path))
    train, test = split_by_image(data, test_fraction=0.4, seed=seed)
    assert train and test
    assert {d.group for d in train}.isdisjoint({d.group for d in test})
    assert sorted(d.name for d in train + test) == sorted(d.name for d in data)


@pytest.mark.gdxray
def test_shared_gdxray_folder_loads_with_twins_grouped(gdxray):
    data = load_dataset(gdxray)
    masked = [d for d in data if d.mask_path is not None]
    assert [d.name for d in masked] == [
        "W0001_0001", "W0001_0002", "W0001_0003", "W0001_0004", "W0001_0006", "W0001_0007", "W0001_0009",
    ]
    by_name = {d.name: d for d in data}
    for d in masked:
        twin = f"W0003_{GDXRAY_TWINS[int(d.name[-4:])]:04d}"
        assert by_name[twin].group == d.group
    first = masked[0]
    assert first.image.dtype == np.float32 and 0 <= first.image.min() < first.image.max() <= 1
    assert first.mask.shape == first.image.shape and 0 < first.mask.mean() < 0.5
    assert first.pixel_size_um == pytest.approx(40.3)
