"""Materials, lights and backgrounds that make renders look like product photos.

A ``Look`` is how ``render.render`` shades a view: a light direction, ambient share, the
material's colour, a Blinn-Phong highlight, and (``novel`` looks only) a two-tone stripe
pattern. ``LOOKS`` names the draws:

- ``plain``: the ShapeNet-like light grey of the original corpus, one light;
- ``photo``: a random colour (any hue, dark to light), glossy or matte, a random light from
  the viewer's side; the training looks;
- ``novel``: held out of training: saturated two-tone stripes with a strong metallic
  highlight, a light from higher up; for the test renders of "materials it never saw".

Backgrounds (``random_background``) are plain, as a product photo's: a solid colour or a
linear gradient in a random direction, never white alone; ``composite`` lays an RGBA render
over one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LOOKS = ("plain", "photo", "novel")


@dataclass(frozen=True)
class Look:
    """Shading of one view. ``light`` (3,) unit vector towards the light in camera
    coordinates (x right, y down, z forward); ``albedo`` (3,) and ``second`` (3,) RGB in
    [0, 1] (the stripes' other colour, equal to ``albedo`` for a uniform material);
    ``stripes`` their period in unit-cube units (0: none); ``specular`` the highlight's
    strength and ``shininess`` its exponent."""

    light: np.ndarray
    ambient: float
    albedo: np.ndarray
    second: np.ndarray
    stripes: float = 0.0
    specular: float = 0.0
    shininess: float = 16.0


def plain_look() -> Look:
    """The original corpus's light grey Lambert + ambient, lit from the upper left."""
    light = np.array([-0.4, -0.7, -0.6]) / np.linalg.norm([-0.4, -0.7, -0.6])
    grey = np.full(3, 0.8)
    return Look(light, 0.35, grey, grey)


def random_look(style: str, rng: np.random.Generator) -> Look:
    """A ``Look`` drawn for ``style`` (one of ``LOOKS``)."""
    if style == "plain":
        return plain_look()
    if style not in LOOKS:
        raise ValueError(f"unknown look {style!r}; choose one of {', '.join(LOOKS)}")
    if style == "photo":
        # From the viewer's half-space (z < 0 points back at the camera), any side.
        light = _unit(np.array([rng.uniform(-1, 1), rng.uniform(-1, 0.6), -rng.uniform(0.3, 1)]))
        albedo = _hsv(rng.uniform(0, 1), rng.uniform(0, 0.8), rng.uniform(0.25, 0.95))
        glossy = rng.random() < 0.5
        return Look(light, float(rng.uniform(0.15, 0.5)), albedo, albedo, 0.0,
                    float(rng.uniform(0.2, 0.6)) if glossy else 0.0,
                    float(rng.uniform(8, 64)))
    light = _unit(np.array([rng.uniform(-0.5, 0.5), -rng.uniform(0.8, 1.2),
                            -rng.uniform(0.2, 0.6)]))
    hue = rng.uniform(0, 1)
    return Look(light, float(rng.uniform(0.2, 0.4)), _hsv(hue, 0.9, 0.9),
                _hsv((hue + 0.5) % 1, 0.9, 0.5), float(rng.uniform(0.08, 0.2)),
                float(rng.uniform(0.6, 1.0)), float(rng.uniform(64, 128)))


def random_background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(height, width, 3) uint8 plain background: a solid colour (half of the draws) or a
    linear gradient between two colours in a random direction; muted colours, never pure
    white (the model's own background), rarely close to it."""
    first = _hsv(rng.uniform(0, 1), rng.uniform(0, 0.6), rng.uniform(0.1, 0.9))
    if rng.random() < 0.5:
        return np.broadcast_to(np.round(255 * first).astype(np.uint8), (height, width, 3)).copy()
    second = np.clip(first + rng.uniform(-0.25, 0.25, 3), 0, 1)
    angle = rng.uniform(0, 2 * np.pi)
    v, u = np.mgrid[:height, :width]
    t = (np.cos(angle) * u / max(width - 1, 1) + np.sin(angle) * v / max(height - 1, 1))
    t = (t - t.min()) / max(t.max() - t.min(), 1e-9)
    colour = (1 - t)[..., None] * first + t[..., None] * second
    return np.round(255 * colour).astype(np.uint8)


def composite(rgba: np.ndarray, background: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 render over (H, W, 3) uint8 background -> opaque (H, W, 4) uint8,
    as a photo of the object would be."""
    alpha = rgba[..., 3:].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * alpha + background.astype(np.float32) * (1 - alpha)
    out = np.empty_like(rgba)
    out[..., :3] = np.round(rgb).astype(np.uint8)
    out[..., 3] = 255
    return out


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def _hsv(hue: float, saturation: float, value: float) -> np.ndarray:
    """RGB (3,) float64 in [0, 1] of an HSV colour."""
    k = (np.array([5.0, 3.0, 1.0]) + hue * 6) % 6
    return value - value * saturation * np.clip(np.minimum(k, 4 - k), 0, 1)
