"""Write reconstructed meshes and read meshes from disk, via trimesh (imported lazily).

Meshes are built with ``process=False`` so trimesh never merges, reorders or drops
vertices: what the caller passes is exactly what lands in the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import UserError
from .inputs import exception_summary, require_readable

WRITE_EXTENSIONS = (".ply", ".obj", ".off", ".glb")
READ_EXTENSIONS = (".ply", ".obj", ".off", ".stl", ".glb", ".gltf")


def write_mesh(
    path: str | os.PathLike,
    vertices: np.ndarray,
    faces: np.ndarray,
    vertex_normals: np.ndarray | None = None,
) -> None:
    """Write a triangle mesh to ``path`` (.ply, .obj, .off or .glb, chosen by extension).

    ``vertices`` (V, 3) float, ``faces`` (F, 3) int vertex indices, optional
    ``vertex_normals`` (V, 3) float (stored by PLY, OBJ and GLB; OFF has no normals).
    Raises ``UserError`` for an unsupported extension or a directory that is missing or
    not writable.
    """
    path = Path(path)
    if path.suffix.lower() not in WRITE_EXTENSIONS:
        raise UserError(f"{path}: cannot write mesh type '{path.suffix}'; "
                        f"supported: {' '.join(WRITE_EXTENSIONS)}")
    if not path.parent.is_dir():
        raise UserError(f"{path}: directory {path.parent} does not exist; "
                        "create it or choose another output path")
    try:
        import trimesh
    except ImportError:  # Blender's Python: PLY in numpy, everything else needs trimesh
        if path.suffix.lower() != ".ply":
            raise UserError(f"{path}: writing {path.suffix} needs trimesh, which this Python "
                            "lacks; write .ply, or install trimesh") from None
        return write_ply_numpy(path, vertices, faces, vertex_normals)
    if vertex_normals is not None:
        vertex_normals = np.asarray(vertex_normals, dtype=np.float64)
    mesh = trimesh.Trimesh(
        vertices=np.asarray(vertices, dtype=np.float64),
        faces=np.asarray(faces, dtype=np.int64),
        vertex_normals=vertex_normals,
        process=False,
    )
    try:
        mesh.export(path)
    except OSError as exc:
        raise UserError(f"{path}: cannot be written ({exc.strerror}); "
                        "choose a writable location") from exc


def write_ply_numpy(path: Path, vertices: np.ndarray, faces: np.ndarray,
                    vertex_normals: np.ndarray | None = None) -> None:
    """A binary little-endian PLY of the mesh in numpy alone: float32 x y z (nx ny nz),
    faces as a uchar count and int32 indices."""
    columns = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if vertex_normals is not None:
        columns += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
    table = np.empty(len(vertices), columns)
    for i, axis in enumerate("xyz"):
        table[axis] = np.asarray(vertices)[:, i]
        if vertex_normals is not None:
            table["n" + axis] = np.asarray(vertex_normals)[:, i]
    face_table = np.empty(len(faces), [("n", "u1"), ("v", "<i4", (3,))])
    face_table["n"], face_table["v"] = 3, faces
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(vertices)}",
              *[f"property float {name}" for name, _ in columns],
              f"element face {len(faces)}", "property list uchar int vertex_indices",
              "end_header"]
    try:
        with open(path, "wb") as f:
            f.write(("\n".join(header) + "\n").encode())
            f.write(table.tobytes())
            f.write(face_table.tobytes())
    except OSError as exc:
        raise UserError(f"{path}: cannot be written ({exc.strerror}); "
                        "choose a writable location") from exc


def read_mesh(path: str | os.PathLike) -> "trimesh.Trimesh":  # noqa: F821 (lazy import)
    """Read a triangle mesh (.ply .obj .off .stl .glb .gltf); a multi-part scene is concatenated.

    Returns a ``trimesh.Trimesh`` loaded with ``process=False``. Raises ``UserError``
    naming the file when it is missing, of an unsupported type, unparsable or has no faces.
    """
    import trimesh

    path = require_readable(path)
    if path.suffix.lower() not in READ_EXTENSIONS:
        raise UserError(f"{path}: cannot read mesh type '{path.suffix}'; "
                        f"supported: {' '.join(READ_EXTENSIONS)}")
    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    # trimesh's parsers raise many exception types on malformed files; all mean "unreadable".
    except Exception as exc:
        raise UserError(f"{path}: cannot be read as a mesh ({exception_summary(exc)}); "
                        "re-export it") from exc
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise UserError(f"{path}: contains no triangles; give a mesh file with faces")
    return mesh
