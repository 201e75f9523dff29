"""Reading radiographs (TIFF, PNG, DICONDE/DICOM) into float32 [0, 1], and writing PNG.

Normalisation rule (one per stored type; the value stored is divided by the full scale)
-------------------------------------------------------------------------------------
- ``uint8``: divided by 255.
- ``uint16`` (also ``int16`` without negative values): divided by ``2**bits - 1`` where ``bits``
  is the number of bits the file declares as used (DICOM ``BitsStored``, PNG ``sBIT``, TIFF
  ``MaxSampleValue``) when it declares fewer than 16; otherwise the smallest of 10, 12, 14 and
  16 bits that holds the image's maximum. 12-bit data in a 16-bit container is therefore divided
  by 4095, never squeezed to 8 bits and never left in [0, 0.0625].
- floating point: used as stored when all values lie in [0, 1]; any other range is refused
  (the file does not say what its full scale is).
- other types (signed with negative values, 32-bit integers, bool) are refused.

The division is done in float32 (exact for every 16-bit level, correctly rounded), so 16-bit
data keeps all of its levels. Pixel size (micrometres) comes from the file where it says (TIFF resolution tags with
a centimetre or inch unit, DICOM ``PixelSpacing`` / ``ImagerPixelSpacing``, PNG ``pHYs`` in
metres), else from the caller, else it is ``None``.
"""

from __future__ import annotations

import hashlib
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import ImageLoadError, WeldreviewWarning
from core.model import PATCH

MIN_SIDE = PATCH  # an image must hold at least one 192 x 192 patch
AUTO_BITS = (10, 12, 14, 16)
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".dcm", ".dicom", ".dic")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights for RGB -> grey


@dataclass
class Radiograph:
    """A radiograph as read from a file.

    Attributes
    ----------
    image : ndarray of shape (M, N), float32
        The grey values in [0, 1] after the module's normalisation rule.
    raw : ndarray of shape (M, N)
        The stored values (uint8, uint16 or float), after conversion to grey if the file was colour.
    bit_depth : int
        Bits of full scale used for the normalisation (8, 10, 12, 14, 16; 32 for float data).
    pixel_size_um : float or None
        Pixel size in micrometres (from the file, else the caller), or None when unknown.
    path : Path
    sha256 : str
        Hash of the file's bytes.
    warnings : list of str
        What was changed on the way (also issued as WeldreviewWarning).
    """

    image: np.ndarray
    raw: np.ndarray
    bit_depth: int
    pixel_size_um: float | None
    path: Path
    sha256: str
    warnings: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int]:
        return self.image.shape


def load_radiograph(path, *, pixel_size_um: float | None = None) -> Radiograph:
    """Read a radiograph and normalise it to float32 [0, 1].

    Parameters
    ----------
    path : str or Path
        A TIFF, PNG or DICOM/DICONDE file (the format is told by the file's content).
    pixel_size_um : float, optional
        Pixel size in micrometres to use when the file does not state one.

    Returns
    -------
    Radiograph

    Raises
    ------
    ImageLoadError
        ``"<file>: <reason>"`` for a missing, unreadable, truncated, too small, constant, NaN/Inf
        or otherwise unusable image.
    """
    path = Path(path)
    try:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            data = f.read(132)  # enough for every magic number
            digest.update(data)
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
    except OSError as exc:
        raise ImageLoadError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    if not data:
        raise ImageLoadError(f"{path}: the file is empty")
    notes: list[str] = []
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        raw, bits, size = _read_tiff(path, notes)
    elif data[:8] == _PNG_MAGIC:
        raw, bits, size = _read_png(path, path.read_bytes())
    elif data[128:132] == b"DICM" or path.suffix.lower() in (".dcm", ".dicom", ".dic"):
        raw, bits, size = _read_dicom(path, notes)
    else:
        raise ImageLoadError(f"{path}: not an image (neither TIFF, PNG nor DICOM/DICONDE)")
    raw = _to_grey(path, raw, notes)
    _check_shape(path, raw)
    image, bit_depth = normalise(raw, bits_stored=bits, name=str(path))
    if size is None and pixel_size_um is not None:
        size = float(pixel_size_um)
    for note in notes:
        warnings.warn(f"{path}: {note}", WeldreviewWarning, stacklevel=2)
    return Radiograph(
        image=image, raw=raw, bit_depth=bit_depth, pixel_size_um=size, path=path,
        sha256=digest.hexdigest(), warnings=notes,
    )


def normalise(raw: np.ndarray, *, bits_stored: int | None = None, name: str = "image"):
    """Apply the module's normalisation rule; return ``(image float32 [0, 1], bit_depth)``.

    Raises ImageLoadError naming ``name`` for NaN/Inf, float data outside [0, 1], constant images
    and unsupported types.
    """
    kind = raw.dtype.kind
    if kind == "f":
        finite = np.isfinite(raw)
        if not finite.all():
            bad = raw.size - int(np.count_nonzero(finite))
            raise ImageLoadError(f"{name}: floating-point image holds {bad} NaN or Inf values")
        lo, hi = float(raw.min()), float(raw.max())
        if lo < 0.0 or hi > 1.0:
            raise ImageLoadError(
                f"{name}: floating-point values span [{lo:g}, {hi:g}], not [0, 1]; "
                "store the radiograph as 8/16-bit integers or scale it to [0, 1]"
            )
        _check_constant(name, lo, hi)
        return raw.astype(np.float32, copy=False), 32
    if kind not in "ui" or raw.dtype.itemsize > 2:
        raise ImageLoadError(f"{name}: unsupported pixel type {raw.dtype} (need 8/16-bit or float)")
    lo, hi = int(raw.min()), int(raw.max())
    if lo < 0:
        raise ImageLoadError(f"{name}: signed pixel values below zero ({lo}) are not supported")
    _check_constant(name, lo, hi)
    if raw.dtype.itemsize == 1:
        bits = 8
    elif bits_stored is not None and 8 <= bits_stored < 16 and hi < 2**bits_stored:
        bits = int(bits_stored)
    else:
        bits = next(b for b in AUTO_BITS if hi < 2**b)
    image = np.divide(raw, np.float32(2**bits - 1), dtype=np.float32)
    return image, bits


def _check_constant(name, lo, hi) -> None:
    if lo == hi:
        raise ImageLoadError(f"{name}: constant image (every pixel is {lo:g}), nothing to inspect")


def _check_shape(path: Path, raw: np.ndarray) -> None:
    if raw.ndim != 2:
        raise ImageLoadError(f"{path}: expected a 2-D grey image, got an array of shape {raw.shape}")
    rows, cols = raw.shape
    if raw.size == 0:
        raise ImageLoadError(f"{path}: empty image ({rows} x {cols} px)")
    if raw.size == 1:
        raise ImageLoadError(f"{path}: a 1-pixel image cannot be inspected")
    if min(rows, cols) < MIN_SIDE:
        raise ImageLoadError(
            f"{path}: image is {rows} x {cols} px, smaller than {MIN_SIDE} px on a side"
        )


def _to_grey(path: Path, raw: np.ndarray, notes: list[str]) -> np.ndarray:
    """Colour (M, N, 3 or 4) -> grey of the same type, with a note; grey passes through."""
    if raw.ndim == 3 and raw.shape[2] == 1:
        return raw[:, :, 0]
    if raw.ndim == 3 and raw.shape[2] in (2, 3, 4) and min(raw.shape[:2]) > 1:
        ch = raw.shape[2]
        if ch == 2:  # grey + alpha
            grey = raw[:, :, 0]
            notes.append("grey + alpha image: alpha dropped")
            return np.ascontiguousarray(grey)
        rgb = raw[:, :, :3].astype(np.float64)
        if raw.dtype.kind == "f" and not np.isfinite(rgb).all():
            raise ImageLoadError(f"{path}: floating-point image holds NaN or Inf values")
        grey = rgb @ np.asarray(_LUMA)
        if raw.dtype.kind in "ui":
            grey = np.rint(grey)
        kind = "RGBA" if ch == 4 else "RGB"
        notes.append(f"{kind} image converted to grey (0.299 R + 0.587 G + 0.114 B)")
        return grey.astype(raw.dtype)
    return raw


# --- TIFF --------------------------------------------------------------------------------------

def _read_tiff(path: Path, notes: list[str]):
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            pages = len(tif.pages)
            if pages == 0:
                raise ImageLoadError(f"{path}: TIFF file holds no image")
            page = tif.pages[0]
            raw = page.asarray()
            if pages > 1:
                notes.append(f"multi-page TIFF ({pages} pages): only the first page is used")
            tags = page.tags
            bits = None
            if "MaxSampleValue" in tags:
                max_value = np.max(np.atleast_1d(tags["MaxSampleValue"].value))
                bits = int(max_value).bit_length() if max_value > 0 else None
            size = _tiff_pixel_size(tags)
    except ImageLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - tifffile raises many kinds on bad files
        raise ImageLoadError(f"{path}: unreadable or truncated TIFF ({_short(exc)})") from None
    return np.asarray(raw), bits, size


def _tiff_pixel_size(tags) -> float | None:
    if "XResolution" not in tags:
        return None
    unit = tags["ResolutionUnit"].value if "ResolutionUnit" in tags else 2
    unit = int(unit)
    num, den = tags["XResolution"].value
    if not num or not den:
        return None
    per_unit = num / den  # pixels per unit
    um_per_unit = {2: 25400.0, 3: 10000.0}.get(unit)  # inch, centimetre; 1 = no unit
    if um_per_unit is None:
        return None
    size = um_per_unit / per_unit
    # 72 or 96 dpi is what software writes when nobody measured anything
    if unit == 2 and round(per_unit, 3) in (72.0, 96.0):
        return None
    return float(size)


# --- PNG ---------------------------------------------------------------------------------------

def _png_chunks(data: bytes):
    pos = 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        yield kind, data[pos + 8:pos + 8 + length]
        pos += 12 + length


def _read_png(path: Path, data: bytes):
    from PIL import Image

    bits = None
    size = None
    has_iend = False
    for kind, body in _png_chunks(data):
        if kind == b"sBIT" and body:
            bits = int(body[0])
        elif kind == b"pHYs" and len(body) == 9:
            ppx, _ppy, unit = struct.unpack(">IIB", body)
            if unit == 1 and ppx > 0:  # pixels per metre
                size = 1e6 / ppx
        elif kind == b"IEND":
            has_iend = True
    if not has_iend:
        raise ImageLoadError(f"{path}: truncated PNG (no end chunk)")
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L"):
                raw = np.asarray(im, dtype=np.uint16)
            elif mode == "I":
                raw = np.asarray(im)
                if raw.min() >= 0 and raw.max() < 2**16:
                    raw = raw.astype(np.uint16)
            elif mode == "P":
                raw = np.asarray(im.convert("RGBA" if "transparency" in im.info else "RGB"))
            elif mode == "1":
                raw = np.asarray(im.convert("L"))
            else:
                raw = np.asarray(im)
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds on bad files
        raise ImageLoadError(f"{path}: unreadable or truncated PNG ({_short(exc)})") from None
    return np.array(raw), bits, size


# --- DICOM / DICONDE ---------------------------------------------------------------------------

def _read_dicom(path: Path, notes: list[str]):
    try:
        import pydicom
    except ImportError:
        raise ImageLoadError(
            f"{path}: reading DICOM/DICONDE needs the optional package pydicom "
            "(pip install 'weldreview[dicom]')"
        ) from None
    try:
        ds = pydicom.dcmread(path)
        raw = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on bad files
        raise ImageLoadError(f"{path}: unreadable or truncated DICOM ({_short(exc)})") from None
    if raw.ndim == 3 and getattr(ds, "SamplesPerPixel", 1) == 1:
        notes.append(f"multi-frame DICOM ({raw.shape[0]} frames): only the first frame is used")
        raw = raw[0]
    bits = int(ds.BitsStored) if "BitsStored" in ds else None
    size = None
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        if key in ds and ds[key].value:
            size = float(ds[key].value[1]) * 1000.0  # mm -> um, column spacing
            break
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        raise ImageLoadError(
            f"{path}: MONOCHROME1 (inverted) DICOM is not supported; export as MONOCHROME2"
        )
    return np.asarray(raw), bits, size


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:160]


# --- writing -----------------------------------------------------------------------------------

def write_png(path, image: np.ndarray) -> Path:
    """Write an (M, N) grey or (M, N, 3) RGB uint8/uint16 array as PNG (numpy + zlib only)."""
    path = Path(path)
    a = np.ascontiguousarray(image)
    if a.dtype not in (np.uint8, np.uint16) or a.ndim not in (2, 3):
        raise ValueError("write_png needs a 2-D grey or (M, N, 3) uint8/uint16 array")
    colour = 2 if a.ndim == 3 else 0
    depth = 8 * a.dtype.itemsize
    rows = a.astype(a.dtype.newbyteorder(">"), copy=False).reshape(a.shape[0], -1).view(np.uint8)
    raw = np.concatenate([np.zeros((a.shape[0], 1), np.uint8), rows], axis=1).tobytes()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body) & 0xFFFFFFFF
        )

    header = struct.pack(">IIBBBBB", a.shape[1], a.shape[0], depth, colour, 0, 0, 0)
    path.write_bytes(
        _PNG_MAGIC + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )
    return path
