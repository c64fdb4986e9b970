"""StyleGAN2 on FFHQ at 256x256 with NVIDIA's `paper256` settings. For a GPU and users with the data.

    python -m train --config configs/stylegan2_ffhq256.py --workdir runs/stylegan2_ffhq256 \
        --config.data.source='folder:/path/to/ffhq;size=256'
    python -m train.evaluate --workdir runs/stylegan2_ffhq256 --metrics fid

StyleGAN2-ADA's `paper256` (Karras et al. 2020, its train.py; the reference doc's section 4): batch
64, minibatch-stddev groups of 8, channel_base 16384 (max 512), 8 mapping layers, Adam 0.0025 with
betas (0, 0.99) rescaled for the lazy intervals, R1 gamma 1 every 16 steps, path-length weight 2
every 4 (batch shrink 2), style mixing 0.9, G EMA with a 20 kimg half-life, x-flips (--mirror),
the 4 highest resolutions in bf16 with conv_clamp 256, 25,000 kimg (390,625 steps). Published
FID50k for this setting: 3.66 +- 0.10 (70k images plus flips, 50k samples). FFHQ is not in TFDS:
point `data.source` at the 70,000 images (`folder:<dir>;size=256`). NVIDIA downsamples 1024 -> 256
with a box filter and notes that Lanczos costs about a point of FID; resize to 256 beforehand
the same way to compare with the paper. `:ada` switches ADA on (StyleGAN2-ADA's 3.88 row); `:smoke`
runs offline on synthetic faces. Generated faces carry provenance metadata saying they are synthetic.
"""
from train import sections

KIMG = 25_000


def get_config(arg: str | None = None):
    c = sections.stylegan2(resolution=256, batch_size=64, channel_base=16384, mbstd_group=8, num_bf16_res=4,
                           conv_clamp=256.0, r1_gamma=1.0, ema_kimg=20)
    c.gan.mirror = True
    c.gan.extractor = "inception_v3_fid"
    c.gan.eval_samples = 50_000
    c.data.source = "folder:ffhq;size=256"
    c.data.worker_count = 8
    c.total_steps = KIMG * 1000 // c.batch_size
    c.log_every = 100
    c.preview_every = 5000
    c.eval_every = 50_000
    c.checkpoint.every = 5000
    c.eval.batch_size = 400  # a multiple of D's minibatch-stddev group (8)
    c.eval.metrics = ("fid",)
    return sections.apply_variant(c, arg, {"smoke": _smoke, "ada": _ada})


def _ada(c):
    c.gan.ada_target = 0.6


def _smoke(c):
    sections.stylegan2_smoke(c)
    c.data.source = "synthetic_faces:n=40;size=64"
    c.data.resolution = 0
    c.data.worker_count = 0
