"""DeepFaceLab's SAEHD with the DF-UD architecture on two people's faces extracted from your footage, for a GPU.

    python -m data.faces extract --input src.mp4 --output faces/A      # A: the person pasted in (DFL's src)
    python -m data.faces extract --input dst.mp4 --output faces/B      # B: the footage's person (dst)
    python -m train --config configs/swap_df_faces.py --workdir runs/df128
    python -m train --config configs/swap_df_faces.py:256 --workdir runs/df256     # 256 px, batch 16
    python -m train.merge --workdir runs/df128 --input dst.mp4 --output swapped.mp4

Each extraction (a video, or a folder of photos; whole_face crops at 256 px by default, with hull and
eyes/mouth masks) is read as `aligned:faces/A;size=128`, resized to the model; every 10th face is held
out. `--config.data.source='aligned:src.mp4;size=128'` skips the explicit step: the video is extracted
once into the zoo's cache on first use.

SAEHD's defaults for DF: ae_dims 256, e_dims 64, d_dims 64, d_mask_dims 22, AdaBelief at 5e-5 with
gradient clipping, random warp, dst flips, bf16 compute with f32 parameters. The loss is SAEHD's
(`config.swap`'s defaults, train/families/swap.py): masked training (10 x DSSIM with a res/11.6 window,
plus res/23.2 from 256 px up, and 10 x MSE, both inside the softened face mask), 10 x MSE of the
predicted mask against the hull, and eyes/mouth priority on (300 x L1 inside the eyes and mouth);
no GAN and no true-face term (DFL's defaults: both off).

`:smoke` trains a few steps on two synthetic people with masks, so it needs no footage.
"""
from train import sections

FACES_A = "aligned:faces/A;size=128"
FACES_B = "aligned:faces/B;size=128"
SYNTHETIC = "synthetic_faces:ids={};n=40;size=64;seed={};masks=1"


def get_config(arg: str | None = None):
    c = sections.base_config()
    c.family = "swap"
    c.swap = sections.swap()
    c.swap.masked_training = True
    c.swap.eyes_mouth_prio = True
    c.swap.random_warp = True
    c.model = sections.model_section("swap_df", resolution=128, opts="ud", dtype="bfloat16")
    c.data.source, c.data.source_b = FACES_A, FACES_B
    c.data.worker_count = 8
    c.batch_size = 32
    c.total_steps = 500_000
    c.optim.name = "adabelief"
    c.optim.learning_rate = 5e-5
    c.optim.grad_clip_norm = 1.0
    c.log_every = 200
    c.preview_every = 5_000
    c.eval_every = 50_000
    c.checkpoint.every = 10_000
    c.eval.batch_size = 64
    c.eval.metrics = ("recon",)
    return sections.apply_variant(c, arg, {"256": _res256, "smoke": _smoke})


def _res256(c):
    c.model.resolution = 256
    c.data.source = FACES_A.replace("size=128", "size=256")
    c.data.source_b = FACES_B.replace("size=128", "size=256")
    c.batch_size = 16


def _smoke(c):
    sections.smoke(c)
    c.data.source, c.data.source_b = SYNTHETIC.format(0, 0), SYNTHETIC.format(1, 1)
    c.data.worker_count = 0
    c.model.dtype = "float32"
    c.model.resolution = 64
    c.model.ae_dims, c.model.e_dims, c.model.d_dims, c.model.d_mask_dims = 16, 8, 8, 4
