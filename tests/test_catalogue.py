"""The pretrained catalogue: cards re-measured from their files, timm's verbs, converters, and the CLI."""
import os
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo import catalogue, errors, pretrained

ROOT = pathlib.Path(__file__).resolve().parents[1]
HEX64 = re.compile(r"[0-9a-f]{64}")


def _cli(*args: str, cache: pathlib.Path) -> subprocess.CompletedProcess:
    """`python -m zoo.pretrained ARGS` with its cache at `cache`."""
    env = dict(os.environ, ZOO_CACHE=str(cache))
    return subprocess.run([sys.executable, "-m", "zoo.pretrained", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def measure(name: str, metrics: tuple[catalogue.Metric, ...]) -> dict[str, float]:
    """The card's metrics re-measured from the entry's file with its family's evaluators and its config's protocol.

    `metrics` share one protocol (the same example count and config overrides), so one pass measures them all.
    """
    from train import config as config_lib
    from train import evaluators, runs

    card = catalogue.REGISTRY[name].card
    config = config_lib.load(str(ROOT / card.config))
    for field, value in metrics[0].overrides:
        section, _, key = field.rpartition(".")
        setattr(config[section] if section else config, key, value)
    config.parallel.num_devices = 1  # the tests see 8 simulated devices; the cards were measured on one
    setup = runs.build(config)
    loaded = pretrained.load(name)
    state = {"params": {card.network: loaded.params}}
    if loaded.collections:  # the GAN and detect families keep each network's collections under its name
        per_network = card.family in ("gan", "detect")
        state |= {"collections": {card.network: loaded.collections}} if per_network else loaded.collections
    names = tuple(dict.fromkeys(m.evaluator for m in metrics))
    one_device = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    return evaluators.run_metrics(setup.family, state, setup.eval_source, batch_size=config.eval.batch_size,
                                  seed=config.seed, names=names, num_examples=metrics[0].num_examples, mesh=one_device,
                                  detector=config.eval.detector)


def _check_card_metrics(name: str, slow: bool) -> None:
    """Each card metric of that speed, re-measured, within its stated tolerance, on its stated subset."""
    card = catalogue.REGISTRY[name].card
    groups: dict[tuple, list[catalogue.Metric]] = {}
    for m in card.metrics:
        if m.slow == slow:
            groups.setdefault((m.num_examples, m.overrides), []).append(m)
    assert groups, f"{name} has no {'slow' if slow else 'fast'} card metric"
    for wanted in groups.values():
        measured = measure(name, tuple(wanted))
        if "num_examples" in measured:
            assert f"{measured['num_examples']:,}" in wanted[0].subset or str(measured["num_examples"]) in \
                wanted[0].subset
        for m in wanted:
            assert abs(measured[m.name] - m.value) <= m.tolerance, f"{name}: measured {measured[m.name]}, card {m.line()}"


def _data_present(name: str, request: pytest.FixtureRequest) -> None:
    """Skip (through the shared_data fixture, with its reason) when the card's data is ../shared/data's."""
    if "../shared/data" in catalogue.REGISTRY[name].card.data:
        request.getfixturevalue("shared_data")


@pytest.mark.parametrize("name", catalogue.list_pretrained())
def test_card_metrics_are_re_measured_from_the_bundled_file(name, request):
    _data_present(name, request)
    _check_card_metrics(name, slow=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in catalogue.list_pretrained()
                                  if any(m.slow for m in catalogue.REGISTRY[n].card.metrics)])
def test_card_slow_metrics_are_re_measured_from_the_bundled_file(name, request):
    _data_present(name, request)
    _check_card_metrics(name, slow=True)


@pytest.mark.parametrize("name", catalogue.list_pretrained())
def test_every_entry_has_a_full_card_matching_its_file(name):
    entry = catalogue.REGISTRY[name]
    card = entry.card
    assert HEX64.fullmatch(entry.sha256) and (entry.bundled or entry.url.startswith("https://"))
    assert card is not None and card.metrics and card.licence and card.data and card.steps > 0
    assert (ROOT / card.config.partition(":")[0]).is_file()
    assert all(m.tolerance > 0 and m.evaluator and m.unit and m.subset and m.protocol for m in card.metrics)
    if entry.bundled:  # the repository carries at most 5 MB per file; larger exports go behind an https URL
        assert (ROOT / "zoo" / "weights" / entry.bundled).stat().st_size <= 5_000_000
    loaded = pretrained.load(name)
    assert loaded.config["metadata"]["step"] == card.steps
    if hasattr(loaded.module, "example_inputs"):
        assert loaded.module.example_inputs()[0].shape[1:] == card.input_shape
    else:  # a detector's arrays depend on the images it was built for, which its file records
        assert tuple(loaded.config["input_shape"]) == card.input_shape


def test_feature_figures_name_the_bundled_extractor_they_were_measured_with():
    """A card re-measured with another extractor file would be another figure; the card pins the file's hash."""
    from train.metrics.extractors import BUNDLED

    named = [m for n in catalogue.list_pretrained() for m in catalogue.REGISTRY[n].card.metrics
             if "domain_fashion_mnist" in m.protocol]
    assert named and all(f"domain_fashion_mnist@{BUNDLED['domain_fashion_mnist'][:12]}" in m.protocol for m in named)


def test_create_model_pretrained_computes_what_load_gives():
    module, variables = zoo.create_model("vae_digits", pretrained=True)
    loaded = pretrained.load("vae_digits")
    x = jax.random.bernoulli(jax.random.key(0), 0.3, (4, 8, 8, 1)).astype(jnp.float32)
    ours = module.apply(variables, x, method=module.encode)
    theirs = loaded.module.apply(loaded.variables, x, method=loaded.module.encode)
    jax.tree.map(np.testing.assert_array_equal, ours, theirs)
    assert type(module) is type(loaded.module) and module.latent_dim == loaded.module.latent_dim


def test_create_model_without_pretrained_still_returns_a_module():
    assert zoo.create_model("vae_conv", image_shape=(8, 8, 1)).latent_dim > 0
    assert zoo.create_model("vae_conv", False, image_shape=(8, 8, 1)).image_shape == (8, 8, 1)


def test_create_model_pretrained_refuses_overrides_and_unknown_names():
    with pytest.raises(errors.WeightsError, match="takes no overrides .got latent_dim.*clone"):
        zoo.create_model("vae_digits", pretrained=True, latent_dim=3)
    with pytest.raises(FileNotFoundError, match="'no_such' is neither a file nor a registered.*vae_digits") as error:
        zoo.create_model("no_such", pretrained=True)
    assert isinstance(error.value, errors.WeightsError)


def test_list_pretrained_matches_patterns():
    assert "vae_digits" in zoo.list_pretrained() and zoo.list_pretrained("vae_d*") == ["vae_digits"]
    assert zoo.list_pretrained("nothing_*") == []
    assert catalogue.list_converters() == ["inception_v3_fid", "vgg19_torchvision"]


@pytest.mark.parametrize("name", catalogue.list_converters())
def test_converters_pin_a_sha256_and_a_download_url(name):
    converter = catalogue.CONVERTERS[name]
    assert converter.url.startswith("https://") and converter.url.endswith("/" + converter.filename)
    if converter.sha256_is_prefix:  # documented: only the publisher's file-name prefix is known
        assert re.fullmatch(r"[0-9a-f]{8}", converter.sha256) and converter.sha256 in converter.filename
    else:
        assert HEX64.fullmatch(converter.sha256)
    assert callable(converter.resolve())


def test_inception_converter_is_the_pin_the_fid_metric_checks():
    from train.metrics import inception

    converter = catalogue.CONVERTERS["inception_v3_fid"]
    assert (converter.sha256, converter.url, converter.filename) == (
        inception.WEIGHTS_SHA256, inception.WEIGHTS_URL, inception.WEIGHTS_FILENAME)
    assert converter.resolve() is inception.load_variables


def test_convert_verifies_before_reading_and_says_where_the_file_goes(tmp_path, monkeypatch):
    with pytest.raises(errors.WeightsError, match=f"download https://.*and put it at {tmp_path}/vgg19-dcbb9e9d.pth"):
        pretrained.convert("vgg19_torchvision", cache_dir=tmp_path)
    (tmp_path / "vgg19-dcbb9e9d.pth").write_bytes(b"not a state dict")  # a parse would fail differently
    with pytest.raises(errors.WeightsError, match="sha256 mismatch for vgg19_torchvision.*prefix sha256 is dcbb9e9d"):
        pretrained.convert("vgg19_torchvision", cache_dir=tmp_path)

    good = tmp_path / "mine.bin"
    good.write_bytes(b"weights")
    digest = pretrained.sha256(good)
    monkeypatch.setitem(catalogue.CONVERTERS, "mine", catalogue.Converter(
        sha256=digest, url="https://example.org/mine.bin", filename="mine.bin", function="zoo.pretrained:sha256"))
    assert pretrained.convert("mine", cache_dir=tmp_path) == digest
    with pytest.raises(errors.WeightsError, match="unknown converter 'nope'.*inception_v3_fid"):
        pretrained.convert("nope")


def test_a_name_registers_once():
    with pytest.raises(ValueError, match="registered twice"):
        catalogue.register_converter("vae_digits", catalogue.CONVERTERS["vgg19_torchvision"])


def test_cli_list_and_show(tmp_path):
    listed = _cli("list", cache=tmp_path)
    assert listed.returncode == 0, listed.stderr
    for name in ("vae_digits", "inception_v3_fid", "vgg19_torchvision", "neg_elbo = 22.46"):
        assert name in listed.stdout
    shown = _cli("show", "vae_digits", cache=tmp_path)
    assert shown.returncode == 0, shown.stderr
    for field in ("config: configs/vae_digits.py", "steps: 3,000", "input: 8x8x1", "licence:",
                  "psnr = 17.72 ± 0.05 dB", "digits:test, all 297", catalogue.REGISTRY["vae_digits"].sha256):
        assert field in shown.stdout


def test_cli_verify_reports_ok_missing_and_mismatch(tmp_path):
    everything = _cli("verify", cache=tmp_path)
    assert everything.returncode == 0, everything.stdout + everything.stderr
    assert re.search(r"^ok +vae_digits: .*vae_digits.safetensors sha256 [0-9a-f]{64}$", everything.stdout, re.M)
    inception = catalogue.CONVERTERS["inception_v3_fid"]
    assert f"missing  inception_v3_fid: {tmp_path / inception.filename} is missing: download {inception.url}" in \
        everything.stdout

    (tmp_path / "vgg19-dcbb9e9d.pth").write_bytes(b"truncated")
    wrong = _cli("verify", "vgg19_torchvision", cache=tmp_path)
    assert wrong.returncode == 1 and "mismatch vgg19_torchvision: sha256 mismatch" in wrong.stdout
    asked_missing = _cli("verify", "inception_v3_fid", cache=tmp_path)
    assert asked_missing.returncode == 1 and "missing" in asked_missing.stdout


def test_cli_unknown_name_is_one_line_and_status_2(tmp_path):
    for command in ("show", "verify"):
        proc = _cli(command, "no_such_model", cache=tmp_path)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert "unknown pretrained name 'no_such_model'; known: " in proc.stderr and "vae_digits" in proc.stderr
    usage = _cli("frobnicate", cache=tmp_path)
    assert usage.returncode == 2 and "usage: python -m zoo.pretrained list" in usage.stderr
