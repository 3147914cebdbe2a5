"""Generalisation benchmark for voxel input: models against marching cubes of their own grid.

``python -m training.generalize_voxels --model M [--model M2 ...] --out DIR [--seeds 0 1 2]
[--limit N] [--families a,b] [--no-real] [--taubin-iterations 10 20 50] [--rotations N]``

The shapes of ``training.generalize`` (unseen procedural families and real meshes from
packages, random orientation; ``generalize.shape_makers``), each voxelised at 32^3
(``--grid N``: N^3) over [-0.5, 0.5]^3 by both rules the backend accepts
(``backend.io.inputs.VOXELISATIONS``, sent with the grid): "centres" (a voxel is set when
its centre is inside, the common rule) and "touching" (also every voxel the surface passes
through, as the corpus's ``model.binvox``).
Methods, scored on the same ground truth by ``evaluate.score``: every ``--model`` through
the backend (``evaluate.reconstruct``, raw marching-cubes mesh of MISE; with ``--rotations``
also averaged over turned copies of the grid, "MODEL rotations N"), plain marching cubes
of the grid (``baselines.voxel_mesh``) and marching cubes followed by Taubin smoothing
(lambda 0.5, mu -0.52; an iteration is one of the alternating half steps) at each of
``--taubin-iterations``; the report adds the iteration
count with the best mean F-score per set and grid ("taubin best").

DIR receives ``report.md``, ``shapes.csv``, ``summary.json`` and ``gallery.png`` (first
seed: ground truth, then per grid the voxels' marching cubes, the best-F Taubin mesh and
each model).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from backend.errors import UserError, run_command
from backend.engine.transforms import TRAINED_GRID
from backend.io.binvox import MAX_VOXEL_DIM

from . import baselines, evaluate, generalize, metrics
from .data.procedural import VOXEL_FILES, voxel_centres

log = logging.getLogger(__name__)

SURFACE_SAMPLES = 200_000  # marking the voxels the surface touches
TAUBIN = (0.5, 0.52)  # lambda and -mu (trimesh's nu): pass band 1/0.5 - 1/0.52 = 0.077
MARCHING_CUBES, TAUBIN_PREFIX, BEST_TAUBIN = "marching cubes", "mc + taubin x", "taubin best"
METRICS = generalize.METRICS
COLUMNS = generalize.COLUMNS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.generalize_voxels",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True,
                        help="voxel model (bundled name or .safetensors); repeat to compare")
    parser.add_argument("--out", required=True, type=Path, help="report folder to write")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--limit", type=int, help="at most N shapes of each set")
    parser.add_argument("--families", help="comma-separated families (default all)")
    parser.add_argument("--no-real", action="store_true", help="leave the real meshes out")
    parser.add_argument("--taubin-iterations", type=int, nargs="+", default=[10, 20, 50])
    parser.add_argument("--rotations", type=int, metavar="N",
                        help="also run every model averaged over the grid and N - 1 copies "
                             "turned by the cube's rotations (Settings.rotations; 1: none), as "
                             "method 'MODEL rotations N' (default: not; 'MODEL' itself uses "
                             "its card's rotations)")
    parser.add_argument("--grid", type=int, default=TRAINED_GRID,
                        help="voxelise at N^3 (default 32, the models' training grids)")
    parser.add_argument("--resolution0", type=int,
                        help="MISE start resolution (default: auto, Settings.start_resolution)")
    parser.add_argument("--upsampling-steps", type=int, default=2)
    parser.add_argument("--eval-points", type=int, default=metrics.N_POINTS)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    return parser


def voxelise(shape, rule: str, seed: int, n: int = TRAINED_GRID) -> np.ndarray:
    """(n, n, n) bool grid of ``shape`` over [-0.5, 0.5]^3 by ``rule`` (VOXEL_FILES)."""
    from .data.procedural import touching

    grid = shape.inside(voxel_centres(n)).reshape((n,) * 3)
    if rule == "centres":
        return grid
    surface, _ = metrics.sample_surface(shape.vertices, shape.faces, SURFACE_SAMPLES, seed)
    return touching(grid, surface)


def taubin(vertices: np.ndarray, faces: np.ndarray, iterations: int):
    """Taubin-smoothed copy of a mesh: (vertices (V, 3) float32, faces (F, 3))."""
    import trimesh

    mesh = trimesh.Trimesh(vertices.copy(), faces, process=False)
    trimesh.smoothing.filter_taubin(mesh, lamb=TAUBIN[0], nu=TAUBIN[1], iterations=iterations)
    return np.asarray(mesh.vertices, np.float32), faces


def load_methods(args: argparse.Namespace, device) -> dict:
    """Each ``--model`` loaded once with its settings; UserError for a non-voxel model."""
    from backend.engine.request import Settings
    from backend.io import zoo

    methods = {}
    for name in dict.fromkeys(args.model):
        model, card = zoo.load(name, device)
        if getattr(model, "input_kind", None) != "voxels":
            raise UserError(f"{name} does not reconstruct from voxels; give a voxel model")
        settings = Settings(args.resolution0, args.upsampling_steps, fill_cavities=False,
                            mesh_every_level=False)
        methods[name] = generalize.Method(model, card, device, settings)
        if args.rotations is not None:
            methods[f"{name} rotations {args.rotations}"] = generalize.Method(
                model, card, device, replace(settings, rotations=args.rotations))
    return methods


def run_case(shape, gt: dict, rule: str, methods: dict, iterations: list[int], seed: int,
             eval_points: int, n: int = TRAINED_GRID):
    """Voxelise ``shape`` by ``rule``, reconstruct it with every method and score each mesh.
    Returns (grid, CSV rows, method -> (vertices, faces))."""
    from backend.io.inputs import VoxelInput

    grid = voxelise(shape, rule, seed, n)
    inp = VoxelInput(grid, np.full(3, -0.5), 1.0, rule)
    results = {}
    for name, method in methods.items():
        finished = evaluate.reconstruct(method.model, method.card, method.device, inp,
                                        method.settings, seed)
        results[name] = (finished.frame.vertices, finished.frame.faces,
                         finished.summary["seconds"])
    started = time.perf_counter()
    cubes = baselines.voxel_mesh(grid)
    cubes_seconds = time.perf_counter() - started
    results[MARCHING_CUBES] = (*cubes, cubes_seconds)
    for count in iterations:  # each smooths a copy of the one marching-cubes mesh
        started = time.perf_counter()
        smooth = taubin(*cubes, count)
        results[f"{TAUBIN_PREFIX}{count}"] = (*smooth, cubes_seconds + time.perf_counter()
                                              - started)
    ref = evaluate.ShapeRef(shape.group, shape.name, Path())
    sample_seed = int(np.random.default_rng([seed, 7]).integers(2**31))
    rows = []
    for name, (vertices, faces, seconds) in results.items():
        row = evaluate.score(ref, name, vertices, faces, seconds, gt, eval_points, sample_seed)
        row.update(group=row.pop("category"), setting=rule, seed=seed)
        rows.append(row)
    return grid, rows, {name: result[:2] for name, result in results.items()}


def summarise(rows: list[dict], models: list[str], iterations: list[int]) -> list[dict]:
    """Table rows {group, setting, method, shapes, <metric>: mean over shapes and seeds},
    with the best-F Taubin iteration count per set and grid."""
    keys = [key for key, _ in METRICS]
    table = []
    for group, rule in itertools.product(generalize.GROUPS, VOXEL_FILES):
        mine = [r for r in rows if r["group"] == group and r["setting"] == rule]
        if not mine:
            continue
        names = models + [MARCHING_CUBES] + [f"{TAUBIN_PREFIX}{n}" for n in iterations]
        means = {m: {"shapes": len({r["shape"] for r in mine if r["method"] == m}),
                     **{k: float(np.mean([r[k] for r in mine if r["method"] == m]))
                        for k in keys}} for m in names}
        table += [{"group": group, "setting": rule, "method": m, **means[m]} for m in names]
        best = max(iterations, key=lambda n: means[f"{TAUBIN_PREFIX}{n}"]["fscore"])
        table.append({"group": group, "setting": rule, "method": BEST_TAUBIN,
                      "iterations": best, **means[f"{TAUBIN_PREFIX}{best}"]})
    return table


def markdown(summary: dict) -> str:
    lines = [f"# Generalisation benchmark, {summary['grid']}^3 voxel input", "",
             f"`{summary['command']}`", "",
             f"Means over shapes and seeds {summary['seeds']}; grids over [-0.5, 0.5]^3 by "
             "rule: `centres` (centre inside), `touching` (also every voxel the surface "
             "passes through). MISE "
             f"{summary['resolution0'] or 'auto'} + {summary['upsampling_steps']} levels, "
             "raw meshes; "
             f"`{BEST_TAUBIN}` is the Taubin iteration count with the best mean F-score.", "",
             "| set | grid | method | shapes | " + " | ".join(t for _, t in METRICS) + " |",
             "|---|---|---|---:|" + "---:|" * len(METRICS)]
    for row in summary["table"]:
        method = row["method"] + (f" ({row['iterations']})" if "iterations" in row else "")
        method = f"**{method}**" if row["method"] in summary["models"] else method
        cells = [f"{row[k]:.4f}" if k != "seconds" else f"{row[k]:.2f}" for k, _ in METRICS]
        lines.append(f"| {generalize.GROUPS[row['group']]} | {row['setting']} | {method} | "
                     f"{row['shapes']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def gallery(shown: list, models: list[str], table: list[dict]):
    """One row per shape (first seed): ground truth, then per grid marching cubes, the best
    Taubin mesh of the set and each model."""
    from backend.io import render

    cube = np.array(list(itertools.product((-0.55, 0.55), repeat=3)))
    view = render.View.fit(cube, generalize.PANEL)
    best = {(r["group"], r["setting"]): f"{TAUBIN_PREFIX}{r['iterations']}"
            for r in table if r["method"] == BEST_TAUBIN}
    rows = []
    for shape, meshes in shown:
        images = [render.render_mesh(shape.vertices, shape.faces, view=view)]
        labels = [shape.name]
        for rule in VOXEL_FILES:
            for name in [MARCHING_CUBES, best[shape.group, rule], *models]:
                images.append(render.render_mesh(*meshes[rule][name], view=view))
                short = (Path(name).stem.replace("voxels_", "").replace("convonet_", "")
                         .replace(" rotations ", " x"))
                labels.append(f"{rule}: {short}"[:22])
        rows.append(render.side_by_side(images, labels))
    return render.stack(rows)


def benchmark(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from backend.engine.runtime import resolve_device

    if args.limit is not None and args.limit < 1:
        raise UserError("--limit must be >= 1")
    if not 2 <= args.grid <= MAX_VOXEL_DIM:
        raise UserError(f"--grid must be in [2, {MAX_VOXEL_DIM}]")
    if args.rotations is not None and args.rotations < 1:
        raise UserError("--rotations must be >= 1")
    if min(args.taubin_iterations) < 1:
        raise UserError("--taubin-iterations must be >= 1")
    makers = generalize.shape_makers(args)
    device = resolve_device(args.device)
    methods = load_methods(args, device)
    out = evaluate.make_folder(args.out)
    rows, shown = [], []
    progress = tqdm(total=len(args.seeds) * len(makers) * len(VOXEL_FILES),
                    desc="generalize voxels", unit="case")
    for seed in args.seeds:
        for make in makers:
            shape = make(seed)
            gt = generalize.ground_truth(shape, args.eval_points, seed)
            drawn = {}
            for rule in VOXEL_FILES:
                _, case_rows, meshes = run_case(shape, gt, rule, methods,
                                                args.taubin_iterations, seed, args.eval_points,
                                                args.grid)
                rows += case_rows
                drawn[rule] = meshes
                progress.update()
            if seed == args.seeds[0]:
                shown.append((shape, drawn))
    progress.close()
    table = summarise(rows, list(methods), args.taubin_iterations)
    summary = {"models": list(methods), "seeds": args.seeds, "device": str(device),
               "grid": args.grid, "resolution0": args.resolution0,
               "upsampling_steps": args.upsampling_steps,
               "eval_points": args.eval_points, "table": table,
               "command": "python -m training.generalize_voxels " + " ".join(sys.argv[1:])}
    evaluate.write_csv(out / "shapes.csv", rows, COLUMNS)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "report.md").write_text(markdown(summary))
    gallery(shown, list(methods), table).save(out / "gallery.png")
    print(markdown(summary))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run_command(benchmark, args)


if __name__ == "__main__":
    sys.exit(main())
