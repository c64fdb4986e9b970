"""DF swap between two real GRID speakers at 128 px (../shared/data/grid), centre crops of the frames.

    python -m train --config configs/swap_df_grid.py --workdir runs/swap_grid
    python -m train.evaluate --workdir runs/swap_grid

Each side is one 75-frame video (25 fps): every 10th frame is held out for evaluation, the rest
train. Until the face extraction pipeline lands, faces are the frame's centre square resized to
128 px (the speakers sit centred, face about half the crop), with no masks, so training is
unmasked. The data are real people: use them for tests and measurements only, never publish swaps.
1,000 steps take about 33 min on 2 CPU cores (2 s/step); `--metrics recon,identity` then scores
the swaps with dlib (README results).
"""
from train import sections

GRID = "../shared/data/grid"
A = f"video:{GRID}/bbaf2n.mpg;size=128"
B = f"video:{GRID}/lbax4n.mpg;size=128"


def get_config(arg: str | None = None):
    c = sections.base_config()
    c.family = "swap"
    c.swap = sections.swap()
    c.swap.masked_training = False
    c.swap.mask_weight = 0.0
    c.model = sections.model_section("swap_df", resolution=128, opts="ud", ae_dims=128, e_dims=32, d_dims=32,
                                       d_mask_dims=8)
    c.data.source, c.data.source_b = A, B
    c.data.worker_count = 1
    c.batch_size = 8
    c.total_steps = 1000
    c.optim.name = "adabelief"
    c.optim.learning_rate = 2e-4
    c.optim.warmup_steps = 100
    c.optim.grad_clip_norm = 1.0
    c.log_every = 50
    c.preview_every = 500
    c.eval_every = 1000
    c.checkpoint.every = 500
    c.eval.batch_size = 8
    c.eval.metrics = ("recon",)
    return sections.apply_variant(c, arg, {"smoke": _smoke})


def _smoke(c):
    sections.smoke(c)
    c.data.source = A.replace("size=128", "size=64;stride=5")
    c.data.source_b = B.replace("size=128", "size=64;stride=5")
    c.data.worker_count = 0
    c.model.resolution = 64
    c.model.ae_dims, c.model.e_dims, c.model.d_dims, c.model.d_mask_dims = 32, 8, 8, 4
