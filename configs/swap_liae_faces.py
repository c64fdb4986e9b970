"""DeepFaceLab's default SAEHD model (LIAE-UD) on your own aligned faces, for a GPU.

    python -m train --config configs/swap_liae_faces.py --workdir runs/liae128 \
        --config.data.source='folder:faces/A;size=128' --config.data.source_b='folder:faces/B;size=128'
    python -m train --config configs/swap_liae_faces.py:256 ...      # 256 px, DFL's "-d" doubling

`faces/A` (src) and `faces/B` (dst) hold aligned face crops, one person each (every 10th image is
held out). SAEHD's defaults: ae_dims 256, e_dims 64, d_dims 64, d_mask_dims 22, AdaBelief at
5e-5 with gradient clipping, random warp, dst flips, masked training when the images carry masks
(folders carry none yet, so the whole crop is the face). bf16 compute with f32 parameters.
"""
from train import sections

FACES_A = "folder:faces/A;size=128"
FACES_B = "folder:faces/B;size=128"
SYNTHETIC = "synthetic_faces:ids={};n=40;size=64;seed={};masks=1"


def get_config(arg: str | None = None):
    c = sections.base_config()
    c.family = "swap"
    c.swap = sections.swap()
    c.model = sections.model_section("swap_liae", resolution=128, opts="ud", dtype="bfloat16")
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
