"""StyleGAN2 at 64x64 on synthetic people: the CPU-budget StyleGAN2 run, with no download and no real faces.

    python -m train --config configs/stylegan2_synthetic_faces.py --workdir runs/stylegan2_synthetic_faces
    python -m train.evaluate --workdir runs/stylegan2_synthetic_faces --metrics fid,disc

200 identities of the zoo's parametric faces, 50 renders each (10,000 images, disjoint expressions
and poses for the evaluation split). The full StyleGAN2 recipe at a narrow width: 2 mapping layers
(NVIDIA's `auto` configuration), style mixing 0.9, path-length regularisation (weight 2 every 4
steps, batch shrink 2), lazy R1 with `auto`'s gamma = 0.0002 res^2 / batch, lazy Adam 0.0025 with
betas (0, 0.99), G EMA with `auto`'s half-life of batch * 10 / 32 kimg ramped up at 0.05, ADA
(target 0.6) against D overfitting a small set, and x-flips of the reals (NVIDIA's --mirror).
Feature maps: channel_base 1024, max 64 (64 at 4-16 px, 32 at 32, 16 at 64). Evaluated through the
`domain_synthetic_faces` extractor (trained on the renderer's identities, expressions and poses).
Generated faces carry provenance metadata saying they are synthetic.
"""
from train import sections

FACES = "synthetic_faces:ids=0-199;n=50;size=64;seed=0"


def get_config(arg: str | None = None):
    c = sections.stylegan2(resolution=64, batch_size=32, channel_base=1024, channel_max=64, latent_dim=64,
                           mapping_layers=2, ema_rampup=0.05)
    c.gan.ada_target = 0.6
    c.gan.mirror = True
    c.gan.extractor = "domain_synthetic_faces"
    c.gan.eval_samples = 5000
    c.data.source = FACES
    c.total_steps = 700  # 22.4 kimg: about 30 min at the 2.5 s/step measured on 2 CPU cores
    c.log_every = 50
    c.preview_every = 350
    c.eval_every = 700
    c.checkpoint.every = 350
    c.eval.batch_size = 200  # a multiple of D's minibatch-stddev group (4)
    c.eval.num_examples = 5000
    c.eval.metrics = ("fid", "disc")
    return sections.apply_variant(c, arg, {"smoke": _smoke})


def _smoke(c):
    sections.stylegan2_smoke(c)
    c.data.source = "synthetic_faces:ids=0-3;n=10;size=64;seed=0"
