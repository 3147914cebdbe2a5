"""Generalisation benchmark: models against screened Poisson on shapes no model trained on.

``python -m training.generalize --model M [--model M2 ...] --out DIR [--points 3000 300]
[--partial] [--seeds 0 1 2] [--limit N] [--poisson-depths 6 7 8 9] [--families a,b]
[--no-real] [--resolution0 32 --upsampling-steps 2] [--fit-steps STEPS] [--rotations N]
[--raw] [--eval-points 100000]``

The benchmark set (``training/generalize_shapes.py``, never imported by training): (a) one
shape per procedural family the corpus lacks (metaballs, noise-displaced spheres,
superquadrics, twisted tori, torus knots, gyroid shells, capsule creatures) and (b) real
meshes shipped in PyPI packages (``training/benchmark_meshes/card.json``), each in a random
orientation (and, for (a), a random anisotropic scale) drawn from the seed, normalised to
the unit cube. A seed also draws each family's shape.

Each shape is reconstructed from point clouds built like ``training/evaluate.py`` builds
them (``NOISE`` Gaussian noise, the ONet/ConvONet protocol): ``--points`` clouds of the whole
surface and, with ``--partial``, a one-view partial scan of ``--partial-points`` points.
Methods, all scored on the same input by ``evaluate.score`` (``training/metrics.py``):
every ``--model`` through the backend (``evaluate.reconstruct``: MISE, then the card's
smoothing and the floaters dropped, as users get it, with enclosed voids left as they are;
with ``--raw`` also the raw marching-cubes mesh, method "MODEL raw"; with ``--fit-steps``
each model also fitted to the input points, method "MODEL fit STEPS"; with ``--rotations``
each model, and each fitted one, also averaged over rotated copies of the input, method
"MODEL rotations N [fit STEPS]") and screened Poisson (``training/baselines.py``) at each of
``--poisson-depths``; the report adds, per shape set and input, the depth with the best mean
F-score ("poisson best").

DIR receives ``report.md`` (one table: shape set x input x method, means over shapes and
seeds; then per-shape F-scores), ``shapes.csv`` (one row per shape, seed, input and method),
``summary.json`` and ``gallery.png`` (first seed: ground truth, then per input the cloud,
Poisson at depth 8 and each model).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from backend.errors import UserError, run_command

from . import baselines, evaluate, metrics
from .generalize_shapes import FAMILIES, BenchShape, family_shape, read_card, real_shape

log = logging.getLogger(__name__)

NOISE = 0.005  # input noise standard deviation, unit-cube units (ONet/ConvONet protocol)
GROUPS = {"families": "(a) unseen procedural families", "real": "(b) real meshes"}
METRICS = (("iou", "IoU"), ("chamfer_l1", "Chamfer-L1"), ("normal_consistency", "Normal cons."),
           ("fscore", "F-score@1%"), ("seconds", "s/shape"))
COLUMNS = ("group", "shape", "setting", "seed", "method", "iou", "chamfer_l1", "accuracy",
           "completeness", "normal_consistency", "fscore", "precision", "recall", "seconds",
           "faces")
POISSON_PREFIX, BEST_POISSON = "poisson d", "poisson best"
PANEL = 128  # gallery pixels per panel


@dataclass(frozen=True)
class Setting:
    """One kind of input: ``points`` noisy points of the surface seen from ``views``
    random viewpoints (0: the whole surface)."""

    name: str
    points: int
    views: int = 0


@dataclass
class Method:
    """A model ready to reconstruct: the loaded model, its card, device and settings."""

    model: object
    card: dict
    device: object
    settings: object


@dataclass
class Shown:
    """What the gallery draws of one shape: its mesh, then per setting the input and the
    meshes of the methods drawn (vertices (V, 3), faces (F, 3))."""

    shape: BenchShape
    inputs: dict = field(default_factory=dict)
    meshes: dict = field(default_factory=dict)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.generalize",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True,
                        help="point-cloud model (bundled name, .safetensors, official .pt or "
                             "analytic:sphere); repeat to compare several")
    parser.add_argument("--out", required=True, type=Path, help="report folder to write")
    parser.add_argument("--points", type=int, nargs="+", default=[3000, 300],
                        help="input cloud sizes of the whole-surface settings (default 3000 "
                             "300)")
    parser.add_argument("--partial", action="store_true",
                        help="add a one-view partial scan setting")
    parser.add_argument("--partial-points", type=int, default=3000,
                        help="points of the partial scan (default 3000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="seeds of shapes, poses and inputs; means are over all of them")
    parser.add_argument("--limit", type=int, help="at most N shapes of each set")
    parser.add_argument("--families", help="comma-separated families (default all: "
                                           f"{','.join(FAMILIES)})")
    parser.add_argument("--no-real", action="store_true", help="leave the real meshes out")
    parser.add_argument("--poisson-depths", type=int, nargs="*", default=[6, 7, 8, 9],
                        help="screened Poisson octree depths (default 6 7 8 9; none: no "
                             "Poisson)")
    parser.add_argument("--resolution0", type=int, default=32, help="MISE start resolution")
    parser.add_argument("--upsampling-steps", type=int, default=2,
                        help="MISE levels after the first")
    parser.add_argument("--fit-steps", type=int, default=0, metavar="STEPS",
                        help="also run every model fitted to the input points for STEPS steps "
                             "(backend/engine/fit.py), as method 'MODEL fit STEPS' (default 0: "
                             "unfitted only)")
    parser.add_argument("--rotations", type=int, metavar="N",
                        help="also run every model (and, with --fit-steps, every fitted one) "
                             "averaged over the input and N - 1 rotated copies "
                             "(Settings.rotations; 1: none), as method 'MODEL rotations N' "
                             "(default: not; 'MODEL' itself uses its card's rotations)")
    parser.add_argument("--raw", action="store_true",
                        help="also score every model's raw marching-cubes mesh (no smoothing, "
                             "floaters kept), as method 'MODEL raw'")
    parser.add_argument("--eval-points", type=int, default=metrics.N_POINTS,
                        help="points sampled on each surface and uniform IoU points "
                             "(default 100000)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                        help="decoder arithmetic (default auto)")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """UserError for option values that cannot work."""
    if min(args.points) < 1 or args.partial_points < 1:
        raise UserError("--points and --partial-points must be >= 1")
    if args.eval_points < 1 or args.resolution0 < 2 or args.upsampling_steps < 0:
        raise UserError("--eval-points must be >= 1, --resolution0 >= 2, "
                        "--upsampling-steps >= 0")
    if args.limit is not None and args.limit < 1:
        raise UserError("--limit must be >= 1")
    if any(depth < 1 or depth > 12 for depth in args.poisson_depths):
        raise UserError("--poisson-depths must lie in 1..12")
    if min(args.seeds) < 0:
        raise UserError("--seeds must be >= 0")
    if args.fit_steps < 0:
        raise UserError("--fit-steps must be >= 0")
    if args.rotations is not None and args.rotations < 1:
        raise UserError("--rotations must be >= 1")


def settings_of(args: argparse.Namespace) -> list[Setting]:
    """The input settings the options ask for, in report order."""
    settings = [Setting(f"{n} points", n) for n in dict.fromkeys(args.points)]
    if args.partial:
        settings.append(Setting(f"partial 1 view, {args.partial_points} points",
                                args.partial_points, 1))
    return settings


def shape_makers(args: argparse.Namespace) -> list:
    """Per benchmark shape, a function seed -> BenchShape (families first, then real
    meshes), ``--limit`` of each set."""
    families = list(FAMILIES)
    if args.families:
        families = [name.strip() for name in args.families.split(",") if name.strip()]
        unknown = [name for name in families if name not in FAMILIES]
        if unknown:
            raise UserError(f"unknown families {', '.join(unknown)}; choose from "
                            f"{','.join(FAMILIES)}")
    makers = [lambda seed, name=name: family_shape(name, seed) for name in families[:args.limit]]
    if not args.no_real:
        makers += [lambda seed, entry=entry: real_shape(entry, seed)
                   for entry in read_card()[:args.limit]]
    if not makers:
        raise UserError("no benchmark shape selected; give --families or leave --no-real out")
    return makers


def ground_truth(shape: BenchShape, count: int, seed: int) -> dict[str, np.ndarray]:
    """The arrays ``evaluate.score`` compares against: ``count`` surface samples with face
    normals (float32 (count, 3) each) and ``count`` uniform points of the padded cube
    (float32 (count, 3)) with their exact occupancies ((count,) bool)."""
    from .data.procedural import PADDED_LO, PADDED_SIZE

    points, normals = metrics.sample_surface(shape.vertices, shape.faces, count, seed)
    uniform = np.random.default_rng([seed, 1]).uniform(PADDED_LO, PADDED_LO + PADDED_SIZE,
                                                        (count, 3)).astype(np.float32)
    return {"points": points, "normals": normals, "iou_points": uniform,
            "occupancy": shape.inside(uniform)}


def load_methods(args: argparse.Namespace, device) -> dict[str, Method]:
    """Each ``--model`` loaded once, with its settings (and, with ``--fit-steps``, the same
    model fitted, as "NAME fit STEPS"; with ``--rotations``, each of those averaged over
    rotated copies, as "NAME rotations N [fit STEPS]"); UserError for a model that does not
    reconstruct point clouds."""
    from backend.engine.request import Settings
    from backend.io import zoo

    methods = {}
    for name in dict.fromkeys(args.model):
        model, card = zoo.load(name, device)
        kind = getattr(model, "input_kind", None) or "pointcloud"
        if kind != "pointcloud":
            raise UserError(f"{name} reconstructs from {kind}, not point clouds; the "
                            f"benchmark needs a point-cloud model")
        settings = Settings(args.resolution0, args.upsampling_steps, precision=args.precision,
                            fill_cavities=False, mesh_every_level=False)
        methods[name] = Method(model, card, device, settings)
        if args.raw:
            raw = replace(settings, smooth_steps=0, drop_floaters=False)
            methods[f"{name} raw"] = Method(model, card, device, raw)
        variants = [(name, settings)]
        if args.rotations is not None:
            variants.append((f"{name} rotations {args.rotations}",
                             replace(settings, rotations=args.rotations)))
            methods[variants[-1][0]] = Method(model, card, device, variants[-1][1])
        for label, variant in variants if args.fit_steps else ():
            fitted = replace(variant, fit_steps=args.fit_steps)
            methods[fit_name(label, args.fit_steps)] = Method(model, card, device, fitted)
    return methods


def fit_name(model: str, steps: int) -> str:
    """The report's method name of ``model`` fitted for ``steps`` steps."""
    return f"{model} fit {steps}"


def run_case(shape: BenchShape, gt: dict, setting: Setting, methods: dict[str, Method],
             depths: list[int], seed: int, eval_points: int) -> tuple[object, list[dict],
                                                                      dict]:
    """The one adapter to ``training/evaluate.py``: build the input of ``setting`` for
    ``shape`` (``load_input``), reconstruct it with every model (``reconstruct``) and with
    Poisson at every depth (``run_baseline`` at its depth 8, ``baselines.poisson_mesh``
    timed the same way at others), and score each mesh (``score``) on one seeded surface
    sample. Returns (input, CSV rows, method -> (vertices, faces))."""
    import torch

    ref = evaluate.ShapeRef(shape.group, shape.name, Path())
    rng = evaluate.shape_rng(seed, evaluate.ShapeRef(shape.group, f"{shape.name}/"
                                                     f"{setting.name}", Path()))
    inp = evaluate.load_input(ref, "pointcloud", gt, setting.points, NOISE, rng,
                              setting.views)
    sample_seed = int(rng.integers(2**31))
    results = {}
    for name, method in methods.items():
        finished = evaluate.reconstruct(method.model, method.card, method.device, inp,
                                        method.settings, seed)
        results[name] = (finished.frame.vertices, finished.frame.faces,
                         finished.summary["seconds"])
    threads = torch.get_num_threads()
    for depth in depths:
        results[f"{POISSON_PREFIX}{depth}"] = poisson(inp, depth, threads)
    rows = []
    for name, (vertices, faces, seconds) in results.items():
        row = evaluate.score(ref, name, vertices, faces, seconds, gt, eval_points, sample_seed)
        row.update(group=row.pop("category"), setting=setting.name, seed=seed)
        rows.append(row)
    return inp, rows, {name: result[:2] for name, result in results.items()}


def poisson(inp, depth: int, threads: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(vertices, faces, seconds) of screened Poisson at ``depth``; an empty mesh when
    MeshLab fails on the cloud (scored as the worst case)."""
    pymeshlab = baselines.require_pymeshlab()
    started = time.perf_counter()
    try:
        if depth == baselines.POISSON_DEPTH:
            _, vertices, faces, seconds = evaluate.run_baseline("pointcloud", inp, True, threads)
            return vertices, faces, seconds
        vertices, faces = baselines.poisson_mesh(inp.points, depth, threads)
    except pymeshlab.PyMeshLabException as exc:
        log.warning("Poisson depth %d failed (%s): empty mesh", depth, exc)
        vertices, faces = np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32)
    return vertices, faces, time.perf_counter() - started


def benchmark(args: argparse.Namespace) -> None:
    """Run the benchmark and write the report (see the module docstring)."""
    from tqdm import tqdm

    from backend.engine.runtime import resolve_device

    check_args(args)
    if args.poisson_depths:
        baselines.require_pymeshlab()
    settings = settings_of(args)
    makers = shape_makers(args)
    device = resolve_device(args.device)
    methods = load_methods(args, device)
    out = evaluate.make_folder(args.out)

    rows, shown = [], []
    progress = tqdm(total=len(args.seeds) * len(makers) * len(settings), desc="generalize",
                    unit="case")
    for seed in args.seeds:
        for make in makers:
            shape = make(seed)
            gt = ground_truth(shape, args.eval_points, seed)
            drawn = Shown(shape) if seed == args.seeds[0] else None
            for setting in settings:
                inp, case_rows, meshes = run_case(shape, gt, setting, methods,
                                                  args.poisson_depths, seed, args.eval_points)
                rows += case_rows
                if drawn:
                    drawn.inputs[setting.name] = inp
                    drawn.meshes[setting.name] = meshes
                progress.update()
            if drawn:
                shown.append(drawn)
    progress.close()

    summary = summarise(rows, settings, list(methods), args.poisson_depths)
    summary.update(models=list(methods), seeds=args.seeds, device=str(device),
                   noise=NOISE, resolution0=args.resolution0,
                   upsampling_steps=args.upsampling_steps, eval_points=args.eval_points,
                   command="python -m training.generalize " + " ".join(sys.argv[1:]))
    evaluate.write_csv(out / "shapes.csv", rows, COLUMNS)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "report.md").write_text(markdown(summary))
    gallery(shown, settings, list(methods)).save(out / "gallery.png")
    print(f"{len(rows)} scores of {len(makers)} shapes x {len(args.seeds)} seeds; report in "
          f"{out}")


def summarise(rows: list[dict], settings: list[Setting], models: list[str],
              depths: list[int]) -> dict:
    """The report's numbers: ``table``, a list of {group, setting, method, depth (poisson
    best only), shapes, <metric>: mean over shapes and seeds}, and ``per_shape``:
    {group/shape: {setting: {method: mean F-score over seeds}}}."""
    keys = [key for key, _ in METRICS]
    table = []
    for group, setting in itertools.product(GROUPS, settings):
        mine = [r for r in rows if r["group"] == group and r["setting"] == setting.name]
        if not mine:
            continue
        means = {}
        for method in dict.fromkeys(r["method"] for r in mine):
            scored = [r for r in mine if r["method"] == method]
            means[method] = {"shapes": len({r["shape"] for r in scored}),
                             **{k: float(np.mean([r[k] for r in scored])) for k in keys}}
        names = models + [f"{POISSON_PREFIX}{d}" for d in depths]
        table += [{"group": group, "setting": setting.name, "method": m, **means[m]}
                  for m in names]
        if depths:
            best = max(depths, key=lambda d: means[f"{POISSON_PREFIX}{d}"]["fscore"])
            table.append({"group": group, "setting": setting.name, "method": BEST_POISSON,
                          "depth": best, **means[f"{POISSON_PREFIX}{best}"]})
    per_shape: dict = {}
    for r in rows:
        cell = per_shape.setdefault(f"{r['group']}/{r['shape']}", {}).setdefault(
            r["setting"], {}).setdefault(r["method"], [])
        cell.append(r["fscore"])
    per_shape = {shape: {s: {m: float(np.mean(v)) for m, v in by_method.items()}
                         for s, by_method in by_setting.items()}
                 for shape, by_setting in per_shape.items()}
    return {"units": "Chamfer-L1 raw in unit-cube units (papers print x10); F-score at 0.01; "
                     "seconds from input to mesh per shape",
            "settings": [s.__dict__ for s in settings], "table": table,
            "per_shape_fscore": per_shape}


def markdown(summary: dict) -> str:
    """The report: the one comparison table, then per-shape F-scores."""
    seeds = summary["seeds"]
    lines = ["# Generalisation benchmark", "",
             f"`{summary['command']}`", "",
             f"Models: {', '.join(f'`{m}`' for m in summary['models'])}. Means over the "
             f"shapes of each set and over {len(seeds)} seed{'s' if len(seeds) > 1 else ''} "
             f"({', '.join(map(str, seeds))}); input noise {summary['noise']}, MISE "
             f"{summary['resolution0']} + {summary['upsampling_steps']} levels, the "
             f"backend's final meshes (each card's smoothing, floaters dropped; \"raw\": the "
             f"marching-cubes mesh as it is; enclosed voids kept), {summary['eval_points']} evaluation points, device "
             f"{summary['device']}. {summary['units']}. `{BEST_POISSON}` is the Poisson "
             f"depth with the best mean F-score for that set and input.", "",
             "| set | input | method | shapes | " + " | ".join(t for _, t in METRICS) + " |",
             "|---|---|---|---:|" + "---:|" * len(METRICS)]
    for row in summary["table"]:
        method = row["method"] + (f" (d{row['depth']})" if "depth" in row else "")
        method = f"**{method}**" if row["method"] in summary["models"] else method
        cells = [f"{row[key]:.4f}" if key != "seconds" else f"{row[key]:.2f}"
                 for key, _ in METRICS]
        lines.append(f"| {GROUPS[row['group']]} | {row['setting']} | {method} | "
                     f"{row['shapes']} | " + " | ".join(cells) + " |")
    settings = [s["name"] for s in summary["settings"]]
    shown = summary["models"] + [f"{POISSON_PREFIX}{baselines.POISSON_DEPTH}"]
    lines += ["", "## F-score@1% per shape (mean over seeds)", "",
              "| shape | " + " | ".join(f"{s}: {m}" for s in settings for m in shown) + " |",
              "|---|" + "---:|" * (len(settings) * len(shown))]
    for shape, by_setting in summary["per_shape_fscore"].items():
        cells = [f"{by_setting[s][m]:.3f}" if m in by_setting.get(s, {}) else "-"
                 for s in settings for m in shown]
        lines.append(f"| {shape} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def gallery(shown: list[Shown], settings: list[Setting], models: list[str]):
    """One row per shape (first seed): ground truth, then per setting the input cloud,
    Poisson at depth 8 (when run) and each model, all in one view of the padded cube."""
    from backend.io import render

    cube = np.array(list(itertools.product((-0.55, 0.55), repeat=3)))
    view = render.View.fit(cube, PANEL)
    poisson_name = f"{POISSON_PREFIX}{baselines.POISSON_DEPTH}"
    rows = []
    for item in shown:
        images = [render.render_mesh(item.shape.vertices, item.shape.faces, view=view)]
        labels = [f"{item.shape.name}"]
        for setting in settings:
            images.append(render.render_points(item.inputs[setting.name].points, view=view))
            labels.append(setting.name.replace(" points", " pts").replace("partial 1 view",
                                                                           "1 view"))
            for name in [poisson_name, *models]:
                if name in item.meshes[setting.name]:
                    images.append(render.render_mesh(*item.meshes[setting.name][name],
                                                     view=view))
                    labels.append(_short(name))
        rows.append(render.side_by_side(images, labels))
    return render.stack(rows)


def _short(name: str) -> str:
    """A gallery label that fits a panel: a model's file stem without the common prefix."""
    return Path(name).stem.replace("pointcloud_", "")[:20]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run_command(benchmark, args)


if __name__ == "__main__":
    sys.exit(main())
