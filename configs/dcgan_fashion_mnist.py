"""DCGAN on Fashion-MNIST at 32x32, offline, scored with FID/KID from the zoo's Fashion-MNIST extractor.

    python -m train --config configs/dcgan_fashion_mnist.py --workdir runs/dcgan_fashion_mnist
    python -m benchmarks.gan_quality --workdir runs/dcgan_fashion_mnist     # FID/KID/PR/IS beside the floor

dcgan_mnist.py's model, recipe and budget (4,000 steps of batch 64, about 14 min on 2 CPU cores) on
Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist), the exact 60k/10k split;
evaluated with 10,000 samples against the 10,000 test images through `domain_fashion_mnist`, a
classifier the zoo ships (trained on Fashion-MNIST, sha256 pinned). The README's results table has this run's
figures beside the floor (the training set scored the same way). `:tfds` reads TFDS's fashion_mnist.
"""
import pathlib

from train import sections

DEBIAN_FASHION_MNIST = "idx:/usr/share/datasets/fashion-mnist"


def get_config(arg: str | None = None):
    base = pathlib.Path(__file__).with_name("dcgan_mnist.py")
    c = sections.load(f"{base}:{arg}" if arg else str(base))
    c.data.source = "tfds:fashion_mnist" if arg == "tfds" else DEBIAN_FASHION_MNIST
    c.gan.extractor = "domain_fashion_mnist"
    return c
