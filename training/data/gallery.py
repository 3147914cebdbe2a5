"""Gallery of corpus v2: ``python -m training.data.gallery --out PNG [--seed S]``.

Renders shape 0 of every family of ``families.py`` in canonical pose and in its v2 rotation,
and of every v1 category in its v2 rotation, one row each, labelled; a look at what the
corpus holds before training on it (``docs/results/corpus_v2_families.png``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from PIL import Image

from backend.io.render import render_mesh, side_by_side, stack

from .families import FAMILIES
from .procedural import build_shape
from .shapes import CATEGORIES

logger = logging.getLogger(__name__)


def gallery(seed: int, size: int = 180, resolution: int = 128) -> Image.Image:
    """The gallery as an RGBA ``PIL.Image``: three rows of ``size``-pixel renders."""
    rows = []
    for names, rotate, caption in ((FAMILIES, False, "canonical"), (FAMILIES, True, "v2"),
                                   (CATEGORIES, True, "v2")):
        images = []
        for name in names:
            logger.info("%s (%s)", name, caption)
            shape = build_shape(name, seed, 0, resolution, rotate)
            images.append(render_mesh(shape.vertices, shape.faces, size))
        rows.append(side_by_side(images, [f"{name} ({caption})" for name in names]))
    return stack(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.data.gallery", description=__doc__)
    parser.add_argument("--out", required=True, type=Path, help="PNG file to write")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    gallery(args.seed).save(args.out)
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
