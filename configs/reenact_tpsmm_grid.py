"""TPSMM at 64 px on real GRID speakers' aligned faces: four speakers train, two others test (../shared/data/grid).

    python -m train --config configs/reenact_tpsmm_grid.py --workdir runs/reenact_tpsmm_grid
    python -m train.evaluate --workdir runs/reenact_tpsmm_grid --metrics recon,reenact

The data, splits and budget (about 30 minutes on 2 CPU cores) of configs/reenact_fomm_grid.py, with the
thin-plate-spline motion model: `zoo.reenact.CPU_PRESETS["tpsmm"]` (10 TPS transforms of 5 points from a
narrow ResNet, the background affine, four occlusion masks, the inpainting generator) and TPSMM's training
(vox-256.yaml scaled to this run's length): L1 + DSSIM pyramid (no VGG19 offline), equivariance of the
keypoints (weight 10; no Jacobians), the warp loss (10) and the background loss (10) with the background
predictor on from 10% of the steps (TPSMM: epoch 10 of 100), contribution-map dropout until 35% of the
steps with p rising from 0.1 by 0.3 every 10% up to 0.3 (TPSMM: epochs 35, 10), Adam 2e-4 (betas 0.5,
0.999) with weight decay 1e-4 added to the gradient, decayed x0.1 at 70% and 90% (TPSMM: epochs 70, 90).
Those step fields are set from total_steps when the config is built: with `--config.total_steps` changed,
set them too (or edit total_steps here). `:smoke` trains a few steps on every 5th face of two speakers.

The data are real people: use them for tests and measurements only, never publish what the model makes.
"""
from train import sections

TRAIN_SPEAKERS, TEST_SPEAKERS = sections.GRID_TRAIN_SPEAKERS, sections.GRID_TEST_SPEAKERS



def get_config(arg: str | None = None):
    c = sections.base_config()
    c.family = "reenact"
    c.reenact = sections.reenact()
    c.model = sections.model_section("tpsmm", **sections.REENACT_CPU_FIELDS["tpsmm"])
    c.data.source = f"video_pairs:num_repeats=1000;seed=0@{sections.grid_faces(TRAIN_SPEAKERS, 64)}"
    c.data.eval_source = f"video_pairs:num_repeats=50;seed=1@{sections.grid_faces(TEST_SPEAKERS, 64)}"
    c.data.train_split = c.data.eval_split = "all"  # people, not frames, are held out
    c.data.worker_count = 1
    c.batch_size = 16
    c.total_steps = 2000  # 1.0-1.1 steps/s at batch 16 under nice on 2 shared cores (load 4): about 32 min there
    sections.fomm_adam(c)
    c.optim.weight_decay = 1e-4
    _tpsmm_schedule(c)
    c.log_every = 50
    c.preview_every = 1000
    c.eval_every = c.total_steps
    c.checkpoint.every = 1000
    c.eval.batch_size = 50
    c.eval.metrics = ("recon", "reenact")
    return sections.apply_variant(c, arg, {"smoke": _smoke})


def _tpsmm_schedule(c):
    """TPSMM's epochs (of 100) as fractions of total_steps: background from 10, dropout until 35 rising over 10."""
    r, n = c.reenact, c.total_steps
    r.lr_milestones = (0.7, 0.9)
    r.bg_start_step = n // 10
    r.dropout_p, r.dropout_start_p = 0.3, 0.1
    r.dropout_ramp_steps = max(1, n // 10)
    r.dropout_steps = n * 35 // 100


def _smoke(c):
    sections.smoke(c)
    _tpsmm_schedule(c)
    c.batch_size = 8
    c.eval.batch_size = 8
    c.data.source = f"video_pairs:num_repeats=8;seed=0@{sections.grid_faces(TRAIN_SPEAKERS[:2], 64, every=5)}"
    c.data.eval_source = f"video_pairs:num_repeats=8;seed=1@{sections.grid_faces(TEST_SPEAKERS[:1], 64, every=5)}"
