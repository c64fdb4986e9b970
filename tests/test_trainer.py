"""The generic trainer: strategies agree, resume is exact, checkpoints survive kills and moves."""
import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "workers.py"
# Across device counts and processes convolutions and sums run in another order; Adam turns that
# float noise in near-zero gradients into differences up to ~3e-5 over a few steps (seen in CI),
# while a strategy that dropped or double-counted a shard's gradient would differ by ~1e-3.
TOL = dict(rtol=2e-4, atol=1e-4)


def run_worker(devices: int, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run([sys.executable, str(WORKER), str(devices), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def load(path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return dict(f)


def assert_params_close(a: dict, b: dict, **tol) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], err_msg=k, **(tol or TOL))


def smoke(**overrides):
    from conftest import set_fields

    from train import config as config_lib

    config = config_lib.load(str(ROOT / "configs/vae_digits.py:smoke"))
    config.unlock()
    return set_fields(config, overrides)


def params_of(state) -> dict[str, np.ndarray]:
    from flax import traverse_util

    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(state["params"], sep="/").items()}


@pytest.mark.slow  # 30-40 s: the fast step keeps under 15 min on 2 cores
def test_one_device_jit8_and_pmap8_reach_the_same_parameters(tmp_path):
    import jax

    from train import trainer

    assert jax.device_count() == 8
    common = {"total_steps": 6, "batch_size": 32, "eval_every": 0, "preview_every": 0, "checkpoint.every": 0}
    one = params_of(trainer.train(smoke(**common, **{"parallel.num_devices": 1}), tmp_path / "one"))
    jit8 = params_of(trainer.train(smoke(**common), tmp_path / "jit8"))
    pmap8 = params_of(trainer.train(smoke(**common, **{"parallel.strategy": "pmap"}), tmp_path / "pmap8"))
    after_one = params_of(trainer.train(smoke(**dict(common, total_steps=1)), tmp_path / "one_step"))
    assert any(not np.allclose(after_one[k], one[k]) for k in one), "training did not move the parameters"
    assert_params_close(one, jit8)
    assert_params_close(one, pmap8)


@pytest.mark.slow  # 30-110 s on 2 busy cores: the fast step stays under 15 min
def test_resume_after_sigkill_is_exact(tmp_path):
    """2N steps uninterrupted == N steps, SIGKILL, resume, N more; and the next batch is the same."""
    n = 6
    overrides = {"total_steps": 2 * n, "checkpoint.every": n, "eval_every": 0, "preview_every": 0}
    run_worker(8, "train", json.dumps(overrides), str(tmp_path / "straight"), str(tmp_path / "straight.npz"))
    killed = subprocess.run(
        [sys.executable, str(WORKER), "8", "train", json.dumps(overrides), str(tmp_path / "resumed"),
         str(tmp_path / "unused.npz"), str(n + 2), str(n)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert (tmp_path / "resumed" / "checkpoints" / str(n)).is_dir()
    assert not (tmp_path / "resumed" / "checkpoints" / str(2 * n)).exists()
    resumed = run_worker(8, "train", json.dumps(overrides), str(tmp_path / "resumed"), str(tmp_path / "resumed.npz"))
    assert f"resumed from checkpoint {n}" in resumed.stderr
    np.testing.assert_equal(load(tmp_path / "straight.npz"), load(tmp_path / "resumed.npz"))
    _assert_same_next_batch(tmp_path / "straight", tmp_path / "resumed", 2 * n)


def _assert_same_next_batch(workdir_a, workdir_b, step):
    """The data iterators saved at `step` in both runs yield the identical next batch."""
    from data import pipeline
    from train import checkpoint, runs

    batches = []
    for workdir in (workdir_a, workdir_b):
        config = runs.load_config(workdir)
        setup = runs.build(config)
        iterator = iter(pipeline.make_dataset(setup.train_source, global_batch_size=config.batch_size, seed=config.seed))
        ckpt = checkpoint.Checkpointer(workdir)
        ckpt.restore(step, setup.abstract_state, iterator)
        ckpt.close()
        batches.append(next(iterator))
    np.testing.assert_equal(batches[0], batches[1])


@pytest.mark.slow  # 10-20 s each: the fast step stays under 15 min on 2 cores
def test_checkpoint_saved_on_8_devices_restores_on_1_and_2(tmp_path):
    run_worker(8, "train", json.dumps({"eval_every": 0}), str(tmp_path / "run"), str(tmp_path / "trained.npz"))
    trained = load(tmp_path / "trained.npz")
    for devices in (1, 2):
        proc = run_worker(devices, "restore", str(tmp_path / "run"), str(tmp_path / f"r{devices}.npz"))
        assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"devices": devices, "step": 4}
        np.testing.assert_equal(load(tmp_path / f"r{devices}.npz"), trained)


def test_corrupt_newest_checkpoint_falls_back_with_a_warning(tmp_path, caplog):
    from train import trainer

    workdir = tmp_path / "run"
    config = smoke(**{"eval_every": 0, "preview_every": 0, "checkpoint.max_to_keep": 5})
    trainer.train(config, workdir)
    ckpts = workdir / "checkpoints"
    assert sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit()) == [2, 4]
    for f in (ckpts / "4" / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    config.total_steps = 6
    with caplog.at_level("WARNING"):
        state = trainer.train(config, workdir)
    assert "checkpoint" in caplog.text and "cannot be restored" in caplog.text
    assert int(np.asarray(state["step"])) == 6
    assert (ckpts / "2").is_dir(), "the good checkpoint must survive"
    assert sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit()) == [2, 4, 6]
    assert len(list((workdir / "checkpoints_corrupt").iterdir())) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # 30-40 s: the fast step keeps under 15 min on 2 cores
def test_two_processes_on_loopback_match_the_single_process_run(tmp_path):
    """jax.distributed with gloo: 2 processes x 2 CPU devices, each feeding its half of every batch."""
    overrides = {"total_steps": 5, "eval_every": 5, "preview_every": 5, "checkpoint.every": 5, "batch_size": 16}
    run_worker(4, "train", json.dumps(overrides), str(tmp_path / "single"), str(tmp_path / "single.npz"))
    port = str(_free_port())
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    # Each worker logs to a file: a pipe nobody drains blocks its worker once 64 KiB of log lines
    # wait in it, and the other worker then waits in a collective for ever.
    logs = [tmp_path / f"process_{i}.log" for i in range(2)]
    procs = []
    for i, log in enumerate(logs):
        with open(log, "w") as out:
            procs.append(subprocess.Popen(
                [sys.executable, str(WORKER), "2", "multihost", port, str(i), json.dumps(overrides),
                 str(tmp_path / "multi"), str(tmp_path / "multi.npz")],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + 300
    for p in procs:
        try:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            break
    for p in procs:  # a hung or orphaned worker is killed before its log is shown
        p.kill()
        p.wait()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, f"{log.name} (exit {p.returncode}):\n" + log.read_text()[-4000:]
    assert_params_close(load(tmp_path / "single.npz"), load(tmp_path / "multi.npz"))
    assert (tmp_path / "multi" / "checkpoints" / "5" / "data" / "process_1-of-2.json").exists()
    assert (tmp_path / "multi" / "previews" / "00000005.png").exists()
    evals = [json.loads(line) for line in (tmp_path / "multi" / "metrics.jsonl").read_text().splitlines()]
    single = [json.loads(line) for line in (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()]
    multi_elbo = next(r["eval/neg_elbo"] for r in evals if "eval/neg_elbo" in r)
    assert multi_elbo == pytest.approx(next(r["eval/neg_elbo"] for r in single if "eval/neg_elbo" in r), rel=1e-4)


def test_pace_reports_kimg_and_seconds_per_kimg_without_the_paused_work(monkeypatch):
    import types

    from train import trainer

    clock = iter([100.0, 101.0, 103.0, 112.0, 112.0, 117.0, 117.0])
    monkeypatch.setattr(trainer, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    pace = trainer.Pace(batch_size=64)
    assert pace.window(3) == {"kimg": 0.192}  # before the window opens: kimg only
    pace.begin(10)  # t = 100
    with pace.paused():  # 101 .. 103: a checkpoint, left out
        pass
    w = pace.window(30)  # t = 112: 20 steps in 12 - 2 = 10 s
    assert w["kimg"] == pytest.approx(30 * 64 / 1000)
    assert w["steps_per_sec"] == pytest.approx(2.0)
    assert w["sec_per_kimg"] == pytest.approx(10.0 / (20 * 64 / 1000))
    w = pace.window(40)  # the next window starts where this one ended: t 112 .. 117, 10 steps
    assert w["steps_per_sec"] == pytest.approx(2.0)
