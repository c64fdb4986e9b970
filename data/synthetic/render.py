"""Rasterising faces and their masks from parameters, vectorised over a batch, painted back to front."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from data.synthetic.params import HAIR_STYLES, Expression, Identity, Pose
from data.synthetic.raster import Frame, band, blend, column, disc, edge_cover, ellipse, rgb

_PIXELS_PER_CHUNK = 1 << 17

_COLOUR_FIELDS = frozenset(
    f.name
    for f in dataclasses.fields(Identity)
    if f.name in {"skin", "iris", "lips", "brow_colour", "hair_colour", "background", "shirt"}
)


def _identity_arrays(identities: Sequence[Identity]) -> dict[str, np.ndarray]:
    """Identity fields stacked to [N,1,1] (colours planar, [3,N,1,1]) float32, ready to broadcast over pixels."""
    out = {}
    for f in dataclasses.fields(Identity):
        values = np.asarray([getattr(i, f.name) for i in identities], dtype=np.float32)
        out[f.name] = (
            np.ascontiguousarray(values.T.reshape(3, -1, 1, 1))
            if f.name in _COLOUR_FIELDS
            else values.reshape(-1, 1, 1)
        )
    out["hair_style"] = out["hair_style"].astype(np.int64)
    return out


def _take(p: dict[str, np.ndarray], sel: Any) -> dict[str, np.ndarray]:
    """Identity arrays of a subset of images (colours are indexed on their image axis, 1)."""
    return {k: (v[:, sel] if k in _COLOUR_FIELDS else v[sel]) for k, v in p.items()}


def _head_inside(p: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed distance inside the head outline: an ellipse whose lower half narrows by `jaw` into a chin."""
    rx, ry = p["head_width"], p["head_height"]
    t = np.clip(y / ry, 0.0, 1.0)
    taper = 1.0 - p["jaw"] * t * t
    return ellipse(x / taper, y, rx, ry)


def _hair_cover(
    p: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, inv_aa: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Hair coverage behind the head and in front of the face, per image by its hair style."""
    back, front = np.zeros(x.shape, np.float32), np.zeros(x.shape, np.float32)
    styles = p["hair_style"].reshape(-1)
    for style in np.unique(styles):
        idx = np.flatnonzero(styles == style)
        if len(idx) == len(styles):
            return _hair_style_cover(HAIR_STYLES[int(style)], p, x, y, inv_aa)
        back[idx], front[idx] = _hair_style_cover(HAIR_STYLES[int(style)], _take(p, idx), x[idx], y[idx], inv_aa[idx])
    return back, front


def _hair_style_cover(
    style: str, p: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, ia: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One hair style's (back, front) coverage, for images sharing that style."""
    rx, ry, t, hl = p["head_width"], p["head_height"], p["hair_thickness"], p["hairline"]
    outer = edge_cover(ellipse(x, y + 0.03, rx + t, ry + t), ia)
    xr = x / rx
    temples = hl + 0.32 * ry * xr * xr
    brow_top = p["eye_y"] - p["eye_height"] - p["brow_gap"]
    if style in ("short", "afro"):
        front = outer * edge_cover(temples - y, ia)
    elif style == "long":
        front = outer * edge_cover(temples + 0.05 * xr - y, ia)
    elif style == "fringe":
        line = brow_top - 0.09 + 0.018 * np.sin(30.0 * x) - 0.06 * xr + 0.25 * ry * xr**4
        front = outer * edge_cover(np.minimum(line, temples + 0.25) - y, ia)
    elif style == "bob":
        front = outer * edge_cover(brow_top - 0.1 + 0.3 * ry * xr**4 - y, ia)
    else:
        front = outer * edge_cover(ellipse(np.abs(x) - 0.97 * rx, y + 0.2 * ry, 0.15 * rx, 0.3 * ry), ia)
    if style in ("short", "fringe"):
        back = outer * edge_cover(0.1 - y, ia)
    elif style in ("long", "bob"):
        bottom = 0.85 if style == "long" else 0.35
        body = edge_cover(ellipse(x, y - 0.1, rx + t + 0.1, ry + 0.28), ia) * edge_cover(bottom - y, ia)
        back = np.maximum(outer * edge_cover(0.2 - y, ia), body)
    elif style == "afro":
        back = edge_cover(ellipse(x, y + 0.12, rx + t + 0.2, ry + t + 0.06), ia)
    else:
        back = np.zeros(x.shape, np.float32)
    return back, front


def _eye_geometry(p: dict[str, np.ndarray], e: Expression, q: Pose, side: int) -> dict[str, np.ndarray]:
    """Centre, size and lid opening of one eye (side -1 left, +1 right of the image); yaw narrows the far eye."""
    yaw = column(q.yaw)
    return {
        "cx": side * p["eye_spacing"] / 2 + 0.1 * yaw,
        "cy": p["eye_y"],
        "w": p["eye_width"] * (1.0 - 0.18 * yaw * side),
        "h": p["eye_height"],
        "open": column(e.eye_open),
        "gaze": 0.3 * yaw * p["eye_width"],
    }


def _mouth_geometry(p: dict[str, np.ndarray], e: Expression, q: Pose) -> dict[str, np.ndarray]:
    """Centre, half-width, smile curvature and opening of the mouth."""
    smile = column(e.smile)
    return {
        "cx": 0.12 * column(q.yaw),
        "cy": p["mouth_y"],
        "w": p["mouth_width"] * (1.0 + 0.15 * smile),
        "curve": 0.05 * smile,
        "open": 0.15 * column(e.mouth_open),
        "lip": p["lip_thickness"],
    }


def _paint_eye(
    img: np.ndarray, head: np.ndarray, frame: Frame, p: dict[str, np.ndarray], g: dict[str, np.ndarray], ia: np.ndarray
) -> None:
    """White, iris, pupil, highlight and lash line of one eye, the lids closing with eye_open."""
    box = (g["cx"] - g["w"] * 1.1, g["cx"] + g["w"] * 1.1, g["cy"] - g["h"] * 1.1, g["cy"] + g["h"])
    got = frame.coords(box)
    if got is None:
        return
    ys, xs, x, y = got
    ex, ey = x - g["cx"], y - g["cy"]
    w, h = g["w"], g["h"]
    prof = np.sqrt(np.clip(1.0 - (ex / w) ** 2, 0.0, 1.0))
    upper = h * prof * (0.8 - 1.8 * g["open"])
    lower = 0.8 * h * prof
    hmask = head[:, ys, xs]
    white = band(ey, upper, lower, ia) * edge_cover(w - np.abs(ex), ia) * hmask
    target = img[:, :, ys, xs]
    blend(target, white, rgb(246, 246, 240))
    ri = np.minimum(0.85 * h, 0.6 * w)
    gx = ex - g["gaze"]
    dist = np.sqrt(gx * gx + ey * ey)
    blend(target, edge_cover(ri - dist, ia) * white, p["iris"])
    blend(target, edge_cover(0.45 * ri - dist, ia) * white, rgb(18, 16, 20))
    blend(target, edge_cover(disc(gx - 0.35 * ri, ey + 0.35 * ri, 0.22 * ri), ia) * white, rgb(255, 255, 255))
    lash = band(ey, upper - 0.016, upper + 0.006, ia) * edge_cover(1.06 * w - np.abs(ex), ia) * hmask
    blend(target, lash, rgb(34, 24, 24))


def _paint_brow(
    img: np.ndarray,
    head: np.ndarray,
    frame: Frame,
    p: dict[str, np.ndarray],
    e: Expression,
    g: dict[str, np.ndarray],
    side: int,
    ia: np.ndarray,
) -> None:
    """A tapered, arched brow over one eye; brow_raise lifts it and tilts the inner end."""
    length = 1.15 * g["w"]
    raise_ = column(e.brow_raise)
    by = g["cy"] - g["h"] - p["brow_gap"] - 0.045 * raise_
    slope = np.tan(np.deg2rad(p["brow_angle"])) + 0.25 * raise_
    reach = 0.07 + p["brow_thickness"] + p["brow_arch"]
    box = (g["cx"] - length, g["cx"] + length, by - reach - 0.3 * length, by + 0.3 * length + p["brow_thickness"])
    got = frame.coords(box)
    if got is None:
        return
    ys, xs, x, y = got
    u = -side * (x - g["cx"])
    r = u / length
    centre = by - slope * u - p["brow_arch"] * (1.0 - r * r)
    hw = 0.5 * p["brow_thickness"] * (1.0 - 0.45 * r * r)
    cover = band(y, centre - hw, centre + hw, ia) * edge_cover(length - np.abs(u), ia) * head[:, ys, xs]
    target = img[:, :, ys, xs]
    blend(target, cover, p["brow_colour"])


def _paint_nose(
    img: np.ndarray, head: np.ndarray, frame: Frame, p: dict[str, np.ndarray], q: Pose, ia: np.ndarray
) -> None:
    """A soft shaded nose with a lit tip and two nostrils, shifted sideways by yaw."""
    cx = 0.14 * column(q.yaw)
    top = p["eye_y"] + 0.03
    bottom = top + p["nose_length"]
    w = p["nose_width"]
    got = frame.coords((cx - w, cx + w, top - 0.02, bottom + 0.03))
    if got is None:
        return
    ys, xs, x, y = got
    hmask = head[:, ys, xs]
    skin = p["skin"]
    target = img[:, :, ys, xs]
    nx = x - cx
    blend(
        target,
        0.45 * edge_cover(ellipse(nx, y - 0.5 * (top + bottom), 0.5 * w, 0.5 * p["nose_length"]), ia) * hmask,
        skin * 0.8,
    )
    blend(
        target,
        0.5 * edge_cover(ellipse(nx, y - bottom + 0.04, 0.3 * w, 0.025), ia) * hmask,
        np.minimum(skin * 1.15, 255.0),
    )
    nostrils = edge_cover(ellipse(np.abs(nx) - 0.35 * w, y - bottom + 0.012, 0.022, 0.012), ia) * hmask
    blend(target, 0.75 * nostrils, skin * 0.5)


def _paint_mouth(
    img: np.ndarray, head: np.ndarray, frame: Frame, p: dict[str, np.ndarray], e: Expression, q: Pose, ia: np.ndarray
) -> None:
    """Lips curved by smile, opening to a dark interior with teeth; smiling also blushes the cheeks."""
    m = _mouth_geometry(p, e, q)
    w, h, lip = m["w"], m["open"], m["lip"]
    cheeks = 0.4 * np.maximum(column(e.smile), 0.0)
    if np.any(cheeks > 0):
        cx = p["eye_spacing"] / 2
        cy = p["eye_y"] + 0.2 * p["head_height"]
        got = frame.coords((-cx - 0.1 + m["cx"], cx + 0.1 + m["cx"], cy - 0.06, cy + 0.06))
        if got is not None:
            ys, xs, x, y = got
            blush = edge_cover(ellipse(np.abs(x - m["cx"]) - cx, y - cy, 0.075, 0.045), ia) * cheeks * head[:, ys, xs]
            target = img[:, :, ys, xs]
            blend(target, blush, rgb(235, 110, 120))
    reach = 0.5 * np.abs(m["curve"]) + lip + 0.01
    got = frame.coords((m["cx"] - w - 0.02, m["cx"] + w + 0.02, m["cy"] - reach - 0.3 * h, m["cy"] + reach + 0.7 * h))
    if got is None:
        return
    ys, xs, x, y = got
    mx = x - m["cx"]
    r = mx / w
    prof = np.sqrt(np.clip(1.0 - r * r, 0.0, 1.0))
    mid = m["cy"] + m["curve"] * (0.5 - r * r)
    upper = mid - 0.3 * h * prof
    lower = mid + 0.7 * h * prof
    thick = lip * (0.35 + 0.65 * prof)
    span = edge_cover(w - np.abs(mx), ia) * head[:, ys, xs]
    target = img[:, :, ys, xs]
    lips = (band(y, upper - 0.8 * thick, upper, ia) + band(y, lower, lower + thick, ia)) * span
    blend(target, lips, p["lips"])
    line = band(y, mid - 0.007, mid + 0.007, ia) * edge_cover(1.02 * w - np.abs(mx), ia) * head[:, ys, xs]
    blend(target, line, p["lips"] * 0.5)
    blend(target, band(y, upper, lower, ia) * span, rgb(72, 18, 30))
    teeth = (
        band(y, upper, upper + np.minimum(0.35 * h, 0.03) * prof, ia)
        * edge_cover(0.7 * w - np.abs(mx), ia)
        * head[:, ys, xs]
    )
    blend(target, teeth, rgb(242, 240, 230))


def _render_chunk(p: dict[str, np.ndarray], e: Expression, q: Pose, size: int, crop: bool) -> np.ndarray:
    """Float planar [3,N,size,size] images of one chunk, painted back to front."""
    n = len(q)
    frame = Frame(q, size, crop)
    ia = frame.inv_aa
    rx, ry = p["head_width"], p["head_height"]
    shade_y = 1.06 - 0.12 * (frame.grid + 1.0) / 2.0
    img = np.ascontiguousarray(np.broadcast_to(p["background"] * shade_y.reshape(1, 1, -1, 1), (3, n, size, size)))

    got = frame.coords((-1.8 * rx, 1.8 * rx, 0.3 * ry, 3.0))
    if got is not None:
        ys, xs, x, y = got
        target = img[:, :, ys, xs]
        blend(target, edge_cover(0.36 * rx - np.abs(x), ia) * edge_cover(y, ia), p["skin"] * 0.78)
        blend(target, edge_cover(ellipse(x, y - ry - 0.62, 1.7 * rx, 0.5), ia), p["shirt"])

    reach = rx + p["hair_thickness"] + 0.32
    hair = frame.coords((-reach, reach, -ry - p["hair_thickness"] - 0.3, 0.9))
    if hair is not None:
        hair_ys, hair_xs, x, y = hair
        back, hair_front = _hair_cover(p, x, y, ia)
        blend(img[:, :, hair_ys, hair_xs], back, p["hair_colour"] * 0.82)

    yaw = column(q.yaw)
    ear_x = rx - 0.015
    got = frame.coords((-ear_x - 0.12, ear_x + 0.12, p["eye_y"] - 0.07, p["eye_y"] + 0.2))
    if got is not None:
        ys, xs, x, y = got
        target = img[:, :, ys, xs]
        ex = np.abs(x + 0.04 * yaw) - ear_x
        ey = y - p["eye_y"] - 0.06
        blend(target, edge_cover(ellipse(ex, ey, 0.075, 0.115), ia), p["skin"] * 0.93)
        blend(target, 0.8 * edge_cover(ellipse(ex - 0.02, ey, 0.035, 0.07), ia), p["skin"] * 0.72)

    head = np.zeros((n, size, size), np.float32)
    got = frame.coords((-rx, rx, -ry, ry))
    if got is not None:
        ys, xs, x, y = got
        cover = edge_cover(_head_inside(p, x, y), ia)
        head[:, ys, xs] = cover
        angle = np.deg2rad(column(q.light_angle))
        nx, ny = x / rx, y / ry
        shade = (
            1.04 + column(q.light_strength) * (np.cos(angle) * nx + np.sin(angle) * ny) - 0.13 * (nx * nx + ny * ny)
        )
        target = img[:, :, ys, xs]
        target *= 1.0 - cover
        shade *= cover
        target += shade * p["skin"]
        np.minimum(target, 255.0, out=target)

    _paint_nose(img, head, frame, p, q, ia)
    _paint_mouth(img, head, frame, p, e, q, ia)
    for side in (-1, 1):
        g = _eye_geometry(p, e, q, side)
        _paint_eye(img, head, frame, p, g, ia)
        _paint_brow(img, head, frame, p, e, g, side, ia)

    got = frame.coords((-reach, reach, -ry - p["hair_thickness"] - 0.1, 0.2))
    if hair is not None and got is not None:
        ys, xs = got[:2]
        rows = slice(ys.start - hair_ys.start, ys.stop - hair_ys.start)
        cols = slice(xs.start - hair_xs.start, xs.stop - hair_xs.start)
        blend(img[:, :, ys, xs], hair_front[:, rows, cols], p["hair_colour"])
    return img


def _check_batch(identities: Sequence[Identity], expressions: Expression, poses: Pose, size: int) -> None:
    """Equal batch lengths and a usable size, with the fix in the message."""
    if not len(identities) == len(expressions) == len(poses):
        raise ValueError(
            f"render got {len(identities)} identities, {len(expressions)} expressions and {len(poses)} poses; "
            "pass one of each per image (e.g. [identity] * n for one person)"
        )
    if int(size) < 8:
        raise ValueError(f"size={size} is too small to draw a face; use 32..256")


def _chunks(n: int, size: int) -> range:
    """Start offsets of render chunks: a few hundred thousand pixels each, so temporaries stay in cache."""
    return range(0, n, max(1, _PIXELS_PER_CHUNK // (size * size)))


def render(
    identities: Sequence[Identity], expressions: Expression, poses: Pose, size: int, *, _crop: bool = True
) -> np.ndarray:
    """uint8 [N,size,size,3] faces, image k being identities[k] with expressions[k] and poses[k]."""
    _check_batch(identities, expressions, poses, size)
    n, size = len(poses), int(size)
    out = np.empty((n, size, size, 3), np.uint8)
    if n == 0:
        return out
    p_all = _identity_arrays(identities)
    step = _chunks(n, size).step
    for start in _chunks(n, size):
        sl = slice(start, start + step)
        p = _take(p_all, sl)
        img = _render_chunk(p, expressions[sl], poses[sl], size, _crop)
        img += 0.5
        np.clip(img, 0.0, 255.0, out=img)
        out[sl] = img.transpose(1, 2, 3, 0)
    return out


def swap_ground_truth(id_b: Identity, expression_pose_of_a: tuple[Expression, Pose], size: int) -> np.ndarray:
    """Identity B wearing A's expressions and poses: the image a perfect A->B swap would produce."""
    expressions, poses = expression_pose_of_a
    return render([id_b] * len(poses), expressions, poses, size)


def face_masks(
    identities: Sequence[Identity], expressions: Expression, poses: Pose, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """(face, eyes-and-mouth) float32 [N,size,size] coverage in one pass, from render's geometry."""
    _check_batch(identities, expressions, poses, size)
    p = _identity_arrays(identities)
    frame = Frame(poses, int(size), crop=False)
    ia = frame.inv_aa
    _, _, x, y = frame.coords()
    face = edge_cover(_head_inside(p, x, y), ia) * (1.0 - _hair_cover(p, x, y, ia)[1])
    regions = np.zeros_like(face)
    for side in (-1, 1):
        g = _eye_geometry(p, expressions, poses, side)
        eye = edge_cover(ellipse(x - g["cx"], y - g["cy"] + 0.1 * g["h"], 1.2 * g["w"] + 0.02, 1.3 * g["h"] + 0.02), ia)
        np.maximum(regions, eye, out=regions)
    m = _mouth_geometry(p, expressions, poses)
    reach = 0.5 * np.abs(m["curve"]) + m["lip"] + 0.03
    mouth = edge_cover(m["w"] + 0.03 - np.abs(x - m["cx"]), ia) * band(
        y, m["cy"] - reach - 0.3 * m["open"], m["cy"] + reach + 0.7 * m["open"], ia
    )
    np.maximum(regions, mouth, out=regions)
    return face, regions * face


def face_mask(identities: Sequence[Identity], expressions: Expression, poses: Pose, size: int) -> np.ndarray:
    """float32 [N,size,size] in [0,1]: the head's visible skin and features, without hair, ears or background."""
    return face_masks(identities, expressions, poses, size)[0]


def eyes_mouth_mask(identities: Sequence[Identity], expressions: Expression, poses: Pose, size: int) -> np.ndarray:
    """float32 [N,size,size] in [0,1], at most face_mask: eyes (lids included) and mouth, for priority losses."""
    return face_masks(identities, expressions, poses, size)[1]
