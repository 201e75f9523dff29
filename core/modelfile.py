"""Model files: the Keras ``.keras`` patch model plus a JSON sidecar with its metadata.

``save_model`` writes ``NAME.keras`` (the 192 x 192 patch model, float32) and ``NAME.json``:
architecture, kernel size, training provenance, package versions, creation time, the sha256 of the
``.keras`` file and, once calibrated, the thresholds. ``load_model`` checks all of it and raises
core.errors.ModelFileError naming the file when something is missing, corrupt, altered or not the
autoencoder weldreview expects.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from core.errors import ModelFileError
from core.model import APERTURE, LATENT, PATCH

FORMAT = "weldreview-model/1"
KERNEL_SIZE = 9


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON metadata file that belongs to model file ``path``."""
    return Path(path).with_suffix(".json")


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def package_versions() -> dict:
    """Versions of the packages that determine what a model file computes."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("weldreview", "tensorflow", "keras", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def architecture_of(model) -> dict:
    """Architecture fields of the metadata, read from a model built by core.model."""
    from core.model import model_filters, model_gain

    return {
        "name": "lindgren-zach-2022-ood-autoencoder",
        "filters": list(model_filters(model)),
        "gain": model_gain(model),
        "dropout": float(model.get_layer("enc1_dropout").rate),
        "patch": PATCH,
        "aperture": APERTURE,
        "latent": LATENT,
    }


def _jsonable(value):
    if hasattr(value, "to_dict") and callable(value.to_dict):  # e.g. core.calibration.Thresholds
        return _jsonable(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return value


def sidecar_text(data: dict) -> str:
    """The sidecar's JSON text for metadata ``data`` (what :func:`update_metadata` writes)."""
    return json.dumps(_jsonable(data), indent=2, sort_keys=True) + "\n"


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(sidecar_text(data), encoding="utf-8")
    os.replace(tmp, path)


def _check_architecture(model, where: Path) -> None:
    """Raise ModelFileError unless ``model`` maps 192 x 192 patches to 156 x 156 and a 42 x 42 latent."""
    try:
        in_shape = tuple(model.inputs[0].shape[1:])
        outs = [tuple(o.shape[1:]) for o in model.outputs]
        for name in ("enc1_conv1", "enc2_conv1", "enc1_dropout", "latent_conv", "reconstruction"):
            model.get_layer(name)
    except (AttributeError, ValueError, IndexError) as exc:
        raise ModelFileError(f"{where}: not a weldreview autoencoder ({exc})") from None
    expected = [(APERTURE, APERTURE, 1), (LATENT, LATENT, 1)]
    if in_shape != (PATCH, PATCH, 1) or outs != expected:
        raise ModelFileError(
            f"{where}: wrong architecture: input {in_shape}, outputs {outs}; expected input "
            f"{(PATCH, PATCH, 1)} and outputs {expected} (the 192 x 192 patch autoencoder)"
        )


@dataclass
class ModelBundle:
    """A loaded (or freshly trained) model with its metadata.

    Attributes
    ----------
    model : keras.Model
        The 192 x 192 patch autoencoder (outputs ``[reconstruction, latent]``).
    metadata : dict
        The sidecar's contents.
    path : Path or None
        The ``.keras`` file, None for a model not saved.
    """

    model: object
    metadata: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def sha256(self) -> str:
        return self.metadata.get("sha256", "")

    @property
    def name(self) -> str:
        return self.metadata.get("name") or (self.path.stem if self.path else "unsaved model")

    @property
    def thresholds(self):
        """core.calibration.Thresholds stored by calibration, or None when not calibrated."""
        data = self.metadata.get("thresholds")
        if not data:
            return None
        from core.calibration import Thresholds

        return Thresholds.from_dict(data)


def save_model(model, path: str | os.PathLike, *, metadata: dict, overwrite: bool = False) -> Path:
    """Write ``model`` to ``path`` (``.keras``) and its metadata to the ``.json`` beside it.

    Parameters
    ----------
    model : keras.Model
        The 192 x 192 patch autoencoder; trained with mixed precision it is saved as float32.
    path : path-like
        Must end in ``.keras``.
    metadata : dict
        Provenance (``training``: images, perturbations, steps, seed, budget, parent, ...),
        optional ``name`` and ``thresholds``. Architecture, kernel size, package versions,
        creation time and the sha256 are filled in here.
    overwrite : bool
        Replace existing files; otherwise an existing file raises ModelFileError.

    Returns
    -------
    Path
        The ``.keras`` file written.
    """
    from core.model import float32_copy

    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"model files end in .keras, got {path.name!r}; choose e.g. {path.stem}.keras")
    side = sidecar_path(path)
    for p in (path, side):
        if p.exists() and not overwrite:
            raise ModelFileError(f"{p}: exists; choose another name or allow overwriting")
    if any(layer.dtype_policy.name != "float32" for layer in model.layers):
        model = float32_copy(model)
    _check_architecture(model, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)
    meta = dict(metadata)
    meta.update(
        format=FORMAT,
        architecture=architecture_of(model),
        kernel_size=KERNEL_SIZE,
        versions=package_versions(),
        created=meta.get("created") or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        sha256=file_sha256(path),
    )
    meta.setdefault("name", path.stem)
    _write_json(side, meta)
    return path


def read_metadata(path: str | os.PathLike) -> dict:
    """The sidecar of model file ``path``; ModelFileError when missing or unreadable."""
    side = sidecar_path(path)
    if not side.is_file():
        raise ModelFileError(f"{side}: metadata file missing (every .keras model needs its .json beside it)")
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{side}: metadata is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{side}: not weldreview model metadata (format {FORMAT!r} expected)")
    return meta


def load_model(path: str | os.PathLike) -> ModelBundle:
    """Load a model file written by :func:`save_model` and check it.

    Raises
    ------
    ModelFileError
        Naming the file, when the model or its metadata is missing, the file is corrupt, its
        sha256 differs from the metadata's, or it is not the 192 x 192 patch autoencoder.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    meta = read_metadata(path)
    digest = file_sha256(path)
    if meta.get("sha256") != digest:
        raise ModelFileError(
            f"{path}: content hash {digest[:12]}... does not match its metadata "
            f"({str(meta.get('sha256'))[:12]}...); the file was altered or belongs to another model"
        )
    import keras

    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for a corrupt file
        raise ModelFileError(f"{path}: cannot be read as a Keras model ({type(exc).__name__}: {exc})") from None
    _check_architecture(model, path)
    arch = meta.get("architecture", {})
    from core.model import model_filters

    if list(model_filters(model)) != list(arch.get("filters", [])):
        raise ModelFileError(
            f"{path}: filters {list(model_filters(model))} differ from its metadata {arch.get('filters')}"
        )
    return ModelBundle(model=model, metadata=meta, path=path)


def update_metadata(path: str | os.PathLike, **fields) -> dict:
    """Rewrite the sidecar of ``path`` with ``fields`` added or replaced; return the new metadata.

    The model file itself and its sha256 are not touched (e.g. calibration stores ``thresholds``).
    """
    meta = read_metadata(path)
    for key in ("sha256", "format"):
        if key in fields:
            raise ValueError(f"update_metadata cannot change {key!r}")
    meta.update(_jsonable(fields))
    _write_json(sidecar_path(path), meta)
    return meta
