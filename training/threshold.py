"""Choose a model's surface threshold and smoothing on validation data, by the metric the
README reports.

``python -m training.threshold --model M --data DIR [--split val] [--thresholds 0.1 0.2 ...]
[--smooth-steps 0 3 ...] [--n-points 3000 300] [--voxelisations touching centres]
[--metric fscore] --out REPORT_DIR [--write-card]``

Every validation shape is reconstructed through the backend's one flow at each candidate
threshold (the occupancy probability of the surface, ``Settings.threshold``) and smoothing
(Taubin pairs of the final mesh, ``Settings.smooth_steps``), from the inputs
``training.evaluate`` builds (the same seeded clouds; for a voxel model the shape's grid of
each voxelisation), and scored with the ONet/ConvONet metrics. The pair with the best mean of
class means of ``--metric`` (mean over the input sizes or voxelisations given) wins; ``--write-card`` stores it in the model's JSON card with the whole table,
so the choice and its evidence travel with the weights. Never run it on a test split or on the
generalisation benchmark: those judge the choice.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from backend.errors import UserError, run_command
from backend.io.inputs import VOXELISATIONS

from . import evaluate, metrics

logger = logging.getLogger(__name__)

THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
METRICS = ("fscore", "iou", "chamfer_l1", "normal_consistency")
LOWER_IS_BETTER = {"chamfer_l1"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.threshold",
                                     description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--model", required=True, help="bundled name or .safetensors")
    parser.add_argument("--data", required=True, type=Path, help="dataset folder")
    parser.add_argument("--out", required=True, type=Path, help="report folder to write")
    parser.add_argument("--split", default="val", help="split to choose on (default val)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=THRESHOLDS,
                        help="candidate probabilities in (0, 1)")
    parser.add_argument("--smooth-steps", type=int, nargs="+", default=[0],
                        help="candidate Taubin smoothing steps of the final mesh (default 0)")
    parser.add_argument("--n-points", type=int, nargs="+", default=[3000],
                        help="input cloud sizes; the metric is averaged over them")
    parser.add_argument("--voxelisations", nargs="+", default=list(VOXELISATIONS),
                        choices=VOXELISATIONS,
                        help="voxel models: the grids scored; the metric is averaged over them")
    parser.add_argument("--noise", type=float, default=0.005)
    parser.add_argument("--metric", default="fscore", choices=METRICS)
    parser.add_argument("--limit", type=int, help="at most N shapes per class")
    parser.add_argument("--resolution0", type=int, default=32)
    parser.add_argument("--upsampling-steps", type=int, default=2)
    parser.add_argument("--eval-points", type=int, default=metrics.N_POINTS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-card", action="store_true",
                        help="store the chosen threshold and the table in the model's card "
                             "(a .safetensors path or a bundled name)")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """UserError for option values that cannot work."""
    if args.split == "test":
        raise UserError("choose thresholds on validation data (--split val), never on test")
    bad = [t for t in args.thresholds if not 0.0 < t < 1.0]
    if bad:
        raise UserError(f"--thresholds are probabilities in (0, 1) (got {bad[0]})")
    if any(steps < 0 for steps in args.smooth_steps):
        raise UserError("--smooth-steps must be >= 0")
    if any(n < 1 for n in args.n_points):
        raise UserError("--n-points must be >= 1")
    if args.limit is not None and args.limit < 1:
        raise UserError("--limit must be >= 1")


def sweep(args: argparse.Namespace) -> dict:
    """{input: {"T/S": mean of class means}} over the split for every threshold T and
    smoothing S, and the winning pair; an input is a cloud size (point-cloud models) or a
    voxelisation (voxel models)."""
    from tqdm import tqdm

    from backend.engine import meshing
    from backend.engine.runtime import resolve_device
    from backend.engine.request import Settings
    from backend.io import zoo

    check_args(args)
    device = resolve_device("auto")
    model, card = zoo.load(args.model, device)
    kind = getattr(model, "input_kind", None) or "pointcloud"
    if kind not in ("pointcloud", "voxels"):
        raise UserError(f"{args.model} takes {kind}; the sweep scores point clouds and voxels")
    inputs = args.n_points if kind == "pointcloud" else args.voxelisations
    for rule in inputs if kind == "voxels" else VOXELISATIONS[:1]:  # every file read, checked
        shapes, names = evaluate.find_shapes(args.data, args.split, None, kind, args.limit, rule)
    pairs = [(t, steps) for t in args.thresholds for steps in args.smooth_steps]
    rows = {(n, pair): [] for n in inputs for pair in pairs}
    jobs = [(ref, n) for ref in shapes for n in inputs]
    for ref, n in tqdm(jobs, desc="threshold sweep", unit="input"):
        rng = evaluate.shape_rng(args.seed, ref)
        gt = evaluate.ground_truth(ref.folder)
        if kind == "voxels":
            inp = evaluate.load_input(ref, kind, gt, 0, 0.0, rng, voxelisation=n)
        else:
            inp = evaluate.load_input(ref, kind, gt, n, args.noise, rng)
        sample_seed = int(rng.integers(2**31))
        for t in args.thresholds:
            # One reconstruction per threshold, smoothed afterwards by each candidate: the
            # uniform Laplacian commutes with the flow's uniform scaling back to the input's
            # frame, so this is the flow's mesh at every smooth_steps without rerunning MISE.
            settings = Settings(args.resolution0, args.upsampling_steps, threshold=t,
                                smooth_steps=0, mesh_every_level=False)
            finished = evaluate.reconstruct(model, card, device, inp, settings, args.seed)
            frame = finished.frame
            for steps in args.smooth_steps:
                started = time.perf_counter()
                vertices = meshing.taubin(frame.vertices, frame.faces, steps)
                seconds = finished.summary["seconds"] + time.perf_counter() - started
                rows[n, (t, steps)].append(evaluate.score(
                    ref, label((t, steps)), vertices, frame.faces, seconds, gt,
                    args.eval_points, sample_seed))
    table = {n: {pair: evaluate.summarise(rows[n, pair], names)["methods"][label(pair)]
                 ["mean_of_classes"] for pair in pairs} for n in inputs}
    sign = -1.0 if args.metric in LOWER_IS_BETTER else 1.0
    value = {pair: float(np.mean([table[n][pair][args.metric] for n in inputs]))
             for pair in pairs}
    best = max(pairs, key=lambda pair: sign * value[pair])
    given = ({"n_points": args.n_points, "noise": args.noise} if kind == "pointcloud"
             else {"voxelisations": args.voxelisations})
    return {"model": args.model, "data": str(args.data), "split": args.split,
            "shapes": len(shapes), "metric": args.metric, **given,
            "mise": [args.resolution0, args.upsampling_steps],
            "seed": args.seed, "previous": card.get("threshold"), "chosen": best[0],
            "previous_smooth_steps": card.get("smooth_steps", 0),
            "chosen_smooth_steps": best[1],
            "by_threshold_and_smoothing": {key(pair): value[pair] for pair in pairs},
            "table": {str(n): {key(pair): table[n][pair] for pair in pairs}
                      for n in inputs}}


def label(pair: tuple[float, int]) -> str:
    """The method name of (threshold, smooth_steps) in the score rows."""
    return f"t={pair[0]:g} s={pair[1]}"


def key(pair: tuple[float, int]) -> str:
    """The report's key of (threshold, smooth_steps): "T/S"."""
    return f"{pair[0]:g}/{pair[1]}"


def markdown(result: dict) -> str:
    """The sweep as a table: one row per threshold, smoothing and input size."""
    lines = [f"# Threshold and smoothing of {result['model']} on {result['data']} "
             f"({result['split']}, {result['shapes']} shapes, MISE {result['mise'][0]} x "
             f"2^{result['mise'][1]})", "",
             f"Chosen by mean {result['metric']}: threshold **{result['chosen']:g}**, "
             f"smooth_steps **{result['chosen_smooth_steps']}** (card had "
             f"{result['previous']:g} and {result['previous_smooth_steps']}).", "",
             f"| {'points' if 'n_points' in result else 'voxelisation'} | threshold | "
             "smooth_steps | IoU | Chamfer-L1 | normal cons. | F-score@1% |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for n, by_pair in result["table"].items():
        for pair, m in by_pair.items():
            t, steps = pair.split("/")
            lines.append(f"| {n} | {t} | {steps} | {m['iou']:.3f} | {m['chamfer_l1']:.4f} | "
                         f"{m['normal_consistency']:.3f} | {m['fscore']:.3f} |")
    return "\n".join(lines) + "\n"


def write_card(model: str, result: dict) -> Path:
    """Store the chosen threshold and the sweep in the card of ``model``."""
    from backend.io import zoo

    key, _ = zoo.resolve(model)
    card_path = Path(key).with_suffix(".json")
    if Path(key).suffix != ".safetensors" or not card_path.is_file():
        raise UserError(f"{model} has no JSON card to write (only our .safetensors models do)")
    card = json.loads(card_path.read_text())
    measured_at = (card.get("threshold_selection") or {}).get("metrics_measured_at",
                                                              result["previous"])
    card["threshold"] = result["chosen"]
    card["smooth_steps"] = result["chosen_smooth_steps"]
    card["threshold_selection"] = {k: v for k, v in result.items() if k != "model"}
    # The card's test metrics were measured at the threshold it had: say so, not recompute.
    card["threshold_selection"]["metrics_measured_at"] = measured_at
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return card_path


def run(args: argparse.Namespace) -> None:
    result = sweep(args)
    out = evaluate.make_folder(args.out)
    (out / "threshold.json").write_text(json.dumps(result, indent=2))
    (out / "report.md").write_text(markdown(result))
    print(markdown(result))
    if args.write_card:
        print(f"wrote threshold {result['chosen']:g} and smooth_steps "
              f"{result['chosen_smooth_steps']} to {write_card(args.model, result)}")


def main(argv: list[str] | None = None) -> int:
    return run_command(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
