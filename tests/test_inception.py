"""FID InceptionV3 port against torch-fidelity's, the pickle-free .pth reader, and the TF1 bilinear resize.

The reference is torch-fidelity 0.3.0's FeatureExtractorInceptionV3 (CPU torch), given random
weights of exactly its keys and shapes through its local weights-path argument. Those tests skip
where torch or torch-fidelity is missing; the rest need neither.
"""
import importlib
import importlib.util
import os
import pickle
import sys
import types
import zipfile
from unittest import mock

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REFERENCE_INSTALL, import_torch
from einops import rearrange

from train.metrics import extractors, inception
from zoo import pretrained, torch_weights

#: (height, width, channels, count) of the uint8 test images: grey upscaled, RGB upscaled, identity, non-square.
IMAGE_SETS = {"grey32": (32, 32, 1, 2), "rgb64": (64, 64, 3, 3), "rgb299": (299, 299, 3, 2), "rgb48x80": (48, 80, 3, 2)}
BATCH = 2
#: float32 port vs float32 reference, compared in float64 as |ours - ref| <= ATOL + RTOL |ref|. Measured on CPU:
#: pool3 max abs 3.8e-6 (|ref| up to 11), logits 1.6e-5 (|ref| up to 25), probs 2.0e-6.
ATOL, RTOL = 1e-4, 1e-4


# ---------------------------------------------------------------- TF1 bilinear resize


def _resize_reference(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """TF1 resize_bilinear(align_corners=False) from its formula, pixel by pixel in float64."""
    n, h, w, c = x.shape
    out = np.zeros((n, out_h, out_w, c))
    for i in range(out_h):
        sy = i * h / out_h
        y0 = int(np.floor(sy))
        y1, fy = min(y0 + 1, h - 1), sy - y0
        for j in range(out_w):
            sx = j * w / out_w
            x0 = int(np.floor(sx))
            x1, fx = min(x0 + 1, w - 1), sx - x0
            top = x[:, y0, x0] * (1 - fx) + x[:, y0, x1] * fx
            bottom = x[:, y1, x0] * (1 - fx) + x[:, y1, x1] * fx
            out[:, i, j] = top * (1 - fy) + bottom * fy
    return out


@pytest.mark.parametrize("in_hw,out_hw", [((3, 5), (7, 4)), ((5, 5), (2, 3)), ((4, 6), (4, 6)), ((2, 3), (9, 11))])
def test_tf1_resize_matches_formula(in_hw, out_hw):
    x = np.random.default_rng(0).uniform(0, 255, (2, *in_hw, 3)).astype(np.float32)
    got = np.asarray(inception.tf1_bilinear_resize(jnp.asarray(x), out_hw), np.float64)
    chex.assert_shape(got, (2, *out_hw, 3))
    np.testing.assert_allclose(got, _resize_reference(x.astype(np.float64), *out_hw), rtol=0, atol=1e-4)


def test_preprocess_range_and_grey():
    grey = np.random.default_rng(1).integers(0, 256, (2, 20, 30, 1), dtype=np.uint8)
    x = np.asarray(inception.preprocess(grey))
    chex.assert_shape(x, (2, 299, 299, 3))
    assert x.dtype == np.float32 and x.min() >= -1 and x.max() < 1
    np.testing.assert_array_equal(x[..., 0], x[..., 2])
    same = np.asarray(inception.preprocess(np.repeat(grey, 3, axis=-1)))
    np.testing.assert_array_equal(x, same)


# ---------------------------------------------------------------- restricted .pth reader


def _global_call(module: str, name: str, arg: str) -> bytes:
    """A protocol-0 pickle that calls module.name(arg) when loaded by an unrestricted unpickler."""
    return f"c{module}\n{name}\n(S'{arg}'\ntR.".encode()


def test_reader_rejects_disallowed_globals(tmp_path):
    marker = tmp_path / "pwned"
    payload = _global_call("os", "system", f"touch {marker}")
    legacy_header = b"".join(pickle.dumps(v, protocol=2) for v in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}))
    files = {"first_pickle.pth": payload, "state_dict_pickle.pth": legacy_header + payload}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with zipfile.ZipFile(tmp_path / "zip_format.pth", "w") as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/version", "3\n")
    for name in [*files, "zip_format.pth"]:
        with pytest.raises(torch_weights.UnsafePickleError, match=r"refusing to load global os\.system"):
            torch_weights.load_state_dict(tmp_path / name)
    (tmp_path / "eval.pth").write_bytes(legacy_header + _global_call("builtins", "eval", "1"))
    with pytest.raises(torch_weights.UnsafePickleError, match=r"builtins\.eval"):
        torch_weights.load_state_dict(tmp_path / "eval.pth")
    assert not marker.exists()


def test_reader_rejects_non_torch_file(tmp_path):
    (tmp_path / "x.pth").write_bytes(pickle.dumps({"a": 1}, protocol=2) * 4)
    with pytest.raises(ValueError, match="not a PyTorch file"):
        torch_weights.load_state_dict(tmp_path / "x.pth")


# ---------------------------------------------------------------- weights resolution and conversion


def test_missing_weights_names_download(tmp_path, monkeypatch):
    monkeypatch.delenv(inception.WEIGHTS_ENV, raising=False)
    with pytest.raises(FileNotFoundError) as err:
        extractors.get_extractor("inception_v3_fid", cache=tmp_path)
    message = str(err.value)
    for needed in (inception.WEIGHTS_URL, str(tmp_path / inception.WEIGHTS_FILENAME), inception.WEIGHTS_ENV):
        assert needed in message
    monkeypatch.setenv(inception.WEIGHTS_ENV, str(tmp_path / "elsewhere.pth"))
    with pytest.raises(FileNotFoundError, match="elsewhere.pth"):
        inception.fid_inception_extractor(None, tmp_path)


def _zero_state_dict() -> dict[str, np.ndarray]:
    """A state dict of the port's keys and torch-layout shapes (zeros), as a converter input without torch."""
    return {inception._torch_name(p): np.zeros(inception._torch_shape(s), np.float32)
            for p, s in inception.variable_shapes().items()}


def test_convert_checks_keys_and_shapes():
    state = _zero_state_dict()
    variables = inception.convert_state_dict({**state, "fc.num_batches_tracked": np.zeros((), np.int64)})
    init = jax.eval_shape(lambda: inception.FIDInceptionV3().init(jax.random.key(0), jnp.zeros((1, 75, 75, 3))))
    chex.assert_trees_all_equal_shapes(variables, init)
    chex.assert_shape(variables["params"]["Conv2d_1a_3x3"]["conv"]["kernel"], (3, 3, 3, 32))
    chex.assert_shape(variables["params"]["fc"]["kernel"], (2048, 1008))
    assert len(state) == 472  # 94 conv + 94 x 4 BN tensors + fc weight and bias, as in pytorch-fid's file

    broken = dict(state, **{"AuxLogits.fc.weight": np.zeros((1, 1)), "fc.weight": np.zeros((2048, 1008))})
    del broken["Mixed_7c.branch_pool.bn.running_var"]
    with pytest.raises(ValueError) as err:
        inception.convert_state_dict(broken)
    for needed in ("missing: Mixed_7c.branch_pool.bn.running_var", "unexpected: AuxLogits.fc.weight",
                   "shape mismatch: fc.weight is (2048, 1008), expected (1008, 2048)"):
        assert needed in str(err.value)


def test_forward_shapes():
    variables = inception.convert_state_dict(_zero_state_dict())
    for shape in [(3, 32, 32, 1), (2, 299, 299, 3)]:
        features, logits = jax.eval_shape(inception.features_and_logits, variables,
                                          jax.ShapeDtypeStruct(shape, jnp.uint8))
        chex.assert_shape(features, (shape[0], 2048))
        chex.assert_shape(logits, (shape[0], 1008))


# ---------------------------------------------------------------- against torch-fidelity


def _torch_fidelity_inception() -> types.ModuleType:
    """torch_fidelity.feature_extractor_inceptionv3, loaded without running the package's __init__.

    torch_fidelity/__init__.py imports registry -> datasets -> torchvision, which the reference does not
    need and the test environment does not install, so the package is stood in by a bare module with
    the real __path__ while its submodule loads, and sys.modules is restored afterwards.
    """
    if "torch_fidelity.feature_extractor_inceptionv3" in sys.modules:
        return sys.modules["torch_fidelity.feature_extractor_inceptionv3"]
    spec = importlib.util.find_spec("torch_fidelity")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"torch-fidelity is not installed (the independent reference): {REFERENCE_INSTALL}")
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] == "torch_fidelity"}
    package = types.ModuleType("torch_fidelity")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["torch_fidelity"] = package
    try:
        return importlib.import_module("torch_fidelity.feature_extractor_inceptionv3")
    finally:
        for key in [k for k in sys.modules if k.split(".")[0] == "torch_fidelity"]:
            del sys.modules[key]
        sys.modules.update(saved)


def _random_weights(template: dict, torch) -> dict:
    """Random values for torch-fidelity's state dict, in place: He-scaled convs and positive-variance BN keep O(1) activations."""
    rng = np.random.default_rng(0)
    for key, tensor in template.items():
        shape = tuple(tensor.shape)
        if key.endswith("num_batches_tracked"):
            continue
        if key.endswith("conv.weight"):
            value = rng.normal(0, np.sqrt(2 / np.prod(shape[1:])), shape)
        elif key.endswith("bn.weight"):
            value = rng.uniform(0.5, 1.5, shape)
        elif key.endswith("running_var"):
            value = rng.uniform(0.5, 2.0, shape)
        elif key.endswith(("bn.bias", "running_mean")):
            value = rng.normal(0, 0.2, shape)
        elif key == "fc.weight":
            value = rng.normal(0, 4 / np.sqrt(shape[1]), shape)
        elif key == "fc.bias":
            value = rng.normal(0, 1, shape)
        else:
            raise AssertionError(f"unexpected torch-fidelity key {key}")
        template[key] = torch.from_numpy(value.astype(np.float32))
    return template


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Random weights saved both ways, torch-fidelity's and our outputs on the same uint8 images."""
    torch = import_torch()
    module = _torch_fidelity_inception()
    cls = module.FeatureExtractorInceptionV3
    with mock.patch.object(module, "load_state_dict_from_url", lambda *a, **k: {}), \
            mock.patch.object(cls, "load_state_dict", lambda self, *a, **k: None):
        state = _random_weights(cls("inception-v3-compat", ["2048"]).state_dict(), torch)
    root = tmp_path_factory.mktemp("inception")
    paths = {"zip": root / "zip.pth", "legacy": root / "legacy.pth"}
    torch.save(state, paths["zip"])
    torch.save(state, paths["legacy"], _use_new_zipfile_serialization=False)

    torch_model = cls("inception-v3-compat", ["2048", "logits"], feature_extractor_weights_path=str(paths["zip"])).eval()
    variables = inception.load_variables(paths["legacy"])
    with mock.patch.dict(os.environ, {inception.SHA256_ENV: pretrained.sha256(paths["legacy"])}):
        extractor = inception.fid_inception_extractor(str(paths["legacy"]), root, batch_size=BATCH)
    rng = np.random.default_rng(2)
    outputs = {}
    for name, (h, w, c, n) in IMAGE_SETS.items():
        images = rng.integers(0, 256, (n, h, w, c), dtype=np.uint8)
        with torch.no_grad():
            rgb = np.repeat(images, 3 // c, axis=-1)
            ref_features, ref_logits = torch_model(torch.from_numpy(rearrange(rgb, "n h w c -> n c h w").copy()))
        features, logits = inception.features_and_logits(variables, images[:BATCH])
        outputs[name] = {
            "ref_features": ref_features.numpy().astype(np.float64), "ref_logits": ref_logits.numpy().astype(np.float64),
            "features": np.asarray(features, np.float64), "logits": np.asarray(logits, np.float64),
            "extractor": extractor(images),
        }
    return {"torch": torch, "state": state, "paths": paths, "outputs": outputs, "extractor": extractor}


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_reader_matches_torch_save(reference, fmt):
    loaded = torch_weights.load_state_dict(reference["paths"][fmt])
    assert list(loaded) == list(reference["state"])
    for key, tensor in reference["state"].items():
        expected = tensor.numpy()
        assert loaded[key].dtype == expected.dtype, key
        np.testing.assert_array_equal(loaded[key], expected, err_msg=key)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_reader_views_parameters_and_dtypes(reference, fmt, tmp_path):
    torch = reference["torch"]
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = {"base": base, "slice": base[1:, ::2], "transposed": base.t(), "param": torch.nn.Parameter(base[2]),
             "half": base.half(), "long": torch.tensor(7), "bool": base > 5, "empty": torch.zeros(0, 3),
             "nested": {"double": base.double()[:, 1]}}
    path = tmp_path / "small.pth"
    torch.save(state, path, _use_new_zipfile_serialization=fmt == "zip")
    loaded = torch_weights.load_state_dict(path)
    flat = {**{k: v for k, v in state.items() if k != "nested"}, "nested.double": state["nested"]["double"]}
    assert set(loaded) == set(flat)
    for key, tensor in flat.items():
        expected = tensor.detach().numpy()
        assert loaded[key].dtype == expected.dtype and loaded[key].shape == expected.shape, key
        np.testing.assert_array_equal(loaded[key], expected, err_msg=key)


def _max_diffs(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    """Max abs difference, and max relative difference over entries with |want| > 1e-3."""
    diff = np.abs(got - want)
    big = np.abs(want) > 1e-3
    return float(diff.max()), float((diff[big] / np.abs(want[big])).max())


@pytest.mark.parametrize("name", list(IMAGE_SETS))
def test_features_and_logits_match_torch_fidelity(reference, name):
    out = reference["outputs"][name]
    n = IMAGE_SETS[name][3]
    chex.assert_shape(out["features"], (BATCH, 2048))
    chex.assert_shape(out["logits"], (BATCH, 1008))
    assert 0.05 < np.abs(out["ref_features"]).mean() < 20, "random weights should keep pool3 O(1)"
    np.testing.assert_allclose(out["features"], out["ref_features"][:BATCH], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(out["logits"], out["ref_logits"][:BATCH], rtol=RTOL, atol=ATOL)

    ext = out["extractor"]
    chex.assert_shape(ext["features"], (n, 2048))
    chex.assert_shape(ext["probs"], (n, 1008))
    assert ext["features"].dtype == np.float32 and ext["probs"].dtype == np.float32
    logits = out["ref_logits"]
    ref_probs = np.exp(logits - logits.max(-1, keepdims=True))
    ref_probs /= ref_probs.sum(-1, keepdims=True)
    np.testing.assert_allclose(ext["features"].astype(np.float64), out["ref_features"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(ext["probs"].astype(np.float64), ref_probs, rtol=RTOL, atol=1e-6)
    np.testing.assert_allclose(ext["probs"].sum(-1), 1.0, atol=1e-5)


def test_extractor_protocol_names(reference):
    ext = reference["extractor"]
    name = f"inception_v3_fid@{pretrained.sha256(reference['paths']['legacy'])[:12]}"
    assert (ext.name, ext.resize, ext.feature_dim, ext.num_classes) == (name, "tf1_bilinear_299", 2048, 1008)
