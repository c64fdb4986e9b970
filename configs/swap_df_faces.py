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

Everything but the architecture is `swap_liae_faces.py` (this file loads it). SAEHD's defaults for DF: ae_dims
256, e_dims 64, d_dims 64, d_mask_dims 22, AdaBelief at 5e-5 with gradient clipping, random warp, dst flips,
bf16 compute with f32 parameters. The loss is SAEHD's (`config.swap`'s defaults, train/families/swap.py): masked
training (10 x DSSIM with a res/11.6 window, plus res/23.2 from 256 px up, and 10 x MSE, both inside the
softened face mask), 10 x MSE of the predicted mask against the hull, and eyes/mouth priority on (300 x L1
inside the eyes and mouth); no GAN and no true-face term (DFL's defaults: both off).

`:smoke` trains a few steps on two synthetic people with masks, so it needs no footage.
"""
import pathlib

from train import sections


def get_config(arg: str | None = None):
    base = pathlib.Path(__file__).with_name("swap_liae_faces.py")
    c = sections.load(f"{base}:{arg}" if arg else str(base))
    c.model.name = "swap_df"  # swap_df and swap_liae take the same fields
    return c
