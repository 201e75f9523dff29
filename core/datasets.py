"""Labelled radiograph datasets: the GDXray weld layout and plain image + mask pairs.

Two folder layouts are recognised by :func:`load_dataset`:

GDXray layout
    ``W0001/W0001_XXXX.png`` radiographs with the pixel masks ``W0002/W0002_XXXX.png`` (same
    number, same size, 1 = defect), and optionally ``W0003/W0003_XXXX.png`` radiographs without
    masks. W0001 images are crops of W0003 radiographs (the GDXray "_M" images); a W0001 image and
    its W0003 twin get the same ``group`` so that no split puts them on different sides.
Plain pairs
    ``<stem>.<ext>`` with an optional ``<stem>_mask.<ext>`` (the extensions may differ, e.g. a
    16-bit TIFF with a PNG mask, as :func:`core.synthetic.write_radiograph` writes them). Each
    radiograph is its own group.

Radiographs are read with :func:`core.imageio.load_radiograph` (its documented bit-depth rule);
masks with tifffile / scikit-image, any non-zero value marking a defect pixel.

Pixels are loaded lazily, on first access of ``.image`` / ``.mask``, and then kept: a GDXray
folder with all W0003 radiographs is about 1 GB in float32.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from core.errors import ImageLoadError
from core.imageio import IMAGE_SUFFIXES, load_radiograph

MASK_SUFFIX = "_mask"

# GDXray: W0001 number -> W0003 number of the radiograph it was cropped from (GDXray README;
# 5, 8 and 10 are withheld from the shared copy but kept here so a full copy groups correctly).
GDXRAY_TWINS = {1: 68, 2: 11, 3: 30, 4: 36, 5: 39, 6: 42, 7: 12, 8: 41, 9: 6, 10: 7}
# GDXray: the W0003 round-robin films whose every 1 cm section reads "No indication" in
# W0003/real-values.xls (RRT-202R, RRT-210R). Every other W0003 film has flaws listed or was not
# assessed, and none has a pixel mask (docs/benchmark/notes.md, item 18).
GDXRAY_NO_INDICATION = (15, 23)
_GDX_NAME = re.compile(r"^(W000[123])_(\d{4})$")


@dataclass(eq=False)
class LabelledRadiograph:
    """One radiograph of a dataset, with its defect mask when there is one.

    Attributes
    ----------
    name : str
        File stem, unique in the dataset (e.g. ``"W0001_0003"``).
    path : Path
        The radiograph file.
    mask_path : Path or None
        The defect mask file (1 = defect pixel), or None when the radiograph has no mask.
    group : str
        Radiographs of the same physical exposure share a group; splits never separate a group.
    pixel_size_um : float or None
        From the file when it states one (after loading), else the layout's (GDXray: 40.3).
    flaws_unmasked : bool
        Known to hold flaws that no mask marks (GDXray's W0003 round-robin films, except those
        with no indication, ``GDXRAY_NO_INDICATION``): not okay weld, whatever its lack of a mask
        suggests.
    """

    name: str
    path: Path
    mask_path: Path | None
    group: str
    pixel_size_um: float | None = field(default=None)
    flaws_unmasked: bool = False

    @cached_property
    def image(self) -> np.ndarray:
        """The radiograph, float32 in [0, 1], shape (M, N); loading also fills ``pixel_size_um``."""
        radiograph = load_radiograph(self.path, pixel_size_um=self.pixel_size_um)
        self.pixel_size_um = radiograph.pixel_size_um
        return radiograph.image

    @cached_property
    def mask(self) -> np.ndarray | None:
        """The defect mask, bool of the image's shape, or None."""
        if self.mask_path is None:
            return None
        mask = _load_mask(self.mask_path)
        if mask.shape != self.image.shape:
            raise ImageLoadError(
                f"{self.mask_path}: mask shape {mask.shape} differs from radiograph {self.path.name} "
                f"{self.image.shape}"
            )
        return mask


def _read_raw(path: Path) -> np.ndarray:
    """The stored array of a mask file (PNG, TIFF, BMP)."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            return tifffile.imread(path)
        from skimage import io

        return io.imread(path)
    except FileNotFoundError:
        raise ImageLoadError(f"{path}: file not found") from None
    except Exception as exc:  # any decoder failure is a load error for the user
        raise ImageLoadError(f"{path}: cannot be read ({exc})") from None


def _load_mask(path: Path) -> np.ndarray:
    raw = _read_raw(path)
    if raw.ndim == 3:  # a mask saved as RGB(A): any non-zero colour channel marks a defect
        raw = raw[..., :3].max(axis=-1)
    if raw.ndim != 2:
        raise ImageLoadError(f"{path}: expected a 2-D mask, got shape {raw.shape}")
    return raw > 0


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _is_gdxray(folder: Path) -> bool:
    return (folder / "W0001").is_dir() and (folder / "W0002").is_dir()


def _gdxray_number(path: Path) -> int | None:
    """The number of a GDXray file name (``W0001_0004`` -> 4), None for any other name."""
    return int(path.stem.split("_")[-1]) if _GDX_NAME.match(path.stem) else None


def _load_gdxray(folder: Path, include_unmasked: bool) -> list[LabelledRadiograph]:
    items = []
    masks = {p.stem: p for p in _images(folder / "W0002")}
    for path in _images(folder / "W0001"):
        number = _gdxray_number(path)
        mask = masks.get(f"W0002_{number:04d}") if number is not None else None
        if mask is None:
            raise ImageLoadError(f"{path}: no mask W0002/W0002_{path.stem[-4:]}{path.suffix} beside it")
        twin = GDXRAY_TWINS.get(number)
        group = f"W0003_{twin:04d}" if twin else path.stem
        items.append(LabelledRadiograph(path.stem, path, mask, group, 40.3))
    if include_unmasked and (folder / "W0003").is_dir():
        for path in _images(folder / "W0003"):
            items.append(LabelledRadiograph(path.stem, path, None, path.stem, 40.3,
                                            flaws_unmasked=_gdxray_number(path) not in GDXRAY_NO_INDICATION))
    return items


def _load_pairs(folder: Path) -> list[LabelledRadiograph]:
    files = _images(folder)
    masks = {p.stem[: -len(MASK_SUFFIX)]: p for p in files if p.stem.endswith(MASK_SUFFIX)}
    items, seen = [], set()
    for path in files:
        if path.stem.endswith(MASK_SUFFIX):
            continue
        if path.stem in seen:
            raise ImageLoadError(f"{path}: two radiographs share the name {path.stem!r}")
        seen.add(path.stem)
        items.append(LabelledRadiograph(path.stem, path, masks.get(path.stem), path.stem))
    orphans = sorted(set(masks) - seen)
    if orphans:
        raise ImageLoadError(f"{masks[orphans[0]]}: mask without a radiograph named {orphans[0]!r}")
    return items


def load_dataset(path, *, include_unmasked: bool = True) -> list[LabelledRadiograph]:
    """List the labelled radiographs of a folder (GDXray layout or plain image + mask pairs).

    Parameters
    ----------
    path : str or Path
        The folder.
    include_unmasked : bool
        Also list radiographs without a mask (GDXray W0003, or plain images without a
        ``_mask`` file). They carry ``mask is None``; do not take okay patches from them unless
        they are known to be defect-free.

    Returns
    -------
    dataset : list of LabelledRadiograph
        Sorted by name; pixels load on first access.

    Raises
    ------
    ImageLoadError
        The folder is missing or holds no radiographs, or a mask has no radiograph.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ImageLoadError(f"{folder}: not a folder")
    items = _load_gdxray(folder, include_unmasked) if _is_gdxray(folder) else _load_pairs(folder)
    if not include_unmasked:
        items = [it for it in items if it.mask_path is not None]
    if not items:
        raise ImageLoadError(f"{folder}: no radiographs found ({', '.join(IMAGE_SUFFIXES)})")
    return sorted(items, key=lambda it: it.name)


def split_by_image(dataset, *, test_names=None, test_fraction=None, seed=0):
    """Split a dataset at radiograph level: whole groups go to train or to test, never both.

    Parameters
    ----------
    dataset : list of LabelledRadiograph
    test_names : iterable of str, optional
        Radiographs for the test side; each takes its whole group along (a W0001 image takes its
        W0003 twin).
    test_fraction : float, optional
        Instead of names: put a random ``test_fraction`` of the groups (at least one) into test.
    seed : int
        Seed of the random group choice (``test_fraction`` only).

    Returns
    -------
    train, test : list of LabelledRadiograph
    """
    if (test_names is None) == (test_fraction is None):
        raise ValueError("give exactly one of test_names or test_fraction")
    groups = sorted({it.group for it in dataset})
    if test_names is not None:
        test_names = set(test_names)
        by_name = {it.name: it.group for it in dataset}
        unknown = sorted(test_names - set(by_name))
        if unknown:
            raise ValueError(f"test_names not in the dataset: {', '.join(unknown)}")
        test_groups = {by_name[name] for name in test_names}
    else:
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
        if len(groups) < 2:
            raise ValueError("a random split needs at least two groups of radiographs")
        k = min(max(1, round(test_fraction * len(groups))), len(groups) - 1)
        rng = np.random.default_rng(seed)
        test_groups = set(rng.choice(groups, size=k, replace=False).tolist())
    train = [it for it in dataset if it.group not in test_groups]
    test = [it for it in dataset if it.group in test_groups]
    return train, test
