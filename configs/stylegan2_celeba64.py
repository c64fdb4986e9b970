"""StyleGAN2 (config F) on CelebA at 64x64. For a GPU and users with the data.

    python -m train --config configs/stylegan2_celeba64.py --workdir runs/stylegan2_celeba64
    python -m train.evaluate --workdir runs/stylegan2_celeba64 --metrics fid

NVIDIA's `stylegan2` configuration (config F: batch 32, minibatch-stddev groups of 4, channel_base
32768 so 512 maps at every resolution up to 64, 8 mapping layers, Adam 0.002 with betas (0, 0.99)
rescaled for the lazy intervals, path-length weight 2 every 4, style mixing 0.9, G EMA with a
10 kimg half-life, conv_clamp 256) at 64 px. R1's gamma follows the resolution: config F's 10 is
for 1024 px, and StyleGAN2-ADA's `auto` rule 0.0002 res^2 / batch gives 0.0256 here. 10,000 kimg
(312,500 steps). Data: `tfds:celeb_a` (a manual download for TFDS), centre-cropped and resized to
64 (data.resolution) as dcgan_celeba64.py; FID against 10,000 test images through the FID
InceptionV3. `:smoke` runs offline on synthetic faces. Generated faces carry provenance metadata
saying they are synthetic.
"""
from train import sections

KIMG = 10_000


def get_config(arg: str | None = None):
    c = sections.stylegan2(resolution=64, batch_size=32, channel_base=32768, conv_clamp=256.0, ema_kimg=10,
                           learning_rate=0.002)
    c.gan.extractor = "inception_v3_fid"
    c.gan.eval_samples = 10_000
    c.data.source = "tfds:celeb_a"
    c.data.resolution = 64
    c.data.worker_count = 4
    c.total_steps = KIMG * 1000 // c.batch_size
    c.log_every = 100
    c.preview_every = 5000
    c.eval_every = 50_000
    c.checkpoint.every = 5000
    c.eval.batch_size = 500
    c.eval.num_examples = 10_000
    c.eval.metrics = ("fid",)
    return sections.apply_variant(c, arg, {"smoke": _smoke})


def _smoke(c):
    sections.stylegan2_smoke(c)
    c.data.source = "synthetic_faces:n=40;size=64"
    c.data.resolution = 0
    c.data.worker_count = 0
