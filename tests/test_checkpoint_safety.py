"""A run is never lost to a config change, never checkpoints a non-finite state, and detects damaged arrays."""
import pathlib
import re
import shutil

import numpy as np
import pytest
from test_trainer import params_of, smoke

from train import runs

QUIET = {"eval_every": 0, "preview_every": 0}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> pathlib.Path:
    """A 4-step smoke run with checkpoints at steps 2 and 4, copied by each test that changes it."""
    from train import trainer

    workdir = tmp_path_factory.mktemp("trained") / "run"
    trainer.train(smoke(**QUIET, **{"checkpoint.max_to_keep": 5}), workdir)
    return workdir


def _copy(trained: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    workdir = tmp_path / "run"
    shutil.copytree(trained, workdir)
    return workdir


def _steps(workdir: pathlib.Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


@pytest.mark.parametrize("field, value, shown", [
    ("model.latent_dim", 8, "model.latent_dim: 16 -> 8"),  # shapes change
    ("optim.name", "adabelief", "optim.name: 'adam' -> 'adabelief'"),  # same layout, another meaning
    ("optim.update_keep_prob", 0.5, "optim.update_keep_prob: 1.0 -> 0.5"),  # state added
])
def test_a_config_that_changes_the_state_stops_the_resume_and_keeps_every_checkpoint(trained, tmp_path, field,
                                                                                     value, shown):
    from train import trainer
    from zoo.errors import CheckpointError

    workdir = _copy(trained, tmp_path)
    config_json = (workdir / "config.json").read_text()
    with pytest.raises(CheckpointError) as error:
        trainer.train(smoke(**QUIET, total_steps=6, **{field: value}), workdir)
    message = str(error.value)
    assert shown in message and "new --workdir" in message, message
    if field == "optim.name":
        assert "total_steps" not in message, "at an equal layout only the fields that define the state are blamed"
    assert _steps(workdir) == [2, 4], "no checkpoint may be moved or deleted"
    assert not (workdir / "checkpoints_corrupt").exists()
    assert (workdir / "config.json").read_text() == config_json, "the frozen config must not be overwritten"


def test_a_change_that_keeps_the_state_resumes_and_is_logged(trained, tmp_path, caplog):
    from train import trainer

    workdir = _copy(trained, tmp_path)
    with caplog.at_level("INFO", logger="train"):
        state = trainer.train(smoke(**QUIET, total_steps=6, log_every=2, **{"optim.learning_rate": 5e-4}), workdir)
    assert int(np.asarray(state["step"])) == 6
    assert "resumed from checkpoint 4" in caplog.text
    assert "total_steps: 4 -> 6" in caplog.text and "optim.learning_rate: 0.002 -> 0.0005" in caplog.text


def test_an_update_to_nonfinite_parameters_is_never_checkpointed(tmp_path):
    """SGD at lr 1e38: step 1's loss is finite (computed before the update), its parameters are not."""
    from train import trainer

    config = smoke(**QUIET, **{"optim.name": "sgd", "optim.learning_rate": 1e38, "optim.b1": 0.0,
                               "checkpoint.every": 1})
    with pytest.raises(FloatingPointError) as error:
        trainer.train(config, tmp_path / "run")
    message = str(error.value)
    assert re.search(r"step 1 .* non-finite, first in network 'vae': params/vae/\S+", message), message
    assert "no checkpoint was saved" in message
    assert not (tmp_path / "run" / "checkpoints" / "1").exists()


@pytest.mark.slow  # 30 s: a second full smoke run; the fast step keeps under 15 min on 2 cores
def test_skip_nonfinite_keeps_the_old_state_and_counts_the_skips(tmp_path):
    import jax

    from train import trainer

    config = smoke(**QUIET, **{"optim.name": "sgd", "optim.learning_rate": 1e38, "optim.b1": 0.0,
                               "optim.skip_nonfinite": True})
    state = trainer.train(config, tmp_path / "run")
    setup = runs.build(config)
    initial = params_of(jax.jit(setup.family.init)(*setup.init_args))
    assert int(np.asarray(state["step"])) == 4
    np.testing.assert_equal(params_of(state), initial)
    records = [line for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if "skipped" in line]
    assert '"train/skipped_nonfinite": 4.0' in records[-1], records


def _largest_array_file(step_dir: pathlib.Path) -> pathlib.Path:
    files = [f for f in (step_dir / "state").rglob("*") if f.is_file() and "ocdbt" in str(f) and "/d/" in str(f)]
    return max(files, key=lambda f: f.stat().st_size)


def _flip_a_bit(step_dir: pathlib.Path) -> None:
    """Flip one bit in the middle of the largest array-data file of a checkpoint's state."""
    target = _largest_array_file(step_dir)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x10
    target.write_bytes(bytes(data))


def _truncate(step_dir: pathlib.Path) -> None:
    for f in (step_dir / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


@pytest.mark.parametrize("damage", [_flip_a_bit, pytest.param(_truncate, marks=pytest.mark.slow)])
def test_a_damaged_checkpoint_is_quarantined_with_one_line_and_the_run_falls_back(trained, tmp_path, caplog, capfd,
                                                                                  damage):
    from train import trainer

    workdir = _copy(trained, tmp_path)
    damage(workdir / "checkpoints" / "4")
    capfd.readouterr()
    with caplog.at_level("INFO", logger="train"):
        state = trainer.train(smoke(**QUIET, total_steps=6), workdir)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and r.name == "train.checkpoint"]
    assert len(warnings) == 1 and warnings[0].startswith("checkpoint 4 cannot be restored"), warnings
    assert len(warnings[0]) < 400 and "\n" not in warnings[0]
    assert "resumed from checkpoint 2" in caplog.text
    err = capfd.readouterr().err
    assert "Exception ignored" not in err and "Traceback" not in err, err[-3000:]
    assert int(np.asarray(state["step"])) == 6
    assert [p.name.split("-")[0] for p in (workdir / "checkpoints_corrupt").iterdir()] == ["4"]


def test_no_usable_checkpoint_left_says_it_starts_from_step_0(trained, tmp_path, caplog):
    from train import trainer

    workdir = _copy(trained, tmp_path)
    for step in (2, 4):
        _flip_a_bit(workdir / "checkpoints" / str(step))
    with caplog.at_level("INFO", logger="train"):
        trainer.train(smoke(**QUIET, total_steps=2, **{"checkpoint.every": 0}), workdir)
    assert "no usable checkpoint is left" in caplog.text and "starting from step 0" in caplog.text
    assert len(list((workdir / "checkpoints_corrupt").iterdir())) == 2


def test_checksums_catch_one_changed_value_and_nonfinite_arrays_are_refused(tmp_path):
    import jax.numpy as jnp

    from train import checkpoint

    state = {"params": {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.zeros(3)}, "step": jnp.int32(3)}
    recorded = checkpoint.checksums(state)
    checkpoint.verify(state, recorded, 3)
    changed = dict(state, params=dict(state["params"], w=state["params"]["w"].at[1, 2].add(7.6e-5)))
    with pytest.raises(checkpoint.IntegrityError, match="params/w"):
        checkpoint.verify(changed, recorded, 3)
    poisoned = dict(state, params=dict(state["params"], b=jnp.array([0.0, jnp.inf, 0.0])))
    with pytest.raises(checkpoint.IntegrityError, match="params/b holds non-finite"):
        checkpoint.verify(poisoned, checkpoint.checksums(poisoned), 3)
    with pytest.raises(checkpoint.IntegrityError, match="non-finite"):
        checkpoint.verify(poisoned, None, 3)


@pytest.mark.slow  # 35 s: two resumes, one with a worker process; the fast step keeps under 15 min on 2 cores
def test_another_worker_count_resumes_exactly_where_the_run_left_off(trained, tmp_path, caplog):
    """grain's saved position is per worker count; the stream instead restarts at batch `step`, the same batches."""
    from train import trainer

    workdir = _copy(trained, tmp_path)
    with caplog.at_level("INFO", logger="train"):
        resumed = trainer.train(smoke(**QUIET, total_steps=6, **{"data.worker_count": 1}), workdir)
    assert "resumed from checkpoint 4" in caplog.text and not (workdir / "checkpoints_corrupt").exists()
    (tmp_path / "same").mkdir()
    same_workers = trainer.train(smoke(**QUIET, total_steps=6), _copy(trained, tmp_path / "same"))
    np.testing.assert_equal(params_of(resumed), params_of(same_workers))


def test_a_stream_started_at_batch_k_is_the_stream_after_k_batches():
    from data import pipeline
    from data.sources import get_source

    source = get_source("digits", "train")
    full = iter(pipeline.make_dataset(source, global_batch_size=8, seed=3))
    for _ in range(5):
        next(full)
    late = iter(pipeline.make_dataset(source, global_batch_size=8, seed=3, start=5))
    for _ in range(3):
        np.testing.assert_equal(next(late), next(full))


@pytest.mark.slow  # 30 s: two runs with evaluation; the fast step keeps under 15 min on 2 cores
def test_an_evaluation_lost_to_a_kill_after_its_checkpoint_is_run_on_resume(tmp_path):
    """The checkpoint is saved before the evaluation; a kill between the two must not lose the evaluation."""
    import json

    from train import trainer

    workdir = tmp_path / "run"
    trainer.train(smoke(preview_every=0, eval_every=2, total_steps=2), workdir)
    log = workdir / "metrics.jsonl"
    kept = [line for line in log.read_text().splitlines() if not any(k.startswith("eval/") for k in json.loads(line))]
    log.write_text("\n".join(kept) + "\n")  # what a kill right after the save leaves
    trainer.train(smoke(preview_every=0, eval_every=2, total_steps=3), workdir)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in records if "eval/neg_elbo" in r] == [2, 3]
