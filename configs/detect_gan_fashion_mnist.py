"""A detector of the bundled Fashion-MNIST DCGAN's samples against the real test images, offline.

    python -m train --config configs/detect_gan_fashion_mnist.py --workdir runs/detect_gan
    python -m train.evaluate --workdir runs/detect_gan --metrics detect

Reals are Debian's dataset-fashion-mnist at 32 px (the GAN's size), fakes the bundled
`dcgan_fashion_mnist` generator's samples, one per real image, drawn at start-up. GAN samples have no
identity, so the split is the dataset's own (train images vs test images, fresh latents for each).
Blur, JPEG and flips apply to both classes, so neither leaks through compression.
"""
from train import sections

FASHION_MNIST = "idx:/usr/share/datasets/fashion-mnist"
GAN = "dcgan_fashion_mnist"


def get_config(arg: str | None = None):
    c = sections.base_config()
    c.family = "detect"
    c.detect = sections.detect()
    c.model = sections.model_section("resnet_detector")
    c.data.source = f"fakemix:model={GAN};size=32;n=20000;seed=0@{FASHION_MNIST}"
    c.data.eval_source = f"fakemix:model={GAN};size=32;n=5000;seed=1@{FASHION_MNIST}"
    c.batch_size = 64
    c.total_steps = 1000
    c.optim.name = "adam"
    c.optim.learning_rate = 1e-4  # Wang et al.'s Adam 1e-4
    c.log_every = 50
    c.preview_every = 500
    c.eval_every = 1000
    c.checkpoint.every = 500
    c.eval.batch_size = 250
    c.eval.metrics = ("bce", "detect")
    return sections.apply_variant(c, arg, {"smoke": _smoke})


def _smoke(c):
    sections.smoke(c)
    c.data.source = f"fakemix:model={GAN};size=32;n=64;seed=0@{FASHION_MNIST}"
    c.data.eval_source = f"fakemix:model={GAN};size=32;n=32;seed=1@{FASHION_MNIST}"
    c.detect.sweep = ("jpeg50",)
