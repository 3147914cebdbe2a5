"""What an image model sees of a user's picture: the object cut out and centred as in training.

Training renders (``training.data.render``) show a unit-cube-normalised shape at the centre
of the frame, its bounding square ``OBJECT_FILL`` of the image side on average, on white.
A photo shows the object anywhere, at any size, on its own background. ``model_view`` maps
one to the other:

1. a foreground mask: the alpha channel (or the mask given with the image) when the image
   has transparency; otherwise an estimate against a plain background (a solid colour or a
   smooth gradient), the background taken from the image's border (``estimate_foreground``);
2. a square crop centred on the mask's bounding box, ``1 / OBJECT_FILL`` times its longer
   side, padded where it leaves the image;
3. the mask as alpha, composited over white, resized to ``IMAGE_SIZE``.

Training views go through the same function (``training.data.fields.ImagesField``), so a
render and a photo of the same object reach the encoder the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from . import transforms

logger = logging.getLogger(__name__)

IMAGE_SIZE = 224  # the ONet image encoder's input size
# Bounding-square side / image side of the training renders: mean over 44 views of all 11
# categories, 0.44 to 0.66 (render.VIEW_DISTANCE and its focal length fix it).
OBJECT_FILL = 0.54
# Foreground estimate: masks are computed on a copy at most this many pixels on a side.
MASK_SIZE = 256
# A pixel is foreground when a channel differs from the estimated background by more.
COLOUR_TOLERANCE = 24
# The border is a plain background when its pixels lie this close to the smooth fit (median
# absolute deviation, 0-255 units) ...
PLAIN_BORDER_DEVIATION = 6.0
# ... and the object covers a share of the image in this range.
FOREGROUND_SHARE = (0.002, 0.9)
# Enclosed background-coloured regions under this share of the object are filled.
HOLE_SHARE = 0.01


@dataclass
class ModelView:
    """``rgb`` (IMAGE_SIZE, IMAGE_SIZE, 3) uint8 as the encoder sees it, the crop
    ``box`` (top, left, side) in the input's pixels (side may pass the image's edges), how
    the mask was found (``mask_source``: alpha | estimated | none) and notes for the user."""

    rgb: np.ndarray
    box: tuple[int, int, int]
    mask_source: str
    notes: list[str] = field(default_factory=list)


def model_view(rgba: np.ndarray) -> ModelView:
    """(H, W, 4) uint8 RGBA -> the ``ModelView`` of the image (see the module docstring);
    without a mask to go by (``mask_source`` none) the whole frame is used, centred."""
    height, width = rgba.shape[:2]
    notes: list[str] = []
    if (rgba[..., 3] < 255).any():
        mask, source = rgba[..., 3] >= 128, "alpha"
        alpha = rgba[..., 3]
    else:
        mask, problem = estimate_foreground(rgba[..., :3])
        if mask is None:
            notes.append(f"{problem}: the whole image is used as it is; give it an alpha "
                         "channel or a mask for a clean cut-out")
            mask, source, alpha = np.ones((height, width), bool), "none", rgba[..., 3]
        else:
            source, alpha = "estimated", np.where(mask, 255, 0).astype(np.uint8)
    if not mask.any():
        notes.append("the image's alpha (or mask) is empty: nothing to reconstruct; "
                     "check that the object is opaque in it")
        mask = np.ones((height, width), bool)
    box = crop_box(mask) if source != "none" else _whole(height, width)
    # A large crop is first averaged down in blocks to at least twice the model's size:
    # resampling a photo's full resolution took seconds and changes nothing the encoder sees.
    factor = max(1, box[2] // (2 * IMAGE_SIZE))
    composite = _over_white(rgba[..., :3], alpha, factor)
    top, left, side = (int(round(value / factor)) for value in box)
    square = _cut(composite, (top, left, max(side, 1)))
    return ModelView(transforms.resize_image(square, IMAGE_SIZE), box, source, notes)


def _over_white(rgb: np.ndarray, alpha: np.ndarray, factor: int) -> np.ndarray:
    """(H, W, 3) uint8 with its alpha (H, W) uint8 composited over white and averaged over
    ``factor`` x ``factor`` blocks (the edges padded with transparent white): (ceil(H /
    factor), ceil(W / factor), 3) uint8, each block the rounded mean of its pixels'
    composites. Integer arithmetic: exact, and a mean never falls on a tie."""
    height, width = alpha.shape
    a = alpha.astype(np.uint16)[..., None]
    # 255 x the composite, rgb * a + 255 * (255 - a) <= 255^2 (fits uint16), summed over
    # each block.
    numerator = rgb.astype(np.uint16) * a + 255 * (255 - a)
    if factor > 1:
        pad = ((0, -height % factor), (0, -width % factor), (0, 0))
        numerator = np.pad(numerator, pad, constant_values=255 * 255)
        h, w = numerator.shape[0] // factor, numerator.shape[1] // factor
        # Rows first, then columns: 6x faster than one sum over both axes.
        numerator = numerator.reshape(h, factor, w, factor, 3).sum(
            axis=1, dtype=np.uint32).sum(axis=2)
    numerator = numerator.astype(np.uint32)
    denominator = 255 * factor * factor
    return ((2 * numerator + denominator) // (2 * denominator)).astype(np.uint8)


def crop_box(mask: np.ndarray, fill: float = OBJECT_FILL) -> tuple[int, int, int]:
    """(top, left, side) of the square centred on the bounding box of ``mask`` (H, W) bool
    whose side is the box's longer side / ``fill``, in pixels (it may extend past the
    image: ``_cut`` pads)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    side = max(1, int(round(max(bottom - top, right - left) / fill)))
    return (int(round((top + bottom - side) / 2)), int(round((left + right - side) / 2)), side)


def _whole(height: int, width: int) -> tuple[int, int, int]:
    """The square box around the whole image, centred (its longer side)."""
    side = max(height, width)
    return ((height - side) // 2, (width - side) // 2, side)


def _cut(rgb: np.ndarray, box: tuple[int, int, int]) -> np.ndarray:
    """The ``box`` (top, left, side) of (H, W, 3) uint8 as (side, side, 3), white where it
    leaves the image."""
    top, left, side = box
    out = np.full((side, side, 3), 255, np.uint8)
    height, width = rgb.shape[:2]
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + side, height), min(left + side, width)
    if y1 > y0 and x1 > x0:
        out[y0 - top:y1 - top, x0 - left:x1 - left] = rgb[y0:y1, x0:x1]
    return out


def estimate_foreground(rgb: np.ndarray) -> tuple[np.ndarray | None, str]:
    """Foreground mask (H, W) bool of an opaque image (H, W, 3) uint8 on a plain background,
    or ``(None, reason)`` when the background is not plain or no object stands out.

    The background is the Coons patch of the image's border (exact for a solid colour and
    for linear gradients in any direction), each border line median-filtered so that an
    object touching the edge does not pull it along; a pixel is foreground when it differs
    from it by more than ``COLOUR_TOLERANCE`` in a channel; specks smaller than 1/500 of
    the largest piece are dropped and small holes (``HOLE_SHARE``: parts the colour of the
    background) filled, while larger ones (a mug's handle) stay open. Computed at most
    ``MASK_SIZE`` on a side, then scaled back; numpy alone (the bundled engine has no SciPy).
    """
    height, width = rgb.shape[:2]
    step = max(1, int(np.ceil(max(height, width) / MASK_SIZE)))
    small = rgb[::step, ::step].astype(np.float32)
    h, w = small.shape[:2]
    if min(h, w) < 8:
        return None, f"the image ({height} x {width}) is too small to find the object in"
    window = max(3, min(h, w) // 8) | 1
    lines = [_median_filter(line, window) for line in (small[0], small[-1], small[:, 0],
                                                      small[:, -1])]
    top, bottom, left, right = lines
    deviation = np.median(np.abs(np.concatenate([small[0], small[-1], small[:, 0],
                                                 small[:, -1]])
                                 - np.concatenate(lines)))
    if deviation > PLAIN_BORDER_DEVIATION:
        return None, "the background is not plain (its border varies)"
    u = np.linspace(0, 1, w)[None, :, None]
    v = np.linspace(0, 1, h)[:, None, None]
    corners = ((1 - u) * (1 - v) * top[0] + u * (1 - v) * top[-1]
               + (1 - u) * v * bottom[0] + u * v * bottom[-1])
    background = ((1 - v) * top[None] + v * bottom[None]
                  + (1 - u) * left[:, None] + u * right[:, None] - corners)
    mask = (np.abs(small - background) > COLOUR_TOLERANCE).any(axis=2)
    labels, count = label_components(mask)
    if count == 0:
        return None, "no object stands out from the background"
    sizes = np.bincount(labels.ravel())[1:]
    mask = np.isin(labels, 1 + np.flatnonzero(sizes >= sizes.max() / 500))
    holes, count = label_components(fill_holes(mask) & ~mask)
    if count:  # small holes are object the colour of the background; large ones see through
        sizes = np.bincount(holes.ravel())[1:]
        mask |= np.isin(holes, 1 + np.flatnonzero(sizes < HOLE_SHARE * mask.sum()))
    share = mask.mean()
    if not FOREGROUND_SHARE[0] <= share <= FOREGROUND_SHARE[1]:
        return None, (f"the object found against the background covers {share:.1%} of the "
                      "image, which looks wrong")
    rows = np.minimum(np.arange(height) // step, h - 1)
    cols = np.minimum(np.arange(width) // step, w - 1)
    return mask[rows[:, None], cols[None, :]], ""


def _median_filter(line: np.ndarray, window: int) -> np.ndarray:
    """Running median (N, C) -> (N, C) over ``window`` (odd) samples, edges repeated."""
    half = window // 2
    padded = np.concatenate([np.repeat(line[:1], half, 0), line, np.repeat(line[-1:], half, 0)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, window, axis=0)
    return np.median(windows, axis=-1)


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected components of (H, W) bool: (labels (H, W) int64, 0 off the mask and 1..n
    on it, n), as ``scipy.ndimage.label``'s default numbers them (by first pixel in row
    order). Each pixel takes its neighbours' smallest flat index, then that index's own
    label (pointer jumping), until nothing changes: a few dozen rounds for image masks."""
    height, width = mask.shape
    none = height * width
    labels = np.where(mask, np.arange(none).reshape(height, width), none)
    while True:
        smallest = labels.copy()
        np.minimum(smallest[1:], labels[:-1], out=smallest[1:])
        np.minimum(smallest[:-1], labels[1:], out=smallest[:-1])
        np.minimum(smallest[:, 1:], labels[:, :-1], out=smallest[:, 1:])
        np.minimum(smallest[:, :-1], labels[:, 1:], out=smallest[:, :-1])
        smallest[~mask] = none
        flat = np.append(smallest.ravel(), none)
        smallest = flat[flat[:-1]].reshape(height, width)  # a root's label is its own
        if np.array_equal(smallest, labels):
            break
        labels = smallest
    roots, compact = np.unique(labels, return_inverse=True)
    compact = compact.reshape(height, width) + 1
    if roots[-1] == none:  # the background's sentinel sorts last
        compact[~mask] = 0
        return compact, len(roots) - 1
    return compact, len(roots)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool with every region off the mask that does not reach the image's edge
    (4-connected) set, as ``scipy.ndimage.binary_fill_holes``."""
    labels, _ = label_components(~mask)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return mask | ((labels > 0) & ~np.isin(labels, edge))
