"""Files the zoo writes and caches: atomic writes and the cache directory, one implementation of each.

An interrupted write leaves the old file or none, never a torn one; everything downloaded or
derived once (pretrained weights, extractor weights, reference statistics) lives under one cache.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import secrets
from typing import Iterator


def cache_dir(override: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """Where downloads and derived files are kept: `override`, else $ZOO_CACHE, else ~/.cache/deepfake-zoo."""
    return pathlib.Path(override or os.environ.get("ZOO_CACHE") or pathlib.Path.home() / ".cache" / "deepfake-zoo")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[pathlib.Path]:
    """Yield a fresh temporary path beside `path`; it takes `path`'s name only if the block ends without error.

    Write to the yielded path with any writer (PIL, safetensors, `write_text`); the rename is atomic on one
    filesystem, so a reader or a killed process sees the old file or the new one. The temporary name is unique
    (`.NAME.<random>.tmp`), so concurrent writers of one path never share it, and it is created by the writer,
    so the file gets the usual umask permissions. On error it is removed and the error propagates.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
