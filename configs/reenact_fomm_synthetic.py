"""FOMM at 64 px on synthetic talking people, tested on people it never saw: the default reenactment job, offline.

    python -m train --config configs/reenact_fomm_synthetic.py --workdir runs/reenact_synthetic
    python -m train.evaluate --workdir runs/reenact_synthetic --metrics recon,reenact_truth

Training pairs are two frames of one clip (`video_pairs:`) of synthetic people 0-39 (4 clips of 32 frames
each: smooth expression and pose trajectories, data/synthetic/clips.py); evaluation pairs come from the
test-split clips of people 40-49, so both the faces and their motions are new. The model is
`zoo.reenact.CPU_PRESETS["fomm"]` (FOMM's code at a quarter of the widths, 3-block hourglasses; the fields
are written out here so a config loads without JAX, and tests/test_reenact_family.py keeps them equal),
trained with FOMM's losses: L1 + DSSIM over the 1, 1/2, 1/4, 1/8 pyramid (no VGG19 file offline; set
`--config.reenact.vgg_weights` to torchvision's vgg19 file for the perceptual pyramid) and equivariance of
keypoints and Jacobians, Adam 2e-4 (betas 0.5, 0.999) decayed x0.1 at 60% and 90% of the steps (VGG19 needs
16 px at every scale: with it, also `--config.reenact.scales=1,0.5,0.25` at 64 px).
The step count is sized for about 20-25 minutes on 2 idle CPU cores: a 60-step run under `nice -n 19` on the
2 shared cores (load average 3-4) ran 2.3-2.5 steps/s at batch 16 after a 31 s compile, so 4,000 steps take
27-29 minutes there and less on idle cores. `:smoke` is the
test suite's few-step version on 8 clips.
"""
from train import sections

TRAIN = "video_pairs:num_repeats=75;seed=0@synthetic_clips:ids=0-39;clips=4;frames=32;size=64;seed=0"
TEST = "video_pairs:num_repeats=10;seed=1@synthetic_clips:ids=40-49;clips=1;frames=32;size=64;seed=0"


def get_config(arg: str | None = None):
    c = sections.base_config()
    c.family = "reenact"
    c.reenact = sections.reenact()
    c.model = sections.model_section("fomm", **sections.REENACT_CPU_FIELDS["fomm"])
    c.data.source, c.data.eval_source = TRAIN, TEST
    c.data.train_split, c.data.eval_split = "train", "test"
    c.data.worker_count = 1
    c.batch_size = 16
    c.total_steps = 4000  # 2.3-2.5 steps/s measured under nice on 2 shared cores (load 3-4): 27-29 min there
    sections.fomm_adam(c)
    c.log_every = 50
    c.preview_every = 1000
    c.eval_every = 4000
    c.checkpoint.every = 1000
    c.eval.batch_size = 50
    c.eval.metrics = ("recon", "reenact_truth")
    return sections.apply_variant(c, arg, {"smoke": _smoke})


def _smoke(c):
    sections.smoke(c)
    c.batch_size = 8
    c.eval.batch_size = 8
    c.data.source = "video_pairs:num_repeats=4;seed=0@synthetic_clips:ids=0-3;clips=2;frames=8;size=64;seed=0"
    c.data.eval_source = "video_pairs:num_repeats=2;seed=1@synthetic_clips:ids=4-7;clips=1;frames=8;size=64;seed=0"
