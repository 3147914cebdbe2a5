#!/usr/bin/env bash
# CUDA check of the backend on a machine with an NVIDIA GPU and a CUDA build of PyTorch:
# the sample scan reconstructed on the GPU and on the CPU (faces, distance between the meshes),
# the server streaming point-cloud, voxel and tiled jobs with --device cuda, and
# `bench models` on both devices.   Usage: PYTHON=python3 bash scripts/gpu_check.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${1:-out/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" OUT
$PY -m backend reconstruct backend/samples/chair_scan.ply -o "$OUT/chair_cuda.ply" --device cuda --json
$PY -m backend reconstruct backend/samples/chair_scan.ply -o "$OUT/chair_cpu.ply" --device cpu --json
$PY - <<'PY'
import os
import trimesh
from scipy.spatial import cKDTree
out = os.environ["OUT"]
cpu, cuda = (trimesh.load(f"{out}/chair_{d}.ply", process=False) for d in ("cpu", "cuda"))
a, b = cKDTree(cpu.vertices).query(cuda.vertices)[0], cKDTree(cuda.vertices).query(cpu.vertices)[0]
print(f"faces cpu {len(cpu.faces):,} cuda {len(cuda.faces):,}; closed {cpu.is_watertight} "
      f"{cuda.is_watertight}; vertex distance max {max(a.max(), b.max()):.2e} "
      f"mean {(a.mean() + b.mean()) / 2:.2e} (input units: metres, an 80 cm chair)")
PY
$PY - <<'PY'
import time
import numpy as np
from backend.service.client import launch
server = launch(extra_args=["--device", "cuda"])
try:
    d = np.random.default_rng(0).normal(size=(4000, 3))
    ball = (0.3 * d / np.linalg.norm(d, axis=1, keepdims=True)).astype(np.float32)
    started = time.perf_counter()
    kinds = [h["type"] for h, _ in server.client.reconstruct(points=ball)]
    print(f"server cuda points: {kinds} {time.perf_counter() - started:.2f} s")
    voxels = (np.indices((32, 32, 32)) - 15.5) ** 2
    print("server cuda voxels:", [h["type"] for h, _ in server.client.reconstruct(
        voxels=voxels.sum(0) < 100)])
    scene = np.random.default_rng(1).uniform(-1, 1, (200_000, 3)).astype(np.float32)
    scene[:, 1] *= 0.05
    frames = [h for h, _ in server.client.reconstruct(points=scene, tiling={"tile_size": 0.5})]
    print(f"server cuda tiled: {len(frames)} frames, last {frames[-1]['type']}")
finally:
    server.stop()
PY
$PY -m backend.bench models --device cuda
$PY -m backend.bench models --device cpu
