"""`python -m train.generate` and `data.fakeset`: fake sets from the bundled exports, read back as a source.

The swap set is checked against what it claims without trusting the writer: real faces against the
synthetic source read afresh, a2b images against the catalogue model's own swap of those faces
(`zoo.create_model(..., pretrained=True)`), the checkpoint against the catalogue's sha256.
"""
import json
import pathlib
import shutil
import subprocess
import sys

import chex
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import zoo
from data import fakeset, provenance, sources
from tests.conftest import FASHION_MNIST
from train import generate as gen
from zoo import catalogue
from zoo.errors import ConfigError, DataError, WorkdirError

ROOT = pathlib.Path(__file__).resolve().parents[1]
SWAP = "swap_df_synthetic_narrow"
SWAP_A = "synthetic_faces:ids=0;n=2000;size=64;seed=0;masks=1"  # configs/swap_df_synthetic.py, the card's config
N = 10  # two batches of 8: the second is padded, and its padding must not be written


def _pixels(path: pathlib.Path) -> np.ndarray:
    with Image.open(path) as image:
        array = np.asarray(image, np.uint8)
    return array[..., None] if array.ndim == 2 else array


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def swap_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("swap") / "set"
    record = gen.generate(out, export=SWAP, n=N, batch_size=8)
    return out, record


def test_manifest_lists_every_file_with_its_keys(swap_set):
    out, record = swap_set
    lines = fakeset.read_manifest(out)
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*.png")}
    assert {line["file"] for line in lines} == on_disk
    assert len(lines) == 4 * N
    digest = catalogue.REGISTRY[SWAP].sha256
    for line in lines:
        assert list(line) == list(fakeset.KEYS)
        assert line["label"] == (0 if line["kind"] == "real" else 1)
        assert line["checkpoint"] == f"{SWAP}.safetensors#sha256:{digest}"
        assert (line["family"], line["model"], line["split"]) == ("swap", "swap_df", "test")
        assert line["video"] is None and line["frame"] is None
    fakes = [line for line in lines if line["label"] == 1]
    assert sorted({line["generator"] for line in fakes}) == ["swap_df/a2b", "swap_df/b2a"]
    for line in fakes:
        side = "a" if line["kind"] == "a2b" else "b"
        assert line["file"] == f"fake/{line['kind']}/{line['index']}.png"
        assert line["pair"] == f"real/{side}/{line['index']}.png" and (out / line["pair"]).is_file()
        assert line["identity"] == (0 if side == "a" else 1)  # the identity seeds of data.source and source_b
    reals = [line for line in lines if line["label"] == 0]
    assert all(line["generator"] is None and line["pair"] is None for line in reals)
    assert sorted(line["index"] for line in reals if line["file"].startswith("real/a/")) == list(range(N))
    assert record["counts"] == {"fake": {"a2b": N, "b2a": N}, "real": {"a": N, "b": N}}
    assert record["seed"] == 0 and record["config"] == "configs/swap_df_synthetic.py:narrow"
    assert record["watermark"] == provenance.read_provenance(out / "fake" / "b2a" / "0.png").get("Watermark")
    assert json.loads((out / "generate.json").read_text()) == record


def test_png_provenance_says_what_each_image_is(swap_set):
    out, _ = swap_set
    fake = provenance.read_provenance(out / "fake" / "a2b" / "3.png")
    assert fake["Description"] == provenance.NOTICE
    assert (fake["Generator"], fake["Kind"], fake["Index"], fake["Pair"]) == ("swap_df/a2b", "a2b", "3",
                                                                             "real/a/3.png")
    real = provenance.read_provenance(out / "real" / "b" / "3.png")
    assert real["Description"] == provenance.RENDERED_NOTICE  # a rendered person: the real class, not a model output
    assert "Generator" not in real


def test_swap_images_are_the_models_swaps_of_the_paired_real_faces(swap_set):
    out, _ = swap_set
    source = sources.get_source(SWAP_A, "test")
    module, variables = zoo.create_model(SWAP, pretrained=True)
    reals = np.stack([_pixels(out / "real" / "a" / f"{i}.png") for i in range(N)])
    np.testing.assert_array_equal(reals, np.stack([source[i]["image"] for i in range(N)]))
    swapped = module.apply(variables, jnp.asarray(reals, jnp.float32) / 255.0, "a2b", method=module.swap)[0]
    expected = provenance.to_uint8(np.asarray(swapped))
    written = np.stack([_pixels(out / "fake" / "a2b" / f"{i}.png") for i in range(N)])
    chex.assert_shape([written, expected], (N, 64, 64, 3))
    # The invisible watermark moves pixels by a little; without it the images are the same to the uint8 rounding.
    for i in range(N):
        marked = "Watermark" in provenance.read_provenance(out / "fake" / "a2b" / f"{i}.png")
        assert _psnr(written[i], expected[i]) > 35.0
        assert marked or np.abs(written[i].astype(int) - expected[i]).max() <= 1
        assert _psnr(written[i], expected[(i + 1) % N]) < _psnr(written[i], expected[i]) - 10


def test_fakeset_source_round_trip_and_filters(swap_set):
    out, _ = swap_set
    whole = sources.get_source(f"fakeset:{out}", "train")
    assert len(whole) == 4 * N and whole.info.image_shape == (64, 64, 3) and whole.info.num_classes == 2
    lines = fakeset.read_manifest(out)
    for i in (0, 7, 4 * N - 1):
        example = whole[i]
        np.testing.assert_array_equal(example["image"], _pixels(out / lines[i]["file"]))
        assert example["label"] == lines[i]["label"]
        assert whole.identities[example["identity"]] == str(lines[i]["identity"])
        expected_generator = lines[i]["generator"]
        assert (whole.generators[example["generator"]] if example["generator"] >= 0 else None) == expected_generator
        assert example["video"] == -1
    np.testing.assert_array_equal(whole.labels, [line["label"] for line in lines])

    only_a2b = sources.get_source(f"fakeset:{out};kind=a2b", "test")
    assert len(only_a2b) == N and set(only_a2b.labels) == {1}
    b2a_and_reals = sources.get_source(f"fakeset:{out};generator=swap_df/b2a", "test")
    assert len(b2a_and_reals) == 3 * N and int(b2a_and_reals.labels.sum()) == N  # every real stays
    person_a = sources.get_source(f"fakeset:{out};identities=0", "test")
    kinds = {(line["kind"], line["file"].split("/")[1]) for line in person_a.lines}
    assert len(person_a) == 2 * N and kinds == {("real", "a"), ("a2b", "a2b")}
    assert sources.get_source(f"fakeset:{out};identities=1;kind=real", "all").identities == ["1"]
    with pytest.raises(DataError, match="bad option"):
        sources.get_source(f"fakeset:{out};people=0")
    with pytest.raises(DataError, match="kind swap is not one of"):
        sources.get_source(f"fakeset:{out};kind=swap")
    with pytest.raises(DataError, match="passes the filters"):
        sources.get_source(f"fakeset:{out};identities=7")


@pytest.mark.parametrize("damage, expected", [
    (lambda d: d.update(extra=1), "line 2: unknown key(s) extra"),
    (lambda d: d.update(label=2), "line 2: label 2 for kind"),
    (lambda d: d.update(label=0) if d["kind"] != "real" else d.update(label=1), "line 2: label"),
    (lambda d: d.pop("identity"), "line 2: missing key(s) identity"),
    (lambda d: d.update(file="fake/a2b/999.png"), "line 2: file fake/a2b/999.png is missing"),
    (lambda d: d.update(pair="../x.png"), "line 2: pair '../x.png' is not a path inside the set"),
    (lambda d: d.update(kind="morphed"), "line 2: kind 'morphed' is not one of"),
])
def test_damaged_manifest_is_named_by_line(swap_set, tmp_path, damage, expected):
    out, _ = swap_set
    lines = (out / "manifest.jsonl").read_text().splitlines()
    line = json.loads(lines[1])
    damage(line)
    copy = tmp_path / "set"
    shutil.copytree(out, copy)
    (copy / "manifest.jsonl").write_text("\n".join([lines[0], json.dumps(line), *lines[2:]]) + "\n")
    with pytest.raises(DataError, match="--overwrite") as error:
        fakeset.read_manifest(copy)
    assert expected in str(error.value)


def test_interrupted_or_garbled_manifest(swap_set, tmp_path):
    out, _ = swap_set
    copy = tmp_path / "set"
    shutil.copytree(out, copy)
    (copy / "manifest.jsonl").unlink()
    with pytest.raises(DataError, match="interrupted"):
        fakeset.read_manifest(copy)
    (copy / "manifest.jsonl").write_text('{"file": \n')
    with pytest.raises(DataError, match="line 1"):
        sources.get_source(f"fakeset:{copy}")


def test_refuses_a_non_empty_directory_before_loading_anything(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(WorkdirError, match="--overwrite"):
        gen.generate(tmp_path, export="no_such_export")  # refused before the export is even looked up
    with pytest.raises(ConfigError, match="--workdir W"):
        gen.generate(tmp_path / "new", overwrite=True)


def test_an_export_outside_the_catalogue_needs_its_config(tmp_path):
    loaded = zoo.pretrained.load(SWAP)  # the same weights in another file (another sha256)
    copy = zoo.pretrained.export(tmp_path / "model.safetensors", loaded.config["model"],
                                 loaded.config["model_config"], loaded.params, metadata={"family": "swap"})
    with pytest.raises(ConfigError, match="pass --config"):
        gen.generate(tmp_path / "out", export=str(copy))


def test_cli_refusal_is_one_line_with_status_2(tmp_path):
    (tmp_path / "x").write_text("")
    proc = subprocess.run([sys.executable, "-m", "train.generate", "--export", SWAP, "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason=f"Fashion-MNIST not installed at {FASHION_MNIST} "
                    "(apt-get install dataset-fashion-mnist)")
def test_gan_samples_are_keyed_by_seed_and_index_not_batch(tmp_path):
    def samples_of(out):
        return np.stack([_pixels(out / "fake" / "sample" / f"{i}.png") for i in range(8)])

    first = gen.generate(tmp_path / "a", export="dcgan_fashion_mnist", n=8, batch_size=8)
    first_samples = samples_of(tmp_path / "a")
    again = gen.generate(tmp_path / "a", export="dcgan_fashion_mnist", n=8, batch_size=16, overwrite=True)
    np.testing.assert_array_equal(samples_of(tmp_path / "a"), first_samples)  # one padded batch of 16 instead of 8
    gen.generate(tmp_path / "b", export="dcgan_fashion_mnist", n=8, batch_size=8, seed=1)
    assert first["counts"] == again["counts"] == {"fake": {"sample": 8}, "real": {"image": 8}}
    lines = fakeset.read_manifest(tmp_path / "a")
    samples = [line for line in lines if line["kind"] == "sample"]
    assert all(line["generator"] == "dcgan_g/sample" and line["pair"] is None and line["identity"] is None
               for line in samples)
    reals = [line for line in lines if line["kind"] == "real"]
    assert [line["identity"] for line in reals] == [int(v) for v in sources.get_source(
        f"idx:{FASHION_MNIST}", "test").labels[:8]]  # a dataset's class label stands in for the identity
    assert provenance.read_provenance(tmp_path / "a" / reals[0]["file"])["Description"].startswith(
        "Real image from the dataset")
    a, b = samples_of(tmp_path / "a"), samples_of(tmp_path / "b")
    chex.assert_shape(a, (8, 32, 32, 1))
    assert np.mean(np.abs(a.astype(int) - b)) > 10  # another seed, other samples
    assert not (tmp_path / "a" / "fake" / "sample" / "8.png").exists()


def test_vae_set_pairs_reconstructions_with_their_digits(tmp_path, shared_data):
    out = tmp_path / "vae"
    record = gen.generate(out, export="vae_mnist", n=8, batch_size=8)
    assert record["counts"] == {"fake": {"reconstruction": 8, "sample": 8}, "real": {"image": 8}}
    lines = {line["file"]: line for line in fakeset.read_manifest(out)}
    line = lines["fake/reconstruction/5.png"]
    assert (line["pair"], line["generator"]) == ("real/image/5.png", "vae_mlp/reconstruction")
    assert line["identity"] == lines["real/image/5.png"]["identity"] is not None
    assert lines["fake/sample/5.png"]["identity"] is None
    module, variables = zoo.create_model("vae_mnist", pretrained=True)
    real = _pixels(out / "real" / "image" / "5.png")[None].astype(np.float32) / 255.0
    mean, _ = module.apply(variables, real, method=module.encode)
    expected = provenance.to_uint8(np.asarray(jnp.asarray(1.0) / (1.0 + jnp.exp(
        -module.apply(variables, mean, method=module.decode)))))[0]  # Bernoulli mean: sigmoid of the logits
    assert _psnr(_pixels(out / "fake" / "reconstruction" / "5.png"), expected) > 35.0


@pytest.mark.slow  # trains two steps first: about 40 s on the shared 2-core machine
def test_workdir_and_its_export_give_the_same_set(tmp_path):
    from train import trainer
    from train.config import load
    from train.export import export_run

    config = load(str(ROOT / "configs/vae_digits.py:smoke"))
    config.unlock()
    config.total_steps, config.eval_every, config.preview_every, config.checkpoint.every = 2, 0, 0, 2
    trainer.train(config, tmp_path / "run")
    from_run = gen.generate(tmp_path / "w", workdir=str(tmp_path / "run"), n=8, batch_size=8)
    exported = export_run(tmp_path / "run", out=tmp_path / "vae.safetensors")
    with pytest.raises(ConfigError, match="pass --config"):
        gen.generate(tmp_path / "e", export=str(exported))
    from_export = gen.generate(tmp_path / "e", export=str(exported), config="configs/vae_digits.py:smoke", n=8,
                               batch_size=16)
    assert from_run["checkpoint"] == f"{tmp_path / 'run'}@2"
    assert from_export["checkpoint"].startswith("vae.safetensors#sha256:")
    lines = fakeset.read_manifest(tmp_path / "w")
    assert [line["file"] for line in lines] == [line["file"] for line in fakeset.read_manifest(tmp_path / "e")]
    for line in lines:
        np.testing.assert_array_equal(_pixels(tmp_path / "w" / line["file"]), _pixels(tmp_path / "e" / line["file"]))


def test_origins_name_the_person_clip_and_frame(tmp_path, shared_data):
    from test_fuzz import _write_extraction  # a valid extraction written by the extractor's own functions

    from data import origins, transforms
    from data.faces.aligned import AlignedSource
    from data.media import VideoSource

    _write_extraction(tmp_path, faces=12)  # one clip, clip.mpg, frames 0..11; the test split is every 10th face
    aligned = AlignedSource(tmp_path, split="test")
    assert [origins.origin(aligned, i) for i in range(2)] == [
        {"identity": "clip", "video": "clip", "frame": 0}, {"identity": "clip", "video": "clip", "frame": 10}]

    video = transforms.Resized(VideoSource(shared_data / "grid" / "bbaf2n.mpg", size=32, split="test"), 16)
    assert origins.origin(video, 3, video[3]["label"]) == {"identity": "bbaf2n", "video": "bbaf2n", "frame": 30}

    people = sources.get_source("synthetic_faces:ids=5,9;n=3;size=32", "test")
    assert [origins.origin(people, i, people[i]["label"])["identity"] for i in (0, 5)] == [5, 9]
    digits = sources.get_source("digits", "test")
    assert origins.origin(digits, 4, digits[4]["label"]) == {"identity": int(digits.labels[4]), "video": None,
                                                            "frame": None}
