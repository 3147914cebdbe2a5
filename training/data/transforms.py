"""Per-sample transforms of field data (im2mesh ``data/transforms.py`` semantics).

A transform takes a field's dict (``None`` holds the main array, other keys its companions,
e.g. ``'occ'`` or ``'normals'``) and a ``numpy.random.Generator``, and returns a new dict.
Drawing from the given generator, never the global one, makes every sample a function of
(seed, epoch, shape index): the same on any number of workers and after ``--resume``.
"""

import numpy as np


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, data, rng):
        for transform in self.transforms:
            data = transform(data, rng)
        return data


class SubsamplePointcloud:
    """Keep ``n`` surface points (and their normals), drawn with replacement as in im2mesh."""

    def __init__(self, n):
        self.n = n

    def __call__(self, data, rng):
        index = rng.integers(len(data[None]), size=self.n)
        return {**data, None: data[None][index], "normals": data["normals"][index]}


class PointcloudNoise:
    """Add Gaussian noise of standard deviation ``stddev`` (unit-cube units) to the points."""

    def __init__(self, stddev):
        self.stddev = stddev

    def __call__(self, data, rng):
        points = data[None]
        noise = (self.stddev * rng.standard_normal(points.shape)).astype(np.float32)
        return {**data, None: points + noise}


class SubsamplePoints:
    """Keep ``n`` labelled query points (``None`` (N, 3) and ``'occ'`` (N,)), drawn with
    replacement as in the paper."""

    def __init__(self, n):
        self.n = n

    def __call__(self, data, rng):
        index = rng.integers(len(data[None]), size=self.n)
        return {**data, None: data[None][index], "occ": data["occ"][index]}
