"""DeepFaceLab-style DF swap between two synthetic people at 64 px: the default job, offline.

    python -m train --config configs/swap_df_synthetic.py --workdir runs/swap_df
    python -m train.evaluate --workdir runs/swap_df

DeepFaceLab-style pretraining: `:pretrain` trains on 20 other synthetic people on both sides
(random warp off, flips on); fine-tuning then starts from its export with the inter re-initialised:

    python -m train --config configs/swap_df_synthetic.py:pretrain --workdir runs/swap_pre
    python -m train.export --workdir runs/swap_pre
    python -m train --config configs/swap_df_synthetic.py --workdir runs/swap_ft \
        --config.swap.init_from=runs/swap_pre/export/swap_df-3000.safetensors --config.swap.reinit="('inter',)"

`:narrow` (ae 40, e/d 10, mask 5: 1.24M params, a 4.9 MB float32 file) is the DF model the pretrained
catalogue bundles as `swap_df_synthetic_narrow`; the default widths (7.6M params, 30 MB) exceed its 5 MB limit.

Identity A (src) is synthetic person 0 and B (dst) person 1, each 2,000 renders with random
expression and pose plus face and eyes/mouth masks; the test split holds other expressions and
poses, and its swaps have a ground truth (B rendered with A's expression and pose), so
`swap_truth` measures the swap itself, not just reconstruction.

Departures from SAEHD's defaults, for a 15-minute budget on 2 CPU cores (README results): a
narrow network, Adam at 1e-3 (AdaBelief at DFL's 5e-5 barely leaves the blur stage in that time),
random warp at half strength, and unmasked training: a synthetic person's hair, clothes and
background belong to the identity and to the ground truth, so the whole image is learned (the
masks still train the mask head and the eyes/mouth priority).
"""
from train import sections

A = "synthetic_faces:ids=0;n=2000;size=64;seed=0;masks=1"
B = "synthetic_faces:ids=1;n=2000;size=64;seed=1;masks=1"


def get_config(arg: str | None = None):
    c = sections.base_config()
    c.family = "swap"
    c.swap = sections.swap()
    c.swap.eyes_mouth_prio = True
    c.model = sections.model_section("swap_df", resolution=64, opts="ud", ae_dims=128, e_dims=24, d_dims=24,
                                       d_mask_dims=8)
    c.data.source, c.data.source_b = A, B
    c.data.worker_count = 1
    c.swap.masked_training = False
    c.swap.warp_strength = 0.5
    c.batch_size = 16
    c.total_steps = 1500
    c.optim.name = "adam"
    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 100
    c.optim.grad_clip_norm = 1.0
    c.log_every = 50
    c.preview_every = 500
    c.eval_every = 1500
    c.checkpoint.every = 500
    c.eval.batch_size = 64
    c.eval.metrics = ("recon", "swap_truth")
    return sections.apply_variant(c, arg, {"smoke": _smoke, "pretrain": _pretrain, "narrow": _narrow})


def _narrow(c):
    c.model.ae_dims, c.model.e_dims, c.model.d_dims, c.model.d_mask_dims = 40, 10, 10, 5


def _pretrain(c):
    generic = "synthetic_faces:ids=10-29;n=200;size=64;seed=2;masks=1"
    c.data.source = c.data.source_b = generic
    c.swap.random_warp = False
    c.swap.flip_a = c.swap.flip_b = True
    c.total_steps = 3000
    c.eval.metrics = ("recon",)


def _smoke(c):
    sections.smoke(c)
    c.data.source = A.replace("n=2000", "n=40")
    c.data.source_b = B.replace("n=2000", "n=40")
    c.data.worker_count = 0
    c.model.ae_dims, c.model.e_dims, c.model.d_dims, c.model.d_mask_dims = 32, 8, 8, 4
