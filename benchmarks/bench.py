"""Benchmarks that print numbers: ``python -m benchmarks [engine|serve|models|voids|scene|
slerp|engines|fit]``.

engine: the paper-size point-cloud ONet (10.4M parameters) on this machine, side by side:
  - dense: every point of the (R + 1)^3 lattice through the decoder,
  - official-style MISE: the module's ``decode()`` (Conv1d layers on (B, C, T), CBN
    recomputed per batch) over 100,000-point batches in fp32, the paper's MISE, as the
    official generator runs, in a child process with glibc malloc tuned (no mmap, no trim:
    ``TUNED_MALLOC``), its best configuration (``python -m benchmarks official`` is that child),
  - ours: the per-shape folded decoder over 16k-point batches: fp32 with the paper's MISE,
    then fp32 and bf16 with MISE skipping points whose sign is certain (the default).
  Evaluations, the network's share of wall time and the final lattice's IoU against the
  official-style fp32 run are printed for every row; each row is the median of --repeats.
A random network has no surface, so the network is first fitted for a few hundred steps to
a closed-form shape (two boxes joined by rods) and cached under ~/.cache/onet-reconstruct;
the surface then has the size and smoothness of a real object's.

serve: time to the first and to the final mesh frame through the HTTP server against the
engine called in-process, and requests per minute with 4 concurrent clients.

models: time per mesh at 32->128 (encoder + MISE + marching cubes) of every bundled
point-cloud model (or --model NAME ...), on the bundled sample scan, side by side, with the
paper's MISE and with the default certainty margin (evaluations, IoU between the two).

voids: each bundled point-cloud model (or --model) on the sample scan of the solid
boxes_rods shape, final meshes with enclosed voids filled (the default) and kept: IoU against
the reconstruction by the shape's exact occupancy function, and the mesh's pieces.

scene: a 1,000,000-point scene (16 noisy copies of the sample scan's shape on a 4 x 4 floor)
reconstructed tile by tile with the bundled point-cloud ConvONet (or --model): seconds,
tiles, mesh size and the process's peak resident memory over the run.

slerp: midpoints of pairs of prior samples of the bundled generative model (or --model),
lerp against slerp of z: the norm (a draw of N(0, I) has norm about sqrt(z_dim)), the share
of prior draws with a smaller norm, and on a dense 33^3 lattice the occupied volume and the
IoU with the prior mean's shape (z = 0) and with the nearer end.

engines: time per mesh of the bundled default point-cloud model on the chair sample at
32->128 with the torch engine (fp32 and its default precision) and the bundled numpy
engine, each in a fresh process with the same thread count for PyTorch and for numpy's
BLAS (--threads, default all cores), best of --repeats; and the IoU of each mesh to the
torch fp32 one.

fit: time per mesh at 32->128 on the sample scan without and with fitting to the points
(``--fit-steps``, default 30) for every bundled point-cloud model (or --model): seconds in
all, of which fitting, per fitting step, and the fit's loss before and after.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from backend.engine.generation import Generator, logit
from backend.engine.runtime import cpu_has_bf16, resolve_device
from backend.engine.request import CERTAINTY_MARGIN, ReconstructRequest, Settings
from backend.engine.mise import dense_lattice, lattice_to_unit, mise
from backend.models import PAPER_CONFIGS, build_model
from backend.models.analytic import SHAPES
from backend.io.cards import DEFAULT_THRESHOLD as THRESHOLD

SAMPLES = Path(__file__).resolve().parents[1] / "backend" / "samples"


def final_frame(request, model, card, device="cpu"):
    """The final mesh frame of ``request`` through the one reconstruct flow."""
    from backend.engine.pipeline import reconstruct

    request.validate(model)
    *_, finished = reconstruct(request, model, card, device)
    return finished.frame

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "onet-reconstruct"


def fitted_paper_model(steps=300, seed=0):
    """Paper-size point-cloud ONet fitted to the analytic 'boxes_rods' shape (cached)."""
    from backend.io.checkpoints import load_model, save_model

    path = CACHE / f"bench_pointcloud_onet_fit{steps}_seed{seed}.safetensors"
    if path.exists():
        return load_model(path)[0], shape_cloud(seed)
    torch.manual_seed(seed)
    model = build_model(PAPER_CONFIGS["pointcloud"])
    cloud = shape_cloud(seed)
    sdf = SHAPES["boxes_rods"]
    # Only the decoder is fitted: the encoder's code for the one input stays fixed, which
    # is all a benchmark of the decoder loop needs, at a third of the cost.
    with torch.no_grad():
        c = model.encode_inputs(cloud)
    optimizer = torch.optim.Adam(model.decoder.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    model.train()
    for step in range(steps):
        # Half uniform in the padded cube, half near the surface, as ONet-style training.
        uniform = rng.uniform(-0.55, 0.55, (1024, 3))
        near = cloud[0, rng.integers(0, cloud.shape[1], 1024)].numpy() \
            + rng.normal(0, 0.03, (1024, 3))
        p = torch.from_numpy(np.concatenate([uniform, near]).astype(np.float32))
        occupancy = (sdf(p) <= 0).float()
        logits = model.decode(p[None], model.prior_z(1), c)[0]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, occupancy)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"  fitting step {step + 1}/{steps}: loss {loss.item():.4f},"
                  f" {time.perf_counter() - started:.0f} s", flush=True)
    model.eval()
    CACHE.mkdir(parents=True, exist_ok=True)
    save_model(path, model, {"threshold": THRESHOLD,
                             "provenance": f"benchmarks fit to boxes_rods, {steps} steps"})
    return model, cloud


def shape_cloud(seed=0, n=3000):
    """(1, n, 3) points on the analytic 'boxes_rods' surface, unit cube."""
    from backend.engine.meshing import marching_cubes
    import trimesh

    decoder = SHAPES["boxes_rods"]
    *_, last = mise(lambda p: (-decoder(torch.from_numpy(p))).numpy(), 32, 2, 0.0)
    mesh = trimesh.Trimesh(*marching_cubes(last.values, 0.0), process=False)
    points, _ = trimesh.sample.sample_surface(mesh, n, seed=seed)
    return torch.from_numpy(points.astype(np.float32))[None]


def official_style(model, cloud, resolution0, steps, batch=100_000):
    """Encoder, MISE and final marching cubes as im2mesh runs them: every batch through
    ``model.decode`` (Conv1d layout, CBN recomputed per batch) in fp32, the paper's MISE.

    Returns (final MISE state, wall seconds, network seconds).
    """
    from backend.engine.meshing import marching_cubes

    started = time.perf_counter()
    with torch.inference_mode():
        c = model.encode_inputs(cloud)
        z = model.prior_z(1)
        timer = [time.perf_counter() - started]

        def evaluate(points):
            start = time.perf_counter()
            out = [model.decode(torch.from_numpy(points[i:i + batch])[None], z, c)[0].numpy()
                   for i in range(0, len(points), batch)]
            timer[0] += time.perf_counter() - start
            return np.concatenate(out)

        *_, last = mise(evaluate, resolution0, steps, logit(THRESHOLD))
        marching_cubes(last.values, logit(THRESHOLD))
    return last, time.perf_counter() - started, timer[0]


# glibc malloc without mmap for large blocks and without trimming: the official code's
# 100k x 256 buffers then reuse the heap instead of page-faulting fresh memory every layer
# (2.5x faster; ../docs FACTS). The official-style loop is compared with this allocator.
TUNED_MALLOC = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184"


def official_worker(args):
    """``python -m benchmarks official``: the official-style loop ``--repeats`` times at
    ``--resolution0``/``--upsampling-steps`` after a warm-up one level short; prints one JSON line
    (wall and network seconds per run, evaluations) and saves the final inside/outside
    lattice to ``--lattice``."""
    import json

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model, cloud = fitted_paper_model()
    model, cloud = model.to(device), cloud.to(device)
    official_style(model, cloud, args.resolution0, max(args.upsampling_steps - 1, 0))  # warm-up
    runs = [official_style(model, cloud, args.resolution0, args.upsampling_steps)
            for _ in range(args.repeats)]
    last = runs[-1][0]
    np.save(args.lattice, last.values >= logit(THRESHOLD))
    print(json.dumps({"wall": [r[1] for r in runs], "network": [r[2] for r in runs],
                      "evaluations": last.evaluations,
                      "glibc_tunables": os.environ.get("GLIBC_TUNABLES", "")}))


def official_tuned(resolution0, steps, args):
    """One run of the official-style loop in a child process with the tuned allocator (an
    allocator is chosen at process start; the child loads the model and warms up first).
    Returns (wall s, network s, evaluations, final inside/outside lattice)."""
    import json
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        lattice = Path(folder) / "inside.npy"
        command = [sys.executable, "-m", "benchmarks", "official", "--resolution0",
                   str(resolution0), "--upsampling-steps", str(steps), "--repeats", "1",
                   "--device", args.device, "--lattice", str(lattice)]
        if args.threads:
            command += ["--threads", str(args.threads)]
        result = subprocess.run(command, env={**os.environ, "GLIBC_TUNABLES": TUNED_MALLOC},
                                cwd=Path(__file__).resolve().parents[1], capture_output=True,
                                text=True)
        if result.returncode:
            raise RuntimeError(f"official-style child failed:\n{result.stderr}")
        report = json.loads(result.stdout.strip().splitlines()[-1])
        inside = np.load(lattice)
    return report["wall"][-1], report["network"][-1], report["evaluations"], inside


def grid_iou(a, b):
    """IoU of two inside/outside lattices (bool arrays)."""
    return (a & b).sum() / max((a | b).sum(), 1)


def ours(model, cloud, resolution0, steps, precision, device, margin, lattice=False):
    """One run of our generator (encoder + MISE + the final mesh: voids filled, marching
    cubes), MISE with ``margin`` (None: the paper's MISE).

    Returns (final frame, final inside/outside lattice before filling, or None).
    """
    settings = Settings(resolution0, steps, THRESHOLD, precision=precision,
                        mesh_every_level=False, certainty_margin=margin)
    generator = Generator(model, {"threshold": THRESHOLD}, device, settings)
    started = time.perf_counter()
    code = generator.encode(cloud)
    frame = list(generator.frames(code, started=started))[-1]
    if not lattice:
        return frame, None
    evaluate = generator.evaluator(generator.decoder(code), [0.0])
    *_, last = mise(evaluate, resolution0, steps, logit(THRESHOLD), margin)
    return frame, last.values >= logit(THRESHOLD)


def median(values):
    return sorted(values)[len(values) // 2]


def dense_seconds(model, cloud, resolution, full, device):
    """Seconds to evaluate the dense lattice with our fp32 decoder (measured or estimated)."""
    generator = Generator(model, {"threshold": THRESHOLD}, device, Settings(precision="fp32"))
    code = generator.encode(cloud)
    points = lattice_to_unit(dense_lattice(resolution), resolution)
    if not full and len(points) > 100_000:
        sample = points[:: len(points) // 50_000][:50_000]
        started = time.perf_counter()
        generator.logits(code, sample)
        return (time.perf_counter() - started) * len(points) / len(sample), "est."
    started = time.perf_counter()
    generator.logits(code, points)
    return time.perf_counter() - started, ""


def row(config, method, seconds, evaluations, dense_points, network=None, iou=None,
        reference=None):
    share = f"{100 * network / seconds:>9.0f}%" if network is not None else ""
    speedup = f"{reference / seconds:>7.2f}x" if reference else ""
    print(f"{config:<9} {method:<34} {seconds:>8.2f} {speedup:>8} {evaluations:>10,}"
          f" {100 * evaluations / dense_points:>7.1f}% {evaluations / seconds:>9,.0f}"
          f" {share:>10} {'' if iou is None else f'{iou:.4f}':>11}", flush=True)


def engine(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(f"engine benchmark: torch {torch.__version__}, {torch.get_num_threads()} threads,"
          f" device {device}, CPU bf16: {cpu_has_bf16()}, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    model, cloud = fitted_paper_model()
    model, cloud = model.to(device), cloud.to(device)
    params = sum(p.numel() for p in model.parameters())
    print(f"paper-size point-cloud ONet, {params / 1e6:.1f}M parameters, 3000-point input;"
          f" median of {args.repeats} paired runs per row\n")
    header = (f"{'config':<9} {'method':<34} {'seconds':>8} {'speed-up':>8} {'evals':>10}"
              f" {'% dense':>8} {'evals/s':>9} {'network':>10} {'IoU vs fp32':>11}")
    print(header)
    print("-" * len(header))
    precisions = ["fp32", "bf16"] if cpu_has_bf16() else ["fp32"]
    if device.type == "cuda":
        precisions = ["fp32", "auto"]
    for resolution0, steps in [(32, 2), (32, 3)]:
        finest = resolution0 * 2 ** steps
        config = f"{resolution0}->{finest}"
        dense_points = (finest + 1) ** 3
        seconds, note = dense_seconds(model, cloud, finest, args.full, device)
        row(config, f"dense lattice, ours fp32 {note}", seconds, dense_points, dense_points)
        rows = [("fp32", None, "ours fp32, paper MISE")]
        rows += [(p, CERTAINTY_MARGIN, f"ours {p}, margin {CERTAINTY_MARGIN:g}")
                 for p in precisions]
        for precision, margin, _ in rows:  # warm-up: first-call costs of each path
            ours(model, cloud, resolution0, steps, precision, device, margin)
        # Paired: each repeat runs the official-style child, then every row of ours, so
        # load from other processes falls on all of them alike; medians over repeats.
        official, runs = [], {label: [] for *_, label in rows}
        for repeat in range(args.repeats):
            official.append(official_tuned(resolution0, steps, args))
            for precision, margin, label in rows:
                runs[label].append(ours(model, cloud, resolution0, steps, precision, device,
                                        margin, lattice=repeat == 0))
        reference = official[0][3]
        wall = median([run[0] for run in official])
        network = median([run[1] for run in official])
        row(config, "official-style, tuned malloc", wall, official[0][2], dense_points,
            network, 1.0, wall)
        for *_, label in rows:
            frames = sorted((frame for frame, _ in runs[label]), key=lambda f: f.seconds)
            frame = frames[len(frames) // 2]
            row(config, label, frame.seconds, frame.evaluations, dense_points,
                frame.network_seconds, grid_iou(runs[label][0][1], reference), wall)
        print()
    print(f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}.\n"
          "Every row but 'dense' includes the encoder, MISE and marching cubes of the final"
          " level (ours: enclosed\nvoids filled too). official-style: im2mesh's loop"
          " (module decode, 100k batches, fp32) in a child\nprocess with GLIBC_TUNABLES="
          f"{TUNED_MALLOC}. network: share of wall time in the\nnetwork forward (encoder +"
          " decoder). IoU: final inside/outside lattice vs the official-style fp32 run.")


def bench_model():
    """(name, folder) of the model the service bench uses: the bundled point-cloud default,
    else the fitted paper-size ONet from the engine bench (saved in the cache folder)."""
    from backend.io import zoo
    from backend.errors import UserError

    try:
        return zoo.default_model_name("pointcloud"), None
    except UserError:
        fitted_paper_model()
        return "bench_pointcloud_onet_fit300_seed0", str(CACHE)


def timed_stream(frames):
    """Consume a frame iterator; returns (seconds to first mesh frame, to the final frame)."""
    started = time.perf_counter()
    first = None
    for frame in frames:
        if first is None:
            first = time.perf_counter() - started
    return first, time.perf_counter() - started


def service(args):
    from threading import Thread

    from backend.io import zoo
    from backend.service.client import launch
    from backend.io.inputs import PointCloudInput
    from backend.engine.pipeline import MeshFrame, reconstruct

    name, folder = bench_model()
    cloud = shape_cloud()[0].numpy() * 2.0 + 1.0  # a scan in its own frame
    print(f"service benchmark: model {name}, 3000-point cloud, 32->128, best of"
          f" {args.repeats}")
    model, card = zoo.load(name, "cpu", [folder] if folder else ())

    def in_process():
        return (event for event in reconstruct(ReconstructRequest(PointCloudInput(cloud)),
                                               model, card) if isinstance(event, MeshFrame))

    server = launch(cwd=Path(__file__).resolve().parents[1],
                    extra_args=["--models", folder] if folder else [])
    try:
        def over_http():
            return (frame for frame in server.client.reconstruct(points=cloud, model=name)
                    if frame[0]["type"] == "mesh")

        for run in (in_process, over_http):  # warm up: load, allocate, first-call costs
            timed_stream(run())
        results = {}
        for label, run in [("in-process engine", in_process), ("server (HTTP, loopback)",
                                                                over_http)]:
            times = [timed_stream(run()) for _ in range(args.repeats)]
            results[label] = (min(t[0] for t in times), min(t[1] for t in times))
        print(f"{'path':<26} {'first mesh frame':>17} {'final frame':>12}")
        for label, (first, final) in results.items():
            print(f"{label:<26} {first:>16.3f}s {final:>11.3f}s")
        engine, http = results.values()
        print(f"server overhead on the final frame: {100 * (http[1] / engine[1] - 1):+.1f}%")

        done = []

        def client_loop():
            for _ in range(args.requests):
                timed_stream(over_http())
                done.append(1)

        threads = [Thread(target=client_loop) for _ in range(4)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        print(f"4 concurrent clients: {len(done)} requests in {elapsed:.1f} s ="
              f" {60 * len(done) / elapsed:.0f} requests per minute")
    finally:
        server.stop()


def point_cloud_models(names):
    """The names given, else every bundled model that reconstructs point clouds."""
    from backend.io import zoo

    if names:
        return names
    return [name for name, card in zoo.catalogue().items()
            if not name.startswith(zoo.ANALYTIC_PREFIX)
            and card.get("config", {}).get("input_kind") == "pointcloud"]


def models(args):
    """Time per mesh of each point-cloud model at 32->128 on the sample scan."""
    from backend.io import zoo
    from backend.io.inputs import read_input
    from backend.engine.pipeline import prepare

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    scan = read_input(SAMPLES / "boxes_rods_scan.ply")
    print(f"time per mesh, 32->128, sample scan ({len(scan.points)} points), torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, device {device}\n")
    header = (f"{'model':<34} {'params':>8} {'MISE':>9} {'seconds':>8} {'encoder s':>9}"
              f" {'evals':>9} {'faces':>8} {'IoU vs paper':>12}")
    print(header)
    print("-" * len(header))
    for name in point_cloud_models(args.model):
        model, card = zoo.load(name, device)
        params = sum(p.numel() for p in model.parameters())
        reference = None
        for margin in (None, CERTAINTY_MARGIN):
            settings = Settings(32, 2, mesh_every_level=False, certainty_margin=margin)
            best = None
            for _ in range(args.repeats):
                frame = final_frame(ReconstructRequest(scan, settings=settings), model, card,
                                    device)
                if best is None or frame.seconds < best.seconds:
                    best = frame
            generator = Generator(model, card, device, settings)
            code = generator.encode(prepare(scan, model, card).inputs)
            threshold = logit(generator.threshold)
            *_, last = mise(generator.evaluator(generator.decoder(code), [0.0]), 32, 2,
                            threshold, margin)
            inside = last.values >= threshold
            reference = inside if reference is None else reference
            label = "paper" if margin is None else f"margin {margin:g}"
            print(f"{name:<34} {params / 1e6:>7.2f}M {label:>9} {best.seconds:>8.2f}"
                  f" {code.encode_seconds:>9.3f} {best.evaluations:>9,} {len(best.faces):>8,}"
                  f" {grid_iou(inside, reference):>12.4f}", flush=True)
    print(f"\nBest of {args.repeats} runs; each includes input preparation, the encoder, MISE"
          " and marching cubes.\nMISE: the paper's, or skipping points whose sign is certain"
          " (Settings.certainty_margin, logits);\nIoU: the final inside/outside lattice against"
          " the paper MISE's.")


def fit_time(args):
    """Seconds per mesh at 32->128 on the sample scan, unfitted and fitted."""
    from backend.engine.pipeline import reconstruct
    from backend.io import zoo
    from backend.io.inputs import read_input

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    scan = read_input(SAMPLES / "boxes_rods_scan.ply")
    print(f"fit to the points, 32->128, sample scan ({len(scan.points)} points), torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, device {device}\n")
    header = (f"{'model':<30} {'steps':>5} {'seconds':>8} {'fit s':>7} {'s/step':>7}"
              f" {'loss before':>11} {'loss after':>10}")
    print(header)
    print("-" * len(header))
    for name in point_cloud_models(args.model):
        model, card = zoo.load(name, device)
        for steps in (0, args.fit_steps):
            settings = Settings(32, 2, fit_steps=steps, mesh_every_level=False)
            best = None
            for _ in range(args.repeats):
                *_, finished = reconstruct(ReconstructRequest(scan, settings=settings),
                                           model, card, device)
                if best is None or finished.summary["seconds"] < best.summary["seconds"]:
                    best = finished
            fitted = best.summary.get("fit")
            columns = (f"{fitted['seconds']:>7.2f} {fitted['seconds'] / steps:>7.3f} "
                       f"{fitted['initial_loss']:>11.4f} {fitted['final_loss'] or 0:>10.4f}"
                       if fitted else f"{'':>7} {'':>7} {'':>11} {'':>10}")
            print(f"{name:<30} {steps:>5} {best.summary['seconds']:>8.2f} {columns}",
                  flush=True)
    print(f"\nBest of {args.repeats} runs; seconds from the input to the final mesh.")


def voids(args):
    """IoU against the analytic shape, with and without filling enclosed voids."""
    from backend.io import zoo
    from backend.io.inputs import read_input
    from backend.engine.inside import contains
    from backend.engine.meshing import shells
    device = resolve_device(args.device)
    scan = read_input(SAMPLES / "boxes_rods_scan.ply")

    def final_mesh(model, card, fill):
        settings = Settings(32, 2, fill_cavities=fill, mesh_every_level=False)
        frame = final_frame(ReconstructRequest(scan, settings=settings), model, card, device)
        return frame.vertices, frame.faces

    reference = final_mesh(*zoo.load(zoo.ANALYTIC_PREFIX + "boxes_rods", device), True)
    low, high = reference[0].min(axis=0), reference[0].max(axis=0)
    middle, size = (low + high) / 2, 1.1 * (high - low).max()
    points = middle + (np.random.default_rng(0).random((60_000, 3)) - 0.5) * size
    inside = contains(*reference, points, closed=True)
    print("boxes_rods sample scan (3000 points), MISE 32 -> 128; IoU on 60,000 points against "
          "the mesh of the exact occupancy\n")
    header = f"{'model':<34} {'voids':>6} {'IoU':>6} {'pieces':>7} {'volume':>8} {'faces':>8}"
    print(header)
    print("-" * len(header))
    for name in point_cloud_models(args.model):
        model, card = zoo.load(name, device)
        for fill in (False, True):
            vertices, faces = final_mesh(model, card, fill)
            predicted = contains(vertices, faces, points, closed=True)
            iou = (inside & predicted).sum() / max((inside | predicted).sum(), 1)
            labels, volumes = shells(vertices, faces)
            pieces = len(np.unique(labels[faces[:, 0]]))
            print(f"{name:<34} {'filled' if fill else 'kept':>6} {iou:>6.3f} {pieces:>7} "
                  f"{volumes.sum():>8.4f} {len(faces):>8,}", flush=True)


def scene_cloud(total=1_000_000, copies=4, spacing=1.2, noise=0.005, seed=0):
    """(total, 3) float32: copies x copies noisy copies of the sample scan's shape, each
    turned about the up axis (y) at random, ``spacing`` apart on the floor (x, z)."""
    from backend.io.inputs import read_input

    rng = np.random.default_rng(seed)
    shape = read_input(SAMPLES / "boxes_rods_scan.ply").points
    shape = (shape - (shape.min(axis=0) + shape.max(axis=0)) / 2) / np.ptp(shape, axis=0).max()
    per_copy = total // copies ** 2
    parts = []
    for i in range(copies):
        for k in range(copies):
            angle = rng.uniform(0, 2 * np.pi)
            turn = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0],
                             [-np.sin(angle), 0, np.cos(angle)]])
            points = shape[rng.integers(len(shape), size=per_copy)] @ turn.T
            points += noise * rng.standard_normal(points.shape)
            parts.append(points + np.array([i * spacing, 0, k * spacing]))
    return np.concatenate(parts).astype(np.float32)


def scene(args):
    """A 1M-point scene, tile by tile: time, tiles and peak memory."""
    import resource

    from backend.io import zoo
    from backend.engine.tiling import reconstruct_tiled, tiled_result

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    name = (args.model or [zoo.default_model_name("pointcloud")])[0]
    model, card = zoo.load(name, device)
    cloud = scene_cloud()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"scene: {len(cloud):,} points, extent {np.ptp(cloud, axis=0).round(2)}, model "
          f"{name}, {torch.get_num_threads()} threads, device {device}; peak memory before "
          f"reconstructing {rss:.0f} MB (Python, torch, model, the cloud)\n")
    header = (f"{'cells/tile':>10} {'tile points':>11} {'tiles':>9} {'run':>4} {'seconds':>8}"
              f" {'evals':>11} {'faces':>10} {'peak MB':>8} {'whole lattice MB':>17}")
    print(header)
    print("-" * len(header))
    for resolution0, steps in [(16, 2), (32, 2)]:
        generator = Generator(model, card, device, Settings(resolution0, steps))
        result = tiled_result(reconstruct_tiled(generator, card, cloud, crop_size=1.0))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        grid = result.grid
        print(f"{grid.cells:>10} {card.get('input_points') or 3000:>11,} "
              f"{'x'.join(map(str, grid.counts)):>9} {result.tiles_run:>4} "
              f"{result.seconds:>8.1f} {result.evaluations:>11,} {len(result.faces):>10,} "
              f"{peak:>8.0f} {grid.lattice_bytes / 2**20:>17,.0f}", flush=True)
    print("\npeak MB: the process's peak resident memory so far (ru_maxrss), which includes "
          "what came before;\nwhole lattice MB: what one lattice over the scene would take "
          "in float32 (never allocated).")


def slerp_midpoints(args):
    """Lerp vs slerp midpoints of prior-sample pairs: norms and shapes."""
    from backend.engine.generation import ShapeCode, slerp
    from backend.io import zoo

    device = resolve_device(args.device)
    name = (args.model or [zoo.default_model_name("sample")])[0]
    model, card = zoo.load(name, device)
    generator = Generator(model, card, device, Settings(precision="fp32"))
    lattice = lattice_to_unit(dense_lattice(32), 32)
    threshold = logit(generator.threshold)

    def occupied(z):
        code = ShapeCode(model.encode_inputs(None), z)
        return generator.logits(code, lattice) > threshold

    def iou(a, b):
        return (a & b).sum() / max((a | b).sum(), 1)

    dim = model.z_dim
    shell = np.sort(np.linalg.norm(np.random.default_rng(0).normal(size=(20000, dim)), axis=1))
    mean_shape = occupied(torch.zeros(1, dim, device=device))
    rows = {key: [] for key in ("ends", "lerp", "slerp")}
    for pair in range(args.pairs):
        a, b = (generator.sample(seed).z for seed in (2 * pair, 2 * pair + 1))
        shapes = [occupied(a), occupied(b)]
        for key, z, shape in [("ends", a, shapes[0]), ("ends", b, shapes[1]),
                              ("lerp", torch.lerp(a, b, 0.5), None),
                              ("slerp", slerp(a, b, 0.5), None)]:
            shape = occupied(z) if shape is None else shape
            norm = float(z.norm())
            nearer = 1.0 if key == "ends" else max(iou(shape, end) for end in shapes)
            rows[key].append((norm / np.sqrt(dim), np.searchsorted(shell, norm) / len(shell),
                              shape.mean(), iou(shape, mean_shape), nearer))
    print(f"{name} (z_dim {dim}): {args.pairs} pairs of prior samples (seeds 2i, 2i + 1), "
          "midpoints t = 0.5; dense 33^3 lattice, mean over shapes\n")
    header = (f"{'z':<6} {'|z|/sqrt(d)':>11} {'prior below':>11} {'volume':>7} "
              f"{'IoU z=0':>8} {'IoU end':>8}")
    print(header)
    print("-" * len(header))
    for key, values in rows.items():
        norm, below, volume, to_mean, nearer = np.mean(values, axis=0)
        print(f"{key:<6} {norm:>11.3f} {below:>11.3f} {volume:>7.3f} {to_mean:>8.3f} "
              f"{nearer:>8.3f}")


ENGINE_RUNS = (("torch", "fp32"), ("torch", "auto"), ("bundled", "auto"))
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def engine_run(engine, precision, repeats):
    """One engine's best time per mesh on the chair sample (run in a fresh process):
    {seconds, network_seconds, faces, vertices, faces_array...} as JSON-ready lists."""
    from backend.cli import load_model
    from backend.io.inputs import read_input

    scan = read_input(SAMPLES / "chair_scan.ply")
    name, model, card, device = load_model(None, "pointcloud", "cpu", engine)
    settings = Settings(32, 2, precision=precision, mesh_every_level=False)
    final_frame(ReconstructRequest(scan, settings=settings), model, card, device)  # warm-up
    best = None
    for _ in range(repeats):
        frame = final_frame(ReconstructRequest(scan, settings=settings), model, card, device)
        if best is None or frame.seconds < best.seconds:
            best = frame
    return {"model": name, "seconds": best.seconds, "network_seconds": best.network_seconds,
            "evaluations": best.evaluations, "torch_threads": torch.get_num_threads(),
            "precision": Generator(model, card, device, settings).precision_name,
            "vertices": best.vertices.tolist(), "faces": best.faces.tolist()}


def engines(args):
    """Time per mesh of the default point-cloud model, torch engine against bundled."""
    from backend.engine.inside import contains

    threads = args.threads or os.cpu_count()
    env = dict(os.environ, **{name: str(threads) for name in THREAD_VARIABLES})
    results = {}
    for engine, precision in ENGINE_RUNS:
        command = [sys.executable, "-m", "benchmarks", "engines", "--engine-run",
                   f"{engine}:{precision}", "--repeats", str(args.repeats),
                   "--threads", str(threads)]
        done = subprocess.run(command, env=env, capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parents[1])
        if done.returncode:
            raise SystemExit(f"{engine}:{precision} failed:\n{done.stderr[-2000:]}")
        results[engine, precision] = json.loads(done.stdout.strip().splitlines()[-1])
    reference = results["torch", "fp32"]
    mesh = [np.asarray(reference["vertices"]), np.asarray(reference["faces"])]
    lo, hi = mesh[0].min(0), mesh[0].max(0)
    probes = np.random.default_rng(0).uniform(lo - 0.05, hi + 0.05, (100_000, 3))
    inside = contains(*mesh, probes, closed=True)
    first = next(iter(results.values()))
    print(f"time per mesh, {first['model']}, chair sample, 32->128, {threads} threads "
          f"(torch.set_num_threads and {', '.join(THREAD_VARIABLES)}), best of "
          f"{args.repeats} after a warm-up, each engine in its own process\n")
    header = (f"{'engine':<8} {'precision':<9} {'seconds':>8} {'network s':>9} "
              f"{'vs torch':>8} {'evals':>9} {'faces':>8} {'IoU to fp32':>11}")
    print(header)
    print("-" * len(header))
    torch_default = results["torch", "auto"]["seconds"]
    for (engine, _), run in results.items():
        other = contains(np.asarray(run["vertices"]), np.asarray(run["faces"]), probes,
                         closed=True)
        iou = (inside & other).sum() / (inside | other).sum()
        print(f"{engine:<8} {run['precision']:<9} {run['seconds']:>8.2f} "
              f"{run['network_seconds']:>9.2f} {run['seconds'] / torch_default:>7.2f}x "
              f"{run['evaluations']:>9,} {len(run['faces']):>8,} {iou:>11.4f}")
    print("\nseconds: input preparation, encoder, MISE, void filling and marching cubes; "
          "vs torch: against the torch engine's default precision.")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="?", default="engine",
                        choices=["engine", "serve", "models", "voids", "scene", "slerp",
                                 "engines", "fit", "official"])
    parser.add_argument("--engine-run", metavar="ENGINE:PRECISION",
                        help=argparse.SUPPRESS)  # engines: one run, in the child process
    parser.add_argument("--model", nargs="+", help="models, voids, scene: model names or paths "
                        "(default: the bundled point-cloud models); slerp: one generative "
                        "model (default: the bundled one)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="engine, serve, models: runs per row")
    parser.add_argument("--pairs", type=int, default=50, help="slerp: pairs of prior samples")
    parser.add_argument("--requests", type=int, default=3,
                        help="serve: requests per concurrent client")
    parser.add_argument("--full", action="store_true",
                        help="time every dense lattice point instead of estimating from 250k")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    parser.add_argument("--fit-steps", type=int, default=30, help="fit: fitting steps")
    parser.add_argument("--resolution0", type=int, default=32, help="official: MISE start")
    parser.add_argument("--upsampling-steps", type=int, default=2, help="official: MISE levels")
    parser.add_argument("--lattice", type=Path, help="official: .npy for the final lattice")
    args = parser.parse_args(argv)
    if args.engine_run:
        torch.set_num_threads(args.threads)
        print(json.dumps(engine_run(*args.engine_run.split(":"), args.repeats)))
        return
    {"engines": engines, "engine": engine, "serve": service, "models": models, "voids": voids,
     "scene": scene, "slerp": slerp_midpoints, "fit": fit_time,
     "official": official_worker}[args.which](args)

