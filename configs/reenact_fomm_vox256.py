"""FOMM's published VoxCeleb model and training (vox-256.yaml) at 256 px: for a GPU, on VoxCeleb you prepare.

    python -m train --config configs/reenact_fomm_vox256.py --workdir runs/reenact_vox256 \\
        --config.reenact.vgg_weights=weights/vgg19-dcbb9e9d.pth
    python -m train.evaluate --workdir runs/reenact_vox256 --metrics recon,reenact

Model: `fomm` at its defaults, the published networks (10 keypoints with Jacobians, hourglasses of 5 blocks,
expansion 32/64, 1024 features, temperature 0.1, kp variance 0.01, occlusion, generator 64..512 with 6
bottleneck ResBlocks; 59.79M parameters, the reference's 59.8M). Training: batch 40 (vox-256.yaml), 100
epochs of the 19,550 training clips of vox-metadata.csv repeated 75 times (FOMM's DatasetRepeater), i.e.
100 x ceil(19,550 x 75 / 40) steps; Adam 2e-4, betas (0.5, 0.999), x0.1 at epochs 60 and 90; the VGG19
perceptual pyramid at scales 1, 1/2, 1/4, 1/8 (weights 10 per layer; torchvision's ImageNet `vgg19` file,
read without pickle and sha256-pinned by train.perceptual); equivariance of values and Jacobians (10, 10;
sigma_affine 0.05, sigma_tps 0.005, 5x5 points); no GAN (vox-adv-256.yaml's is `--config.reenact.gan_weight=1`
with `d_block_expansion` 32, 4 blocks, scales (1,), batch 36, 150 epochs). With fewer clips than 19,550 set
`--config.total_steps` to 100 x ceil(clips x 75 / 40). FOMM's colour jitter and flips are not applied.

Data: VoxCeleb1 clips as FOMM's video-preprocessing makes them (vox-metadata.csv: 19,550 train and 525
test clips of 424 and 13 people), each clip a folder of PNG frames (FOMM's `vox-png` layout):

    vox/train/<clip id>/0000000.png, 0000001.png, ...
    vox/test/<clip id>/0000000.png, ...

turned into aligned faces with the zoo's own extractor (dlib HOG, 68 landmarks; one label per clip
folder, so each clip is one video to `video_pairs:`), 256 px, face type `head` (the closest to FOMM's
loose crops):

    python -m data.faces extract --input vox/train --output faces/vox_train --size 256 --face-type head
    python -m data.faces extract --input vox/test --output faces/vox_test --size 256 --face-type head

Difference: FOMM's crops keep one box per clip, so head translation stays in the data; per-frame alignment
removes most of it (translation, scale, roll), leaving expression and out-of-plane motion. Paths are
relative to the working directory; pass `--config.data.source=video_pairs:num_repeats=75@aligned:DIR`
(and data.eval_source) for others. `:smoke` trains the CPU preset a few steps on synthetic clips at 64 px,
so the test suite needs no VoxCeleb.
"""
import math

from train import sections

TRAIN_CLIPS = 19_550  # vox-metadata.csv's training clips
EPOCHS, REPEATS, BATCH = 100, 75, 40
TRAIN = f"video_pairs:num_repeats={REPEATS};seed=0@aligned:faces/vox_train"
TEST = "video_pairs:num_repeats=1;seed=1@aligned:faces/vox_test"


def get_config(arg: str | None = None):
    c = sections.base_config()
    c.family = "reenact"
    c.reenact = sections.reenact()
    c.reenact.vgg_weights = "weights/vgg19-dcbb9e9d.pth"  # torchvision's ImageNet vgg19; supply it
    c.model = sections.model_section("fomm")
    c.data.source, c.data.eval_source = TRAIN, TEST
    c.data.train_split = c.data.eval_split = "all"  # the clips' own train/test folders are the split
    c.data.worker_count = 8
    c.batch_size = BATCH
    c.total_steps = EPOCHS * math.ceil(TRAIN_CLIPS * REPEATS / BATCH)
    sections.fomm_adam(c)
    c.log_every = 100
    c.preview_every = 5000
    c.eval_every = 50_000
    c.checkpoint.every = 10_000
    c.checkpoint.keep_every = 100_000
    c.eval.batch_size = 40
    c.eval.num_examples = 2000
    c.eval.metrics = ("recon", "reenact")
    return sections.apply_variant(c, arg, {"smoke": _smoke})


def _smoke(c):
    sections.smoke(c)
    for key, value in sections.REENACT_CPU_FIELDS["fomm"].items():
        c.model[key] = value
    c.reenact.vgg_weights = ""
    c.batch_size = 8
    c.eval.batch_size = 8
    c.data.worker_count = 0
    c.data.train_split, c.data.eval_split = "train", "test"
    c.data.source = "video_pairs:num_repeats=4;seed=0@synthetic_clips:ids=0-3;clips=2;frames=8;size=64;seed=0"
    c.data.eval_source = "video_pairs:num_repeats=2;seed=1@synthetic_clips:ids=4-7;clips=1;frames=8;size=64;seed=0"
