"""Choose a model's surface threshold on validation data, by the metric the README reports.

``python -m training.threshold --model M --data DIR [--split val] [--thresholds 0.1 0.2 ...]
[--n-points 3000 300] [--metric fscore] --out REPORT_DIR [--write-card]``

Every validation shape is reconstructed through the backend's one flow at each candidate
threshold (the occupancy probability of the surface, ``Settings.threshold``), from the inputs
``training.evaluate`` builds (the same seeded clouds), and scored with the ONet/ConvONet
metrics. The threshold with the best mean of class means of ``--metric`` (mean over the input
sizes given) wins; ``--write-card`` stores it in the model's JSON card with the whole table,
so the choice and its evidence travel with the weights. Never run it on a test split or on the
generalisation benchmark: those judge the choice.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from backend.errors import UserError, run_command

from . import evaluate, metrics

logger = logging.getLogger(__name__)

THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
METRICS = ("fscore", "iou", "chamfer_l1", "normal_consistency")
LOWER_IS_BETTER = {"chamfer_l1"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.threshold",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="bundled name or .safetensors")
    parser.add_argument("--data", required=True, type=Path, help="dataset folder")
    parser.add_argument("--out", required=True, type=Path, help="report folder to write")
    parser.add_argument("--split", default="val", help="split to choose on (default val)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=THRESHOLDS,
                        help="candidate probabilities in (0, 1)")
    parser.add_argument("--n-points", type=int, nargs="+", default=[3000],
                        help="input cloud sizes; the metric is averaged over them")
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
    if any(n < 1 for n in args.n_points):
        raise UserError("--n-points must be >= 1")
    if args.limit is not None and args.limit < 1:
        raise UserError("--limit must be >= 1")


def sweep(args: argparse.Namespace) -> dict:
    """{n_points: {threshold: mean of class means}} over the split, and the winner."""
    from tqdm import tqdm

    from backend.engine.runtime import resolve_device
    from backend.engine.request import Settings
    from backend.io import zoo

    check_args(args)
    device = resolve_device("auto")
    model, card = zoo.load(args.model, device)
    if getattr(model, "input_kind", None) not in (None, "pointcloud"):
        raise UserError(f"{args.model} is not a point-cloud model; the sweep scores clouds")
    shapes, names = evaluate.find_shapes(args.data, args.split, None, "pointcloud", args.limit)
    rows = {(n, t): [] for n in args.n_points for t in args.thresholds}
    jobs = [(ref, n) for ref in shapes for n in args.n_points]
    for ref, n in tqdm(jobs, desc="threshold sweep", unit="input"):
        rng = evaluate.shape_rng(args.seed, ref)
        gt = evaluate.ground_truth(ref.folder)
        inp = evaluate.load_input(ref, "pointcloud", gt, n, args.noise, rng)
        sample_seed = int(rng.integers(2**31))
        for t in args.thresholds:
            settings = Settings(args.resolution0, args.upsampling_steps, threshold=t,
                                mesh_every_level=False)
            finished = evaluate.reconstruct(model, card, device, inp, settings, args.seed)
            frame = finished.frame
            rows[n, t].append(evaluate.score(ref, f"t={t:g}", frame.vertices, frame.faces,
                                             finished.summary["seconds"], gt,
                                             args.eval_points, sample_seed))
    table = {n: {t: evaluate.summarise(rows[n, t], names)["methods"][f"t={t:g}"]
                 ["mean_of_classes"] for t in args.thresholds} for n in args.n_points}
    sign = -1.0 if args.metric in LOWER_IS_BETTER else 1.0
    value = {t: float(np.mean([table[n][t][args.metric] for n in args.n_points]))
             for t in args.thresholds}
    best = max(args.thresholds, key=lambda t: sign * value[t])
    return {"model": args.model, "data": str(args.data), "split": args.split,
            "shapes": len(shapes), "metric": args.metric, "n_points": args.n_points,
            "noise": args.noise, "mise": [args.resolution0, args.upsampling_steps],
            "seed": args.seed, "previous": card.get("threshold"), "chosen": best,
            "by_threshold": {f"{t:g}": value[t] for t in args.thresholds},
            "table": {str(n): {f"{t:g}": table[n][t] for t in args.thresholds}
                      for n in args.n_points}}


def markdown(result: dict) -> str:
    """The sweep as a table: one row per threshold and input size."""
    lines = [f"# Threshold of {result['model']} on {result['data']} ({result['split']}, "
             f"{result['shapes']} shapes, MISE {result['mise'][0]} x 2^{result['mise'][1]})",
             "", f"Chosen by mean {result['metric']}: **{result['chosen']:g}** "
                 f"(card had {result['previous']:g}).", "",
             "| points | threshold | IoU | Chamfer-L1 | normal cons. | F-score@1% |",
             "|---:|---:|---:|---:|---:|---:|"]
    for n, by_t in result["table"].items():
        for t, m in by_t.items():
            lines.append(f"| {n} | {t} | {m['iou']:.3f} | {m['chamfer_l1']:.4f} | "
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
    card["threshold"] = result["chosen"]
    card["threshold_selection"] = {k: v for k, v in result.items() if k != "model"}
    # The card's test metrics were measured at the threshold it had: say so, not recompute.
    card["threshold_selection"]["metrics_measured_at"] = result["previous"]
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return card_path


def run(args: argparse.Namespace) -> None:
    result = sweep(args)
    out = evaluate.make_folder(args.out)
    (out / "threshold.json").write_text(json.dumps(result, indent=2))
    (out / "report.md").write_text(markdown(result))
    print(markdown(result))
    if args.write_card:
        print(f"wrote threshold {result['chosen']:g} to {write_card(args.model, result)}")


def main(argv: list[str] | None = None) -> int:
    return run_command(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
