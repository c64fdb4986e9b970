"""Bad input to the command-line tools: one or two lines naming the file or field and the fix, exit status 2.

Every case runs the real CLI in a subprocess and fails before JAX compiles anything, so each
takes a few seconds. A traceback is shown only with `--debug` or ZOO_DEBUG=1.
"""
import json
import os
import pathlib
import subprocess
import sys
import types

import ml_collections
import pytest

from zoo.errors import WorkdirError

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMOKE = "configs/vae_digits.py:smoke"

# Root writes through any mode bits, so a read-only directory is simulated by os.access saying so.
_READ_ONLY_RUNNER = """
import os, runpy, sys
read_only, real_access = os.environ["READ_ONLY_DIR"], os.access
def access(path, mode, **kwargs):
    if mode & os.W_OK and os.path.abspath(path).startswith(read_only):
        return False
    return real_access(path, mode, **kwargs)
os.access = access
module = sys.argv.pop(1)
sys.argv[0] = module
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def _run(module: str, *args: str, env: dict | None = None, read_only: pathlib.Path | None = None
         ) -> subprocess.CompletedProcess:
    """`python -m module args` from the repo root, optionally with `read_only` unwritable."""
    environ = {k: v for k, v in os.environ.items() if k != "ZOO_DEBUG"} | (env or {})
    command = [sys.executable, "-m", module, *args]
    if read_only is not None:
        read_only.chmod(0o555)
        environ["READ_ONLY_DIR"] = str(read_only)
        command = [sys.executable, "-c", _READ_ONLY_RUNNER, module, *args]
    try:
        return subprocess.run(command, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120)
    finally:
        if read_only is not None:
            read_only.chmod(0o755)


def _assert_message(proc: subprocess.CompletedProcess, *expected: str) -> None:
    """Exit status 2, every expected fragment in stderr, no traceback, at most two lines."""
    err = proc.stderr
    assert proc.returncode == 2, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    for fragment in expected:
        assert fragment in err, err[-3000:]
    assert len(err.strip().splitlines()) <= 2, err


@pytest.fixture
def run_dir(tmp_path) -> pathlib.Path:
    """A workdir holding the frozen config of a run that has not saved a checkpoint yet."""
    from train import config as config_lib

    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.json").write_text(config_lib.load(SMOKE).to_json_best_effort(indent=2))
    return workdir


def test_unknown_data_source(tmp_path):
    proc = _run("train", "--config", SMOKE, "--workdir", str(tmp_path / "w"), "--config.data.source=nosuch:x")
    _assert_message(proc, "data error", "'nosuch:x'", "idx:<dir>", "python -m data list")


def test_missing_idx_directory(tmp_path):
    missing = tmp_path / "nowhere"
    proc = _run("train", "--config", SMOKE, "--workdir", str(tmp_path / "w"), f"--config.data.source=idx:{missing}")
    _assert_message(proc, f"idx:{missing}", "not a directory", "point the spec at the folder")


@pytest.mark.parametrize("below", [False, True], ids=["file", "under_a_file"])
def test_train_workdir_that_is_a_file(tmp_path, below):
    file = tmp_path / "afile"
    file.write_text("")
    proc = _run("train", "--config", SMOKE, "--workdir", str(file / "run" if below else file))
    _assert_message(proc, "workdir error", f"{file} is a file", "--workdir")


def test_train_read_only_workdir(tmp_path):
    workdir = tmp_path / "ro"
    workdir.mkdir()
    proc = _run("train", "--config", SMOKE, "--workdir", str(workdir), read_only=workdir)
    _assert_message(proc, "workdir error", f"{workdir} is not writable", "--workdir")
    assert not list(workdir.iterdir())


def test_missing_config_file(tmp_path):
    proc = _run("train", "--config", "configs/nosuch.py", "--workdir", str(tmp_path / "w"))
    _assert_message(proc, "config error", "configs/nosuch.py not found", "--config configs/")


def test_missing_config_variant(tmp_path):
    proc = _run("train", "--config", "configs/vae_digits.py:nosuch", "--workdir", str(tmp_path / "w"))
    _assert_message(proc, "config error", "unknown config variant 'nosuch'", "choose one of: smoke")


def test_a_comma_list_in_one_metric_item_is_split_and_a_misspelt_metric_fails_before_training(tmp_path):
    """`--config.eval.metrics=recon,reenact_truth` arrived as one word and failed after a 42-minute run."""
    from train import config as config_lib
    from train import evaluators, trainer
    from zoo.errors import ConfigError

    family = types.SimpleNamespace(evaluators={"recon": None}, host_evaluators={"reenact_truth": None},
                                   default_metrics=("recon",))
    assert evaluators.metric_names(family, ("recon,reenact_truth",)) == ("recon", "reenact_truth")
    assert evaluators.metric_names(family, ["recon", " reenact_truth"]) == ("recon", "reenact_truth")
    assert evaluators.metric_names(family, ()) == ("recon",)
    config = config_lib.load("configs/vae_digits.py:smoke")
    config.eval.metrics = ("elbo,nosuch",)
    with pytest.raises(ConfigError, match=r"unknown metrics \['nosuch'\]"):
        trainer.train(config, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("module", ["train.evaluate", "train.export"])
@pytest.mark.parametrize(
    "kind, expected",
    [("missing", "does not exist"), ("empty", "holds no run (no config.json)"), ("file", "is a file")],
)
def test_workdir_that_holds_no_run(tmp_path, module, kind, expected):
    workdir = tmp_path / kind
    if kind == "empty":
        workdir.mkdir()
    elif kind == "file":
        workdir.write_text("")
    proc = _run(module, "--workdir", str(workdir))
    _assert_message(proc, "workdir error", f"workdir {workdir} {expected}", "--workdir")


@pytest.mark.parametrize("module", ["train.evaluate", "train.export"])
@pytest.mark.parametrize("folder", [False, True], ids=["no_folder", "empty_folder"])
def test_workdir_without_checkpoints(run_dir, module, folder):
    if folder:
        (run_dir / "checkpoints").mkdir()
    proc = _run(module, "--workdir", str(run_dir))
    _assert_message(proc, "checkpoint error", f"no complete checkpoint in {run_dir / 'checkpoints'}", "train")


@pytest.mark.parametrize("module, out, fix", [("train.evaluate", "eval", "--out DIR"),
                                              ("train.export", "export", "--out FILE")])
def test_read_only_workdir_fails_before_reading_a_checkpoint(run_dir, module, out, fix):
    proc = _run(module, "--workdir", str(run_dir), read_only=run_dir)
    _assert_message(proc, "workdir error", f"{run_dir} is not writable", fix)
    assert not (run_dir / out).exists()


@pytest.mark.parametrize("env, args", [({}, ["--debug"]), ({"ZOO_DEBUG": "1"}, [])], ids=["flag", "env"])
def test_debug_shows_the_traceback_once(tmp_path, env, args):
    bad = ["--config", SMOKE, "--workdir", str(tmp_path / "w"), "--config.data.source=nosuch:x"]
    _assert_message(_run("train", *bad), "data error")
    proc = _run("train", *args, *bad, env=env)
    assert proc.returncode != 0
    assert proc.stderr.count("Traceback") == 1 and "zoo.errors.DataError: unknown data spec" in proc.stderr, proc.stderr


def test_evaluate_prints_the_report_when_writing_it_fails(tmp_path, monkeypatch, capsys):
    """A disk that fails after the up-front check (full, or made read-only) still leaves the report on stdout."""
    from train import cli, evaluate, evaluators, runs

    config = ml_collections.ConfigDict({"seed": 0, "model": {"name": "m"},
                                        "eval": {"metrics": ["m"], "batch_size": 1, "num_examples": 0,
                                                 "detector": ""}})
    family = types.SimpleNamespace(evaluators={"m": None}, host_evaluators={}, default_metrics=())
    setup = types.SimpleNamespace(config=config, family=family, eval_source=None, eval_spec="digits:test")
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setattr(runs, "load_run", lambda workdir, step: (setup, 7, None))
    monkeypatch.setattr(evaluators, "run_metrics", lambda *args, **kwargs: {"m": 1.5})
    monkeypatch.setattr(cli, "check_writable", lambda directory, fix: None)
    (tmp_path / "eval").write_text("")  # out/7.json cannot be written: out is a file
    with pytest.raises(WorkdirError, match=f"cannot write the report to {tmp_path / 'eval'}.*--out DIR"):
        evaluate.evaluate(tmp_path, echo=True)
    assert json.loads(capsys.readouterr().out) | {"seconds": 0} == {
        "step": 7, "metrics": {"m": 1.5}, "seconds": 0,
        "protocol": {"source": "digits:test", "metrics": ["m"], "seed": 0}}


def test_an_unknown_metric_is_a_config_error_listing_the_familys_metrics():
    """`train.evaluate --metrics nosuch` printed a ValueError traceback; the CLIs print ZooErrors as one line."""
    from train import evaluators
    from zoo.errors import ConfigError

    family = types.SimpleNamespace(evaluators={"disc": None}, host_evaluators={"fid": None})
    with pytest.raises(ConfigError, match=r"unknown metrics \['nosuch'\]; this family has: disc, fid"):
        evaluators.run_metrics(family, None, None, names=["nosuch"], batch_size=8, seed=0)


@pytest.mark.parametrize("module", ["train.evaluate", "train.export"])
@pytest.mark.parametrize("text, expected", [('{"family": "vae", "model": ', "is not the JSON config a run writes"),
                                            ('["x"]', "holds a JSON list")])
def test_a_damaged_frozen_config_names_the_file_and_where_a_copy_is(run_dir, module, text, expected):
    (run_dir / "checkpoints").mkdir()
    (run_dir / "config.json").write_text(text)
    proc = _run(module, "--workdir", str(run_dir))
    _assert_message(proc, "workdir error", str(run_dir / "config.json"), expected, "checkpoints/<step>/meta/metadata")


def test_a_tool_for_one_family_names_a_workdir_of_another_before_building_it(tmp_path):
    """`reenact_grid`/`reenact_probe` given a VAE run: one ConfigError naming both families, nothing built."""
    from train import runs
    from zoo.errors import ConfigError

    (tmp_path / "config.json").write_text(json.dumps({"family": "vae"}))
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(ConfigError, match=f"{tmp_path} is a 'vae' run; give a reenact run's workdir"):
        runs.load_run(tmp_path, family="reenact")
