"""Command line: ``python -m backend reconstruct | occupancy | convert``.

Anything the user can fix ends as one line on stderr, ``error: ...``, and exit status 2.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from .errors import UserError, run_command

def positive_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (got {value})")
    return value


def add_model_options(parser):
    parser.add_argument("--model", help="bundled model name, our .safetensors, an official .pt,"
                        " or analytic:sphere|box|boxes_rods (default: the bundled model for"
                        " the input's kind)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m backend", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    rec = commands.add_parser("reconstruct", help="input file -> closed mesh")
    rec.add_argument("input", help="point cloud .ply .xyz .txt .npy .npz; voxels .binvox .npy"
                     " (3-D bool); image .png .jpg")
    rec.add_argument("-o", "--output", required=True, help="mesh file: .ply .obj .off .glb")
    add_model_options(rec)
    rec.add_argument("--resolution0", type=int, default=32, help="MISE start resolution")
    rec.add_argument("--upsampling-steps", type=positive_int, default=2,
                     help="MISE levels after the first; finest = resolution0 * 2^steps")
    rec.add_argument("--threshold", type=float,
                     help="occupancy probability of the surface (default: the model card's)")
    rec.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                     help="decoder arithmetic; auto = bf16 where the hardware has it")
    rec.add_argument("--normals", action="store_true", help="vertex normals from the network")
    rec.add_argument("--simplify", type=int, metavar="FACES", help="decimate to about FACES")
    rec.add_argument("--keep-cavities", action="store_true",
                     help="keep enclosed voids (by default they are made solid: no scan sees "
                          "them, so they are the network's guess)")
    rec.add_argument("--refine-steps", type=positive_int, default=0,
                     help="gradient refinement steps (paper section 3.3)")
    rec.add_argument("--tile-size", type=float, metavar="SIZE",
                     help="reconstruct a large scene tile by tiling: SIZE is the edge (in the"
                          " input's units) that the model sees as its unit cube, about one "
                          "object's size; needs a local-feature (ConvONet) model")
    rec.add_argument("--tile-overlap", type=float, default=0.2,
                     help="share of a tile's crop on each side that is context only "
                          "(default 0.2)")
    rec.add_argument("--tile-points", type=int, metavar="N",
                     help="at most N input points per tile (default: the model's input size)")
    rec.add_argument("--render", metavar="PNG", help="also write a picture: input | result")
    rec.add_argument("--json", action="store_true", help="print the summary as JSON")
    rec.add_argument("--quiet", action="store_true", help="no per-level progress on stderr")

    occ = commands.add_parser("occupancy", help="logits at given query points")
    occ.add_argument("input")
    occ.add_argument("--points", required=True, help=".npy (M, 3) unit-cube query points")
    occ.add_argument("-o", "--output", required=True, help=".npy to write (M,) float32 logits")
    add_model_options(occ)

    from .service.server import add_arguments

    add_arguments(commands.add_parser("serve", help="local inference server (HTTP API v1)"))

    conv = commands.add_parser("convert", help="official .pt checkpoint -> our safetensors")
    conv.add_argument("checkpoint")
    conv.add_argument("-o", "--output", required=True, help="OUT.safetensors (+ OUT.json card)")
    return parser


def check_output(path, suffixes):
    """Fail before any work when the output cannot be written; create its folder."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise UserError(f"cannot write {path}: use one of {' '.join(suffixes)}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot write {path}: cannot create folder {path.parent} ({exc})")


def load_model_for(inp, args):
    from .io import zoo
    from .engine.generation import resolve_device

    device = resolve_device(args.device)
    name = args.model or zoo.default_model_name(inp.kind)
    model, card = zoo.load(name, device)
    return model, card, name, device


def run_reconstruct(args):
    from .io import meshes as mesh_io
    from .engine.generation import Generator, Settings
    from .io.inputs import read_input

    started = time.perf_counter()
    check_output(args.output, mesh_io.WRITE_EXTENSIONS)
    if args.render:
        check_output(args.render, (".png",))
    inp = read_input(args.input)
    model, card, name, device = load_model_for(inp, args)
    settings = Settings(args.resolution0, args.upsampling_steps, args.threshold,
                        precision=args.precision, normals=args.normals,
                        simplify_faces=args.simplify, refine_steps=args.refine_steps,
                        fill_cavities=not args.keep_cavities, mesh_every_level=False)
    generator = Generator(model, card, device, settings)
    if args.tile_size is not None:
        vertices, faces, normals, summary = reconstruct_tiled(args, inp, generator, card)
    else:
        vertices, faces, normals, summary = reconstruct_whole(args, inp, generator, card)
    mesh_io.write_mesh(args.output, vertices, faces, normals)
    if args.render:
        from .io.render import input_and_result

        input_and_result(inp, vertices, faces).save(args.render)
    summary = {"output": str(args.output), "model": name, "vertices": len(vertices),
               "faces": len(faces), **summary, "threshold": generator.threshold,
               "precision": str(generator.dtype).replace("torch.", ""),
               "device": str(device), "seconds": round(time.perf_counter() - started, 3)}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['output']}: {summary['vertices']:,} vertices, {summary['faces']:,}"
              f" faces, {summary['evaluations']:,} network evaluations"
              f" ({100 * summary['dense_fraction']:.1f}% of {summary['lattice']}),"
              f" {summary['seconds']:.2f} s [{name}, {summary['precision']}, {device}]")
    if len(faces) == 0:
        print("warning: the surface is empty at this threshold; try a lower --threshold",
              file=sys.stderr)


def reconstruct_whole(args, inp, generator, card):
    """The input normalised into the model's cube as a whole, MISE level by level ->
    (vertices, faces, normals, summary fields)."""
    from .engine import pipeline

    started = time.perf_counter()
    prepared = pipeline.prepare(inp, generator.model, card)
    for note in prepared.notes:
        print(f"note: {note}", file=sys.stderr)
    for frame in pipeline.world_frames(generator, prepared, started=started):
        if not args.quiet and not args.json:
            print(f"level {frame.level + 1}/{frame.levels}: {frame.resolution}^3,"
                  f" {frame.evaluations:,} evaluations, {frame.seconds:.2f} s", file=sys.stderr)
    lattice = (frame.resolution + 1) ** 3
    return frame.vertices, frame.faces, frame.normals, {
        "evaluations": frame.evaluations,
        "dense_fraction": round(frame.evaluations / lattice, 4),
        "lattice": f"{frame.resolution + 1}^3", "resolution": frame.resolution,
        "notes": prepared.notes}


def reconstruct_tiled(args, inp, generator, card):
    """A point cloud of any extent tile by tile (backend/tiling.py) -> (vertices, faces,
    None, summary fields)."""
    from .engine import tiling

    if inp.kind != "pointcloud":
        raise UserError("--tile-size works on point clouds only; leave it out for this input")
    if args.normals or args.refine_steps:
        raise UserError("--normals and --refine-steps are not available with --tile-size yet;"
                        " leave them out")

    def report(done, total):
        if not args.quiet and not args.json:
            print(f"tile {done}/{total}", file=sys.stderr)

    result = tiling.reconstruct_tiled(generator, card, inp.points, args.tile_size,
                                      args.tile_overlap, args.tile_points, progress=report)
    grid = result.grid
    lattice = int(np.prod(grid.shape))
    return result.vertices, result.faces, None, {
        "evaluations": result.evaluations,
        "dense_fraction": round(result.evaluations / lattice, 4),
        "lattice": "x".join(map(str, grid.shape)), "resolution": grid.cells,
        "tiles": "x".join(map(str, grid.counts)), "tiles_run": result.tiles_run,
        "most_tile_points": result.most_tile_points,
        "lattice_mb": round(grid.lattice_bytes / 2**20, 1), "notes": []}


def run_occupancy(args):
    from .engine import pipeline
    from .engine.generation import Generator
    from .io.inputs import read_input, validate_points

    check_output(args.output, (".npy",))
    inp = read_input(args.input)
    try:
        queries = np.load(args.points, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read query points {args.points}: {exc}")
    queries = validate_points(queries, args.points)
    model, card, _, device = load_model_for(inp, args)
    generator = Generator(model, card, device)
    prepared = pipeline.prepare(inp, model, card)
    logits = generator.logits(generator.encode(prepared.tensor), queries)
    np.save(args.output, logits)
    print(f"{args.output}: {len(logits):,} logits (threshold {generator.threshold} ="
          f" logit {np.log(generator.threshold / (1 - generator.threshold)):.4f})")


def run_convert(args):
    from .io.checkpoints import convert_checkpoint

    check_output(args.output, (".safetensors",))
    card = convert_checkpoint(args.checkpoint, args.output)
    print(f"{args.output}: {card['config'].get('input_kind') or 'unconditional'} model,"
          f" card {Path(args.output).with_suffix('.json')}")


def run_serve(args):
    from .service.server import serve

    serve(args)


COMMANDS = {"reconstruct": run_reconstruct, "occupancy": run_occupancy, "convert": run_convert,
            "serve": run_serve}


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_command(COMMANDS[args.command], args)
