"""The pretrained catalogue: what each published checkpoint is (its card) and the third-party weights zoo converts.

Pure data and lookups, no arrays and no file reading (that is `zoo.pretrained`), so listing costs nothing.

- `REGISTRY`: name -> `Entry` (a zoo export: a bundled file or an https URL, its sha256, and its `Card`).
  A card states what a number on it means: the config (file:variant) the weights came from, the data and
  steps, each metric with its protocol, value, tolerance and subset, the input size and value range, the
  licence. Card metrics are measured, never copied: tests/test_catalogue.py re-measures them from the file
  with the family's own evaluator. Publishing one more export is one `Entry` here plus its file.
- `CONVERTERS`: name -> `Converter` (third-party weights: pinned sha256, download URL, the file name the
  loader looks for in the cache, and the converting function). The function is named by a dotted path
  ("package.module:function") and imported only when a file is converted, because some converters live in
  `train` (the FID Inception beside the metric that uses it) and `zoo` must never import `train`; naming it
  here, rather than having `train` register itself on import, keeps `python -m zoo.pretrained list` and
  `verify` complete without importing `train`. `register_converter` adds one (a user's own, or a test's).
"""
from __future__ import annotations

import dataclasses
import fnmatch
import importlib
from typing import Any, Callable

SHA256_HEX = 64


@dataclasses.dataclass(frozen=True)
class Metric:
    """One number measured on a checkpoint, with what makes it reproducible: protocol, subset and tolerance."""

    name: str  # the key the evaluator reports
    evaluator: str  # the family evaluator (train.families.<family>) that measures it
    value: float
    tolerance: float
    unit: str
    subset: str
    protocol: str
    slow: bool = False  # re-measured by the slow test step (pytest -m slow), not on every run
    num_examples: int = 0  # evaluate the first n examples of the evaluation split (0: all of it)
    overrides: tuple[tuple[str, Any], ...] = ()  # config fields the protocol sets, e.g. (("gan.eval_samples", 1000),)

    def line(self) -> str:
        """'name = value ± tolerance unit on subset (evaluator: protocol)', one line for `show`."""
        return f"{self.headline()} on {self.subset} ({self.evaluator} evaluator: {self.protocol})"

    def headline(self) -> str:
        """'name = value ± tolerance unit', for listings."""
        return f"{self.name} = {self.value:g} ± {self.tolerance:g} {self.unit}"


@dataclasses.dataclass(frozen=True)
class Card:
    """Where a checkpoint came from and what it was measured to do: everything a user needs to trust a number."""

    config: str  # "configs/<file>.py[:variant]", the run the weights were exported from
    data: str
    steps: int
    metrics: tuple[Metric, ...]
    input_shape: tuple[int, ...]  # one example, HWC
    value_range: str
    licence: str
    family: str  # train.families name; its evaluators re-measure the metrics
    network: str  # the key of these params in the family's state["params"]
    notes: str = ""


@dataclasses.dataclass(frozen=True)
class Entry:
    """A published checkpoint: where it lives (an https URL or a file bundled in zoo/weights), its sha256 and card."""

    sha256: str
    url: str = ""
    bundled: str = ""
    description: str = ""
    card: Card | None = None

    @property
    def source(self) -> str:
        """Where the bytes come from, for listings: the bundled file or the URL."""
        return f"bundled zoo/weights/{self.bundled}" if self.bundled else self.url


@dataclasses.dataclass(frozen=True)
class Converter:
    """Third-party weights zoo can read: the file a user downloads, its pinned sha256, and how it becomes variables.

    `sha256` is the full 64-hex digest, or, where no full published digest was found, the prefix the
    publisher put in the file name (`sha256_is_prefix`); the loader then checks the prefix and says so.
    `function` is "module:attr", called with the verified file's path; "reader only" entries name the
    pickle-free state-dict reader and return the raw arrays until a zoo model for them exists.
    """

    sha256: str
    url: str
    filename: str
    function: str
    description: str = ""
    licence: str = ""
    reader_only: bool = False

    @property
    def sha256_is_prefix(self) -> bool:
        """True when only a prefix of the digest is pinned (a weaker check, stated wherever it is used)."""
        return len(self.sha256) < SHA256_HEX

    def resolve(self) -> Callable[[Any], Any]:
        """The converting function, imported now: only a conversion pays for (and may import) its package."""
        module, _, attr = self.function.partition(":")
        return getattr(importlib.import_module(module), attr)


_DIGITS_PROTOCOL = ("train.evaluators.run_metrics, family vae, configs/vae_digits.py seed 0: every test digit "
                    "binarised and its eps drawn from keys folded from its index, so the number is repeatable")

_MNIST_PROTOCOL = ("train.evaluators.run_metrics, family vae, configs/vae_mnist.py:local seed 0: each test image "
                   "binarised once and its noise drawn from keys folded from its index")

_FASHION_DATA = ("Fashion-MNIST from Debian's dataset-fashion-mnist idx files: train 60,000, test 10,000, "
                 "resized 28 -> 32 (Lanczos)")
_FASHION_LICENCE = "weights Apache-2.0 (this project); Fashion-MNIST MIT (Zalando Research)"
_GAN_RANGE = "a standard-normal latent; the output is 32x32x1 in [-1, 1] (tanh), shown as (x + 1) / 2"
_GAN_PROTOCOL = ("{n} samples (fixed seed) vs the first {n} test images, both quantised to uint8, through "
                 "domain_fashion_mnist@30639353a9b1 (the bundled file; README: GANs and sample quality); KID's "
                 "subsets of 1,000 (at 1,000 samples the whole set); precision/recall k = 3")
_GAN_UNITS = {"fid": "FID (domain features)", "kid": "KID (domain features)", "precision": "fraction",
              "recall": "fraction", "inception_score": "IS (domain classifier)"}
_GAN_TOLERANCES = {"fid": 0.1, "kid": 0.01, "precision": 0.01, "recall": 0.01, "inception_score": 0.05}


def _gan_metrics(fast: tuple[float, ...], full: tuple[float, ...]) -> tuple[Metric, ...]:
    """FID, KID, precision, recall and IS under the README's protocol: 1,000 samples (fast) and 10,000 (slow)."""
    out = []
    for values, n, slow in ((fast, 1000, False), (full, 10_000, True)):
        protocol = _GAN_PROTOCOL.format(n=f"{n:,}")
        subset = f"fashion_mnist:test, first {n:,}; {n:,} samples"
        for (name, unit), value in zip(_GAN_UNITS.items(), values):
            out.append(Metric(name, "fid", value, _GAN_TOLERANCES[name], unit, subset, protocol, slow=slow,
                              num_examples=n, overrides=(("gan.eval_samples", n),)))
    return tuple(out)


def _fashion_gan(sha256: str, description: str, config: str, *, steps: int, latent_dim: int,
                 fast: tuple[float, ...], full: tuple[float, ...]) -> Entry:
    """A bundled Fashion-MNIST generator (`<config stem>.safetensors`): only the run's own facts differ between them."""
    return Entry(
        sha256=sha256, bundled=config.rpartition("/")[2].replace(".py", ".safetensors"), description=description,
        card=Card(config=config, data=_FASHION_DATA, steps=steps, metrics=_gan_metrics(fast, full),
                  input_shape=(latent_dim,), value_range=_GAN_RANGE, licence=_FASHION_LICENCE, family="gan",
                  network="G"),
    )


_SWAP_PROTOCOL = ("train.evaluators.run_metrics, family swap, configs/swap_df_synthetic.py:narrow seed 0: each "
                  "swap against the target person rendered with the source's expression and pose; SSIM window 11")


def _swap_metrics() -> tuple[Metric, ...]:
    """Swap PSNR/SSIM against the ground truth on 256 test pairs (fast), and with reconstruction on all 2,000."""
    fast = {"a2b_psnr": 20.17, "a2b_ssim": 0.654, "b2a_psnr": 17.71, "b2a_ssim": 0.655, "a2b_face_psnr": 20.73,
            "b2a_face_psnr": 17.54}
    full = {"a2b_psnr": 20.00, "a2b_ssim": 0.647, "b2a_psnr": 17.61, "b2a_ssim": 0.647, "a2b_face_psnr": 20.71,
            "b2a_face_psnr": 17.40, "a_recon_psnr": 22.07, "b_recon_psnr": 23.58}
    out = []
    for values, n, slow in ((fast, 256, False), (full, 2000, True)):
        subset = f"synthetic people 0/1, test split, {'first 256' if not slow else 'all 2,000'} pairs"
        for name, value in values.items():
            evaluator = "recon" if "recon" in name else "swap_truth"
            ssim = name.endswith("ssim")
            out.append(Metric(name, evaluator, value, 0.005 if ssim else 0.05, "SSIM" if ssim else "dB", subset,
                              _SWAP_PROTOCOL, slow=slow, num_examples=0 if slow else n))
    return tuple(out)


_DETECT_PROTOCOL = ("train.evaluators.run_metrics, family detect, configs/detect_swap_synthetic.py:narrow: the "
                    "detect evaluator's frame AUC, TPR at 5% FPR and accuracy at logit 0 over the test fakemix "
                    "(people 42-61, 25 renders each, and the swap's own people 0 and 1, 50 held-out renders each, "
                    "each render followed by its a2b and b2a swaps by swap_df_synthetic_narrow); sweep off")


def _detect_metrics(values: dict[str, float]) -> tuple[Metric, ...]:
    """The pinned detector's own held-out numbers (the README's robustness rows come from the same run)."""
    subset = ("synthetic people 42-61 (never trained on) and 0-1 (held-out expressions and poses), all 1,800 "
              "examples: 600 renders + 1,200 swaps")
    return tuple(Metric(name, "detect", value, 0.002 if name == "auc" else 0.005, "fraction", subset,
                        _DETECT_PROTOCOL, overrides=(("detect.sweep", ()),)) for name, value in values.items())


def _swap_detectability(values: dict[str, float]) -> tuple[Metric, ...]:
    """How detectable the swaps are to the pinned `detect_swap_synthetic_narrow` (quality's other side)."""
    protocol = ("train.metrics.detectability: each swap of the first 256 test pairs against the target person's real "
                "test renders, scored by detect_swap_synthetic_narrow; flagged = above its pinned 5%-FPR logit")
    subset = "synthetic people 0/1, test split, first 256 pairs"
    return tuple(Metric(f"detectability/{name}", "detectability", value, 0.01, "fraction", subset, protocol,
                        num_examples=256, overrides=(("eval.detector", "detect_swap_synthetic_narrow"),))
                 for name, value in values.items())


REGISTRY: dict[str, Entry] = {
    "vae_digits": Entry(
        sha256="bd4ae8efd7867a052c963cf7655c53cb0ca4d04b488fd24d6657c65a09c6d0ad",
        bundled="vae_digits.safetensors",
        description="conv VAE (vae_conv, latent 16, Bernoulli) on scikit-learn's 8x8 digits",
        card=Card(
            config="configs/vae_digits.py",
            data="digits: scikit-learn load_digits, train = first 1,500 images, test = last 297 (data/sources.py)",
            steps=3000,
            metrics=(
                Metric("neg_elbo", "elbo", 22.46, 0.1, "nats", "digits:test, all 297", _DIGITS_PROTOCOL),
                Metric("psnr", "psnr", 17.72, 0.05, "dB", "digits:test, all 297",
                       "posterior-mean reconstruction against the 8-bit image, no sampling"),
                Metric("iwae_nll_k200", "iwae", 21.98, 0.1, "nats", "digits:test, all 297",
                       f"k = 200; {_DIGITS_PROTOCOL}", slow=True),
            ),
            input_shape=(8, 8, 1),
            value_range="uint8 pixels 0..255 (round(v * 255 / 16)); the model sees them binarised to {0, 1}",
            licence="weights Apache-2.0 (this project); digits data CC BY 4.0 (UCI optdigits, via scikit-learn)",
            family="vae",
            network="vae",
        ),
    ),
    "vae_mnist": Entry(
        sha256="c95efc1bc95bec0b3e33b3eb7862656861b2a40a3f354239481b3a5fe67255ce",
        bundled="vae_mnist.safetensors",
        description="MLP VAE 784-200-200-50 (tanh, Bernoulli) on dynamically binarised MNIST: the README's 88.24 nats",
        card=Card(
            config="configs/vae_mnist.py:local",
            data=("MNIST: train = the 60,000 re-encoded train images of ../shared/data/mnist (see its README), "
                  "test = the exact 10,000 test images"),
            steps=250_000,
            metrics=(
                Metric("neg_elbo", "elbo", 91.78, 0.1, "nats", "mnist:test, all 10,000", _MNIST_PROTOCOL),
                Metric("psnr", "psnr", 22.43, 0.05, "dB", "mnist:test, all 10,000",
                       "posterior-mean reconstruction against the 8-bit image, no sampling"),
                Metric("iwae_nll_k5000", "iwae", 88.24, 0.1, "nats", "mnist:test, all 10,000",
                       f"k = 5000 (Burda et al. 2016); {_MNIST_PROTOCOL}", slow=True),
            ),
            input_shape=(28, 28, 1),
            value_range="uint8 pixels 0..255; the model sees each pixel binarised as Bernoulli(v / 255)",
            licence="weights Apache-2.0 (this project); MNIST CC BY-SA 3.0 (Y. LeCun, C. Cortes, C. Burges)",
            family="vae",
            network="vae",
        ),
    ),
    "dcgan_fashion_mnist": _fashion_gan(
        "443b9accaf0938d9c3f1f0ef4134d65459f251386d45ea41953b85893bb27d0f",
        "DCGAN generator (ngf 64, 1.07M params, batch-norm statistics included), Fashion-MNIST at 32 px",
        "configs/dcgan_fashion_mnist.py", steps=4000, latent_dim=100,
        fast=(8.98, 0.215, 0.651, 0.698, 4.51), full=(9.54, 0.314, 0.520, 0.624, 4.58)),
    "sngan_fashion_mnist": _fashion_gan(
        "c75572a213f9f89b3c31c9a188662af3d2e5fb9717b6dc05945c8e1eeadb0748",
        "SNGAN ResNet generator (ngf 32, 125k params; hinge loss), Fashion-MNIST at 32 px",
        "configs/sngan_fashion_mnist.py", steps=1800, latent_dim=128,
        fast=(32.57, 1.116, 0.551, 0.242, 3.63), full=(33.59, 1.241, 0.415, 0.179, 3.66)),
    "swap_df_synthetic_narrow": Entry(
        sha256="ca4e40f88912f3b7e8612189cb7cc1cc04075301c9c86eadea3da99a47a52c30",
        bundled="swap_df_synthetic_narrow.safetensors",
        description="DF-UD swap autoencoder at 64 px (ae 40, e/d 10; 1.24M params) between two synthetic people",
        card=Card(
            config="configs/swap_df_synthetic.py:narrow",
            data=("synthetic_faces people 0 (A) and 1 (B), 2,000 renders each with random expression and pose; "
                  "test: held-out expressions and poses, each swap with its ground truth"),
            steps=1500,
            metrics=_swap_metrics() + _swap_detectability({
                "a2b/auc": 1.0, "a2b/flagged": 1.0, "a2b/real_flagged": 0.117, "b2a/auc": 1.0, "b2a/flagged": 1.0,
                "b2a/real_flagged": 0.105}),
            input_shape=(64, 64, 3),
            value_range="RGB faces in [0, 1] (uint8 / 255); outputs RGB and a face mask in [0, 1]",
            licence="weights Apache-2.0 (this project); the synthetic faces are rendered by the zoo (no real person)",
            family="swap",
            network="swap",
        ),
    ),
    "detect_swap_synthetic_narrow": Entry(
        sha256="0f5852e0b7a1c47ae30ffc6d90ccaec14b67692e0bf692feff588a122d8fc093",
        bundled="detect_swap_synthetic_narrow.safetensors",
        description="xception-style detector (width 8, 0.72M params) of swap_df_synthetic_narrow's swaps at 64 px, "
                    "with its 5%-FPR threshold pinned: the detector `--metrics detectability` names for them",
        card=Card(
            config="configs/detect_swap_synthetic.py:narrow",
            data=("fakemix of synthetic people 2-41 (40 renders each) and the swap's own people 0 and 1 (200 each), "
                  "each render with its a2b and b2a swaps by swap_df_synthetic_narrow; test: people 42-61 and 0-1"),
            steps=400,
            metrics=_detect_metrics({"auc": 1.0, "tpr@5%fpr": 1.0, "acc": 0.995}),
            input_shape=(64, 64, 3),
            value_range="RGB faces in [0, 1] (uint8 / 255); one logit per image, higher = more likely a swap",
            licence="weights Apache-2.0 (this project); the synthetic faces are rendered by the zoo (no real person)",
            family="detect",
            network="detector",
            notes="threshold (logit -6.690) pinned at 5% FPR on the 600 test renders, in the file's metadata",
        ),
    ),
}

CONVERTERS: dict[str, Converter] = {}


def register_converter(name: str, converter: Converter) -> Converter:
    """Add third-party weights under `name`; a name is registered once, so two pins can never disagree."""
    if name in CONVERTERS or name in REGISTRY:
        raise ValueError(f"pretrained name {name!r} is registered twice")
    CONVERTERS[name] = converter
    return converter


register_converter("inception_v3_fid", Converter(
    # Kept equal to train.metrics.inception.WEIGHTS_SHA256 / WEIGHTS_URL / WEIGHTS_FILENAME by a test.
    sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
    url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
    filename="pt_inception-2015-12-05-6726825d.pth",
    function="train.metrics.inception:load_variables",
    description="pytorch-fid's FID InceptionV3 (TF graph 2015-12-05) -> Flax {params, batch_stats}",
    licence="Apache-2.0 (pytorch-fid; weights ported from TensorFlow's inception-2015-12-05)",
))
register_converter("vgg19_torchvision", Converter(
    # Only the 8-hex prefix torchvision puts in the file name is pinned: no full published sha256 was found.
    sha256="dcbb9e9d",
    url="https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
    filename="vgg19-dcbb9e9d.pth",
    function="zoo.torch_weights:load_state_dict",
    description="torchvision VGG19 IMAGENET1K_V1 (for perceptual losses); reader only: the state dict as numpy",
    licence="BSD-3-Clause (torchvision)",
    reader_only=True,
))


def list_pretrained(pattern: str = "*") -> list[str]:
    """Sorted names of zoo checkpoints (`REGISTRY`) matching a shell-style pattern, what `create_model` loads."""
    return sorted(n for n in REGISTRY if fnmatch.fnmatch(n, pattern))


def list_converters(pattern: str = "*") -> list[str]:
    """Sorted names of third-party weights zoo can convert, matching a shell-style pattern."""
    return sorted(n for n in CONVERTERS if fnmatch.fnmatch(n, pattern))


def known_names() -> str:
    """Every pretrained and converter name, comma-separated, for error messages."""
    return ", ".join(list_pretrained() + list_converters()) or "(none)"


def describe(name: str) -> str:
    """A multi-line description of one checkpoint or converter (what `python -m zoo.pretrained show` prints)."""
    if name in REGISTRY:
        return _describe_entry(name, REGISTRY[name])
    if name in CONVERTERS:
        return _describe_converter(name, CONVERTERS[name])
    from zoo.errors import WeightsError

    raise WeightsError(f"unknown pretrained name {name!r}; known: {known_names()} (python -m zoo.pretrained list)")


def _describe_entry(name: str, entry: Entry) -> str:
    """The entry's source, hash and card fields, one per line."""
    lines = [f"{name}: {entry.description}", f"  source: {entry.source}", f"  sha256: {entry.sha256}"]
    card = entry.card
    if card is None:
        return "\n".join(lines + ["  card: (none)"])
    lines += [f"  config: {card.config}", f"  data: {card.data}", f"  steps: {card.steps:,}",
              f"  input: {'x'.join(map(str, card.input_shape))}, {card.value_range}", f"  licence: {card.licence}",
              "  metrics:"]
    lines += [f"    {m.line()}" + (" [slow test]" if m.slow else "") for m in card.metrics]
    return "\n".join(lines + ([f"  notes: {card.notes}"] if card.notes else []))


def _describe_converter(name: str, converter: Converter) -> str:
    """The converter's URL, file name, pin and function, one per line."""
    pin = f"{converter.sha256} (prefix only: no full published digest)" if converter.sha256_is_prefix \
        else converter.sha256
    kind = "reader only" if converter.reader_only else "converter"
    return "\n".join([f"{name}: {converter.description}", f"  url: {converter.url}", f"  file: {converter.filename}",
                      f"  sha256: {pin}", f"  {kind}: {converter.function}", f"  licence: {converter.licence}"])
