"""DCGAN on CelebA at 64x64 (Radford et al. 2016's face model). For a GPU and users with the data.

    python -m train --config configs/dcgan_celeba64.py --workdir runs/dcgan_celeba64
    python -m train.evaluate --workdir runs/dcgan_celeba64 --metrics fid

PyTorch's DCGAN example on CelebA: ngf = ndf = 64, z 100, batch 128, Adam 2e-4 with beta1 0.5,
the non-saturating loss, about 5 epochs (8,000 steps). Images are centre-cropped to 178x178 and
resized to 64 (data.resolution). Evaluation: 10,000 samples against the first 10,000 test images
through the FID InceptionV3. Needs `tfds:celeb_a` (a manual download for TFDS); `:smoke` runs
offline on synthetic 64 px faces. Generated faces carry provenance metadata saying they are synthetic.
"""
from train import sections


def get_config(arg: str | None = None):
    c = sections.base_config()
    c.family = "gan"
    c.gan = sections.gan()
    c.model = sections.model_section("dcgan_g", latent_dim=100, ngf=64)
    c.gan.discriminator = sections.model_section("dcgan_d", ndf=64, norm="batch")
    c.gan.loss = "non_saturating"
    c.gan.extractor = "inception_v3_fid"
    c.gan.eval_samples = 10_000
    c.data.source = "tfds:celeb_a"
    c.data.resolution = 64
    c.data.worker_count = 4
    c.batch_size = 128
    c.total_steps = 8000
    c.optim.name = "adam"
    c.optim.learning_rate = 2e-4
    c.optim.b1 = 0.5
    c.log_every = 100
    c.preview_every = 1000
    c.eval_every = 8000
    c.checkpoint.every = 1000
    c.eval.batch_size = 500
    c.eval.num_examples = 10_000
    c.eval.metrics = ("fid", "disc")
    return sections.apply_variant(c, arg, {"smoke": _smoke})


def _smoke(c):
    sections.smoke(c)
    c.data.source = "synthetic_faces:n=40;size=64"
    c.data.resolution = 0
    c.data.worker_count = 0
    c.model.ngf, c.gan.discriminator.ndf = 8, 8
    c.eval.metrics = ("disc",)
    c.gan.eval_samples = 64
