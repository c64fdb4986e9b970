"""DF swap between two real GRID speakers at 128 px (../shared/data/grid), on aligned faces extracted at run time.

    python -m train --config configs/swap_df_grid.py --workdir runs/swap_grid
    python -m train.evaluate --workdir runs/swap_grid --metrics recon,identity

Each side is one 75-frame video (25 fps), A = bbaf2n, B = lbax4n: every 10th face is held out for
evaluation, the rest train. The sources are `aligned:VIDEO;size=128`: on first use each video is
extracted (dlib HOG, 68 landmarks, aligned whole_face crops at 128 px with their hull and eyes/mouth
masks) into the zoo's cache ($ZOO_CACHE/aligned; 4-5 s a video, 17 frames/s, on 2 busy CPU cores) and
later runs reuse it (data/faces/cached.py). The same faces from an explicit extraction, the one-line alternative:

    for s in bbaf2n lbax4n; do python -m data.faces extract --input ../shared/data/grid/$s.mpg --output faces/$s --size 128; done

then `--config.data.source=aligned:faces/bbaf2n --config.data.source_b=aligned:faces/lbax4n`.

Training is SAEHD's on real faces: masked (DSSIM and MSE inside the softened face mask), the mask head
trained on the hull, eyes/mouth priority on, random warp; batch 8, 1,000 steps, AdaBelief at 2e-4 with
warm-up and clipping, as the centre-crop run had (DFL's 5e-5 barely leaves the blur stage in a CPU budget).

`:centre` is the earlier run the README's GRID identity table reports: the frames' centre square
resized to 128 px (`video:` sources; the speakers sit centred, face about half the crop), no masks,
so unmasked training and no eyes/mouth priority; 1,000 steps took about 33 min on 2 CPU cores
(2 s/step). It stays so the real-footage benchmark can put the two side by side.

The data are real people: use them for tests and measurements only, never publish swaps.
"""
from train import sections

GRID = "../shared/data/grid"
A = f"aligned:{GRID}/bbaf2n.mpg;size=128"
B = f"aligned:{GRID}/lbax4n.mpg;size=128"
CENTRE_A = f"video:{GRID}/bbaf2n.mpg;size=128"
CENTRE_B = f"video:{GRID}/lbax4n.mpg;size=128"


def get_config(arg: str | None = None):
    c = sections.base_config()
    c.family = "swap"
    c.swap = sections.swap()
    c.swap.masked_training = True
    c.swap.eyes_mouth_prio = True
    c.swap.random_warp = True
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
    return sections.apply_variant(c, arg, {"smoke": _smoke, "centre": _centre})


def _centre(c):
    c.data.source, c.data.source_b = CENTRE_A, CENTRE_B
    c.swap.masked_training = False
    c.swap.eyes_mouth_prio = False
    c.swap.mask_weight = 0.0


def _smoke(c):
    sections.smoke(c)
    c.data.source = A.replace("size=128", "size=64;every=5")
    c.data.source_b = B.replace("size=128", "size=64;every=5")
    c.data.worker_count = 0
    c.model.resolution = 64
    c.model.ae_dims, c.model.e_dims, c.model.d_dims, c.model.d_mask_dims = 32, 8, 8, 4
