"""Generative model quality: posterior reconstructions and prior samples against a split.

``python -m training.generative --model M --data DIR --out REPORT_DIR [--split test]
[--categories a,b] [--samples 32] [--limit N] [--surface-points 5000]
[--thresholds 0.2 0.3 ...] [--seed 0]``

The measures of a generative ONet (a VAE with a latent encoder q(z | p, occ)):

- **Posterior IoU**, the paper's reconstruction score and the trainer's validation: each split
  shape's training-style labelled points (``data.points`` of the model card's config, half
  of them near the surface) give the mean of q(z | p, occ); decoded at the shape's uniform
  IoU points, thresholded at the card's threshold (and each of ``--thresholds``: on the
  validation split, the way to choose a card's threshold), against their labels. Mean over
  shapes.
- **Samples against the split** (Achlioptas et al. 2018): z ~ N(0, I) for seeds 0..S-1,
  each meshed through the backend's one flow (``pipeline.reconstruct`` of a ``Sample``, as
  ``python -m backend sample`` does); Chamfer-L1 (training/metrics.py) between
  ``--surface-points`` points on every sample and on every split shape. MMD: the mean over
  split shapes of the distance to the nearest sample (lower is better); COV: the share of
  split shapes that are the nearest split shape of at least one sample (higher is better).
  The same two for S shapes of the training split in place of samples are the reference a
  perfect model would reach ("training shapes"; left out when the split is empty).

REPORT_DIR receives ``report.md``, ``summary.json`` and ``samples.png`` (the first 16
samples).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

import numpy as np

from backend.errors import UserError, run_command
from backend.io.cards import DEFAULT_THRESHOLD

from . import metrics
from .config import SCHEMA
from .data.fields import MixedPointsField, PointsField
from .evaluate import find_shapes, load_npz, make_folder

log = logging.getLogger(__name__)

GALLERY_SAMPLES = 16


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.generative",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True,
                        help="generative model (bundled name, .safetensors or official .pt)")
    parser.add_argument("--data", required=True, type=Path, help="dataset folder")
    parser.add_argument("--out", required=True, type=Path, help="report folder to write")
    parser.add_argument("--split", default="test", help="train, val or test (default test)")
    parser.add_argument("--categories", help="comma-separated category folders (default all)")
    parser.add_argument("--samples", type=int, default=32,
                        help="prior samples (seeds 0..S-1) and reference training shapes")
    parser.add_argument("--limit", type=int, help="at most N shapes per class")
    parser.add_argument("--surface-points", type=int, default=5000,
                        help="points per surface for the Chamfer distances (default 5000)")
    parser.add_argument("--resolution0", type=int, default=32, help="MISE start resolution")
    parser.add_argument("--upsampling-steps", type=int, default=2,
                        help="MISE levels after the first")
    parser.add_argument("--thresholds", type=float, nargs="+",
                        help="also score the posterior at these probabilities (on validation "
                             "data: to choose the card's threshold)")
    parser.add_argument("--seed", type=int, default=0, help="seed of points and sampling")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    return parser


def check_args(args: argparse.Namespace) -> None:
    for name in ("samples", "surface_points", "resolution0"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1")
    if args.upsampling_steps < 0:
        raise UserError("--upsampling-steps must be >= 0")
    if args.thresholds and not all(0 < t < 1 for t in args.thresholds):
        raise UserError("--thresholds are probabilities in (0, 1)")
    if args.limit is not None and args.limit < 1:
        raise UserError("--limit must be >= 1")


def training_points(card: dict) -> MixedPointsField:
    """The labelled points the model was trained on: its card's training config's
    ``data.points`` and ``data.near_share`` (the config defaults for other checkpoints)."""
    data = card.get("provenance", {}).get("config", {}).get("data") or {}
    return MixedPointsField(data.get("points", SCHEMA["data"]["points"].default),
                            data.get("near_share", SCHEMA["data"]["near_share"].default))


def posterior_iou(model, field: MixedPointsField, folder: Path, rng: np.random.Generator,
                  device, thresholds: list[float]) -> list[float]:
    """IoU of the decoded posterior mean of one shape at its uniform points (see the module
    docstring), as the trainer validates, at each of ``thresholds`` (probabilities)."""
    import torch

    labelled = field.load(folder, rng)
    uniform = PointsField().load(folder, rng)
    with torch.no_grad():
        c = model.encode_inputs(None)
        z, _ = model.infer_z(torch.as_tensor(labelled[None])[None].to(device),
                             torch.as_tensor(labelled["occ"])[None].to(device), c)
        logits = model.decode(torch.as_tensor(uniform[None])[None].to(device), z, c)
    logits = logits[0].float().cpu().numpy()
    return [metrics.iou(logits > math.log(t / (1 - t)), uniform["occ"] >= 0.5)
            for t in thresholds]


def sample_meshes(model, card, device, args) -> list[tuple[np.ndarray, np.ndarray]]:
    """(vertices (V, 3) float32, faces (F, 3) int32) of the prior samples, seeds 0..S-1."""
    from tqdm import tqdm

    from backend.engine import pipeline
    from backend.engine.request import ReconstructRequest, Sample, Settings

    settings = Settings(args.resolution0, args.upsampling_steps, mesh_every_level=False)
    meshes = []
    for seed in tqdm(range(args.samples), desc="samples", unit="shape"):
        request = ReconstructRequest(Sample(seed), settings=settings)
        request.validate(model)
        *_, finished = pipeline.reconstruct(request, model, card, device)
        meshes.append((finished.frame.vertices, finished.frame.faces))
    return meshes


def surface_cloud(folder: Path, count: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` of a shape's surface points and normals (``pointcloud.npz``; (count, 3)
    each), drawn without replacement."""
    surface = load_npz(folder / "pointcloud.npz", ("points", "normals"))
    keep = rng.choice(len(surface["points"]), min(count, len(surface["points"])),
                      replace=False)
    return surface["points"][keep], surface["normals"][keep]


def chamfer_matrix(candidates: list, references: list) -> np.ndarray:
    """Chamfer-L1 (float64 (C, R)) between every candidate and reference (points, normals);
    inf for an empty candidate."""
    distances = np.full((len(candidates), len(references)), np.inf)
    for i, (points, normals) in enumerate(candidates):
        if len(points):
            for j, (ref_points, ref_normals) in enumerate(references):
                distances[i, j] = metrics.pointcloud_metrics(points, normals, ref_points,
                                                             ref_normals)["chamfer_l1"]
    return distances


def mmd_cov(distances: np.ndarray) -> dict[str, float]:
    """MMD and COV of candidate-by-reference distances (C, R); see the module docstring."""
    return {"mmd_chamfer_l1": float(distances.min(axis=0).mean()),
            "coverage": float(len(np.unique(distances.argmin(axis=1))) / distances.shape[1])}


def evaluate(args: argparse.Namespace) -> dict:
    """Score the model (module docstring); returns the summary written to REPORT_DIR."""
    from tqdm import tqdm

    from backend.engine.runtime import resolve_device
    from backend.io import zoo
    from backend.io.render import gallery

    check_args(args)
    device = resolve_device(args.device)
    model, card = zoo.load(args.model, device)
    if getattr(model, "input_kind", None) is not None or not getattr(model, "z_dim", 0):
        raise UserError(f"{args.model} is not a generative model (it has no latent encoder "
                        "and prior); pass an unconditional one")
    model.eval()
    shapes, names = find_shapes(args.data, args.split, args.categories, "pointcloud",
                                args.limit)
    train, _ = find_shapes(args.data, "train", args.categories, "pointcloud", None)
    out = make_folder(args.out)
    rng = np.random.default_rng(args.seed)

    threshold = float(card.get("threshold", DEFAULT_THRESHOLD))
    thresholds = sorted({threshold, *(args.thresholds or [])})
    field = training_points(card)
    ious = np.mean([posterior_iou(model, field, ref.folder, rng, device, thresholds)
                    for ref in tqdm(shapes, desc="posterior", unit="shape")], axis=0)
    references = [surface_cloud(ref.folder, args.surface_points, rng) for ref in shapes]
    meshes = sample_meshes(model, card, device, args)
    samples = [metrics.sample_surface(v, f, args.surface_points, args.seed + i) if len(f)
               else (np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32))
               for i, (v, f) in enumerate(meshes)]
    picked = rng.permutation(len(train))[:args.samples]
    training = [surface_cloud(train[i].folder, args.surface_points, rng) for i in picked]
    summary = {
        "model": args.model, "data": str(args.data), "split": args.split,
        "categories": sorted(names), "shapes": len(shapes), "threshold": threshold,
        "posterior_iou": float(ious[thresholds.index(threshold)]),
        "posterior_iou_by_threshold": {f"{t:g}": float(v) for t, v in zip(thresholds, ious)},
        "best_threshold": thresholds[int(ious.argmax())],
        "samples": {"count": len(meshes), "empty": sum(len(f) == 0 for _, f in meshes),
                    **mmd_cov(chamfer_matrix(samples, references))},
        "training_shapes": ({"count": len(training),
                             **mmd_cov(chamfer_matrix(training, references))}
                            if training else None),
        "settings": {"surface_points": args.surface_points, "resolution0": args.resolution0,
                     "upsampling_steps": args.upsampling_steps, "seed": args.seed},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "report.md").write_text(markdown(summary))
    shown = meshes[:GALLERY_SAMPLES]
    gallery(shown, [f"seed {i}" for i in range(len(shown))],
            math.ceil(math.sqrt(len(shown)))).save(out / "samples.png")
    reference = summary["training_shapes"]
    print(f"{args.model}: posterior IoU {summary['posterior_iou']:.3f} on {len(shapes)} "
          f"{args.split} shapes; samples MMD {summary['samples']['mmd_chamfer_l1']:.4f}, "
          f"COV {summary['samples']['coverage']:.2f}"
          + (f" (training shapes: {reference['mmd_chamfer_l1']:.4f}, "
             f"{reference['coverage']:.2f})" if reference else "") + f"; report in {out}")
    return summary


def markdown(summary: dict) -> str:
    """The report: posterior IoU, then MMD / COV of the samples and the training shapes."""
    samples, training = summary["samples"], summary["training_shapes"]
    return "\n".join([
        f"# Generative model: {summary['model']}", "",
        f"Data `{summary['data']}`, split {summary['split']} ({summary['shapes']} shapes: "
        f"{', '.join(summary['categories'])}), threshold {summary['threshold']:g}.", "",
        f"Posterior IoU (decoded posterior means, threshold {summary['threshold']:g}): "
        f"**{summary['posterior_iou']:.3f}**", "",
        "| threshold | " + " | ".join(summary["posterior_iou_by_threshold"]) + " |",
        "|---" * (len(summary["posterior_iou_by_threshold"]) + 1) + "|",
        "| posterior IoU | " + " | ".join(f"{v:.3f}" for v in
                                          summary["posterior_iou_by_threshold"].values())
        + " |", "",
        "| against the split | shapes | MMD (Chamfer-L1) | COV |", "|---|---:|---:|---:|",
        f"| prior samples (seeds 0..{samples['count'] - 1}; {samples['empty']} empty) | "
        f"{samples['count']} | {samples['mmd_chamfer_l1']:.4f} | {samples['coverage']:.2f} |",
        *([f"| training shapes (the reference) | {training['count']} | "
           f"{training['mmd_chamfer_l1']:.4f} | {training['coverage']:.2f} |"]
          if training else []), "",
        "MMD: mean over the split's shapes of the Chamfer-L1 to the nearest candidate; COV: "
        "share of the split's shapes that are some candidate's nearest. "
        f"{summary['settings']['surface_points']} points per surface.", ""])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(evaluate, args)


if __name__ == "__main__":
    sys.exit(main())
