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
    (`.NAME.<random>.tmp`), so concurrent writers of one path never share it. The file gets the usual
    permissions (0o666 less the umask) whatever the writer chose: safetensors creates its files owner-only
    (0o600), which left exports unreadable to the rest of a group. On error it is removed and the error
    propagates.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        yield tmp
        if tmp.is_file():
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    """The process's umask (read by setting and restoring it: POSIX has no other portable way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
