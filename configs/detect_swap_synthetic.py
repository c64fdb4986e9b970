"""A detector of DF swaps of synthetic people, tested on people it never saw: the CPU default, offline.

    python -m train --config configs/detect_swap_synthetic.py --workdir runs/detect_swap
    python -m train.evaluate --workdir runs/detect_swap --metrics detect

The fakes are made at start-up by the bundled `swap_df_synthetic_narrow` (DeepFaceLab's DF trained on
synthetic persons 0 and 1): each real render is swapped both ways (a2b through B's decoder, b2a through
A's), so a real face and its two fakes sit side by side, as FaceForensics++ pairs a manipulated video
with its original. Every fake wears person 0's or person 1's face, so both are in the real class too
(200 renders each to train, 50 held-out expressions and poses each to test): without them a detector
learns "looks like person 0 or 1" instead of the swap's artifacts, and flags their real faces (a first
run did: 96-100% of their renders). The other people are disjoint: 2-41 train, 42-61 test.
The xception-style detector is narrow for 2 CPU cores; `:narrow` (width 8, a 3 MB float32 file) is the one
the pretrained catalogue bundles as `detect_swap_synthetic_narrow`, the pinned detector `--metrics
detectability` uses for the synthetic-face swaps; `:smoke` is the test suite's few-step version.
"""
from train import sections

SWAP = "swap_df_synthetic_narrow"
TRAIN = (f"fakemix:model={SWAP};seed=0@synthetic_faces:ids=0-1;n=200;size=64;seed=0 + "
         "synthetic_faces:ids=2-41;n=40;size=64;seed=0")
TEST = (f"fakemix:model={SWAP};seed=1@synthetic_faces:ids=0-1;n=50;size=64;seed=5 + "
        "synthetic_faces:ids=42-61;n=25;size=64;seed=5")


def get_config(arg: str | None = None):
    c = sections.base_config()
    c.family = "detect"
    c.detect = sections.detect()
    c.model = sections.model_section("xception_detector", input_size=64)
    c.data.source, c.data.eval_source = TRAIN, TEST
    c.data.worker_count = 1
    c.batch_size = 32
    c.total_steps = 400  # 12,800 images: loss 0.05 by step 17 on a first run; about 6 min on 2 idle cores
    c.optim.name = "adam"
    c.optim.learning_rate = 2e-4  # DeepfakeBench's Xception recipe (Adam 2e-4, batch 32)
    c.optim.weight_decay = 5e-4
    c.log_every = 50
    c.preview_every = 200
    c.eval_every = 400
    c.checkpoint.every = 200
    c.eval.batch_size = 100
    c.eval.metrics = ("bce", "detect")
    return sections.apply_variant(c, arg, {"smoke": _smoke, "narrow": _narrow})


def _narrow(c):
    c.model.width = 8


def _smoke(c):
    sections.smoke(c)
    c.data.source = f"fakemix:model={SWAP}@synthetic_faces:ids=2-3;n=8;size=64;seed=0"
    c.data.eval_source = f"fakemix:model={SWAP};seed=1@synthetic_faces:ids=4-5;n=8;size=64;seed=5"
    c.detect.sweep = ("jpeg50", "blur1")
