"""faceswap-style Original swap between two synthetic people at 64 px, offline.

    python -m train --config configs/swap_original_synthetic.py --workdir runs/swap_original
    python -m train.evaluate --workdir runs/swap_original

The same data and losses as swap_df_synthetic.py with faceswap's template model (shared encoder
and dense bottleneck, two decoders), narrowed to fit the CPU budget; faceswap's own widths
(e_dims 128, encoder_dim 1024, 82M parameters) are the model's defaults.

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
    c.model = sections.model_section("swap_original", resolution=64, e_dims=24, encoder_dim=128, inter_dims=128,
                                       d_dims=24)
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
    return sections.apply_variant(c, arg, {"smoke": _smoke})


def _smoke(c):
    sections.smoke(c)
    c.data.source = A.replace("n=2000", "n=40")
    c.data.source_b = B.replace("n=2000", "n=40")
    c.data.worker_count = 0
    c.model.e_dims, c.model.encoder_dim, c.model.inter_dims, c.model.d_dims = 8, 32, 16, 8
