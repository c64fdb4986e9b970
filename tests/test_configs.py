"""Config files: every :smoke variant trains and evaluates; bad fields fail fast with a clear message."""
import json
import pathlib
import subprocess
import sys

import pytest

from data import provenance
from train import config as config_lib
from train import runs
from train.families import vae

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.name for p in (ROOT / "configs").glob("*.py"))
# One smoke run each for the VAE, GAN and swap families in the fast step; the others, 13-46 s each, in the slow
# step: all of them made the fast step 6 minutes longer (the detect family trains through the trainer and is
# exported in tests/test_detectability.py's fast fixture). Every config still loads and validates in the fast step.
FAST_SMOKES = ("vae_digits.py", "swap_df_synthetic.py")  # the GAN family has its own fast tests


def _skip_without_data(config):
    from conftest import FASHION_MNIST, SHARED_DATA

    source = config.data.source
    if "shared/data" in source and not SHARED_DATA.is_dir():
        pytest.skip(f"{source} needs ../shared/data, absent here")
    if "fashion-mnist" in source and not FASHION_MNIST.is_dir():
        pytest.skip("needs Debian's dataset-fashion-mnist (apt-get install -y dataset-fashion-mnist)")


@pytest.mark.parametrize("name", [n if n in FAST_SMOKES else pytest.param(n, marks=pytest.mark.slow) for n in CONFIGS])
def test_smoke_variant_trains_and_evaluates(name, tmp_path, monkeypatch):
    from train import evaluate, export, trainer
    from zoo import pretrained

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))  # aligned:VIDEO sources extract into the cache
    config = config_lib.load(f"configs/{name}:smoke")
    _skip_without_data(config)
    workdir = tmp_path / "run"
    trainer.train(config, workdir)

    frozen = json.loads((workdir / "config.json").read_text())
    assert frozen["model"]["name"] == config.model.name and frozen["total_steps"] == 4
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    has_loss = lambda r: any(k == "train/loss" or k.startswith("train/") and k.endswith("/loss") for k in r)  # noqa: E731
    assert [r["step"] for r in records if has_loss(r)] == [1, 2, 3, 4]
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert "Synthetic" in provenance.read_provenance(workdir / "previews" / "00000004.png")["Description"]

    report = evaluate.evaluate(workdir)
    assert report["step"] == 4
    assert report["metrics"]["num_examples"] == min(32, len(runs.build(config).eval_source))
    assert (workdir / "eval" / "4.json").exists() and (workdir / "eval" / "4.png").exists()
    logged = next(r for r in records if any(k.startswith("eval/") for k in r))
    metrics = {k: v for k, v in report["metrics"].items() if k != "num_examples"}
    assert metrics and {f"eval/{k}" for k in metrics} <= set(logged)
    for name, value in metrics.items():  # metrics.jsonl writes a non-finite value as its string ("nan")
        assert value == pytest.approx(float(logged[f"eval/{name}"]), rel=1e-5, nan_ok=True), name

    loaded = pretrained.load(export.export_run(workdir))
    assert loaded.config["model"] == config.model.name


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "train", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", CONFIGS)
def test_every_smoke_variant_validates(name):
    from train import families

    config = config_lib.load(f"{ROOT / 'configs' / name}:smoke")
    config_lib.validate(config, families.get(config.family).section())


@pytest.mark.parametrize(
    "override, expected",
    [
        ("--config.batchsize=64", "Did you mean 'batch_size'"),
        ("--config.batch_size=abc", "batch_size"),
        ("--config.parallel.strategy=pmapp", "Did you mean 'pmap'"),
        ("--config.batch_size=12", "not divisible by the"),
        ("--config.optim.name=adamm", "adam, adamw, rmsprop"),
        ("--config.model.latent=3", "Did you mean 'latent_dim'? Valid fields here: activation, channels"),
        ("--config.model.name=vae_nope", "vae_conv, vae_mlp"),
    ],
)
def test_bad_config_fails_at_start_with_the_field_named(override, expected, tmp_path):
    proc = _cli("--config", "configs/vae_digits.py:smoke", "--workdir", str(tmp_path / "w"), override)
    assert proc.returncode != 0
    assert "config error" in proc.stderr and expected in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "w" / "checkpoints").exists()


def test_a_tuple_field_holding_items_of_another_kind_is_named_with_the_empty_form():
    """`--config.reenact.lr_milestones=` arrives as ('',): named at validation, not a TypeError in the family."""
    from train import families

    config = config_lib.load("configs/reenact_fomm_synthetic.py:smoke")
    section = families.get(config.family).section()
    for value, ok in [(("",), False), ((0.5, "x"), False), ((), True), ((0.5, 1), True)]:
        config.reenact.lr_milestones = value
        if ok:
            config_lib.validate(config, section)
        else:
            with pytest.raises(config_lib.ConfigError, match=r"reenact.lr_milestones = .* not float.*'\(\)' for none"):
                config_lib.validate(config, section)


def test_unknown_variant_lists_the_valid_ones():
    with pytest.raises(config_lib.ConfigError, match="choose one of: local, smoke"):
        config_lib.load("configs/vae_mnist.py:smok")


def test_misspelt_field_inside_a_config_file_is_caught():
    config = config_lib.load("configs/vae_digits.py")
    config.unlock()
    config.optim.learning_rat = 0.1
    with pytest.raises(config_lib.ConfigError, match="Did you mean 'learning_rate'"):
        config_lib.validate(config, vae.section())


@pytest.mark.parametrize("rate", [0.0, -1e-3, float("nan")])
def test_a_learning_rate_that_is_not_positive_is_refused(rate):
    config = config_lib.load("configs/vae_digits.py")
    config.unlock()
    config.optim.learning_rate = rate
    with pytest.raises(config_lib.ConfigError, match="optim.learning_rate = .* must be a number > 0"):
        config_lib.validate(config, vae.section())


def test_workdir_frozen_by_an_older_version_still_loads(tmp_path):
    """A field added to the base config later takes its default when an old run is evaluated."""

    config = config_lib.load("configs/vae_digits.py:smoke")
    frozen = json.loads(config.to_json_best_effort())
    del frozen["data"]["resolution"]
    frozen["optim"]["learning_rate"] = 0.0123
    (tmp_path / "config.json").write_text(json.dumps(frozen))
    loaded = runs.load_config(tmp_path)
    assert loaded.data.resolution == 0 and loaded.optim.learning_rate == 0.0123
    assert loaded.model.latent_dim == config.model.latent_dim
    config_lib.validate(loaded, vae.section())


def test_config_files_load_without_jax_optax_or_model_code():
    """Every config (and variant) builds from ml_collections alone, so --help and config errors are instant."""
    script = (
        "import sys, pathlib\n"
        "from train import sections\n"
        "for f in sorted(pathlib.Path('configs').glob('*.py')):\n"
        "    config = sections.load(str(f))\n"
        "    sections.load(f'{f}:smoke')\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'optax', 'flax', 'zoo', 'tensorflow'))\n"
        "print(heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[]", proc.stdout


def test_model_fields_snapshot_equals_the_registry():
    from train import sections

    live = config_lib.model_field_defaults()
    assert sections.model_field_defaults() == live, (
        "train/model_fields.json is stale; regenerate it with "
        "python -c \"from train import config; config.write_model_fields()\"")
    section = sections.model_section("swap_df", ae_dims=128)
    assert section.ae_dims == 128 and set(section.keys()) == {"name"} | set(live["swap_df"])
