"""StyleGAN2 on Fashion-MNIST at 32x32: NVIDIA's `cifar` recipe, narrowed for a CPU.

    python -m train --config configs/stylegan2_fashion_mnist.py --workdir runs/stylegan2_fashion_mnist
    python -m train.evaluate --workdir runs/stylegan2_fashion_mnist --metrics fid,disc

StyleGAN2-ADA's `cifar` configuration (Karras et al. 2020, Table 1 and its train.py): 2 mapping
layers, R1 gamma 0.01 every 16 steps with Adam's lr and betas rescaled for the lazy interval, Adam
0.0025 with betas (0, 0.99), G EMA with a 500 kimg half-life ramped up at 0.05, no style mixing and
no path-length regulariser. Narrowed from channel_base 32768 / max 512 to 2048 / 128 (128 maps up
to 16x16, 64 at 32x32), minibatch-stddev groups of 4 instead of 32 (a narrow run's batch is 32),
so that it trains on 2 cores. Evaluated like the other Fashion-MNIST GANs (10,000 samples against
the 10,000 test images through `domain_fashion_mnist`). Data: Debian's dataset-fashion-mnist;
`:tfds` reads TFDS's fashion_mnist; `:ada` switches ADA on (target 0.6).
"""
from train import sections

DEBIAN_FASHION_MNIST = "idx:/usr/share/datasets/fashion-mnist"


def get_config(arg: str | None = None):
    c = sections.stylegan2(resolution=32, batch_size=32, channel_base=2048, channel_max=128, latent_dim=128,
                           mapping_layers=2, r1_gamma=0.01, ema_kimg=500, ema_rampup=0.05, style_mixing=0.0,
                           pl_weight=0.0)
    c.gan.extractor = "domain_fashion_mnist"
    c.gan.eval_samples = 10_000
    c.data.source = DEBIAN_FASHION_MNIST
    c.data.resolution = 32
    c.total_steps = 4000
    c.log_every = 100
    c.preview_every = 1000
    c.eval_every = 4000
    c.checkpoint.every = 1000
    c.eval.batch_size = 500
    c.eval.metrics = ("fid", "disc")
    return sections.apply_variant(c, arg, {"smoke": sections.stylegan2_smoke, "tfds": _tfds, "ada": _ada})


def _tfds(c):
    c.data.source = "tfds:fashion_mnist"


def _ada(c):
    c.gan.ada_target = 0.6
