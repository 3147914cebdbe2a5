"""Command line: ``python -m training.data procedural --out DIR --per-class N --seed S
[--corpus v1|v2]`` and
``python -m training.data meshes --in FOLDER --out DIR``.

Anything the user can fix ends as one line on stderr, ``error: ...``, and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from backend.errors import UserError, run_command


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (got {value})")
    return value


def build_parser() -> argparse.ArgumentParser:
    from .looks import LOOKS
    from .procedural import CORPORA, MAKERS, Options

    parser = argparse.ArgumentParser(prog="python -m training.data", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    procedural = commands.add_parser(
        "procedural", help="generate the procedural corpus in the official ONet layout")
    procedural.add_argument("--out", required=True, type=Path, help="dataset folder to write")
    procedural.add_argument("--per-class", required=True, type=positive_int,
                            help="shapes per category")
    procedural.add_argument("--seed", required=True, type=int,
                            help="the same seed gives the same files (>= 0)")
    procedural.add_argument("--workers", type=positive_int, default=1,
                            help="processes (default 1)")
    procedural.add_argument("--corpus", choices=sorted(CORPORA), default="v1",
                            help="v1: the 11 categories in canonical pose (default); v2: "
                                 "those and the 11 families of corpus v2, every shape "
                                 "in a random rotation")
    procedural.add_argument("--classes",
                            help=f"comma-separated categories (default: all of the "
                                 f"corpus; any of {','.join(MAKERS)})")
    procedural.add_argument("--views", type=positive_int, default=Options.views,
                            help=f"rendered views per shape (default {Options.views})")
    procedural.add_argument("--points", type=positive_int, default=Options.points,
                            help=f"points per points/pointcloud file (default {Options.points})")
    procedural.add_argument("--image-size", type=positive_int, default=Options.image_size,
                            help=f"image width and height (default {Options.image_size})")
    procedural.add_argument("--look", choices=LOOKS, default=Options.look,
                            help="shading of the views: plain (light grey, the default), "
                                 "photo (random colours, gloss, lights and camera "
                                 "distances: the training looks) or novel (striped metallic "
                                 "materials kept out of training, for tests)")
    procedural.add_argument("--split", choices=("train", "val", "test"),
                            help="write only this split's shapes (and its list): the same "
                                 "shapes as in the whole corpus of --per-class and --seed")
    procedural.add_argument("--backgrounds", action="store_true",
                            help="write the views opaque on random plain backgrounds, as "
                                 "photos (default: transparent, white when flattened)")
    from .mesh_import import add_arguments

    add_arguments(commands.add_parser(
        "meshes", help="turn a folder of meshes into a dataset in the official ONet layout"))
    voxels = commands.add_parser(
        "voxels", help="add the centre-inside voxel grid (model_centres.binvox, from mesh.ply) "
                       "to every shape of a dataset written before it existed")
    voxels.add_argument("dataset", type=Path, help="dataset folder")
    return parser


def run_procedural(args: argparse.Namespace) -> None:
    from .procedural import CORPORA, MAKERS, Options, generate

    corpus_classes, rotate = CORPORA[args.corpus]
    if args.classes is None:
        classes = list(corpus_classes)
    else:
        classes = [name.strip() for name in args.classes.split(",") if name.strip()]
    unknown = [name for name in classes if name not in MAKERS]
    if unknown or not classes:
        raise UserError(f"unknown class {', '.join(unknown) or '(none given)'}; "
                        f"choose from {','.join(MAKERS)}")
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0 (got {args.seed})")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {args.out} ({exc.strerror}); "
                        "choose a writable folder") from exc
    if not os.access(args.out, os.W_OK | os.X_OK):
        raise UserError(f"cannot write into {args.out}; choose a writable folder")

    options = Options(points=args.points, views=args.views, image_size=args.image_size,
                      rotate=rotate, look=args.look, backgrounds=args.backgrounds)
    summary = generate(args.out, list(dict.fromkeys(classes)), args.per_class, args.seed,
                       args.workers, options, args.split)
    print(f"wrote {summary['shapes']} shapes to {args.out} in {summary['seconds']:.1f} s "
          f"({summary['seconds_per_shape']:.2f} s per shape on one worker), "
          f"{summary['bytes'] / 2**20:.1f} MiB")


def run_meshes(args: argparse.Namespace) -> None:
    from .mesh_import import run

    run(args)


def run_voxels(args: argparse.Namespace) -> None:
    from .mesh_import import add_centres_voxels

    if not args.dataset.is_dir():
        raise UserError(f"dataset folder {args.dataset} not found")
    written = add_centres_voxels(args.dataset)
    print(f"wrote {written} centre-inside grids into {args.dataset}")


COMMANDS = {"procedural": run_procedural, "meshes": run_meshes, "voxels": run_voxels}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(COMMANDS[args.command], args)


if __name__ == "__main__":
    sys.exit(main())
