"""Extraction on demand: a video named by `aligned:VIDEO[;size=N;face_type=T;every=K]` is extracted once, into the cache.

A config can then name footage directly (configs/swap_df_grid.py trains on GRID faces "extracted at run
time") and still pay for detection once: the training and evaluation sources, the next run and every
resume read the same faces. `extraction(video, ...)` returns the directory, laid out exactly as
`python -m data.faces extract --input VIDEO --output DIR --size N --face-type T --every K` writes it
(one process, dlib's HOG detector, the largest face of each frame), so `aligned:DIR` serves it.

Where: `zoo.files.cache_dir()/aligned/<video stem>-<key>` ($ZOO_CACHE, default ~/.cache/deepfake-zoo).
The key is a hash of the video's resolved path and content sha256, the extraction options, the canonical
face template's sha256 and `FORMAT`, so a changed video, another option or a rebuilt template makes a new
entry, and an unchanged one is found again without running dlib. (Path and content both: the faces'
records name the file they came from, which a copy elsewhere must not inherit.) Hashing reads the whole
file, once per process for an unchanged file (remembered by path, size and mtime).

Nothing half-written: the extraction runs into a private hidden directory beside the entry
(`.<entry>.<host>.<pid>.<random>`), which takes the entry's name by one rename once complete. A killed
run leaves only its hidden directory, which the next build on the same host removes once its process is
gone; two runs that extract one video at once both finish, and the second's rename finds the first's
entry and discards its own copy.

`build_once` and `keyed_name` are that machinery for any cache entry: `facecrop:` (data/faces/crops.py)
keeps its FF++-style crops the same way, under its own subdirectory.

It runs where the source is built: in the training process, before grain starts any worker. Workers
receive the finished `AlignedSource` (a directory and its records) and only read PNGs.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import pathlib
import secrets
import shutil
import socket
from typing import Any, Callable

from data.faces import extract as extracting
from data.faces.template import TEMPLATE_FILE
from zoo.errors import DataError
from zoo.files import cache_dir

log = logging.getLogger(__name__)

FORMAT = 1
"""Bump when what `python -m data.faces extract` writes changes in a way the options do not show."""
SUBDIR = "aligned"

_hashes: dict[tuple[str, int, int], str] = {}


def file_sha256(path: pathlib.Path) -> str:
    """The file's content sha256, read in 1 MiB chunks; remembered for a file whose path, size and mtime stay."""
    st = path.stat()
    memo = (str(path), st.st_size, st.st_mtime_ns)
    if memo not in _hashes:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        _hashes[memo] = digest.hexdigest()
    return _hashes[memo]


def entry_name(video: pathlib.Path, options: extracting.Options, every: int) -> str:
    """`<stem>-<key>`: the cache entry of this video extracted with these options (module docstring)."""
    video = video.resolve()
    parts = [f"format={FORMAT}", f"path={video}", f"sha256={file_sha256(video)}",
             f"template={file_sha256(TEMPLATE_FILE)}", f"every={every}",
             *(f"{k}={v}" for k, v in sorted(dataclasses.asdict(options).items()))]
    return keyed_name(video.stem, parts)


def keyed_name(stem: str, parts: list[str]) -> str:
    """`<stem>-<key>`, the key a hash of `parts` (everything that decides an entry's content)."""
    return f"{stem}-{hashlib.sha256(chr(0).join(parts).encode()).hexdigest()[:16]}"


def extraction(video: str | os.PathLike[str], *, size: int = 256, face_type: str = "whole_face", every: int = 1,
               workers: int = 1, root: str | os.PathLike[str] | None = None, progress: bool = True) -> pathlib.Path:
    """The directory of `video`'s extracted faces in the cache (`root`, default the zoo's), extracting on first use.

    `workers` > 1 spreads a long video over a spawn pool (`data.faces.extract`); it does not change the faces,
    so it is not part of the key.
    """
    video = pathlib.Path(video)
    if not video.is_file():
        what = "a directory: name the video file inside it" if video.is_dir() else "no such file"
        raise DataError(f"aligned:{video}: {what} (aligned: takes an extraction directory or one video file)")
    options = extracting.Options(face_type=face_type, size=size)
    extracting._check_options(options, every, workers)
    parent = pathlib.Path(cache_dir(root)) / SUBDIR
    entry = parent / entry_name(video, options, every)

    def build(private: pathlib.Path) -> None:
        log.info("aligned:%s: extracting faces once into %s (size %d, %s, every %d)", video, entry, size, face_type,
                 every)
        extracting.extract(video, private, options, every=every, workers=workers, progress=progress)

    return build_once(entry, extracting.INDEX, build, f"aligned:{video}")


def build_once(entry: pathlib.Path, marker: str, build: Callable[[pathlib.Path], None], what: str) -> pathlib.Path:
    """The cache entry `entry`, complete once `entry/marker` exists; else `build(private)` fills a private
    directory that then takes the entry's name by one rename (module docstring). Returns `entry`."""
    if (entry / marker).is_file():
        log.info("%s: using the cached entry %s", what, entry)
        return entry
    parent = entry.parent
    parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(parent, entry.name)
    private = parent / f".{entry.name}.{_host()}.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        build(private)
        try:
            os.rename(private, entry)
        except OSError:
            if not (entry / marker).is_file():
                raise
            log.info("%s: another process built it first; its copy is used", entry)
    finally:
        if private.exists():
            shutil.rmtree(private, ignore_errors=True)
    return entry


def _host() -> str:
    return "".join(c if c.isalnum() or c == "-" else "_" for c in socket.gethostname()) or "host"


def _remove_abandoned(parent: pathlib.Path, name: str) -> None:
    """Delete this entry's private directories (and their extract staging) whose process on this host is gone."""
    host = _host()
    for path in parent.iterdir():
        owner = _owner(path.name, name)
        if owner is not None and owner[0] == host and not _alive(owner[1]):
            shutil.rmtree(path, ignore_errors=True)


def _owner(leftover: str, name: str) -> tuple[str, int] | None:
    """(host, pid) in a private directory's name `.<name>.<host>.<pid>.<hex>`, or its extract staging's
    `..<name>.<host>.<pid>.<hex>.<hex>.extract`; None for anything else."""
    for prefix in (f".{name}.", f"..{name}."):
        if leftover.startswith(prefix):
            fields = leftover[len(prefix):].split(".")
            if len(fields) >= 3 and fields[1].isdigit():
                return fields[0], int(fields[1])
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def spec_options(rest: str, items: list[str]) -> dict[str, Any]:
    """size, face_type, every and workers from an `aligned:VIDEO;...` spec's option items, checked."""
    from data.faces import align

    options: dict[str, Any] = {}
    for item in filter(str.strip, items):
        key, eq, value = (s.strip() for s in item.partition("="))
        if key not in ("size", "face_type", "every", "workers") or not eq:
            raise DataError(f"aligned:{rest}: bad option {item!r}; for a video, aligned takes size=N, "
                            f"face_type={'|'.join(align.FACE_TYPES)}, every=K and workers=N")
        if key == "face_type":
            if value not in align.FACE_TYPES:
                raise DataError(f"aligned:{rest}: face_type={value!r}; use one of {', '.join(align.FACE_TYPES)}")
            options[key] = value
            continue
        try:
            options[key] = int(value)
        except ValueError:
            raise DataError(f"aligned:{rest}: {key}={value!r} is not an integer") from None
    return options
