"""Classic reconstructions that evaluation reports next to the networks'.

- ``voxel_mesh``: marching cubes of the input occupancy grid (the voxel baseline of ONet).
- ``poisson_mesh``: screened Poisson surface reconstruction (Kazhdan & Hoppe 2013) of a point
  cloud through pymeshlab, with normals estimated from the points, the baseline ConvONet
  reports. pymeshlab is an optional dependency (``pip install -r requirements-eval.txt``).
"""

from __future__ import annotations

import numpy as np

from backend.errors import UserError

POISSON_DEPTH = 8
NORMAL_NEIGHBOURS = 10


def voxel_mesh(occupancy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes of an (n, n, n) occupancy grid over [-0.5, 0.5]^3, padded with empty
    voxels so it is closed: vertices (V, 3) float32 in the grid's frame, faces (F, 3)."""
    import mcubes

    n = occupancy.shape[0]
    vertices, faces = mcubes.marching_cubes(np.pad(occupancy.astype(np.float32), 1), 0.5)
    # Padded index j is voxel j - 1, whose centre lies at -0.5 + (j - 0.5) / n.
    return (-0.5 + (vertices - 0.5) / n).astype(np.float32), faces.astype(np.int32)


def require_pymeshlab():
    """The pymeshlab module; UserError saying how to install it when it is missing."""
    try:
        import pymeshlab
    except ImportError:
        raise UserError("the Poisson baseline needs pymeshlab: pip install -r "
                        "requirements-eval.txt (or leave --poisson out)") from None
    return pymeshlab


def estimate_normals(points: np.ndarray, neighbours: int = NORMAL_NEIGHBOURS) -> np.ndarray:
    """Unit normals (N, 3) float64 of a cloud (N, 3): MeshLab's PCA over ``neighbours``
    nearest points, oriented consistently by propagation. Propagation fixes the sign only up
    to one global flip, so the normals are flipped when most point towards the centroid (a
    closed surface's normals point outwards on average)."""
    pymeshlab = require_pymeshlab()
    meshes = pymeshlab.MeshSet()
    meshes.add_mesh(pymeshlab.Mesh(vertex_matrix=np.asarray(points, np.float64)))
    meshes.compute_normal_for_point_clouds(k=neighbours)
    normals = meshes.current_mesh().vertex_normal_matrix()
    outward = np.einsum("ij,ij->i", normals, points - points.mean(axis=0))
    return -normals if outward.sum() < 0 else normals


def poisson_mesh(points: np.ndarray, depth: int = POISSON_DEPTH,
                 threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Screened Poisson reconstruction of a cloud (N, 3) at octree ``depth`` with estimated
    normals -> vertices (V, 3) float32 in the cloud's frame, faces (F, 3) int32."""
    pymeshlab = require_pymeshlab()
    points = np.asarray(points, np.float64)
    meshes = pymeshlab.MeshSet()
    meshes.add_mesh(pymeshlab.Mesh(vertex_matrix=points,
                                   v_normals_matrix=estimate_normals(points)))
    meshes.generate_surface_reconstruction_screened_poisson(depth=depth, threads=threads)
    mesh = meshes.current_mesh()
    return mesh.vertex_matrix().astype(np.float32), mesh.face_matrix().astype(np.int32)
