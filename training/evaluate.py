"""Evaluate a model on a dataset split with the ONet/ConvONet protocol (training/metrics.py).

``python -m training.evaluate --model M --data DIR --out REPORT_DIR [--split test]
[--input pointcloud|voxels|image] [--n-points 300] [--noise 0.005] [--partial-views K]
[--poisson] [--resolution0 32 --upsampling-steps 2] [--fit-steps STEPS] [--rotations N]
[--limit N] [--categories a,b]``

Every shape of the split is reconstructed through the backend's one flow
(``backend.engine.pipeline.reconstruct``), exactly as a user's input would be, from the input
the training builds: a point cloud of ``--n-points`` drawn with replacement from ``pointcloud.npz`` plus
Gaussian noise (one seeded generator per shape; with ``--partial-views K`` drawn only from
the surface points seen from K random viewpoints, a partial scan), the ``model.binvox`` grid
read, like im2mesh, as covering [-0.5, 0.5]^3 whatever its header says, or the first view of
``img_choy2016``.
Sharded: ``torchrun --nproc_per_node N -m training.evaluate ...`` (or torchrun's multi-node
options, the dataset at the same path on every machine) has each process reconstruct and
score every N-th shape; rank 0 gathers the rows and gallery panels and writes one report,
equal to a single process's but for the wall-clock seconds (every shape's input and sample
seeds depend on the shape alone).
Dataset shapes are normalised already, so the backend's map back to the input's coordinates
(it undoes the cloud's own bounding-box normalisation; the grid's frame is the unit cube;
images stay in the unit cube) puts every mesh in the dataset frame that the metrics need.

REPORT_DIR receives ``shapes.csv`` (one row per shape and method), ``report.md`` (per-class
means, the mean of class means and the mean over shapes), ``summary.json`` and
``gallery.png`` (input | prediction | ground truth for the first shapes of each class). Classic
baselines are evaluated on the same input and timed the same way (training/baselines.py): for
voxel input always the marching-cubes mesh of the input grid; for point clouds, with
``--poisson``, screened Poisson reconstruction (depth 8, normals estimated from the points).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.engine.request import PRECISIONS
from backend.errors import UserError, run_command
from backend.io.inputs import VOXELISATIONS

from . import baselines, metrics
from .data.augment import partial_scan
from .data.datasets import dataset_categories
from .data.procedural import VOXEL_FILES

SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
INPUT_FILES = {"pointcloud": "pointcloud.npz", "voxels": "model.binvox", "image": "img_choy2016"}
MODEL, VOXEL_BASELINE, POISSON = "model", "voxel baseline", "poisson"
COLUMNS = ("category", "shape", "method", "iou", "chamfer_l1", "accuracy", "completeness",
           "normal_consistency", "fscore", "precision", "recall", "seconds", "faces")
# Report table: (metric key, column title, factor).
TABLE = (("iou", "IoU", 1), ("chamfer_l1", "Chamfer-L1 (raw)", 1),
         ("chamfer_l1", "Chamfer-L1 x10 (paper)", 10), ("normal_consistency", "Normal cons.", 1),
         ("fscore", "F-score@1%", 1))
GALLERY_SIZE = 192  # pixels per panel


@dataclass
class ShapeRef:
    """One shape of the split: its category folder name, id and folder."""

    category: str
    shape: str
    folder: Path


@dataclass
class Panels:
    """What the gallery shows of one shape (filled for the first shapes of each class)."""

    ref: ShapeRef
    inp: object = None
    prediction: tuple = ()
    baseline: tuple = ()
    baseline_name: str = ""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True,
                        help="checkpoint (.safetensors or official .pt), bundled name or "
                             "analytic:sphere")
    parser.add_argument("--data", required=True, type=Path, help="dataset folder")
    parser.add_argument("--out", required=True, type=Path, help="report folder to write")
    parser.add_argument("--split", default="test", help="train, val or test (default test)")
    parser.add_argument("--input", choices=tuple(INPUT_FILES),
                        help="input kind (default: the model's; pointcloud for analytic)")
    parser.add_argument("--n-points", type=int, default=300,
                        help="input cloud size (300 in ONet, 3000 in ConvONet)")
    parser.add_argument("--noise", type=float, default=0.005,
                        help="input noise standard deviation (unit-cube units)")
    parser.add_argument("--voxelisation", default=VOXELISATIONS[0], choices=VOXELISATIONS,
                        help="voxel input: the grid of that rule (touching: model.binvox, "
                             "centres: model_centres.binvox), sent with its rule")
    parser.add_argument("--partial-views", type=int, default=0,
                        help="K > 0: a partial scan, input points only from the surface seen "
                             "from K random viewpoints (default 0: the whole surface)")
    parser.add_argument("--poisson", action="store_true",
                        help="also evaluate screened Poisson reconstruction of the input "
                             "cloud (needs pymeshlab: pip install -r requirements-eval.txt)")
    parser.add_argument("--fill-cavities", action="store_true",
                        help="fill enclosed voids as the backend does by default (off: the "
                             "papers' protocol scores the raw marching-cubes mesh)")
    parser.add_argument("--smooth-steps", type=int, metavar="STEPS",
                        help="Taubin smoothing of each final mesh (default: the model card's "
                             "smooth_steps; 0: the raw marching-cubes surface)")
    parser.add_argument("--drop-floaters", action=argparse.BooleanOptionalAction, default=True,
                        help="drop mesh pieces with no input point near them, as the backend "
                             "does by default (point clouds)")
    parser.add_argument("--resolution0", type=int, default=32, help="MISE start resolution")
    parser.add_argument("--upsampling-steps", type=int, default=2, help="MISE levels after the "
                        "first")
    parser.add_argument("--fit-steps", type=int, default=0, metavar="STEPS",
                        help="fit each shape code to its input points for STEPS steps before "
                             "meshing (backend/engine/fit.py; point clouds; default 0: off)")
    parser.add_argument("--rotations", type=int, metavar="N",
                        help="average each field over the input and N - 1 rotated copies "
                             "(Settings.rotations; point clouds and voxel grids; 1: off; "
                             "default: the model card's rotations, else 1)")
    parser.add_argument("--limit", type=int, help="at most N shapes per class")
    parser.add_argument("--categories", help="comma-separated category folders (default all)")
    parser.add_argument("--eval-points", type=int, default=metrics.N_POINTS,
                        help="points sampled on each predicted surface (default 100000)")
    parser.add_argument("--gallery-per-class", type=int, default=2,
                        help="gallery rows per class (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of inputs and sampling")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="decoder arithmetic (default auto: bf16 where the hardware has "
                             "it)")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """UserError for option values that cannot work."""
    for name in ("n_points", "eval_points", "resolution0"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1")
    if args.smooth_steps is not None and args.smooth_steps < 0:
        raise UserError("--smooth-steps must be >= 0")
    for name in ("upsampling_steps", "gallery_per_class", "partial_views", "fit_steps"):
        if getattr(args, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} must be >= 0")
    if args.limit is not None and args.limit < 1:
        raise UserError("--limit must be >= 1")
    if args.rotations is not None and args.rotations < 1:
        raise UserError("--rotations must be >= 1")
    if not args.noise >= 0:
        raise UserError(f"--noise must be >= 0 (got {args.noise})")


def find_shapes(data: Path, split: str, categories: str | None, kind: str,
                limit: int | None, voxelisation: str = VOXELISATIONS[0]
                ) -> tuple[list[ShapeRef], dict[str, str]]:
    """The shapes to evaluate, each checked for the files evaluation reads; UserError naming
    the first problem. Returns (shapes, category display names)."""
    if not data.is_dir():
        raise UserError(f"dataset folder {data} not found; give the folder written by "
                        f"`python -m training.data procedural --out DIR` (or an official "
                        f"ONet dataset)")
    names = dataset_categories(data, split)
    if not names:
        raise UserError(f"{data} has no metadata.yaml and no category folder with a "
                        f"{split}.lst; is it a dataset in the ONet layout?")
    if categories:
        chosen = [name.strip() for name in categories.split(",") if name.strip()]
        unknown = [name for name in chosen if name not in names]
        if unknown:
            raise UserError(f"{data} has no category {', '.join(unknown)}; choose from "
                            f"{','.join(names)}")
        names = {name: names[name] for name in chosen}
    shapes = []
    for category in names:
        split_file = data / category / f"{split}.lst"
        if not split_file.is_file():
            raise UserError(f"{split_file} not found: unknown split {split!r} or incomplete "
                            f"dataset; use --split {'|'.join(SPLITS)} or regenerate it")
        ids = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
        shapes += [ShapeRef(category, shape, data / category / shape) for shape in ids[:limit]]
    if not shapes:
        raise UserError(f"the {split} split of {data} is empty; choose another --split")
    for ref in shapes:
        for name in ("pointcloud.npz", "points.npz", input_file(kind, voxelisation)):
            if not (ref.folder / name).exists():
                raise UserError(f"{ref.folder / name} not found (listed in {split}.lst); "
                                f"regenerate the dataset or remove {ref.shape} from the list")
    return shapes, names


def load_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Arrays ``keys`` of an .npz file (no pickle); UserError naming the file otherwise."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in keys}
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise UserError(f"{path}: cannot be read ({exc}); regenerate the dataset") from None


def ground_truth(folder: Path) -> dict[str, np.ndarray]:
    """A shape's surface samples with normals (float32 (N, 3) each) and its uniform IoU
    points (float32 (K, 3)) with occupancies ((K,) bool)."""
    cloud = load_npz(folder / "pointcloud.npz", ("points", "normals"))
    points = load_npz(folder / "points.npz", ("points", "occupancies"))
    iou_points = points["points"].astype(np.float32)
    occupancy = np.unpackbits(points["occupancies"])[:len(iou_points)].astype(bool)
    return {"points": cloud["points"].astype(np.float32),
            "normals": cloud["normals"].astype(np.float32),
            "iou_points": iou_points, "occupancy": occupancy}


def shape_rng(seed: int, ref: ShapeRef) -> np.random.Generator:
    """The generator of one shape's input and surface sampling (stable across runs)."""
    return np.random.default_rng([seed, zlib.crc32(f"{ref.category}/{ref.shape}".encode())])


def input_file(kind: str, voxelisation: str = VOXELISATIONS[0]) -> str:
    """The file (or folder) of a shape that holds the input of ``kind``."""
    return VOXEL_FILES[voxelisation] if kind == "voxels" else INPUT_FILES[kind]


def load_input(ref: ShapeRef, kind: str, gt: dict, n_points: int, noise: float,
               rng: np.random.Generator, partial_views: int = 0,
               voxelisation: str = VOXELISATIONS[0]):
    """The backend input of one shape, built like the training's (see the module
    docstring); voxel grids of the rule ``voxelisation``."""
    from backend.io.binvox import read_binvox
    from backend.io.inputs import ImageInput, PointCloudInput, VoxelInput

    if kind == "pointcloud":
        surface = gt["points"]
        if partial_views:
            seen = partial_scan(surface, gt["normals"], rng, (partial_views, partial_views))
            surface = surface[seen] if seen.any() else surface
        points = surface[rng.integers(len(surface), size=n_points)]
        return PointCloudInput(points + noise * rng.standard_normal(points.shape)
                               .astype(np.float32))
    if kind == "voxels":
        occupancy, _, _ = read_binvox(ref.folder / input_file(kind, voxelisation))
        return VoxelInput(occupancy, np.full(3, -0.5), 1.0, voxelisation)
    return ImageInput(first_view(ref.folder / "img_choy2016"))


def first_view(folder: Path) -> np.ndarray:
    """View 0 (the first image by file name) of a rendering folder, (H, W, 4) uint8."""
    from PIL import Image, UnidentifiedImageError

    views = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not views:
        raise UserError(f"{folder}: holds no .png or .jpg views; regenerate the dataset")
    try:
        with Image.open(views[0]) as image:
            return np.asarray(image.convert("RGBA"))
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"{views[0]}: not a readable image ({exc}); regenerate it") from None


def reconstruct(model, card, device, inp, settings, seed: int):
    """The backend's final mesh of ``inp`` in the input's (here: the dataset's) frame, by the
    flow users' inputs take (``backend.engine.pipeline.reconstruct``). Returns the final
    ``pipeline.Finished`` (``frame.vertices`` (V, 3) float32, ``frame.faces`` (F, 3) int32,
    ``summary``)."""
    from backend.engine import pipeline
    from backend.engine.request import ReconstructRequest

    request = ReconstructRequest(inp, settings=settings, seed=seed)
    request.validate(model)
    *_, finished = pipeline.reconstruct(request, model, card, device)
    return finished


def run_baseline(kind: str, inp, poisson: bool, threads: int):
    """(method name, vertices, faces, seconds) of the classic baseline for this input, or
    None when there is none to run."""
    started = time.perf_counter()
    if kind == "voxels":
        mesh, name = baselines.voxel_mesh(inp.occupancy), VOXEL_BASELINE
    elif kind == "pointcloud" and poisson:
        mesh, name = baselines.poisson_mesh(inp.points, threads=threads), POISSON
    else:
        return None
    return name, *mesh, time.perf_counter() - started


def evaluate(args: argparse.Namespace) -> None:
    """Run the evaluation and write the reports (see the module docstring). Under torchrun
    each process reconstructs and scores every world-th shape; rank 0 gathers the rows and
    gallery panels (gloo, or nccl on GPUs) and writes the one report."""
    import torch.distributed as dist

    from backend.engine.runtime import resolve_device

    from .train import start_processes

    check_args(args)
    if args.poisson:
        baselines.require_pymeshlab()
    procs, device = start_processes(resolve_device(args.device).type)
    try:
        _evaluate(args, procs, device)
    finally:
        if procs.distributed:
            dist.destroy_process_group()


def _evaluate(args: argparse.Namespace, procs, device) -> None:
    import torch
    import torch.distributed as dist
    from tqdm import tqdm

    from backend.engine.generation import Generator
    from backend.engine.request import Settings
    from backend.io import zoo

    model, card = zoo.load(args.model, device)
    wanted = getattr(model, "input_kind", None)
    if wanted and args.input and args.input != wanted:
        raise UserError(f"{args.model} reconstructs from {wanted} input, not {args.input}; "
                        f"pass --input {wanted} or leave --input out")
    kind = args.input or wanted or "pointcloud"
    shapes, names = find_shapes(args.data, args.split, args.categories, kind, args.limit,
                                args.voxelisation)
    if procs.main:
        out = make_folder(args.out)
    settings = Settings(args.resolution0, args.upsampling_steps, precision=args.precision,
                        fit_steps=args.fit_steps, rotations=args.rotations,
                        fill_cavities=args.fill_cavities, smooth_steps=args.smooth_steps, drop_floaters=args.drop_floaters,
                        mesh_every_level=False)

    shown = gallery_shapes(shapes, args.gallery_per_class)
    results = []  # per shape of this process: (index, its rows, its gallery panel or None)
    for index in tqdm(range(procs.rank, len(shapes), procs.world), desc="evaluate",
                      unit="shape", disable=not procs.main):
        ref = shapes[index]
        rng = shape_rng(args.seed, ref)
        gt = ground_truth(ref.folder)
        inp = load_input(ref, kind, gt, args.n_points, args.noise, rng, args.partial_views,
                         args.voxelisation)
        finished = reconstruct(model, card, device, inp, settings, args.seed)
        vertices, faces = finished.frame.vertices, finished.frame.faces
        seconds = finished.summary["seconds"]
        sample_seed = int(rng.integers(2**31))
        rows = [score(ref, MODEL, vertices, faces, seconds, gt, args.eval_points,
                      sample_seed)]
        baseline = run_baseline(kind, inp, args.poisson, torch.get_num_threads())
        if baseline:
            name, *mesh, seconds = baseline
            rows.append(score(ref, name, *mesh, seconds, gt, args.eval_points, sample_seed))
        panel = None
        if index in shown:
            panel = Panels(ref, inp, (vertices, faces), *(
                (tuple(mesh), name) if baseline else ()))
        results.append((index, rows, panel))
    if procs.distributed:
        gathered = [None] * procs.world if procs.main else None
        dist.gather_object(results, gathered, dst=0)
        if not procs.main:
            return
        results = sorted(itertools.chain.from_iterable(gathered), key=lambda r: r[0])
    rows = [row for _, shape_rows, _ in results for row in shape_rows]
    panels = [panel for *_, panel in results if panel is not None]

    summary = summarise(rows, names)
    generator = Generator(model, card, device, settings)  # the threshold and precision used
    summary.update(model=args.model, data=str(args.data), split=args.split, input=kind,
                   device=str(device), threshold=generator.threshold,
                   smooth_steps=generator.smooth_steps, rotations=generator.rotations,
                   precision=generator.precision_name,
                   settings={"resolution0": args.resolution0,
                             "upsampling_steps": args.upsampling_steps,
                             "n_points": args.n_points if kind == "pointcloud" else None,
                             "noise": args.noise if kind == "pointcloud" else None,
                             "partial_views": args.partial_views if kind == "pointcloud"
                             else None,
                             "voxelisation": args.voxelisation if kind == "voxels" else None,
                             "eval_points": args.eval_points, "seed": args.seed,
                             "fill_cavities": args.fill_cavities,
                             "drop_floaters": args.drop_floaters})
    write_csv(out / "shapes.csv", rows)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "report.md").write_text(markdown(summary))
    gallery(panels, kind).save(out / "gallery.png")
    model_means = summary["methods"][MODEL]["mean_of_classes"]
    print(f"{len(shapes)} shapes: IoU {model_means['iou']:.3f}, Chamfer-L1 "
          f"{model_means['chamfer_l1']:.4f} (x10: {10 * model_means['chamfer_l1']:.3f}), "
          f"F-score@1% {model_means['fscore']:.3f} (mean of class means), "
          f"{summary['methods'][MODEL]['seconds_per_shape']:.2f} s per shape; "
          f"report in {out}")


def gallery_shapes(shapes: list[ShapeRef], per_class: int) -> set[int]:
    """Indices into ``shapes`` of the gallery's rows: the first ``per_class`` of each class."""
    counts: dict[str, int] = {}
    chosen = set()
    for index, ref in enumerate(shapes):
        if counts.get(ref.category, 0) < per_class:
            counts[ref.category] = counts.get(ref.category, 0) + 1
            chosen.add(index)
    return chosen


def make_folder(path: Path) -> Path:
    """Create the report folder (UserError when that is impossible)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {path} ({exc.strerror}); choose a writable "
                        f"folder") from None
    return path


def score(ref: ShapeRef, method: str, vertices, faces, seconds: float, gt: dict,
          eval_points: int, seed: int) -> dict:
    """One CSV row: a mesh's metrics against the shape's ground truth."""
    values = metrics.mesh_metrics(vertices, faces, gt["points"], gt["normals"],
                                  gt["iou_points"], gt["occupancy"], eval_points, seed)
    return {"category": ref.category, "shape": ref.shape, "method": method, **values,
            "seconds": seconds, "faces": len(faces)}


def summarise(rows: list[dict], names: dict[str, str]) -> dict:
    """Per method: class means, the mean of class means, the mean over shapes, empty
    meshes and mean seconds per shape."""
    keys = [c for c in COLUMNS[3:] if c != "faces"]
    methods = {}
    for method in dict.fromkeys(row["method"] for row in rows):
        mine = [row for row in rows if row["method"] == method]
        classes = {}
        for category in names:
            members = [row for row in mine if row["category"] == category]
            if members:
                classes[category] = {"name": names[category], "shapes": len(members),
                                     **{k: float(np.mean([r[k] for r in members]))
                                        for k in keys}}
        methods[method] = {
            "classes": classes,
            "mean_of_classes": {k: float(np.mean([c[k] for c in classes.values()]))
                                for k in keys},
            "mean_over_shapes": {k: float(np.mean([r[k] for r in mine])) for k in keys},
            "shapes": len(mine),
            "empty_meshes": sum(row["faces"] == 0 for row in mine),
            "seconds_per_shape": float(np.mean([r["seconds"] for r in mine])),
        }
    return {"units": "lengths (chamfer_l1, accuracy, completeness) in unit-cube units, raw "
                     "(papers print Chamfer-L1 x10); fscore at 0.01",
            "shapes": len({(r["category"], r["shape"]) for r in rows}), "methods": methods}


def write_csv(path: Path, rows: list[dict], columns: tuple[str, ...] = COLUMNS) -> None:
    """Per-shape metrics, one row per shape and method (floats to 6 significant digits)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v
                             for k, v in row.items()})


def markdown(summary: dict) -> str:
    """The report: one table per method, classes then the two means."""
    lines = [f"# Evaluation of `{summary['model']}`",
             "",
             f"Data `{summary['data']}`, split `{summary['split']}`, input "
             f"`{summary['input']}`, threshold {summary['threshold']}, precision "
             f"{summary['precision']}, "
             f"settings `{json.dumps(summary['settings'])}`.",
             "",
             "Chamfer-L1 is given in unit-cube units (raw) and x10 (the unit of the ONet and "
             "ConvONet papers' tables); F-score at 0.01 (1% of the cube edge). IoU on the "
             "uniform points of `points.npz`.", ""]
    titles = {MODEL: "Model", VOXEL_BASELINE: "Baseline: marching cubes of the input 32^3 voxels",
              POISSON: f"Baseline: screened Poisson (depth {baselines.POISSON_DEPTH}, normals "
                       f"estimated from the {baselines.NORMAL_NEIGHBOURS} nearest points)"}
    for method, result in summary["methods"].items():
        lines += [f"## {titles.get(method, method)}", "",
                  "| class | shapes | " + " | ".join(t for _, t, _ in TABLE) + " |",
                  "|---|---:|" + "---:|" * len(TABLE)]
        for category, means in result["classes"].items():
            label = category if means["name"] == category else f"{category} ({means['name']})"
            lines.append(_table_row(label, means["shapes"], means))
        lines.append(_table_row("**mean of class means**", result["shapes"],
                                result["mean_of_classes"]))
        lines.append(_table_row("mean over shapes", result["shapes"],
                                result["mean_over_shapes"]))
        lines += ["", f"{result['seconds_per_shape']:.3f} s per shape (input to mesh, "
                      f"device {summary['device']}); {result['empty_meshes']} empty meshes.",
                  ""]
    return "\n".join(lines)


def _table_row(label: str, shapes: int, means: dict) -> str:
    cells = [f"{means[key] * factor:.4f}" for key, _, factor in TABLE]
    return f"| {label} | {shapes} | " + " | ".join(cells) + " |"


def gallery(panels: list[Panels], kind: str):
    """Rows of input | prediction | ground truth (| baseline), one view shared by all
    panels so sizes compare."""
    from PIL import Image, ImageOps

    from backend.io import render

    cube = np.array(list(itertools.product((-0.55, 0.55), repeat=3)))
    view = render.View.fit(cube, GALLERY_SIZE)
    rows = []
    for panel in panels:
        if kind == "image":
            left = ImageOps.contain(Image.fromarray(panel.inp.rgba), (GALLERY_SIZE,) * 2)
        else:
            left = render.render_points(render.input_points(panel.inp), view=view)
        images = [left, render.render_mesh(*panel.prediction, view=view),
                  ground_truth_image(panel.ref.folder, view)]
        labels = [f"{panel.ref.category}/{panel.ref.shape}", "prediction", "ground truth"]
        if panel.baseline:
            images.append(render.render_mesh(*panel.baseline, view=view))
            labels.append(panel.baseline_name)
        rows.append(render.side_by_side(images, labels))
    return render.stack(rows)


def ground_truth_image(folder: Path, view):
    """The shape's ``mesh.ply`` when there is one, else its surface samples."""
    from backend.io import render

    mesh_file = folder / "mesh.ply"
    if mesh_file.is_file():
        from backend.io.meshes import read_mesh

        mesh = read_mesh(mesh_file)
        return render.render_mesh(mesh.vertices, mesh.faces, view=view)
    points = load_npz(folder / "pointcloud.npz", ("points",))["points"]
    return render.render_points(points[::10].astype(np.float32), view=view)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(evaluate, args)


if __name__ == "__main__":
    sys.exit(main())
