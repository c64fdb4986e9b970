"""SNGAN (Miyato et al. 2018) on CIFAR-10: the ResNet G/D with spectral norm and the hinge loss. For a GPU.

    python -m train --config configs/sngan_cifar10.py --workdir runs/sngan_cifar10
    python -m train.evaluate --workdir runs/sngan_cifar10 --metrics fid

Mimicry's setting (Lee & Town 2020), whose unconditional CIFAR-10 FID is 16.77 (50k samples
against the training set): ngf 256, ndf 128, z 128, batch 64, Adam 2e-4 with betas (0, 0.9),
5 discriminator steps per generator step, 100k generator steps (total_steps counts D steps here,
so 500k). Difference: the learning rate decays by cosine, not linearly, to zero. The evaluation is
Mimicry's protocol: 50,000 samples against the 50,000 training images through the FID InceptionV3,
whose weights file you download once (the error names the URL). Needs `tfds:cifar10` (prepared once
with the `tf` extra on a machine with internet; the error says the command). `:smoke` runs offline on synthetic
32 px faces.
"""
from train import sections


def get_config(arg: str | None = None):
    c = sections.base_config()
    c.family = "gan"
    c.gan = sections.gan()
    c.model = sections.model_section("sngan_g", latent_dim=128, ngf=256)
    c.gan.discriminator = sections.model_section("sngan_d", ndf=128, spectral_norm=True)
    c.gan.loss = "hinge"
    c.gan.n_critic = 5
    c.gan.extractor = "inception_v3_fid"
    c.gan.eval_samples = 50_000
    c.data.source = "tfds:cifar10"
    c.data.eval_split = "train"
    c.data.worker_count = 4
    c.batch_size = 64
    c.total_steps = 500_000
    c.optim.name = "adam"
    c.optim.learning_rate = 2e-4
    c.optim.b1 = 0.0
    c.optim.b2 = 0.9
    c.optim.schedule = "cosine"
    c.log_every = 500
    c.preview_every = 10_000
    c.eval_every = 100_000
    c.checkpoint.every = 10_000
    c.eval.batch_size = 500
    c.eval.metrics = ("fid", "disc")
    return sections.apply_variant(c, arg, {"smoke": _smoke})


def _smoke(c):
    sections.smoke(c)
    c.data.source = "synthetic_faces:n=40;size=32"
    c.data.eval_split = "test"
    c.data.worker_count = 0
    c.model.ngf, c.gan.discriminator.ndf = 16, 16
    c.eval.metrics = ("disc",)
    c.gan.eval_samples = 64
