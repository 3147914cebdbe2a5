"""Bundle a trained run as a backend model: ``python -m training.bundle RUN_DIR --name NAME``.

Copies the run's best checkpoint (``--checkpoint model_last``: its last) into
``backend/weights/NAME.safetensors`` and writes its card: the training card (config, data,
command, hardware, wall time, validation IoU) plus the test metrics of ``training.evaluate``
reports (``--report DIR``, repeatable: e.g. 3000 and 300 points) and ``default_for`` (the
input kinds, or "sample" for drawing from a prior, for which the CLI and the server pick it
when no model is named; ``--default-max-points N``: only for point clouds of at most N
points, ``backend.io.zoo.default_model_name``). Refuses files over ``--max-mb`` (the
repository keeps every committed weight file forever).
"""

import argparse
import json
import shutil
from pathlib import Path

from backend.errors import UserError, run_command
from backend.io.zoo import BUNDLED_DIR

from .checkpoints import MODEL_BEST, MODEL_LAST

CHECKPOINTS = tuple(Path(file).stem for file in (MODEL_BEST, MODEL_LAST))  # best first
KINDS = ("pointcloud", "voxels", "image", "sample")  # "sample": drawing from a prior


def read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None


def test_metrics(report_dir):
    """The model's metrics from a training.evaluate report folder, with how they were made."""
    summary = read_json(Path(report_dir) / "summary.json")
    try:
        model = summary["methods"]["model"]
    except KeyError:
        raise UserError(f"{report_dir}/summary.json has no 'methods.model' entry; is it a"
                        " training.evaluate report?") from None
    baselines = {method: {"mean_of_classes": result["mean_of_classes"],
                          "seconds_per_shape": result.get("seconds_per_shape")}
                 for method, result in summary["methods"].items() if method != "model"}
    return {"split": summary.get("split"), "input": summary.get("input"),
            "settings": summary.get("settings"), "mean_of_classes": model["mean_of_classes"],
            "per_class": model.get("classes"), "seconds_per_shape":
            model.get("seconds_per_shape"), "baselines": baselines,
            "units": "raw (unit cube); chamfer_l1 x10 is the paper unit"}


def bundle(run_dir, name, reports=(), default_for=(), out_dir=BUNDLED_DIR, max_mb=10.0,
           checkpoint=CHECKPOINTS[0], notes=(), default_max_points=None):
    """Write ``out_dir/name.safetensors`` + card; returns the card written."""
    run_dir = Path(run_dir)
    weights = run_dir / f"{checkpoint}.safetensors"
    if not weights.is_file():
        raise UserError(f"{weights} not found: train first (python -m training.train CONFIG"
                        f" --out {run_dir}); model_best appears at the first validation, "
                        "model_last at the first checkpoint")
    size_mb = weights.stat().st_size / 1e6
    if size_mb > max_mb:
        raise UserError(f"{weights} is {size_mb:.1f} MB, over the {max_mb} MB limit for bundled"
                        " weights; train a narrower config or raise --max-mb deliberately")
    unknown = [kind for kind in default_for if kind not in KINDS]
    if unknown:
        raise UserError(f"--default-for takes {', '.join(KINDS)}; got {', '.join(unknown)}")
    card = read_json(weights.with_suffix(".json"))
    card["name"] = name
    card["default_for"] = list(default_for)
    if default_max_points is not None:
        if "pointcloud" not in default_for:
            raise UserError("--default-max-points bounds a point-cloud default: add"
                            " --default-for pointcloud")
        card["default_max_points"] = int(default_max_points)
    else:
        card.pop("default_max_points", None)
    if notes:  # what the card cannot tell by itself, e.g. a run resumed with another schedule
        card.setdefault("provenance", {})["notes"] = list(notes)
    card.setdefault("metrics", {})["test"] = [test_metrics(report) for report in reports]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for other in out_dir.glob("*.json"):
        claims = read_json(other)
        taken = set(default_for) & set(claims.get("default_for", ()))
        if other.stem != name and taken and \
                claims.get("default_max_points") == card.get("default_max_points"):
            raise UserError(f"{other.stem} is already the default for {', '.join(sorted(taken))};"
                            " edit its card's default_for first")
    shutil.copyfile(weights, out_dir / f"{name}.safetensors")
    (out_dir / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m training.bundle", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--name", required=True, help="model name, e.g. pointcloud_onet_small")
    parser.add_argument("--report", action="append", default=[], metavar="DIR",
                        help="a training.evaluate report folder (repeatable)")
    parser.add_argument("--default-for", action="append", default=[], choices=KINDS)
    parser.add_argument("--default-max-points", type=int, default=None, metavar="N",
                        help="the point-cloud default only for clouds of at most N points")
    parser.add_argument("--out", default=str(BUNDLED_DIR), help="default: backend/weights")
    parser.add_argument("--max-mb", type=float, default=10.0)
    parser.add_argument("--checkpoint", choices=CHECKPOINTS, default=CHECKPOINTS[0],
                        help="which of the run's weights (default model_best; model_last "
                             "where validation does not score what the model is for)")
    parser.add_argument("--note", action="append", default=[],
                        help="a line for the card's provenance (repeatable), e.g. how a run "
                             "was resumed")

    def run(args):
        card = bundle(args.run_dir, args.name, args.report, args.default_for, args.out,
                      args.max_mb, args.checkpoint, notes=args.note,
                      default_max_points=args.default_max_points)
        print(f"{Path(args.out) / args.name}.safetensors: "
              f"{card.get('input_kind') or 'unconditional'} model,"
              f" default for {', '.join(card['default_for']) or 'nothing'}")

    return run_command(run, parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
