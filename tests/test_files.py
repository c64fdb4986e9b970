"""atomic_write: the new file appears whole or not at all, and no temporary file is left behind."""
import os
import stat

import numpy as np
import pytest

from zoo.files import atomic_write


def test_atomic_write_replaces_the_file_only_when_the_block_ends(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    with atomic_write(path) as tmp:
        tmp.write_text("new")
        assert not path.exists() and tmp.parent == path.parent
    assert path.read_text() == "new"
    assert [p.name for p in path.parent.iterdir()] == ["out.txt"]


def test_atomic_write_keeps_the_old_file_and_cleans_up_on_error(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_concurrent_writers_get_distinct_temporary_names(tmp_path):
    with atomic_write(tmp_path / "x") as a, atomic_write(tmp_path / "x") as b:
        assert a != b
        a.write_text("a")
        b.write_text("b")
    assert (tmp_path / "x").read_text() == "a"  # the last to finish wins, whole


def test_atomic_write_gives_files_the_umask_permissions_whatever_the_writer_chose(tmp_path):
    from safetensors.numpy import save_file

    target = tmp_path / "w.safetensors"
    with atomic_write(target) as tmp:
        save_file({"a": np.zeros(2, np.float32)}, str(tmp))  # safetensors creates it 0o600
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
