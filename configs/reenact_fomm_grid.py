"""FOMM at 64 px on real GRID speakers' aligned faces: four speakers train, two others test (../shared/data/grid).

    python -m train --config configs/reenact_fomm_grid.py --workdir runs/reenact_grid
    python -m train.evaluate --workdir runs/reenact_grid --metrics recon,reenact

Each speaker is one 75-frame video (25 fps). The frames are `aligned:VIDEO;size=64` faces (dlib HOG, 68
landmarks, whole_face crops, extracted once into the zoo's cache on first use, data/faces/cached.py), joined
into one frame source per split with " + " so each speaker stays one video (data/video_pairs.py); training
pairs two faces of one speaker's video (bbaf2n, brbk7n, lbax4n, lbbc2a), evaluation pairs two faces of a
held-out speaker's (lrwp9a, lwbsza), so the people and their videos are disjoint. Aligned faces hold the
head still (per-frame alignment removes translation, scale and roll), so the motion left is the mouth,
eyes and small out-of-plane turns: what GRID's speakers do. The network, losses and optimiser are those of
configs/reenact_fomm_synthetic.py (`zoo.reenact.CPU_PRESETS["fomm"]`, L1 + DSSIM pyramid, equivariance,
Adam 2e-4 decayed at 60%/90%); the step count is sized for about 30 minutes on 2 CPU cores. `:smoke`
trains a few steps on every 5th face of two speakers.

The data are real people: use them for tests and measurements only, never publish what the model makes.
"""
from train import sections

TRAIN_SPEAKERS, TEST_SPEAKERS = sections.GRID_TRAIN_SPEAKERS, sections.GRID_TEST_SPEAKERS



def get_config(arg: str | None = None):
    c = sections.base_config()
    c.family = "reenact"
    c.reenact = sections.reenact()
    c.model = sections.model_section("fomm", **sections.REENACT_CPU_FIELDS["fomm"])
    c.data.source = f"video_pairs:num_repeats=1000;seed=0@{sections.grid_faces(TRAIN_SPEAKERS, 64)}"
    c.data.eval_source = f"video_pairs:num_repeats=50;seed=1@{sections.grid_faces(TEST_SPEAKERS, 64)}"
    c.data.train_split = c.data.eval_split = "all"  # people, not frames, are held out
    c.data.worker_count = 1
    c.batch_size = 16
    c.total_steps = 4000  # configs/reenact_fomm_synthetic.py's network and batch: 2.3-2.5 steps/s under load
    sections.fomm_adam(c)
    c.log_every = 50
    c.preview_every = 1000
    c.eval_every = 4000
    c.checkpoint.every = 1000
    c.eval.batch_size = 50
    c.eval.metrics = ("recon", "reenact")
    return sections.apply_variant(c, arg, {"smoke": _smoke})


def _smoke(c):
    sections.smoke(c)
    c.batch_size = 8
    c.eval.batch_size = 8
    c.data.source = f"video_pairs:num_repeats=8;seed=0@{sections.grid_faces(TRAIN_SPEAKERS[:2], 64, every=5)}"
    c.data.eval_source = f"video_pairs:num_repeats=8;seed=1@{sections.grid_faces(TEST_SPEAKERS[:1], 64, every=5)}"
