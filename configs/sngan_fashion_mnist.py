"""SNGAN's ResNet G/D with spectral norm and the hinge loss on Fashion-MNIST at 32x32: the CPU-sized SNGAN.

    python -m train --config configs/sngan_fashion_mnist.py --workdir runs/sngan_fashion_mnist
    python -m train.evaluate --workdir runs/sngan_fashion_mnist --metrics fid,disc

sngan_cifar10.py's model and loss, narrowed (ngf = ndf = 32) and with one discriminator step per
generator step so that it trains in a CPU budget (1,800 steps of batch 64, about 15 min on 2 cores);
Adam 2e-4 with betas (0, 0.9) as the paper. Evaluated like dcgan_fashion_mnist.py (10,000 samples
against the 10,000 test images through `domain_fashion_mnist`). Data: Debian's
dataset-fashion-mnist; `:tfds` reads TFDS's fashion_mnist.
"""
from train import sections

DEBIAN_FASHION_MNIST = "idx:/usr/share/datasets/fashion-mnist"


def get_config(arg: str | None = None):
    c = sections.base_config()
    c.family = "gan"
    c.gan = sections.gan()
    c.model = sections.model_section("sngan_g", latent_dim=128, ngf=32)
    c.gan.discriminator = sections.model_section("sngan_d", ndf=32, spectral_norm=True)
    c.gan.loss = "hinge"
    c.gan.n_critic = 1
    c.gan.extractor = "domain_fashion_mnist"
    c.gan.eval_samples = 10_000
    c.data.source = DEBIAN_FASHION_MNIST
    c.data.resolution = 32
    c.batch_size = 64
    c.total_steps = 1800
    c.optim.name = "adam"
    c.optim.learning_rate = 2e-4
    c.optim.b1 = 0.0
    c.optim.b2 = 0.9
    c.log_every = 100
    c.preview_every = 600
    c.eval_every = 1800
    c.checkpoint.every = 600
    c.eval.batch_size = 500
    c.eval.metrics = ("fid", "disc")
    return sections.apply_variant(c, arg, {"smoke": _smoke, "tfds": _tfds})


def _tfds(c):
    c.data.source = "tfds:fashion_mnist"


def _smoke(c):
    sections.smoke(c)
    c.model.ngf, c.gan.discriminator.ndf = 16, 16
    c.eval.metrics = ("disc",)
    c.gan.eval_samples = 64
