"""Model files: round trip, metadata, and a clear ModelFileError for every broken file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.errors import ModelFileError
from core.model import build_autoencoder
from core.modelfile import ModelBundle, file_sha256, load_model, save_model, sidecar_path, update_metadata

META = {"training": {"images": ["a.png"], "perturbations": ["SNI"], "steps": 0, "seed": 3, "parent": None}}


@pytest.fixture(scope="module")
def small_model():
    return build_autoencoder(filters=(2, 3), seed=3)


@pytest.fixture
def saved(tmp_path, small_model):
    return save_model(small_model, tmp_path / "m.keras", metadata=META)


def test_round_trip_gives_identical_outputs_and_full_metadata(saved, small_model):
    bundle = load_model(saved)
    assert isinstance(bundle, ModelBundle) and bundle.path == saved
    x = np.random.default_rng(0).random((2, 192, 192, 1), dtype=np.float32)
    for a, b in zip(small_model(x, training=False), bundle.model(x, training=False)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    meta = json.loads(sidecar_path(saved).read_text())
    assert meta["architecture"]["filters"] == [2, 3]
    assert meta["architecture"]["patch"] == 192 and meta["architecture"]["aperture"] == 156
    assert meta["kernel_size"] == 9
    assert meta["training"]["seed"] == 3 and meta["training"]["perturbations"] == ["SNI"]
    assert meta["versions"]["tensorflow"] and meta["versions"]["keras"] and meta["versions"]["numpy"]
    assert meta["created"]
    assert bundle.sha256 == file_sha256(saved) == meta["sha256"]
    assert bundle.name == "m"
    assert bundle.thresholds is None


def test_mixed_precision_model_is_saved_as_float32(tmp_path):
    m = build_autoencoder(filters=(2, 2), seed=0, dtype_policy="mixed_bfloat16")
    bundle = load_model(save_model(m, tmp_path / "bf.keras", metadata={}))
    assert all(layer.compute_dtype == "float32" for layer in bundle.model.layers)


def test_never_overwrites_unless_asked(saved, small_model):
    with pytest.raises(ModelFileError, match="exists"):
        save_model(small_model, saved, metadata=META)
    save_model(small_model, saved, metadata={"name": "again"}, overwrite=True)
    assert load_model(saved).name == "again"


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelFileError, match=r"nothing\.keras: model file not found"):
        load_model(tmp_path / "nothing.keras")


def test_missing_sidecar(saved):
    sidecar_path(saved).unlink()
    with pytest.raises(ModelFileError, match=r"m\.json: metadata file missing"):
        load_model(saved)


def test_sidecar_not_json(saved):
    sidecar_path(saved).write_text("{not json")
    with pytest.raises(ModelFileError, match=r"m\.json: metadata is not valid JSON"):
        load_model(saved)


def test_altered_file_fails_hash_check(saved):
    data = bytearray(saved.read_bytes())
    data[len(data) // 2] ^= 0xFF
    saved.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"m\.keras: content hash .* does not match"):
        load_model(saved)


def test_corrupt_file_with_matching_hash(saved):
    saved.write_bytes(b"this is not a zip archive")
    update_metadata(saved, name="m")  # keeps the old sha256: patch it by hand as a forger would
    meta = json.loads(sidecar_path(saved).read_text())
    meta["sha256"] = file_sha256(saved)
    sidecar_path(saved).write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match=r"m\.keras: cannot be read as a Keras model"):
        load_model(saved)


def test_wrong_architecture(tmp_path, small_model):
    import keras

    other = keras.Sequential([keras.Input((64, 64, 1)), keras.layers.Conv2D(1, 3)])
    path = tmp_path / "other.keras"
    with pytest.raises(ModelFileError, match="not a weldreview autoencoder"):
        save_model(other, path, metadata={})
    # a file written by hand (plain Keras) with a forged sidecar
    other.save(path)
    good = save_model(small_model, tmp_path / "good.keras", metadata={})
    meta = json.loads(sidecar_path(good).read_text())
    meta["sha256"] = file_sha256(path)
    sidecar_path(path).write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match=r"other\.keras: not a weldreview autoencoder"):
        load_model(path)
    # the right layers but another patch size
    whole = build_autoencoder(input_shape=(96, 96, 1), filters=(2, 3), seed=0)
    with pytest.raises(ModelFileError, match="wrong architecture"):
        save_model(whole, tmp_path / "w.keras", metadata={})


def test_filters_differing_from_metadata(saved):
    meta = json.loads(sidecar_path(saved).read_text())
    meta["architecture"]["filters"] = [18, 24]
    sidecar_path(saved).write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match=r"filters \[2, 3\] differ"):
        load_model(saved)


def test_update_metadata_stores_thresholds(saved):
    from core.calibration import Thresholds

    th = Thresholds(mean=0.01, std=0.02, fpr_target=0.001, n_okay=3000, fpr_achieved=0.0007,
                    fpr_ci=(0.0001, 0.002))
    update_metadata(saved, thresholds=th)
    bundle = load_model(saved)  # the .keras file and its hash are unchanged
    assert bundle.thresholds == th
    with pytest.raises(ValueError, match="sha256"):
        update_metadata(saved, sha256="0" * 64)


def test_save_requires_keras_suffix(tmp_path, small_model):
    with pytest.raises(ValueError, match=r"\.keras"):
        save_model(small_model, tmp_path / "m.h5", metadata={})
