"""A detector of DF swaps of real GRID speakers: trained on four speakers, tested on the other two.

    python -m train --config configs/swap_df_grid.py --workdir runs/swap_grid      # the swap model (about 35 min)
    python -m train.export --workdir runs/swap_grid
    python -m train --config configs/detect_swap_grid.py --workdir runs/detect_grid
    python -m train.evaluate --workdir runs/detect_grid --metrics detect

Reals are every aligned face (dlib, whole_face, 128 px; cached on first use) of each speaker's video in
../shared/data/grid; fakes are the GRID swap model's swaps of them both ways, made at start-up. Speakers
bbaf2n, brbk7n, lbax4n and lbbc2a train the detector, lrwp9a and lwbsza test it, so neither the people nor
their videos are shared between the splits (the swap model itself saw bbaf2n and lbax4n). Each speaker's
reals and each kind of fake are one video for the video-level AUC. Another swap export can be named with
`--config.data.source` / `--config.data.eval_source`. `:smoke` runs the same pipeline at 64 px with the
bundled synthetic-face swap model, so the test suite needs no trained GRID model.

The data are real people: use them for tests and measurements only, never publish the swaps.
"""
from train import sections

GRID_SWAP = "runs/swap_grid/export/swap_df-1000.safetensors"
TRAIN_SPEAKERS, TEST_SPEAKERS = sections.GRID_TRAIN_SPEAKERS, sections.GRID_TEST_SPEAKERS



def get_config(arg: str | None = None):
    c = sections.base_config()
    c.family = "detect"
    c.detect = sections.detect()
    c.model = sections.model_section("xception_detector", input_size=128)
    c.data.source = f"fakemix:model={GRID_SWAP};seed=0@{sections.grid_faces(TRAIN_SPEAKERS, 128)}"
    c.data.eval_source = f"fakemix:model={GRID_SWAP};seed=1@{sections.grid_faces(TEST_SPEAKERS, 128)}"
    c.data.train_split = c.data.eval_split = "all"  # people, not frames, are held out
    c.data.worker_count = 1
    c.batch_size = 32
    c.total_steps = 500  # 16,000 images; the loss was 2e-4 by step 240 of a first run (at 128 px, 1.3-3.9 s a step)
    c.optim.name = "adam"
    c.optim.learning_rate = 2e-4
    c.optim.weight_decay = 5e-4
    c.log_every = 50
    c.preview_every = 500
    c.eval_every = 500
    c.checkpoint.every = 500
    c.eval.batch_size = 100
    c.eval.metrics = ("bce", "detect")
    return sections.apply_variant(c, arg, {"smoke": _smoke})


def _smoke(c):
    sections.smoke(c)
    c.model.input_size = 64
    bundled = "swap_df_synthetic_narrow"
    c.data.source = f"fakemix:model={bundled};n=8@{sections.grid_faces(TRAIN_SPEAKERS[:2], 64)}"
    c.data.eval_source = f"fakemix:model={bundled};n=8;seed=1@{sections.grid_faces(TEST_SPEAKERS, 64)}"
    c.detect.sweep = ("h264_crf40",)
