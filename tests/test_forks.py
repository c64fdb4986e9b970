"""No process forks with Python in the child once JAX runs, so JAX's deadlock warning never shows (data/media.py)."""
import os
import pathlib
import subprocess
import sys
import warnings

import jax
import pytest

from data.media import VideoSource

ROOT = pathlib.Path(__file__).resolve().parents[1]
FORK_WARNING = "os.fork()"


@pytest.fixture(scope="module")
def forks() -> list[int]:
    """Grows by one per fork that runs at-fork hooks (os.fork, subprocess with preexec_fn): what JAX warns about."""
    jax.devices()  # JAX installs its at-fork warning when a backend starts
    calls: list[int] = []
    os.register_at_fork(before=lambda: calls.append(os.getpid()))
    return calls


def test_video_source_starts_ffmpeg_without_a_python_fork(shared_data, forks):
    before = len(forks)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        source = VideoSource(shared_data / "grid" / "bbaf2n.mpg", size=16, max_frames=3)
    assert len(source) == 3
    assert len(forks) == before, "ffmpeg was started with fork() and Python in the child (a preexec_fn)"
    assert not [w for w in caught if FORK_WARNING in str(w.message)]


@pytest.mark.slow  # about a minute on 2 cores: a real training run
def test_swap_grid_smoke_run_prints_no_fork_warning(shared_data, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "IMAGEIO_FFMPEG_NO_PREVENT_SIGINT"}
    env["ZOO_CACHE"] = str(tmp_path / "cache")  # a fresh cache, so the run extracts its aligned: faces
    command = [sys.executable, "-m", "train", "--config", "configs/swap_df_grid.py:smoke", "--workdir",
               str(tmp_path / "run")]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert FORK_WARNING not in proc.stderr, proc.stderr[-3000:]
    assert len(list((tmp_path / "cache" / "aligned").iterdir())) == 2, "the run did not extract both videos"
