"""Property-based fuzzing of every reader of user input (issue 18 point 10).

The one property, for each reader: any input either works or raises a `zoo.errors.ZooError` whose message
is not empty, never a library exception (KeyError, struct.error, zipfile.BadZipFile, a pickle, JSON or
Pillow error...), because the CLIs print a ZooError as a message and treat anything else as a bug.
Targets: data source specs (aligned: extractions and their index.jsonl included), config overrides (the check, the `--config.x=value` flags and the
benchmarks' `--set`), safetensors exports, torch state dicts (zip and legacy) and the image-folder and
video readers, each fed mutations of a valid input. Seeds are fixed (`derandomize`) so a failure
reproduces; the examples tried per target and their outcomes are printed at the end of the module.
"""
from __future__ import annotations

import collections
import json
import pathlib
import sys
import tempfile
from typing import Any, Callable

import numpy as np
import pytest
from conftest import import_torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from zoo.errors import ZooError

pytestmark = pytest.mark.slow

TRIED: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)


def fuzz_settings(max_examples: int) -> settings:
    """Fixed-seed settings: reproducible failures, no deadline (first calls compile), no example database."""
    return settings(max_examples=max_examples, derandomize=True, deadline=None, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much, HealthCheck.large_base_example])


@pytest.fixture(scope="module", autouse=True)
def _report_counts(pytestconfig: pytest.Config):
    """Print how many examples each target tried and how they ended, so the note can quote real counts."""
    yield
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        for target, outcomes in sorted(TRIED.items()):
            kinds = ", ".join(f"{kind} {n}" for kind, n in outcomes.most_common())
            print(f"\nfuzz {target}: {sum(outcomes.values())} examples ({kinds})", end="")
        print()


def outcome(target: str, call: Callable[[], Any]) -> str:
    """Run `call` and count it under `target`: "ok", or the kind of ZooError it raised (never an empty message).

    Any other exception propagates, which is the failure hypothesis shrinks and reports.
    """
    try:
        call()
    except ZooError as error:
        assert str(error).strip(), f"{type(error).__name__} raised with an empty message"
        kind = type(error).__name__
    else:
        kind = "ok"
    TRIED[target][kind] += 1
    return kind


# ----------------------------------------------------------------------------------------------
# Byte mutations


@st.composite
def mutated(draw: st.DrawFn, data: bytes, hot: int = 0) -> bytes:
    """`data` after 1-4 edits (bit flip, byte write, insert, delete, truncate, copy), some in its first `hot` bytes.

    Headers (`hot`) are where a parser decides what to trust, so edits land there about half the time.
    """
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        if not buf:
            buf += draw(st.binary(min_size=1, max_size=8))
            continue
        end = len(buf) - 1
        at = draw(st.one_of(st.integers(0, min(hot, end)), st.integers(0, end)) if hot else st.integers(0, end))
        op = draw(st.sampled_from(("flip", "byte", "insert", "delete", "truncate", "duplicate")))
        if op == "flip":
            buf[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte":
            buf[at] = draw(st.sampled_from((0x00, 0xFF, 0x7F, 0x80, 0x01))) if draw(st.booleans()) else draw(
                st.integers(0, 255))
        elif op == "insert":
            buf[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del buf[at:at + draw(st.integers(1, 16))]
        elif op == "truncate":
            del buf[at:]
        else:
            length = draw(st.integers(1, 64))
            buf[at:at] = buf[at:at + length]
    return bytes(buf)


# ----------------------------------------------------------------------------------------------
# Small valid inputs, built once


def _encoded(image: Image.Image, fmt: str) -> bytes:
    """An image encoded in `fmt` (PNG, JPEG, WEBP)."""
    import io

    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def _write_idx(path: pathlib.Path, array: np.ndarray) -> None:
    """An uint8 array as an MNIST idx file."""
    import struct

    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _write_video(path: pathlib.Path, frames: int = 8, side: int = 32) -> None:
    """A tiny MPEG-1 video of a moving gradient, written with imageio-ffmpeg."""
    import imageio_ffmpeg

    writer = imageio_ffmpeg.write_frames(str(path), (side, side), fps=25, codec="mpeg1video", macro_block_size=16,
                                         output_params=["-g", "4"])
    writer.send(None)
    ramp = np.add.outer(np.arange(side), np.arange(side)).astype(np.uint8) * 4
    for k in range(frames):
        writer.send(np.ascontiguousarray(np.stack([ramp + 8 * k, ramp[::-1], ramp.T], -1)))
    writer.close()


def _write_extraction(directory: pathlib.Path, faces: int = 3, size: int = 16) -> None:
    """A small valid face extraction (index.jsonl, face and mask PNGs) written by the extractor's own functions.

    The faces are warped from random frames with the canonical template's landmarks, so dlib is not needed:
    the aligned: reader sees exactly what `python -m data.faces extract` writes.
    """
    import json

    from data.faces import align, extract, masks

    rng = np.random.default_rng(0)
    records = []
    for k in range(faces):
        landmarks = align.template("whole_face") * 40 + [12 + k, 10]
        matrix = align.alignment_matrix(landmarks, "whole_face", size)
        aligned = align.transform_points(landmarks, matrix)
        face = extract.Face(box=np.array([10, 8, 54, 56]), landmarks=landmarks.astype(np.float32), matrix=matrix,
                            face_type="whole_face", size=size,
                            image=align.warp_face(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), matrix, size),
                            landmarks_aligned=aligned, mask=masks.hull_mask(aligned, size, "whole_face"),
                            em_mask=masks.eyes_mouth_mask(aligned, size))
        records.append(extract.record(face, extract.face_name("clip", k, 0), str(directory / "clip.mpg"), k, 0))
        extract.write_face(directory, face, records[-1])
    (directory / extract.INDEX).write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture(scope="module", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory):
    """$ZOO_CACHE in a module tmp dir: a spec may name a file the zoo derives something from into its cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ZOO_CACHE", str(tmp_path_factory.mktemp("zoo_cache")))
        yield


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    """One small valid file or folder per source kind, under a module tmp dir."""
    from scipy.io import savemat

    root = tmp_path_factory.mktemp("fuzz_inputs")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 8, 8), dtype=np.uint8)
    labels = np.arange(12, dtype=np.uint8) % 3
    idx = root / "idx"
    idx.mkdir()
    for stem in ("train", "t10k"):
        _write_idx(idx / f"{stem}-images-idx3-ubyte", images)
        _write_idx(idx / f"{stem}-labels-idx1-ubyte", labels)
    npz = root / "small.npz"
    np.savez(npz, x_train=images, y_train=labels, x_test=images[:4], y_test=labels[:4])
    mat = root / "faces.mat"
    savemat(mat, {"faces": rng.random((64, 20))})
    folder = root / "faces"
    for k in range(4):
        (folder / f"id{k % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"id{k % 2}" / f"{k}.png")
    video = root / "clip.mpg"
    _write_video(video)
    aligned = root / "aligned"
    (aligned / "masks").mkdir(parents=True)
    _write_extraction(aligned)
    return {"idx": idx, "npz": npz, "mat": mat, "folder": folder, "video": video, "aligned": aligned, "root": root}


# ----------------------------------------------------------------------------------------------
# 1. data source specs


NUMBERS = ("0", "-1", "1", "2", "8", "1.5", "1e3", "", " ", "abc", "0x10", "99999999999999999999", "\u0663", "nan",
           "inf", "+3", " 3 ", "1_0", "-0", "2147483648", "3-1", "1,2", "0-3", "5-2", ",", "--1")
SEPARATORS = (";", ":", "=", ",", "-", "/", ";;", "==", "::", "\x00", "\n", " ", "")


def _valid_specs(inputs: dict[str, pathlib.Path]) -> list[str]:
    """One working spec per form, paths pointing at the module's small inputs."""
    return ["digits", f"idx:{inputs['idx']}", f"npz:{inputs['npz']}:x_train", f"npz:{inputs['npz']}",
            f"mat:{inputs['mat']}", f"folder:{inputs['folder']};size=8", f"folder:{inputs['folder']};strict=1",
            f"video:{inputs['video']};stride=3", f"video:{inputs['video']};size=8;max_frames=2",
            "synthetic_faces:ids=0,1;n=10;size=64", "synthetic_faces:ids=0-2;n=3;size=16;seed=1;masks=1",
            f"aligned:{inputs['aligned']}", f"aligned:{inputs['aligned']};size=8", f"aligned:{inputs['aligned']};size=24",
            "tfds:mnist:test", "tfds:ffhq", "tfds:no_such_dataset"]


@st.composite
def spec_text(draw: st.DrawFn, valid: list[str], paths: list[str]) -> str:
    """A valid spec after 0-3 edits: random text, separators, option syntax, bad numbers, swapped kinds or paths."""
    spec = draw(st.sampled_from(valid))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(spec)))
        op = draw(st.sampled_from(("text", "separator", "number", "option", "delete", "kind", "path")))
        if op == "text":
            spec = spec[:at] + draw(st.text(max_size=8)) + spec[at:]
        elif op == "separator":
            spec = spec[:at] + draw(st.sampled_from(SEPARATORS)) + spec[at:]
        elif op == "number":
            spec = _replace_number(spec, draw(st.sampled_from(NUMBERS)), draw(st.integers(0, 8)))
        elif op == "option":
            key = draw(st.sampled_from(("size", "stride", "max_frames", "strict", "ids", "n", "seed", "masks",
                                        "face_type", "every", "SIZE", "", "x")))
            spec += draw(st.sampled_from((";", ";;", ":", ""))) + key + draw(st.sampled_from(("=", "", "=="))) + \
                draw(st.sampled_from(NUMBERS))
        elif op == "delete":
            spec = spec[:at] + spec[at + draw(st.integers(1, 12)):]
        elif op == "kind":
            kind = draw(st.sampled_from(("digits", "idx", "npz", "mat", "folder", "video", "synthetic_faces",
                                         "aligned", "tfds", "", "IDX", "folder ")))
            spec = kind + ":" + spec.partition(":")[2]
        else:
            spec = spec.partition(":")[0] + ":" + draw(st.sampled_from(paths)) + draw(
                st.sampled_from(("", ";size=8", ":x", ":images", "/", ";stride=2")))
    return spec


def _replace_number(spec: str, number: str, which: int) -> str:
    """`spec` with its `which`-th run of digits (counted modulo the runs present) replaced by `number`."""
    import re

    runs = list(re.finditer(r"\d+", spec))
    if not runs:
        return spec + number
    run = runs[which % len(runs)]
    return spec[:run.start()] + number + spec[run.end():]


def _open_spec(spec: str, split: str, data_dir: str) -> None:
    """What a run does with a spec before training: open the source and read its size (skip warnings silenced)."""
    import warnings

    from data.sources import get_source

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = get_source(spec, split, data_dir=data_dir)
    assert len(source) >= 0 and source.info is not None


def test_data_source_specs(inputs):
    valid = _valid_specs(inputs)
    root = inputs["root"]
    paths = [str(inputs[k]) for k in ("idx", "npz", "mat", "folder", "video", "aligned")] + [
        str(root / "missing"), str(root), "", "/dev/null", str(inputs["folder"] / "id0" / "0.png")]
    splits = st.sampled_from(("train", "test", "all", "valid", "", "train[:5]", "TRAIN"))
    data_dir = str(root / "tfds")

    @fuzz_settings(max_examples=1500)
    @given(spec=spec_text(valid, paths), split=splits)
    def check(spec: str, split: str) -> None:
        outcome("data source specs", lambda: _open_spec(spec, split, data_dir))

    for spec in valid:  # the unmutated specs work, but for TFDS datasets nobody prepared in the empty data_dir
        unprepared = "DatasetNotPreparedError" if spec.startswith("tfds:") else "ok"
        expected = {"tfds:no_such_dataset": "DataError"}.get(spec, unprepared)
        assert outcome("data source specs (valid)", lambda: _open_spec(spec, "test", data_dir)) == expected, spec
    check()


def _data_files(inputs: dict[str, pathlib.Path]) -> dict[str, tuple[str, str, int]]:
    """Each array file a spec reads: (the spec's form, the file's name in its folder, its header's length)."""
    import gzip

    (inputs["root"] / "idx_gz").mkdir(exist_ok=True)
    for idx in inputs["idx"].iterdir():
        (inputs["root"] / "idx_gz" / f"{idx.name}.gz").write_bytes(gzip.compress(idx.read_bytes(), mtime=0))
    return {str(inputs["idx"] / "train-images-idx3-ubyte"): ("idx:{dir}", "train-images-idx3-ubyte", 16),
            str(inputs["idx"] / "train-labels-idx1-ubyte"): ("idx:{dir}", "train-labels-idx1-ubyte", 8),
            str(inputs["root"] / "idx_gz" / "train-images-idx3-ubyte.gz"): ("idx:{dir}", "train-images-idx3-ubyte.gz",
                                                                            32),
            str(inputs["npz"]): ("npz:{dir}/small.npz", "small.npz", 64),
            str(inputs["mat"]): ("mat:{dir}/faces.mat", "faces.mat", 160),
            str(inputs["aligned"] / "index.jsonl"): ("aligned:{dir}", "index.jsonl", 256)}


def _open_damaged(original: pathlib.Path, form: str, name: str, data: bytes, split: str) -> Callable[[], None]:
    """A call that copies the original's folder with `name` replaced by `data` and opens the spec `form` on it."""
    import shutil

    def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            for sibling in original.parent.iterdir():
                if sibling.is_file() and sibling.name != name:
                    shutil.copy(sibling, tmp)
            (pathlib.Path(tmp) / name).write_bytes(data)
            _open_spec(form.format(dir=tmp), split, tmp)

    return run


def test_data_source_files(inputs):
    files = _data_files(inputs)

    @fuzz_settings(max_examples=1000)
    @given(path=st.sampled_from(sorted(files)), data=st.data(), split=st.sampled_from(("train", "test", "all")))
    def check(path: str, data: st.DataObject, split: str) -> None:
        form, name, hot = files[path]
        damaged = data.draw(mutated(pathlib.Path(path).read_bytes(), hot=hot))
        outcome("data source files", _open_damaged(pathlib.Path(path), form, name, damaged, split))

    for path, (form, name, _) in files.items():
        original = pathlib.Path(path)
        assert outcome("data source files (valid)", _open_damaged(original, form, name, original.read_bytes(),
                                                                  "all")) == "ok", path
    check()


# ----------------------------------------------------------------------------------------------
# 2. config overrides


CONFIG_SPEC = "configs/vae_digits.py:smoke"
VALUES = ("1", "0", "-1", "2", "16", "1.5", "1e-3", "1e400", "-1e400", "nan", "inf", "true", "false", "True", "None",
          "", " ", "abc", "(1,2)", "(32, 64)", "()", "[1]", "(", "'", '"', "{}", "1,2", "99999999999999999999",
          "adam", "sgd", "vae_mlp", "float16", "digits", "cosine", "\u0663", "0x10", "1_0", "=", "a=b", "\n")


def _field_paths(config: Any, prefix: str = "") -> list[str]:
    """Every dotted field and section name of a ConfigDict."""
    import ml_collections

    paths = []
    for key, value in config.items():
        paths.append(prefix + key)
        if isinstance(value, ml_collections.ConfigDict):
            paths += _field_paths(value, f"{prefix}{key}.")
    return paths


@st.composite
def field_name(draw: st.DrawFn, fields: list[str]) -> str:
    """A real field or section name, often mutated: a typo, stray dots, random text, a case change."""
    name = draw(st.sampled_from(fields))
    op = draw(st.sampled_from(("keep", "keep", "typo", "dots", "text", "case", "child")))
    at = draw(st.integers(0, len(name)))
    if op == "typo":
        return name[:at] + draw(st.text(max_size=2)) + name[at + draw(st.integers(0, 2)):]
    if op == "dots":
        return name[:at] + draw(st.sampled_from((".", "..", "=", "-", " "))) + name[at:]
    if op == "text":
        return draw(st.text(max_size=12))
    if op == "case":
        return name.upper()
    if op == "child":
        return name + "." + draw(st.sampled_from(fields))
    return name


def field_value() -> st.SearchStrategy[str]:
    """A command-line value: a typical one, a bad number or literal, or random text."""
    return st.one_of(st.sampled_from(VALUES), st.text(max_size=10),
                     st.floats(allow_nan=True).map(repr), st.integers(-2**70, 2**70).map(str))


def _parse_flags(argv: list[str]) -> Any:
    """`python -m train`'s own flag parsing of `argv`, on fresh absl flags so examples do not share state."""
    from absl import flags
    from ml_collections import config_flags

    import train.__main__ as train_main

    fresh = flags.FlagValues()
    holder = config_flags.DEFINE_config_file("config", None, "config", lock_config=True, flag_values=fresh)
    flags.DEFINE_string("workdir", None, "workdir", flag_values=fresh)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(flags, "FLAGS", fresh)
        patch.setattr(sys, "argv", argv)
        train_main._parse(argv)
    return holder.value


def _check_override(field: str) -> Callable[[], None]:
    """The check the train CLI runs on an unknown `--config.<field>` to name it."""
    from train import config as config_lib

    return lambda: config_lib.check_override(config_lib.load(CONFIG_SPEC), field)


def _train_flags(field: str, value: str, workdir: str) -> Callable[[], None]:
    """`python -m train ... --config.<field>=<value>` up to the validation the trainer starts with."""
    argv = ["train", f"--config={CONFIG_SPEC}", f"--workdir={workdir}", f"--config.{field}={value}"]
    return lambda: _validate(_parse_flags(argv))


def _benchmark_set(field: str, value: str) -> Callable[[], None]:
    """The benchmarks' `--set <field>=<value>`, then the same validation."""
    from benchmarks import train_step
    from train import config as config_lib

    def run() -> None:
        config = config_lib.load(CONFIG_SPEC)
        train_step.override(config, f"{field}={value}")
        _validate(config)

    return run


def _validate(config: Any) -> None:
    """What a run does with a config before it reads data: find its family, then validate against it."""
    from train import config as config_lib
    from train import families

    config_lib.validate(config, families.get(config.family).section())


def test_config_overrides(tmp_path):
    from train import config as config_lib

    fields = _field_paths(config_lib.load(CONFIG_SPEC))
    workdir = str(tmp_path / "run")

    @fuzz_settings(max_examples=1000)
    @given(field=field_name(fields), value=field_value())
    def check(field: str, value: str) -> None:
        outcome("config check_override", _check_override(field))
        outcome("config --config.<field> flags", _train_flags(field, value, workdir))
        outcome("config --set (benchmarks)", _benchmark_set(field, value))

    assert outcome("config valid override", _train_flags("optim.learning_rate", "0.01", workdir)) == "ok"
    assert outcome("config valid override", _benchmark_set("optim.learning_rate", "0.01")) == "ok"
    check()


# ----------------------------------------------------------------------------------------------
# 3. weights files


@pytest.fixture(scope="module")
def export_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real export of a tiny MLP VAE (what train.export writes), as bytes."""
    import jax

    from zoo import pretrained, registry

    config = {"image_shape": [4, 4, 1], "latent_dim": 2, "hidden": [8], "activation": "tanh",
              "likelihood": "bernoulli", "dtype": "float32"}
    module = registry.create_model("vae_mlp", **{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})
    params = module.init(jax.random.key(0), *module.example_inputs())["params"]
    path = pretrained.export(tmp_path_factory.mktemp("export") / "tiny.safetensors", "vae_mlp", config, params,
                             metadata={"step": 1})
    return path.read_bytes()


def _load_weights(data: bytes, suffix: str, reader: Callable[[pathlib.Path], Any]) -> Callable[[], None]:
    """A call that writes `data` to a fresh file and reads it with `reader`."""

    def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = pathlib.Path(tmp) / f"weights{suffix}"
            path.write_bytes(data)
            reader(path)

    return run


def _header_length(data: bytes) -> int:
    """Where a safetensors file's JSON header ends: its first 8 bytes plus the length they hold."""
    return 8 + int.from_bytes(data[:8], "little")


def test_safetensors_bytes(export_bytes):
    from zoo import pretrained

    @fuzz_settings(max_examples=1000)
    @given(data=mutated(export_bytes, hot=_header_length(export_bytes)))
    def check(data: bytes) -> None:
        outcome("safetensors bytes", _load_weights(data, ".safetensors", pretrained.load))

    assert outcome("safetensors bytes (valid)", _load_weights(export_bytes, ".safetensors", pretrained.load)) == "ok"
    check()


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def export_metadata(draw: st.DrawFn, header: dict[str, str]) -> dict[str, str]:
    """The export's string metadata with fields dropped or replaced, or model_config fields changed.

    Byte flips mostly break the JSON; this reaches the checks behind it (version, model, config, arrays).
    """
    header = dict(header)
    config = json.loads(header["model_config"])
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(("drop", "replace", "config_value", "config_drop", "config_add")))
        key = draw(st.sampled_from(sorted(header)))
        if op == "drop":
            header.pop(key, None)
        elif op == "replace":
            header[key] = draw(st.one_of(st.text(max_size=12), JSON_VALUES.map(json.dumps)))
        elif op == "config_value":
            config[draw(st.sampled_from(sorted(config) or ["x"]))] = draw(st.one_of(
                JSON_VALUES, st.sampled_from([0, -1, 3, 1.5, [4, 4], [4, 4, 0], [0, 4, 1], "float16", "relu",
                                              "gaussian", [], [8, 8]])))
        elif op == "config_drop" and config:
            config.pop(draw(st.sampled_from(sorted(config))))
        else:
            config[draw(st.text(max_size=8))] = draw(JSON_VALUES)
        if op.startswith("config"):
            header["model_config"] = json.dumps(config)
    return header


def test_safetensors_metadata(export_bytes, tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    from zoo import pretrained

    source = tmp_path / "export.safetensors"
    source.write_bytes(export_bytes)
    with safe_open(str(source), framework="numpy") as f:
        header = f.metadata()
    arrays = load_file(str(source))

    def rewritten(metadata: dict[str, str]) -> Callable[[], None]:
        def run() -> None:
            path = tmp_path / "changed.safetensors"
            save_file(arrays, str(path), metadata=metadata)
            pretrained.load(path)

        return run

    @fuzz_settings(max_examples=600)
    @given(metadata=export_metadata(header))
    def check(metadata: dict[str, str]) -> None:
        outcome("safetensors metadata", rewritten(metadata))

    check()


@pytest.fixture(scope="module")
def torch_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A small state dict as torch.save writes it, in the zip and the legacy container."""
    torch = import_torch()

    root = tmp_path_factory.mktemp("torch")
    state = collections.OrderedDict(
        w=torch.arange(12, dtype=torch.float32).reshape(3, 4), b=torch.arange(4), h=torch.ones(2, dtype=torch.half),
        view=torch.arange(10, dtype=torch.float32)[2:8:2], nested={"x": torch.zeros(2, 2, dtype=torch.int32)})
    files = {}
    for fmt in ("zip", "legacy"):
        path = root / f"{fmt}.pth"
        torch.save(state, path, _use_new_zipfile_serialization=fmt == "zip")
        files[fmt] = path.read_bytes()
    return files


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_torch_state_dict_bytes(torch_files, fmt):
    from zoo import torch_weights

    data = torch_files[fmt]
    hot = 64 if fmt == "zip" else len(data) // 2  # the zip's first entry header; the legacy pickles come first

    @fuzz_settings(max_examples=1000)
    @given(data=mutated(data, hot=hot))
    def check(data: bytes) -> None:
        outcome(f"torch {fmt} bytes", _load_weights(data, ".pth", torch_weights.load_state_dict))

    assert outcome(f"torch {fmt} bytes (valid)", _load_weights(data, ".pth", torch_weights.load_state_dict)) == "ok"
    check()


# ----------------------------------------------------------------------------------------------
# 4. images and video


def _image_bases() -> dict[str, bytes]:
    """Small valid images in the formats and modes a folder may hold."""
    rng = np.random.default_rng(1)
    rgb = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    return {
        "rgb.png": _encoded(rgb, "PNG"),
        "rgba.png": _encoded(rgb.convert("RGBA"), "PNG"),
        "grey16.png": _encoded(Image.fromarray(rng.integers(0, 65535, (16, 16), dtype=np.uint16)), "PNG"),
        "palette.png": _encoded(rgb.convert("P"), "PNG"),
        "photo.jpg": _encoded(rgb, "JPEG"),
        "photo.webp": _encoded(rgb, "WEBP"),
    }


def _read_folder(files: dict[str, bytes], strict: bool) -> Callable[[], None]:
    """A call that writes `files` into a fresh folder and reads every item through a folder: spec."""
    from data.sources import get_source

    def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in files.items():
                (pathlib.Path(tmp) / name).write_bytes(data)
            source = get_source(f"folder:{tmp}{';strict=1' if strict else ''}", "all")
            for i in range(len(source)):
                assert source[i]["image"].dtype == np.uint8

    return run


def test_image_folder_bytes():
    import warnings

    bases = _image_bases()
    good = {f"good{k}.png": bases["rgb.png"] for k in range(3)}

    @fuzz_settings(max_examples=1500)
    @given(base=st.sampled_from(sorted(bases)), data=st.data(), alone=st.booleans(), strict=st.booleans())
    def check(base: str, data: st.DataObject, alone: bool, strict: bool) -> None:
        bad = data.draw(mutated(bases[base], hot=64))
        files = {f"bad_{base}": bad} if alone else {**good, f"bad_{base}": bad}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outcome("image folder bytes", _read_folder(files, strict))

    assert outcome("image folder bytes (valid)", _read_folder({**good, **bases}, True)) == "ok"
    check()


def _read_video(files: dict[str, bytes]) -> Callable[[], None]:
    """A call that writes `files` (one video, or several into a folder) and reads every frame via a video: spec."""
    from data.sources import get_source

    def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in files.items():
                (pathlib.Path(tmp) / name).write_bytes(data)
            target = pathlib.Path(tmp) / next(iter(files)) if len(files) == 1 else tmp
            source = get_source(f"video:{target}", "all")
            for i in range(len(source)):
                assert source[i]["image"].dtype == np.uint8

    return run


def test_video_bytes(inputs):
    import warnings

    clip = inputs["video"].read_bytes()

    @fuzz_settings(max_examples=250)
    @given(data=mutated(clip, hot=256), beside_good=st.booleans())
    def check(data: bytes, beside_good: bool) -> None:
        files = {"bad.mpg": data, "good.mpg": clip} if beside_good else {"bad.mpg": data}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outcome("video bytes", _read_video(files))

    assert outcome("video bytes (valid)", _read_video({"clip.mpg": clip})) == "ok"
    check()
