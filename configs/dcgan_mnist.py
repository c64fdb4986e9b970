"""DCGAN on MNIST at 32x32, offline, scored with FID/KID from the zoo's MNIST domain extractor.

    python -m train --config configs/dcgan_mnist.py --workdir runs/dcgan_mnist
    python -m train.evaluate --workdir runs/dcgan_mnist --metrics fid,disc

Radford et al.'s recipe and widths (ngf = ndf = 64, z 100, Adam 2e-4 with beta1 0.5, batch norm in G
and D, the non-saturating loss), 4,000 steps of batch 64 (4.3 epochs, about 14 min on 2 CPU cores);
digits are resized from 28 to 32 px, the smallest size DCGAN's stride-2 stack takes. Evaluation:
10,000 samples against the 10,000 test digits through `domain_mnist`, a classifier the zoo ships
(trained on MNIST, sha256 pinned); ImageNet Inception features say little about digits, and need a
download. The README's results table gives the run's figures beside the floor: the training
set itself scored the same way. `:tfds` reads TFDS's mnist instead of ../shared/data/mnist.
"""
from train import sections

LOCAL_MNIST = "idx:../shared/data/mnist"


def get_config(arg: str | None = None):
    c = sections.base_config()
    c.family = "gan"
    c.gan = sections.gan()
    c.model = sections.model_section("dcgan_g", latent_dim=100, ngf=64)
    c.gan.discriminator = sections.model_section("dcgan_d", ndf=64, norm="batch")
    c.gan.loss = "non_saturating"
    c.gan.extractor = "domain_mnist"
    c.gan.eval_samples = 10_000
    c.data.source = LOCAL_MNIST
    c.data.resolution = 32
    c.batch_size = 64
    c.total_steps = 4000
    c.optim.name = "adam"
    c.optim.learning_rate = 2e-4
    c.optim.b1 = 0.5
    c.optim.b2 = 0.999
    c.log_every = 100
    c.preview_every = 500
    c.eval_every = 4000
    c.checkpoint.every = 1000
    c.eval.batch_size = 500
    c.eval.metrics = ("fid", "disc")
    return sections.apply_variant(c, arg, {"smoke": _smoke, "tfds": _tfds})


def _tfds(c):
    c.data.source = "tfds:mnist"


def _smoke(c):
    sections.smoke(c)
    c.eval.metrics = ("disc",)
    c.gan.eval_samples = 64
    c.model.ngf, c.gan.discriminator.ndf = 16, 16
