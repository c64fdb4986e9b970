"""Crafted torch files cannot change the reader's state, and downloads and the FID weights are hash-checked first.

The crafted files apply the pickle BUILD opcode to a stand-in the reader hands out for an allowed
global (a storage type, a dtype, a rebuild function, OrderedDict): before the fix a BUILD on the
`FloatStorage` stand-in set its dtype to float16 for the rest of the process, so the next genuine
float32 file decoded as garbage.
"""
import hashlib
import pickle
import struct
import zipfile

import numpy as np
import pytest
from conftest import import_torch

from train.metrics import inception
from zoo import errors, pretrained, torch_weights

LEGACY_HEADER = b"".join(pickle.dumps(v, protocol=2) for v in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}))


def _text(value: str) -> bytes:
    """A BINUNICODE opcode pushing `value`."""
    raw = value.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(raw)) + raw


def _global(module: str, name: str) -> bytes:
    """A GLOBAL opcode pushing what the unpickler's find_class returns for module.name."""
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _build_payload(target: tuple[str, str], key: str, slots: bool) -> bytes:
    """A pickle that BUILDs {key: torch.float16} onto the stand-in for `target` (as setstate or as slot state),
    then returns an empty dict, so a reader that lets it through reports success."""
    state = pickle.EMPTY_DICT + _text(key) + _global("torch", "float16") + pickle.SETITEM
    if slots:
        state = pickle.NONE + state + pickle.TUPLE2
    return (pickle.PROTO + b"\x02" + _global(*target) + state + pickle.BUILD + pickle.POP
            + pickle.EMPTY_DICT + pickle.STOP)


def _write(path, payload: bytes, fmt: str) -> None:
    """`payload` as a state-dict pickle in torch's zip container or its legacy stream."""
    if fmt == "zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("archive/data.pkl", payload)
            zf.writestr("archive/version", "3\n")
    else:
        path.write_bytes(LEGACY_HEADER + payload + pickle.dumps([], protocol=2))


TARGETS = [(("torch", "FloatStorage"), "dtype"), (("torch", "float32"), "dtype"),
           (("torch._utils", "_rebuild_tensor_v2"), "__defaults__"), (("collections", "OrderedDict"), "x")]


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
@pytest.mark.parametrize("slots", [False, True], ids=["setstate", "setattr"])
@pytest.mark.parametrize("target,key", TARGETS, ids=[".".join(t) for t, _ in TARGETS])
def test_build_on_a_stand_in_is_refused_and_leaves_later_loads_exact(tmp_path, fmt, slots, target, key):
    torch = import_torch()
    crafted = tmp_path / "crafted.pth"
    _write(crafted, _build_payload(target, key, slots), fmt)
    with pytest.raises(torch_weights.UnsafePickleError, match="refusing to modify .* BUILD") as refused:
        torch_weights.load_state_dict(crafted)
    assert isinstance(refused.value, errors.WeightsError) and str(crafted) in str(refused.value)

    weights = torch.arange(12, dtype=torch.float32).reshape(3, 4) / 7 + 1e-3
    for legit_fmt in ("zip", "legacy"):
        legit = tmp_path / f"legit_{legit_fmt}.pth"
        torch.save({"w": weights, "half": weights.half()}, legit, _use_new_zipfile_serialization=legit_fmt == "zip")
        loaded = torch_weights.load_state_dict(legit)
        assert loaded["w"].dtype == np.float32 and loaded["half"].dtype == np.float16
        np.testing.assert_array_equal(loaded["w"], weights.numpy())
        np.testing.assert_array_equal(loaded["half"], weights.half().numpy())


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_module_state_dict_with_metadata_still_loads(tmp_path, fmt):
    torch = import_torch()
    torch.manual_seed(0)
    state = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2)).state_dict()
    assert hasattr(state, "_metadata"), "torch pickles this attribute with BUILD on the OrderedDict instance"
    path = tmp_path / "module.pth"
    torch.save(state, path, _use_new_zipfile_serialization=fmt == "zip")
    loaded = torch_weights.load_state_dict(path)
    assert list(loaded) == list(state)
    for key, tensor in state.items():
        np.testing.assert_array_equal(loaded[key], tensor.numpy(), err_msg=key)


def test_malformed_pickle_is_a_weights_error_naming_the_file(tmp_path):
    path = tmp_path / "truncated.pth"
    _write(path, _build_payload(("torch", "FloatStorage"), "dtype", False)[:9], "zip")
    with pytest.raises(errors.WeightsError, match="truncated.pth is not a readable PyTorch state dict"):
        torch_weights.load_state_dict(path)


# ---------------------------------------------------------------- pretrained.fetch


def _serve(tmp_path, payload: bytes) -> str:
    """A file:// URL serving `payload`, as urllib fetches an https one."""
    source = tmp_path / "served.safetensors"
    source.write_bytes(payload)
    return source.as_uri()


def test_fetch_refuses_a_mismatched_download_before_it_takes_its_name(tmp_path):
    payload, cache = b"not the weights we pinned", tmp_path / "cache"
    expected = hashlib.sha256(b"the weights we pinned").hexdigest()
    entry = pretrained.Entry(sha256=expected, url=_serve(tmp_path, payload))
    with pytest.raises(errors.WeightsError) as refused:
        pretrained.fetch("tiny", entry, cache)
    final = cache / f"tiny-{expected[:12]}.safetensors"
    message = str(refused.value)
    for needed in (expected, hashlib.sha256(payload).hexdigest(), entry.url, str(final)):
        assert needed in message
    assert list(cache.iterdir()) == [], "neither the final name nor a temporary file is left behind"


def test_fetch_places_a_matching_download_and_rechecks_the_cached_copy(tmp_path):
    payload, cache = b"weights", tmp_path / "cache"
    entry = pretrained.Entry(sha256=hashlib.sha256(payload).hexdigest(), url=_serve(tmp_path, payload))
    path = pretrained.fetch("tiny", entry, cache)
    assert path.read_bytes() == payload and [p.name for p in cache.iterdir()] == [path.name]
    path.write_bytes(b"tampered after download")
    with pytest.raises(errors.WeightsError, match=f"delete {path}"):
        pretrained.fetch("tiny", entry, cache)


def test_fetch_without_network_says_where_to_put_a_manual_download(tmp_path):
    entry = pretrained.Entry(sha256="0" * 64, url=(tmp_path / "absent.safetensors").as_uri())
    with pytest.raises(errors.WeightsError, match="put it at .*tiny-000000000000.safetensors"):
        pretrained.fetch("tiny", entry, tmp_path / "cache")


# ---------------------------------------------------------------- FID InceptionV3 weights


def test_fid_weights_pin_is_a_full_sha256_matching_the_file_name():
    assert len(inception.WEIGHTS_SHA256) == 64 and int(inception.WEIGHTS_SHA256, 16) >= 0
    assert inception.WEIGHTS_FILENAME == f"pt_inception-2015-12-05-{inception.WEIGHTS_SHA256[:8]}.pth"


def test_fid_weights_with_another_hash_are_refused_before_reading(tmp_path, monkeypatch):
    monkeypatch.delenv(inception.SHA256_ENV, raising=False)
    impostor = tmp_path / "cache" / inception.WEIGHTS_FILENAME
    impostor.parent.mkdir()
    impostor.write_bytes(b"an impostor, never to be unpickled")

    def must_not_read(path):
        raise AssertionError(f"{path} was read before its hash was checked")

    monkeypatch.setattr(inception.torch_weights, "load_state_dict", must_not_read)
    with pytest.raises(errors.WeightsError) as refused:
        inception.fid_inception_extractor(str(impostor), tmp_path / "cache")
    message = str(refused.value)
    for needed in (inception.WEIGHTS_SHA256, hashlib.sha256(impostor.read_bytes()).hexdigest(), inception.WEIGHTS_URL,
                   str(impostor), inception.SHA256_ENV):
        assert needed in message


def _stand_in_weights(path, torch) -> str:
    """Zero weights of the port's keys and shapes saved by torch at `path`; their sha256."""
    state = {inception._torch_name(p): torch.zeros(inception._torch_shape(s))
             for p, s in inception.variable_shapes().items()}
    torch.save(state, path)
    return pretrained.sha256(path)


def test_fid_weights_matching_the_pin_are_read_and_named_in_the_protocol(tmp_path, monkeypatch):
    torch = import_torch()
    path = tmp_path / "stand_in.pth"
    digest = _stand_in_weights(path, torch)
    monkeypatch.delenv(inception.SHA256_ENV, raising=False)
    monkeypatch.setattr(inception, "WEIGHTS_SHA256", digest)
    extractor = inception.fid_inception_extractor(str(path), tmp_path, batch_size=1)
    assert extractor.name == f"inception_v3_fid@{digest[:12]}"
    out = extractor(np.zeros((1, 75, 75, 3), np.uint8))
    assert out["features"].shape == (1, 2048)

    monkeypatch.setattr(inception, "WEIGHTS_SHA256", "f" * 64)
    with pytest.raises(errors.WeightsError):
        inception.fid_inception_extractor(str(path), tmp_path)
    monkeypatch.setenv(inception.SHA256_ENV, digest.upper())
    assert inception.fid_inception_extractor(str(path), tmp_path).name == extractor.name


def test_fid_weights_user_pin_must_be_a_full_sha256(tmp_path, monkeypatch):
    path = tmp_path / "w.pth"
    path.write_bytes(b"x")
    monkeypatch.setenv(inception.SHA256_ENV, "6726825d")
    with pytest.raises(errors.WeightsError, match=f"{inception.SHA256_ENV}.*64 hex digits"):
        inception.fid_inception_extractor(str(path), tmp_path)
