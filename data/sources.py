"""Random-access image datasets named by one spec string, so configs pick data without code.

Every source has `len(source)`, `source[i] -> {"image": uint8 HxWxC, "label": np.int64}` ("label"
only where the data has labels) and `source.info`. Spec forms (see `list_sources()`):

  digits                   scikit-learn's bundled 8x8 digits (offline). Pixels 0..16 are scaled
                           to uint8 by round(v * 255 / 16). Split: train = the first 1500 images,
                           test = the last 297, all = 1797.
  idx:<dir>                MNIST-format idx files (gzipped or not) in <dir>:
                           [prefix-]train-images-idx3-ubyte[.gz], [prefix-]train-labels-idx1-ubyte[.gz]
                           and t10k-... (or test-...) for split "test"; "all" = train then test.
                           A missing train/test images idx file may be stood in for by an npz
                           (`*train-images*.npz`, key "images"), with a warning that it is approximate.
  npz:<file>[:key]         numpy .npz: images under `key`, else per split x_<split> / images_<split> /
                           <split>_images, else "images" / "x" (these serve "train" and "all");
                           labels under the matching "labels" / "y" name when present.
  mat:<file>               MATLAB .mat: Olivetti faces (`faces`, 4096 x N: 64x64 grey images stored
                           column-major, 10 per person, label = index // 10; split: train = index % 10 < 8,
                           test = the rest, all = every image) or SVHN-style (`X` HxWxCxN, `y`, 10 -> 0).
  tfds:<name>[:split]      a TFDS dataset prepared as array_record, read with `tfds.data_source`
                           (no TensorFlow). A split in the spec overrides the `split` argument.
  aligned:<dir>[;size=N]   faces written by `python -m data.faces extract`, with "mask" and "em_mask"
                           (data/faces/aligned.py).
  fakeset:<dir>[;filters]  a fake set written by `python -m train.generate` (data/fakeset.py).
  facecrop:<video|dir>[;..] FaceForensics++-style 1.3x face crops, cached (data/faces/crops.py).
  synthetic_clips[:...]    synthetic people talking: smooth clips with video and frame fields (data/synthetic/clips.py).
  video_pairs:[..@]<spec>  (source, driving) frame pairs of one video from a frame source (data/video_pairs.py).
"""
from __future__ import annotations

import gzip
import logging
import math
import os
import pathlib
import re
import struct
import zipfile
import zlib
from typing import Any

import numpy as np

from data.base import (  # noqa: F401  (re-exported: the public names of every source)
    SPLITS,
    ArraySource,
    DataNotFoundError,
    Source,
    SourceInfo,
    TfdsSource,
    check_index,
    tfds_data_dir,
)
from zoo.errors import DataError

log = logging.getLogger(__name__)

FASHION_MNIST_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")
SHARED_DATA_DIR = pathlib.Path("..") / "shared" / "data"

_SPEC_FORMS = {
    "digits": "scikit-learn's bundled 8x8 digits, 10 classes; train = first 1500, test = last 297 (offline)",
    "idx:<dir>": "MNIST-format idx files (train-/t10k-images-idx3-ubyte[.gz], ...-labels-idx1-ubyte[.gz], "
    "optional name prefix) in <dir>; also Fashion-MNIST",
    "npz:<file>[:key]": "numpy .npz with images under key (default x_<split>/images_<split>/images/x) "
    "and optional labels (labels/y)",
    "mat:<file>": "MATLAB .mat: Olivetti faces (`faces`; train = index % 10 < 8, test = rest) or SVHN (`X`, `y`)",
    "tfds:<name>[:split]": "TFDS dataset prepared as array_record, read without TensorFlow via tfds.data_source",
    "synthetic_faces[:ids=0,1;n=1000;size=64;seed=0]": "parametric cartoon faces with known identity, expression "
    "and pose (data/synthetic.py): label = identity; train/test draw disjoint expressions and poses",
    "synthetic_clips[:ids=0,1;clips=4;frames=32;size=64;seed=0;spacing=8]": "synthetic people talking: clips of "
    "smooth expression and pose trajectories, with video and frame fields; train/test hold different clips",
}


def get_source(spec: str, split: str = "train", *, data_dir: str | None = None) -> Source:
    """The source a spec string names (see the module docstring), so configs stay plain strings."""
    kind, _, rest = spec.partition(":")
    if kind == "tfds" and rest:
        return _tfds(rest, split, data_dir)
    if split not in SPLITS:
        raise DataError(f"split {split!r} is not supported for {spec!r}; use one of {', '.join(SPLITS)}")
    if spec == "digits":
        return _digits(split)
    if kind == "idx" and rest:
        return _idx(pathlib.Path(rest), split)
    if kind == "npz" and rest:
        path, key = _path_and_key(rest)
        return _npz(path, key, split)
    if kind == "mat" and rest:
        return _mat(pathlib.Path(rest), split)
    if kind in ("folder", "video") and rest:
        from data import media

        return media.from_spec(kind, rest, split)
    if kind == "synthetic_faces":
        from data import synthetic

        return synthetic.from_spec(rest, split)
    if kind == "synthetic_clips":
        from data.synthetic import clips

        return clips.from_spec(rest, split)
    if kind == "video_pairs":
        from data import video_pairs

        return video_pairs.from_spec(rest, split, lambda spec, split: get_source(spec, split, data_dir=data_dir))
    if kind == "aligned" and rest:
        from data.faces import aligned

        return aligned.from_spec(rest, split)
    if kind == "facecrop" and rest:
        from data.faces import crops

        return crops.from_spec(rest, split)
    if kind == "fakemix" and rest:
        from data import fakemix

        return fakemix.from_spec(rest, split, get_source)
    if kind == "fakeset" and rest:
        from data import fakeset

        return fakeset.from_spec(rest, split)
    raise DataError(f"unknown data spec {spec!r}; use one of: {', '.join(list_sources())}\n"
                    "`python -m data list` describes each form and the datasets found on this machine.")


def list_sources() -> dict[str, str]:
    """Spec forms `get_source` accepts, each with a one-line description, for help texts and the CLI."""
    from data import fakemix, fakeset, media, video_pairs
    from data.faces import aligned, crops

    return {**_SPEC_FORMS, **media.SPEC_FORMS, **aligned.SPEC_FORMS, **crops.SPEC_FORMS, **fakemix.SPEC_FORMS,
            **fakeset.SPEC_FORMS, **video_pairs.SPEC_FORMS}


def local_datasets(root: str | os.PathLike[str] | None = None) -> list[str]:
    """Specs of datasets present on this machine (shared data, Debian Fashion-MNIST, prepared TFDS)."""
    base = pathlib.Path(root) if root is not None else pathlib.Path.cwd()
    shared = base / SHARED_DATA_DIR
    rel = SHARED_DATA_DIR if root is None else shared
    found = ["digits"]
    if (shared / "mnist").is_dir():
        found.append(f"idx:{rel / 'mnist'}")
    if (shared / "olivetti" / "olivettifaces.mat").is_file():
        found.append(f"mat:{rel / 'olivetti' / 'olivettifaces.mat'}")
    if FASHION_MNIST_DIR.is_dir() and any(FASHION_MNIST_DIR.iterdir()):
        found.append(f"idx:{FASHION_MNIST_DIR}")
    tfds_dir = pathlib.Path(os.environ.get("TFDS_DATA_DIR", pathlib.Path.home() / "tensorflow_datasets"))
    if tfds_dir.is_dir():
        infos = sorted(tfds_dir.glob("*/*/dataset_info.json")) + sorted(tfds_dir.glob("*/*/*/dataset_info.json"))
        for info in infos:
            if any(info.parent.glob("*.array_record*")):
                found.append(f"tfds:{info.parent.parent.relative_to(tfds_dir).as_posix()}")
    return list(dict.fromkeys(found))


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """The array in an idx file (gzipped or not), checked against its header so corrupt files fail loudly."""
    path = pathlib.Path(path)
    raw = _read_maybe_gzip(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(
            f"{path}: not an idx file (first bytes {raw[:4].hex(' ') or 'empty'}, expected 00 00 <type> <ndim>); "
            "re-download it or point the spec at the right directory"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: idx header is truncated ({len(raw)} bytes); re-download the file")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + math.prod(dims) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(
            f"{path}: idx header says shape {dims} ({expected} bytes) but the file holds {len(raw)} bytes; "
            "the file is truncated or corrupt, re-download it"
        )
    array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))


_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_STEMS = {"train": ("train",), "test": ("t10k", "test")}


def _read_maybe_gzip(path: pathlib.Path) -> bytes:
    """File bytes, gunzipped when the gzip magic is present, with corrupt archives named."""
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt gzip file ({e}); re-download it") from e


def _split_rows(n: int, split: str, train_rows: np.ndarray | slice) -> np.ndarray | slice:
    """Row selector for a split given the train rows; test is the complement."""
    if split == "all":
        return slice(None)
    mask = np.zeros(n, bool)
    mask[train_rows] = True
    return np.flatnonzero(mask if split == "train" else ~mask)


def _digits(split: str) -> ArraySource:
    """sklearn's digits scaled to uint8, split deterministically (first 1500 train, last 297 test)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * 255 / 16).astype(np.uint8)
    rows = _split_rows(len(images), split, slice(0, 1500))
    return ArraySource("digits", images[rows], digits.target[rows], num_classes=10)


def _find_one(directory: pathlib.Path, pattern: re.Pattern[str], what: str) -> pathlib.Path | None:
    """The single file in `directory` matching `pattern`, preferring the unprefixed, uncompressed name."""
    matches = sorted(p for p in directory.iterdir() if pattern.match(p.name))
    if not matches:
        return None
    stems = {p.name.removesuffix(".gz") for p in matches}
    if len(stems) > 1:
        raise DataError(
            f"{directory}: several {what} files ({', '.join(sorted(stems))}); "
            "put each dataset in its own directory"
        )
    return min(matches, key=lambda p: p.name.endswith(".gz"))


def _idx_split(directory: pathlib.Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one idx split, substituting an npz for missing images (with a warning)."""
    stems = "|".join(_IDX_STEMS[split])
    prefix = r"^(?:.+[-_.])?"
    images_re = re.compile(rf"{prefix}(?:{stems})-images[-.]idx[34]-ubyte(?:\.gz)?$")
    labels_re = re.compile(rf"{prefix}(?:{stems})-labels[-.]idx1-ubyte(?:\.gz)?$")
    npz_re = re.compile(rf"{prefix}(?:{stems})-images.*\.npz$")
    labels_path = _find_one(directory, labels_re, f"{split} labels")
    images_path = _find_one(directory, images_re, f"{split} images")
    if images_path is not None:
        images = read_idx(images_path)
    else:
        npz_path = _find_one(directory, npz_re, f"{split} images npz")
        if npz_path is None:
            raise DataNotFoundError(
                f"{directory}: no {split} images file (expected e.g. {_IDX_STEMS[split][0]}-images-idx3-ubyte.gz); "
                "download the idx files into this directory"
            )
        log.warning(
            "%s: no %s images idx file; using %s instead, an approximate re-encoding whose pixels differ "
            "from the originals. Do not report figures on it.",
            directory, split, npz_path.name,
        )
        images = _load_npz_array(npz_path, ("images", "x"))
    if labels_path is None:
        raise DataNotFoundError(
            f"{directory}: no {split} labels file (expected e.g. {_IDX_STEMS[split][0]}-labels-idx1-ubyte.gz); "
            "download it into this directory"
        )
    labels = read_idx(labels_path)
    source_name = images_path.name if images_path is not None else "the images npz"
    if images.ndim not in (3, 4) or images.dtype != np.uint8:
        raise DataError(
            f"{directory}/{source_name}: expected uint8 images [N,H,W], got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(
            f"{directory}: {labels_path.name} has {labels.shape} labels but {source_name} has "
            f"{len(images)} images; the files belong to different datasets or one is corrupt"
        )
    return images, labels


def _idx(directory: pathlib.Path, split: str) -> ArraySource:
    """An idx directory's split; "all" is train followed by test."""
    if not directory.is_dir():
        raise DataNotFoundError(
            f"idx:{directory}: not a directory; point the spec at the folder holding the idx files"
        )
    parts = [_idx_split(directory, s) for s in (("train", "test") if split == "all" else (split,))]
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    return ArraySource(directory.resolve().name, images, labels)


def _path_and_key(rest: str) -> tuple[pathlib.Path, str | None]:
    """Split "<file>[:key]" where the file itself may contain colons."""
    if pathlib.Path(rest).exists() or ":" not in rest:
        return pathlib.Path(rest), None
    path, key = rest.rsplit(":", 1)
    return pathlib.Path(path), key


def _load_npz_array(path: pathlib.Path, keys: tuple[str, ...]) -> np.ndarray:
    """The first of `keys` present in an npz file, or an error listing the keys it has."""
    with _open_npz(path) as npz:
        for key in keys:
            if key in npz.files:
                return _npz_array(path, npz, key)
        raise DataError(f"{path}: none of the keys {', '.join(keys)} (the file has {', '.join(npz.files)})")


_DAMAGED_NPZ = (zipfile.BadZipFile, NotImplementedError, OSError, EOFError, zlib.error, ValueError)


def _open_npz(path: pathlib.Path) -> Any:
    """The file as numpy's lazy NpzFile, or DataError if it is no zip archive or its directory is damaged."""
    if not zipfile.is_zipfile(path):
        raise DataError(f"npz:{path}: not an .npz archive (a zip of .npy arrays); write one with numpy.savez")
    try:
        return np.load(path)
    except _DAMAGED_NPZ as error:
        raise DataError(f"npz:{path}: damaged .npz archive ({type(error).__name__}: {error}); write it again") from error


def _npz_array(path: pathlib.Path, npz: Any, key: str) -> np.ndarray:
    """One array of an open npz file; a damaged entry (bad CRC, header or length) is a DataError naming it."""
    try:
        return npz[key]
    except _DAMAGED_NPZ as error:  # ValueError: an .npy header numpy cannot parse, or object arrays (pickles)
        raise DataError(f"npz:{path}: array {key!r} is damaged or not a plain array ({type(error).__name__}: "
                        f"{error}); write the file again with numpy.savez") from error


def _labels_key(image_key: str) -> str:
    """The labels key that pairs with an images key: images->labels, x->y."""
    if "images" in image_key:
        return image_key.replace("images", "labels")
    if image_key == "x" or image_key.startswith("x_"):
        return "y" + image_key[1:]
    return image_key + "_labels"


def _npz(path: pathlib.Path, key: str | None, split: str) -> ArraySource:
    """Images (and labels when present) from an npz file, selected by key or split naming."""
    if not path.is_file():
        raise DataNotFoundError(f"npz:{path}: no such file")
    with _open_npz(path) as npz:
        files = npz.files
        if key is not None:
            candidates = [key]
        elif split == "all" and not {"images", "x"} & set(files):
            return _concat(path.stem, [_npz(path, None, "train"), _npz(path, None, "test")])
        else:
            candidates = [f"x_{split}", f"images_{split}", f"{split}_images"]
            if split in ("train", "all"):
                candidates += ["images", "x"]
        image_key = next((k for k in candidates if k in files), None)
        if image_key is None:
            raise DataError(
                f"npz:{path}: no images for split {split!r} (looked for {', '.join(candidates)}; "
                f"the file has {', '.join(files)}); name the key as npz:{path}:<key>"
            )
        labels_key = _labels_key(image_key)
        labels = _npz_array(path, npz, labels_key) if labels_key in files else None
        return ArraySource(path.stem, _npz_array(path, npz, image_key), labels)


def _concat(name: str, parts: list[ArraySource]) -> ArraySource:
    """One source holding several array sources' examples in order."""
    labels = [p.labels for p in parts]
    return ArraySource(
        name,
        np.concatenate([p.images for p in parts]),
        None if any(lab is None for lab in labels) else np.concatenate(labels),
    )


def _loadmat(path: pathlib.Path) -> dict[str, Any]:
    """scipy's reading of a .mat file, with its refusals of a damaged or non-MATLAB file raised as DataError."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        return loadmat(path)
    # UnboundLocalError: scipy's Cython reader (_mio5_utils) hits it on some damaged headers (tests/test_fuzz.py)
    except (MatReadError, ValueError, TypeError, IndexError, OSError, EOFError, struct.error, zlib.error,
            UnboundLocalError) as error:
        raise DataError(f"mat:{path}: not a readable MATLAB .mat file ({type(error).__name__}: {error}); "
                        "check the path, or save the file again with scipy.io.savemat") from error


def _mat(path: pathlib.Path, split: str) -> ArraySource:
    """Olivetti faces or SVHN-style images from a .mat file, with the splits the module docstring gives."""
    if not path.is_file():
        raise DataNotFoundError(f"mat:{path}: no such file")
    mat = _loadmat(path)
    if "faces" in mat:
        faces = mat["faces"]
        side = math.isqrt(faces.shape[0])
        if faces.ndim != 2 or side * side != faces.shape[0] or faces.shape[1] % 10:
            raise DataError(
                f"{path}: `faces` has shape {faces.shape}; expected (side*side, 10*people) as in Olivetti"
            )
        n = faces.shape[1]
        images = faces.T.reshape(n, side, side).transpose(0, 2, 1)
        labels = np.arange(n) // 10
        rows = _split_rows(n, split, np.arange(n) % 10 < 8)
        return ArraySource(path.stem, images[rows], labels[rows], num_classes=n // 10)
    if "X" in mat and mat["X"].ndim == 4 and "y" in mat:
        images = mat["X"].transpose(3, 0, 1, 2)
        labels = mat["y"].reshape(-1).astype(np.int64) % 10
        if split == "test":
            raise DataError(
                f"{path}: an SVHN-style file holds one split; load the test file with split='train' or 'all'"
            )
        return ArraySource(path.stem, images, labels, num_classes=10)
    names = ", ".join(k for k in mat if not k.startswith("__"))
    raise DataError(
        f"{path}: unrecognised .mat layout (variables: {names}); "
        "expected `faces` (Olivetti) or `X` and `y` (SVHN)"
    )


_TFDS_NAME = re.compile(r"^(?P<name>[\w/.-]+?(?::\d+\.[\d*]+\.[\d*]+)?)(?::(?P<split>.+))?$")


def _prepare_command(name: str, data_dir: str | None) -> str:
    """The shell commands that prepare a TFDS dataset in the array_record format data_source reads."""
    dir_arg = f", data_dir={data_dir!r}" if data_dir else ""
    return (
        "pip install '.[tf]'  # TensorFlow is needed once, to prepare the data\n"
        f"    python -c \"import tensorflow_datasets as tfds; tfds.builder({name!r}{dir_arg}, "
        "file_format='array_record').download_and_prepare()\""
    )


_PREPARE_NOTES = {
    "celeb_a": "\n(celeb_a downloads from Google Drive, which may refuse on quota; retry later)",
}


_MANUAL_DATASETS = {
    "ffhq": (
        "FFHQ (Karras et al. 2019) is not in the TFDS catalogue and must be downloaded by hand: get the "
        "images (e.g. images1024x1024/ or thumbnails128x128/) from NVIDIA's ffhq-dataset repository into a "
        "folder, then write it once as a local array_record dataset:\n"
        "    python -m data.local_tfds --source 'folder:/path/to/ffhq;size=256' --name ffhq --data_dir {data_dir}"
    ),
}


class DatasetNotPreparedError(DataNotFoundError):
    """A TFDS dataset that exists in the catalogue but has no array_record files on this machine."""


def _tfds_builder(tfds: Any, name: str, data_dir: str | None) -> Any:
    """`tfds.builder(name)`, its refusals of a malformed name, config or version raised as DataError."""
    try:
        return tfds.builder(name, data_dir=data_dir)
    except (ValueError, AssertionError) as error:  # TFDS asserts that the version it is asked for exists
        reason = str(error).strip().splitlines()[0].rstrip(".") if str(error).strip() else type(error).__name__
        raise DataError(f"tfds:{name}: {reason}; the spec is tfds:<name>[/config][:version][:split], e.g. "
                        "tfds:mnist:test (`python -m data list` shows the prepared datasets)") from error


def _tfds(rest: str, split: str, data_dir: str | None) -> TfdsSource:
    """A TFDS data source, translating TFDS's not-found/not-prepared failures into the fix."""
    match = _TFDS_NAME.match(rest)
    if not match:
        raise DataError(f"tfds:{rest}: expected tfds:<name>[:version][:split], e.g. tfds:mnist:test")
    name, split = match["name"], match["split"] or split
    import tensorflow_datasets as tfds

    try:
        data_source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except tfds.core.registered.DatasetNotFoundError as e:
        if name in _MANUAL_DATASETS:
            directory = data_dir or tfds_data_dir()
            raise DatasetNotPreparedError(f"tfds:{name} is not built in {directory}. "
                                          + _MANUAL_DATASETS[name].format(data_dir=directory)) from e
        raise DataError(
            f"tfds:{name}: no such TFDS dataset; see https://www.tensorflow.org/datasets/catalog"
        ) from e
    except Exception as e:
        builder = _tfds_builder(tfds, name, data_dir)
        command = _prepare_command(name, data_dir)
        if not builder.is_prepared():
            note = _PREPARE_NOTES.get(name.split(":")[0].split("/")[0], "")
            raise DatasetNotPreparedError(
                f"tfds:{name} is not prepared in {builder.data_dir}. Prepare it once with:\n    {command}{note}"
            ) from e
        if builder.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
            raise DatasetNotPreparedError(
                f"tfds:{name} is prepared in {builder.data_dir} as {builder.info.file_format.value}, which "
                f"data_source cannot read. Re-prepare it as array_record in another data_dir:\n    {command}"
            ) from e
        raise
    return TfdsSource(name, data_source, data_source.dataset_info)
