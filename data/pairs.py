"""Two identities read side by side, the form face-swap evaluation and previews take.

Training draws each side independently (`pipeline.make_pair_dataset`); evaluation walks a fixed
pairing instead: example i is A's example i next to B's example i, with every field prefixed by
its side ("a_image", "b_image", "a_mask", ...). When both sides are single-identity synthetic faces
the ground truth of both swaps comes with it: "a2b_truth" is B's person with A's expression and
pose (what a perfect A->B swap of "a_image" shows), "b2a_truth" the reverse, and "a2b_face" /
"b2a_face" their face masks (uint8 [H, W, 1], 255 = skin and features): the region a merge replaces.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from data import synthetic


class PairedSource:
    """Random access to (A[i], B[i]) for i < min(len(A), len(B)), as one flat example per pair."""

    def __init__(self, a: Any, b: Any) -> None:
        if a.info.image_shape != b.info.image_shape:
            raise ValueError(
                f"the two identities have different image shapes, A {a.info.image_shape} and B {b.info.image_shape}; "
                "set data.resolution (or the sources' size) so both sides match"
            )
        self.a, self.b = a, b
        self.has_truth = _single_synthetic(a) and _single_synthetic(b)
        self.info = dataclasses.replace(a.info, name=f"{a.info.name}|{b.info.name}",
                                        num_examples=min(len(a), len(b)))

    def __len__(self) -> int:
        return self.info.num_examples

    def __repr__(self) -> str:
        return f"PairedSource(a={self.a!r}, b={self.b!r})"

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        i = int(index)
        if not 0 <= i < len(self):
            raise IndexError(f"pair index {i} out of range for {len(self)} pairs")
        out = {f"a_{k}": v for k, v in self.a[i].items()} | {f"b_{k}": v for k, v in self.b[i].items()}
        if self.has_truth:
            for name, person, other in (("a2b", self.b.identities[0], self.a), ("b2a", self.a.identities[0], self.b)):
                e, q = other.expression_pose([i])
                out[f"{name}_truth"] = synthetic.render([person], e, q, other.size)[0]
                face = synthetic.face_mask([person], e, q, other.size)[0]
                out[f"{name}_face"] = np.rint(face * 255.0).astype(np.uint8)[..., None]
        return out


def _single_synthetic(source: Any) -> bool:
    """Whether `source` renders one synthetic person, so its swap has a ground truth."""
    return isinstance(source, synthetic.SyntheticFaces) and len(source.identities) == 1
