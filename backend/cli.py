"""Command line: ``python -m backend reconstruct | sample | occupancy | convert | serve``.

Anything the user can fix ends as one line on stderr, ``error: ...``, and exit status 2.
"""

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np

from .engine.request import (DEFAULT_RESOLUTION0, LIMITS, MAX_AUTO_RESOLUTION0, PRECISIONS,
                             Blend, ReconstructRequest, Sample, Settings, TilingOptions)
from .engine.meshing import FLOATER_DISTANCE
from .engine.runtime import add_engine_options
from .errors import UserError, run_command
from .io.meshes import WRITE_EXTENSIONS
from .io.inputs import VOXELISATIONS

logger = logging.getLogger(__name__)

MAX_COUNT = 1024  # shapes one ``sample`` command makes
SAMPLE_SPACING = 1.2  # default distance of a grid's shapes: the padded unit cube is 1.1


def positive_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (got {value})")
    return value


def add_model_options(parser):
    parser.add_argument("--model", help="bundled model name, our .safetensors, an official .pt,"
                        " or analytic:sphere|box|boxes_rods (default: the bundled model for"
                        " the input's kind)")
    add_engine_options(parser)


def add_input_options(parser):
    """How an input file is read: the rule of a voxel grid (wire ``input.voxelisation``)."""
    parser.add_argument("--voxelisation", default=VOXELISATIONS[0], choices=VOXELISATIONS,
                        help="voxel grids: touching (default; every voxel the surface passes "
                             "through is set, as binvox writes them) or centres (the voxels "
                             "whose centre is inside, e.g. a remesher's grid)")


def add_request_options(parser, tiling=True):
    """The options of a ``ReconstructRequest``, named as on the wire (docs/protocol.md);
    ``tiling``: with the tiling options (inputs only)."""
    defaults = Settings()
    parser.add_argument("--resolution0", type=int, default=defaults.resolution0,
                        help=f"MISE start resolution (default: auto, {DEFAULT_RESOLUTION0}, "
                             f"or a finer voxel grid's own size up to {MAX_AUTO_RESOLUTION0} "
                             "for models that read grids at their own size)")
    parser.add_argument("--upsampling-steps", type=positive_int,
                        default=defaults.upsampling_steps,
                        help="MISE levels after the first; finest = resolution0 * 2^steps")
    parser.add_argument("--threshold", type=float,
                        help="occupancy probability of the surface (default: the model card's)")
    parser.add_argument("--precision", default=defaults.precision, choices=PRECISIONS,
                        help="decoder arithmetic; auto = bf16 where the hardware has it")
    parser.add_argument("--normals", action="store_true", help="vertex normals from the network")
    parser.add_argument("--simplify", type=int, metavar="FACES", help="decimate to about FACES")
    parser.add_argument("--fill-cavities", action=argparse.BooleanOptionalAction,
                        default=defaults.fill_cavities,
                        help="make enclosed voids solid (default; no scan sees them, so they "
                             "are the network's guess); --no-fill-cavities keeps them")
    parser.add_argument("--smooth-steps", type=positive_int, metavar="STEPS",
                        help="Taubin smoothing of the final mesh, STEPS shrink-inflate pairs "
                             "(default: the model card's smooth_steps, chosen on validation "
                             f"shapes; 0: the raw marching-cubes surface; at most "
                             f"{LIMITS.max_smooth_steps})")
    parser.add_argument("--drop-floaters", action=argparse.BooleanOptionalAction,
                        default=defaults.drop_floaters,
                        help="drop pieces of the mesh with no input point within "
                             f"{FLOATER_DISTANCE} of the unit cube (default; point clouds); "
                             "--no-drop-floaters keeps them")
    parser.add_argument("--refine-steps", type=positive_int, default=defaults.refine_steps,
                        help="gradient refinement steps (paper section 3.3)")
    parser.add_argument("--fit-steps", type=positive_int, default=defaults.fit_steps,
                        metavar="STEPS",
                        help="fit the shape code to the input points for STEPS optimisation "
                             "steps before meshing (point clouds; about 30: a surface closer "
                             f"to the scan; at most {LIMITS.max_fit_steps}; default 0: off)")
    parser.add_argument("--rotations", type=positive_int, default=defaults.rotations,
                        metavar="N",
                        help="average the field over the input and N - 1 rotated copies of "
                             "it (point clouds and voxel grids, models trained on rotated "
                             "shapes such as pointcloud_poco; about 4: a smoother, closer "
                             f"surface for N times the time; at most {LIMITS.max_rotations}; "
                             "default: the model card's rotations, chosen on validation "
                             "shapes, else 1: off)")
    if not tiling:
        return
    parser.add_argument("--tile-size", type=float, metavar="SIZE",
                        help="reconstruct a large scene tile by tiling: SIZE is the edge (in the"
                             " input's units) that the model sees as its unit cube, about one "
                             "object's size; needs a local-feature (ConvONet) model")
    parser.add_argument("--tile-overlap", type=float, default=TilingOptions.tile_overlap,
                        help="share of a tile's crop on each side that is context only "
                             f"(default {TilingOptions.tile_overlap})")
    parser.add_argument("--tile-points", type=int, metavar="N",
                        help="at most N input points per tile (default: the model's input size)")


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m backend", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    rec = commands.add_parser("reconstruct", help="input file -> closed mesh")
    rec.add_argument("input", help="point cloud .ply .xyz .txt .npy .npz; voxels .binvox .npy"
                     " (3-D bool); image .png .jpg; or a folder of such files")
    rec.add_argument("-o", "--output", required=True, help="mesh file: .ply .obj .off .glb"
                     " (for an input folder: the output folder)")
    rec.add_argument("--format", default="ply", choices=[e[1:] for e in WRITE_EXTENSIONS],
                     help="input folder: the meshes' file type (default ply)")
    add_model_options(rec)
    add_input_options(rec)
    add_request_options(rec)
    rec.add_argument("--render", metavar="PNG", help="also write a picture: input | result")
    rec.add_argument("--json", action="store_true", help="print the summary as JSON")
    rec.add_argument("--quiet", action="store_true", help="no per-level progress on stderr")

    sam = commands.add_parser("sample", help="shapes drawn from a generative model's prior"
                              " -> closed meshes in one file")
    sam.add_argument("--seed", type=int, default=0, help="the first shape's seed: seeds S.."
                     "S+N-1 give N shapes, the same seed the same shape (default 0)")
    sam.add_argument("--count", type=int, default=1, metavar="N",
                     help="N shapes in a grid (with --to-seed: N steps of the interpolation)")
    sam.add_argument("--to-seed", type=int, metavar="T", help="N shapes along the spherical "
                     "interpolation (slerp) of the latent from seed S (t = 0) to seed T "
                     "(t = 1), in a row")
    sam.add_argument("--spacing", type=float, default=SAMPLE_SPACING,
                     help="distance of neighbouring shapes in the file, in unit-cube units "
                     f"(default {SAMPLE_SPACING}; the padded unit cube is 1.1)")
    sam.add_argument("-o", "--output", required=True, help="mesh file: .ply .obj .off .glb")
    add_model_options(sam)
    add_request_options(sam, tiling=False)
    sam.add_argument("--render", metavar="PNG", help="also write a picture: one panel per "
                     "shape, labelled by seed (or t)")
    sam.add_argument("--json", action="store_true", help="print the summary as JSON")
    sam.add_argument("--quiet", action="store_true", help="no per-shape progress on stderr")

    occ = commands.add_parser("occupancy", help="logits at given query points")
    occ.add_argument("input")
    occ.add_argument("--points", required=True, help=".npy (M, 3) unit-cube query points")
    occ.add_argument("-o", "--output", required=True, help=".npy to write (M,) float32 logits")
    add_model_options(occ)
    add_input_options(occ)
    occ.add_argument("--precision", default="fp32", choices=PRECISIONS,
                     help="decoder arithmetic (default fp32: logits for parity checks)")

    from .service.server import add_arguments

    add_arguments(commands.add_parser("serve", help="local inference server (HTTP API v1)"))

    conv = commands.add_parser("convert", help="official .pt checkpoint -> our safetensors")
    conv.add_argument("checkpoint")
    conv.add_argument("-o", "--output", required=True, help="OUT.safetensors (+ OUT.json card)")
    return parser


def check_output(path, suffixes):
    """Fail before any work when the output cannot be written: create its folder and open
    the file for writing once (a file that did not exist is removed again)."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise UserError(f"cannot write {path}: use one of {' '.join(suffixes)}")
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a folder; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot write {path}: cannot create folder {path.parent} "
                        f"({exc.strerror or exc})") from None
    existed = path.exists()
    try:
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}; choose a writable "
                        "location") from None
    if not existed:
        path.unlink(missing_ok=True)


def settings_from_args(args) -> Settings:
    """The MISE and output settings the CLI's flags describe (the request's own names)."""
    return Settings(args.resolution0, args.upsampling_steps, args.threshold,
                    precision=args.precision, normals=args.normals, simplify=args.simplify,
                    refine_steps=args.refine_steps, fit_steps=args.fit_steps,
                    rotations=args.rotations,
                    fill_cavities=args.fill_cavities, smooth_steps=args.smooth_steps,
                    drop_floaters=args.drop_floaters, mesh_every_level=False)


def request_from_args(args, inp) -> ReconstructRequest:
    """The request the CLI's flags describe (the flags carry the request's own names)."""
    tiling = (None if args.tile_size is None else
              TilingOptions(args.tile_size, args.tile_overlap, args.tile_points))
    return ReconstructRequest(inp, args.model, settings_from_args(args), tiling)


def load_model(name, kind, device_name, engine_name="auto", points=None):
    """(name, model, card, device) for a model name (None: the default for ``kind``, and for
    a point cloud of ``points`` points, ``zoo.default_model_name``) on the engine
    ``engine_name`` (``runtime.resolve_engine``)."""
    from .engine.runtime import resolve_device, resolve_engine
    from .io import zoo

    engine = resolve_engine(engine_name, device_name)
    device = resolve_device(device_name, engine)
    name = name or zoo.default_model_name(kind, points=points)
    model, card = zoo.load(name, device, engine=engine)
    return name, model, card, device


def run_reconstruct(args):
    if Path(args.input).is_dir():
        from .folder import reconstruct_folder

        reconstruct_folder(args, request_from_args, load_model)
        return
    from .engine import pipeline
    from .io import meshes
    from .io.inputs import read_input

    started = time.perf_counter()
    check_output(args.output, meshes.WRITE_EXTENSIONS)
    if args.render:
        check_output(args.render, (".png",))
    request = request_from_args(args, read_input(args.input,
                                                 voxelisation=args.voxelisation))
    name, model, card, device = load_model(request.model, request.kind, args.device,
                                           args.engine, request.input_points)
    request.validate(model, LIMITS)
    progress = not args.quiet and not args.json
    for event in pipeline.reconstruct(request, model, card, device):
        if isinstance(event, pipeline.TileProgress) and progress:
            print(f"tile {event.done}/{event.total}", file=sys.stderr)
        elif isinstance(event, pipeline.FitProgress) and progress:
            print(f"fit {event.step}/{event.steps}: loss {event.loss:.4f}, "
                  f"{event.seconds:.2f} s", file=sys.stderr)
        elif isinstance(event, pipeline.MeshFrame) and progress and request.tiling is None:
            print(f"level {event.level + 1}/{event.levels}: {event.resolution}^3,"
                  f" {event.evaluations:,} evaluations, {event.seconds:.2f} s", file=sys.stderr)
        elif isinstance(event, pipeline.Finished):
            frame, summary = event.frame, event.summary
    for note in summary["notes"]:
        print(f"note: {note}", file=sys.stderr)
    meshes.write_mesh(args.output, frame.vertices, frame.faces, frame.normals)
    if args.render:
        from .io.render import input_and_result

        input_and_result(request.source, frame.vertices, frame.faces).save(args.render)
    summary = {"output": str(args.output), "model": name, **summary, "device": str(device),
               "seconds": round(time.perf_counter() - started, 3)}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['output']}: {summary['vertices']:,} vertices, {summary['faces']:,}"
              f" faces, {summary['evaluations']:,} network evaluations"
              f" ({100 * summary['dense_fraction']:.1f}% of {summary['lattice']}),"
              f" {summary['seconds']:.2f} s [{name}, {summary['engine']}, {summary['precision']},"
              f" {device}]")
    if len(frame.faces) == 0:
        print("warning: the surface is empty at this threshold; try a lower --threshold",
              file=sys.stderr)


def sample_requests(args, name, model, card, device) -> list[tuple[str, ReconstructRequest]]:
    """(label, validated request) per shape of a ``sample`` command: seeds S..S+N-1, or N
    steps of the blend from sample S to sample T (t = i / (N - 1))."""
    from .engine import pipeline

    if not 1 <= args.count <= MAX_COUNT:
        raise UserError(f"--count must be in [1, {MAX_COUNT}] (got {args.count})")
    if not (math.isfinite(args.spacing) and args.spacing >= 0):
        raise UserError(f"--spacing must be a finite number >= 0 (got {args.spacing})")
    settings = settings_from_args(args)
    if args.to_seed is None:
        requests = [(f"seed {seed}", ReconstructRequest(Sample(seed), name, settings))
                    for seed in range(args.seed, args.seed + args.count)]
    else:
        ends = [ReconstructRequest(Sample(seed), name, settings)
                for seed in (args.seed, args.to_seed)]
        for end in ends:
            end.validate(model, LIMITS)
        a, b = (pipeline.encode(end, name, model, card, device)[0] for end in ends)
        steps = [i / (args.count - 1) if args.count > 1 else 0.0 for i in range(args.count)]
        requests = [(f"t {t:.2f}", ReconstructRequest(Blend(a, b, t), name, settings))
                    for t in steps]
    for _, request in requests:
        request.validate(model, LIMITS)
    return requests


def run_sample(args):
    from .engine import pipeline
    from .io import meshes

    started = time.perf_counter()
    check_output(args.output, meshes.WRITE_EXTENSIONS)
    if args.render:
        check_output(args.render, (".png",))
    name, model, card, device = load_model(args.model, Sample.kind, args.device)
    requests = sample_requests(args, name, model, card, device)
    columns = len(requests) if args.to_seed is not None else math.ceil(math.sqrt(len(requests)))
    shapes, parts, offsets = [], [], []
    for index, (label, request) in enumerate(requests):
        *_, finished = pipeline.reconstruct(request, model, card, device)
        frame = finished.frame
        row, column = divmod(index, columns)
        parts.append((frame.vertices, frame.faces, frame.normals))
        # A grid on the floor of the y-up unit cube: columns along x, rows along z.
        offsets.append(np.array([column, 0.0, row], np.float32) * args.spacing)
        shape = {"label": label, **({"t": request.source.t}
                                    if isinstance(request.source, Blend) else {}),
                 **{key: finished.summary[key] for key in ("seed", "vertices", "faces",
                                                           "evaluations", "seconds")
                    if key in finished.summary}}
        shapes.append(shape)
        if not args.quiet and not args.json:
            print(f"shape {index + 1}/{len(requests)} ({label}): {shape['faces']:,} faces, "
                  f"{shape['seconds']:.2f} s", file=sys.stderr)
    counts = np.cumsum([0] + [len(v) for v, _, _ in parts])
    vertices = np.concatenate([v + offset for (v, _, _), offset in zip(parts, offsets)])
    faces = np.concatenate([f + base for (_, f, _), base in zip(parts, counts)])
    normals = (np.concatenate([n for _, _, n in parts])
               if all(n is not None for _, _, n in parts) else None)
    meshes.write_mesh(args.output, vertices, faces, normals)
    if args.render:
        from .io.render import gallery

        gallery([(v, f) for v, f, _ in parts], [shape["label"] for shape in shapes],
                columns).save(args.render)
    summary = {"output": str(args.output), "model": name, "shapes": shapes,
               "vertices": len(vertices), "faces": len(faces),
               "threshold": finished.summary["threshold"],
               "precision": finished.summary["precision"], "device": str(device),
               "seconds": round(time.perf_counter() - started, 3)}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['output']}: {len(shapes)} shape{'s' * (len(shapes) > 1)}, "
              f"{summary['vertices']:,} vertices, {summary['faces']:,} faces, "
              f"{summary['seconds']:.2f} s [{name}, {summary['precision']}, {device}]")
    empty = [shape["label"] for shape in shapes if shape["faces"] == 0]
    if empty:
        print(f"warning: no surface at this threshold for {', '.join(empty)}; try a lower "
              "--threshold", file=sys.stderr)


def run_occupancy(args):
    from .engine import pipeline
    from .engine.generation import Generator
    from .io.inputs import read_input, validate_points

    check_output(args.output, (".npy",))
    inp = read_input(args.input, voxelisation=args.voxelisation)
    try:
        queries = np.load(args.points, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read query points {args.points}: {exc}")
    queries = validate_points(queries, args.points)
    _, model, card, device = load_model(args.model, inp.kind, args.device, args.engine,
                                        ReconstructRequest(inp).input_points)
    generator = Generator(model, card, device, Settings(precision=args.precision))
    prepared = pipeline.prepare(inp, model, card)
    logits = generator.logits(generator.encode(prepared.inputs), queries)
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


COMMANDS = {"reconstruct": run_reconstruct, "sample": run_sample, "occupancy": run_occupancy,
            "convert": run_convert, "serve": run_serve}


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_command(COMMANDS[args.command], args)
