"""Input reading and validation, binvox, coordinate transforms and mesh file I/O."""

import os

import numpy as np
import pytest

from backend.io.binvox import read_binvox, write_binvox
from backend.errors import UserError
from backend.io.inputs import (ImageInput, PointCloudInput, VoxelInput, read_input, validate_points, validate_voxel_frame, validate_voxels)
from backend.io.meshes import read_mesh, write_mesh
from backend.engine.transforms import (denormalize, normalize_points, resample_voxels, voxel_world_transform)


def assert_user_error(path, match=None, **kwargs):
    """read_input(path) must raise a one-line UserError naming the file and containing match."""
    with pytest.raises(UserError) as info:
        read_input(path, **kwargs)
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message
    if match:
        assert match in message, message
    return message


def asymmetric_grid(n=5):
    """A grid whose occupied voxels differ under any swap of axes."""
    grid = np.zeros((n, n, n), dtype=bool)
    grid[0, 1, 2] = True
    grid[3, 0, 0] = True
    grid[1, 1, n - 1] = True
    grid[n - 1, n - 1, 1] = True
    return grid


def hand_built_binvox(grid, translate, scale):
    """A binvox file built voxel by voxel in the spec's order: x slowest, then z, y fastest."""
    n = grid.shape[0]
    body = bytearray()
    for x in range(n):
        for z in range(n):
            for y in range(n):
                body += bytes([int(grid[x, y, z]), 1])  # one run per voxel is valid RLE
    tx, ty, tz = translate
    header = f"#binvox 1\ndim {n} {n} {n}\ntranslate {tx} {ty} {tz}\nscale {scale}\ndata\n"
    return header.encode("ascii") + bytes(body)


# --- binvox -----------------------------------------------------------------------------------


def test_binvox_hand_built_file_axis_order(tmp_path):
    grid = asymmetric_grid()
    path = tmp_path / "hand.binvox"
    path.write_bytes(hand_built_binvox(grid, (0.25, -1.5, 2.0), 3.5))
    occupancy, translate, scale = read_binvox(path)
    assert occupancy.dtype == bool and occupancy.shape == (5, 5, 5)
    np.testing.assert_array_equal(occupancy, grid)
    np.testing.assert_array_equal(translate, [0.25, -1.5, 2.0])
    assert scale == 3.5


def test_binvox_write_read_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    grid = rng.random((40, 40, 40)) < 0.3
    grid[:, :, :20] = False  # long runs: more than 255 identical voxels
    path = tmp_path / "round.binvox"
    translate = np.array([0.1, -0.123456789, 7.0])
    write_binvox(path, grid, translate, 0.3)
    occupancy, read_translate, scale = read_binvox(path)
    np.testing.assert_array_equal(occupancy, grid)
    np.testing.assert_array_equal(read_translate, translate)
    assert scale == 0.3


def test_binvox_writer_matches_hand_built_order(tmp_path):
    grid = asymmetric_grid()
    written, hand = tmp_path / "w.binvox", tmp_path / "h.binvox"
    write_binvox(written, grid, (0, 0, 0), 1.0)
    hand.write_bytes(hand_built_binvox(grid, (0, 0, 0), 1.0))
    np.testing.assert_array_equal(read_binvox(written)[0], read_binvox(hand)[0])


@pytest.mark.parametrize(
    "content, match",
    [
        (b"hello world\n", "not a binvox file"),
        (b"#binvox 1\ndim 2 2 2\ntranslate 0 0 0\nscale 1\n", "'data'"),
        (b"#binvox 1\ndim 2 2 3\ntranslate 0 0 0\nscale 1\ndata\n\x00\x0c", "cubic"),
        (b"#binvox 1\ndim 2 2 2\ntranslate 0 0 0\nscale 1\ndata\n\x00\x05", "truncated"),
        (b"#binvox 1\ndim 2 2 2\ntranslate 0 0 0\nscale 1\ndata\n\x00\x08\x01", "truncated"),
        (b"#binvox 1\ndim 2 2 2\ntranslate 0 0 0\nscale 1\ndata\n\x00\x09", "longer"),
        (b"#binvox 1\ndim 2 2 2\ntranslate 0 0 0\nscale 0\ndata\n\x00\x08", "scale"),
    ],
)
def test_binvox_errors(tmp_path, content, match):
    path = tmp_path / "bad.binvox"
    path.write_bytes(content)
    assert_user_error(path, match)


def test_binvox_input_and_oversized_grid(tmp_path):
    path = tmp_path / "shape.binvox"
    write_binvox(path, asymmetric_grid(), (1.0, 2.0, 3.0), 2.0)
    voxels = read_input(path)
    assert isinstance(voxels, VoxelInput) and voxels.kind == "voxels"
    np.testing.assert_array_equal(voxels.occupancy, asymmetric_grid())
    assert_user_error(path, "limit", max_voxel_dim=4)


# --- point clouds ---------------------------------------------------------------------------


def test_xyz_three_and_six_columns(tmp_path):
    three = tmp_path / "a.xyz"
    three.write_text("# header comment\n0 0 0\n1.5, 2, 3  # trailing comment\n\n-1 -2 -3\n")
    cloud = read_input(three)
    assert isinstance(cloud, PointCloudInput) and cloud.kind == "pointcloud"
    assert cloud.points.dtype == np.float32
    np.testing.assert_array_equal(cloud.points, [[0, 0, 0], [1.5, 2, 3], [-1, -2, -3]])

    six = tmp_path / "b.txt"
    six.write_text("0 0 0 0 0 1\n1 2 3 0 1 0\n")
    np.testing.assert_array_equal(read_input(six).points, [[0, 0, 0], [1, 2, 3]])


def test_text_column_errors(tmp_path):
    four = tmp_path / "four.xyz"
    four.write_text("0 0 0 1\n1 1 1 1\n")
    assert_user_error(four, "found 4 columns")
    mixed = tmp_path / "mixed.xyz"
    mixed.write_text("0 0 0\n1 1 1\n2 2 2 2\n")
    assert_user_error(mixed, "line 3 has 4 columns")
    header = tmp_path / "header.txt"
    header.write_text("x,y,z\n0,0,0\n1,1,1\n")
    assert_user_error(header, "line 1")


def test_empty_and_single_point_clouds(tmp_path):
    empty = tmp_path / "empty.xyz"
    empty.write_text("# only a comment\n\n")
    assert_user_error(empty, "at least 2 points")
    single = tmp_path / "single.xyz"
    single.write_text("1 2 3\n")
    assert_user_error(single, "at least 2 points")
    none = tmp_path / "none.npy"
    np.save(none, np.zeros((0, 3), dtype=np.float32))
    assert_user_error(none, "at least 2 points")


def test_non_finite_rows_are_counted(tmp_path):
    path = tmp_path / "nan.xyz"
    path.write_text("0 0 0\nnan 1 1\n1 inf 1\n2 2 2\n")
    assert_user_error(path, "2 of 4 points")
    with pytest.raises(UserError, match="1 of 2 points"):
        validate_points(np.array([[0.0, 0, 0], [1e300, 0, 0]]), "request.points")


def test_validate_points_names_source():
    with pytest.raises(UserError, match="request.points.*shape"):
        validate_points(np.zeros((5, 2)), "request.points")
    out = validate_points(np.arange(6).reshape(2, 3), "request.points")
    assert out.dtype == np.float32 and out.flags.c_contiguous


def test_too_many_points(tmp_path):
    path = tmp_path / "many.npy"
    np.save(path, np.zeros((10, 3)))
    assert_user_error(path, "limit", max_points=5)


def test_ply_point_cloud_and_mesh(tmp_path):
    import trimesh

    points = np.random.default_rng(1).random((20, 3))
    cloud_path = tmp_path / "cloud.ply"
    trimesh.PointCloud(points).export(cloud_path)
    np.testing.assert_allclose(read_input(cloud_path).points, points, rtol=1e-6)

    box = trimesh.creation.box()
    mesh_path = tmp_path / "mesh.ply"
    box.export(mesh_path)
    assert read_input(mesh_path).points.shape == (len(box.vertices), 3)

    garbage = tmp_path / "garbage.ply"
    garbage.write_bytes(os.urandom(200))
    assert_user_error(garbage)


def test_npy_arrays(tmp_path):
    points = tmp_path / "points.npy"
    np.save(points, np.random.default_rng(2).random((7, 3)))
    assert read_input(points).points.shape == (7, 3)

    grid = tmp_path / "grid.npy"
    np.save(grid, asymmetric_grid())
    voxels = read_input(grid)
    assert isinstance(voxels, VoxelInput)
    np.testing.assert_array_equal(voxels.occupancy, asymmetric_grid())
    np.testing.assert_array_equal(voxels.translate, [-0.5, -0.5, -0.5])
    assert voxels.scale == 1.0

    numeric = tmp_path / "numeric.npy"
    np.save(numeric, asymmetric_grid().astype(np.float32))
    assert read_input(numeric).occupancy.dtype == bool


@pytest.mark.parametrize(
    "array, match",
    [
        (np.zeros((4, 4)), "neither an (N, 3) point cloud nor an (n, n, n) voxel grid"),
        (np.zeros(9), "neither"),
        (np.zeros((2, 3, 4), dtype=bool), "cubic"),
        (np.zeros((4, 4, 4), dtype=bool), "empty"),
        (np.ones((4, 4, 4), dtype=bool), "every voxel is occupied"),
        (np.full((4, 4, 4), 2.0), "0/1"),
        (np.array([[object(), 1, 2], [3, 4, 5]], dtype=object), "pickle"),
    ],
)
def test_npy_errors(tmp_path, array, match):
    path = tmp_path / "bad.npy"
    np.save(path, array, allow_pickle=True)
    assert_user_error(path, match)


def test_npz_layouts(tmp_path):
    official = tmp_path / "pointcloud.npz"
    points = np.repeat(np.arange(5, dtype=np.float16)[:, None], 3, axis=1)
    np.savez(official, points=points, normals=np.zeros((5, 3)))
    cloud = read_input(official)
    assert cloud.points.dtype == np.float32 and cloud.points.shape == (5, 3)

    single = tmp_path / "single.npz"
    np.savez(single, anything=asymmetric_grid())
    assert isinstance(read_input(single), VoxelInput)

    ambiguous = tmp_path / "ambiguous.npz"
    np.savez(ambiguous, a=np.zeros((5, 3)), b=np.zeros((5, 3)))
    assert_user_error(ambiguous, "'points'")

    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a zip file at all")
    assert_user_error(corrupt)


def test_validate_voxels_and_frame_direct():
    with pytest.raises(UserError, match="request.voxels.*3-D"):
        validate_voxels(np.zeros((4, 4)), "request.voxels")
    translate, scale = validate_voxel_frame([1, 2, 3], 2, "request")
    assert translate.dtype == np.float64 and scale == 2.0
    with pytest.raises(UserError, match="scale"):
        validate_voxel_frame([0, 0, 0], -1, "request")
    with pytest.raises(UserError, match="translate"):
        validate_voxel_frame([0, np.nan, 0], 1, "request")


# --- file-level errors ---------------------------------------------------------------------


def test_missing_directory_unknown_extension(tmp_path):
    assert_user_error(tmp_path / "missing.ply", "not found")
    directory = tmp_path / "folder.xyz"
    directory.mkdir()
    assert_user_error(directory, "directory")
    unknown = tmp_path / "cloud.foo"
    unknown.write_text("0 0 0\n")
    message = assert_user_error(unknown, "unsupported")
    for ext in (".ply", ".xyz", ".npy", ".binvox", ".png"):
        assert ext in message


def test_unreadable_file(tmp_path, monkeypatch):
    path = tmp_path / "locked.xyz"
    path.write_text("0 0 0\n1 1 1\n")

    # chmod cannot lock out root (the CI user), so simulate the permission error.
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("backend.io.inputs.open", refuse, raising=False)
    assert_user_error(path, "Permission denied")


# --- images ----------------------------------------------------------------------------------


def test_images_become_rgba(tmp_path):
    from PIL import Image

    png = tmp_path / "rgb.png"
    Image.new("RGB", (7, 5), (10, 20, 30)).save(png)
    image = read_input(png)
    assert isinstance(image, ImageInput) and image.kind == "image"
    assert image.rgba.shape == (5, 7, 4) and image.rgba.dtype == np.uint8
    np.testing.assert_array_equal(image.rgba[0, 0], [10, 20, 30, 255])

    jpg = tmp_path / "gray.JPG"
    Image.new("L", (4, 6), 128).save(jpg, format="JPEG")
    assert read_input(jpg).rgba.shape == (6, 4, 4)


def test_image_pixel_limit(tmp_path):
    from PIL import Image

    path = tmp_path / "tiny.png"
    Image.new("RGBA", (5, 4)).save(path)
    assert_user_error(path, "above the limit of 19", max_pixels=19)
    assert read_input(path, max_pixels=20).rgba.shape == (4, 5, 4)


def test_non_image_and_truncated_image(tmp_path):
    from PIL import Image

    noise = tmp_path / "noise.png"
    noise.write_bytes(np.random.default_rng(3).integers(0, 256, 500, dtype=np.uint8).tobytes())
    assert_user_error(noise, "not a readable PNG or JPEG")

    full = tmp_path / "full.png"
    pixels = np.random.default_rng(4).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(full)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(full.read_bytes()[:200])
    assert_user_error(truncated, "corrupt")


# --- transforms ------------------------------------------------------------------------------


def test_normalize_round_trip():
    rng = np.random.default_rng(5)
    points = rng.normal(size=(100, 3)) * [3.0, 0.5, 1.0] * 40 + [1000.0, -250.0, 7.0]
    unit, center, scale = normalize_points(points)
    assert unit.dtype == np.float32 and center.dtype == np.float64
    assert unit.min() >= -0.5 and unit.max() <= 0.5
    assert np.isclose(np.ptp(unit, axis=0).max(), 1.0)
    # centred on the bounding box
    np.testing.assert_allclose(unit.max(axis=0) + unit.min(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(denormalize(unit, center, scale), points, rtol=0, atol=1e-4 * scale)
    # exact inverse of the affine map itself
    exact = (points - center) / scale
    np.testing.assert_allclose(denormalize(exact, center, scale), points, rtol=1e-12)


def test_normalize_coincident_points():
    with pytest.raises(UserError, match="all points coincide"):
        normalize_points(np.ones((4, 3)))


def test_voxel_world_transform_maps_voxel_centres():
    n, translate, scale = 8, np.array([1.0, -2.0, 0.5]), 4.0
    i = np.arange(n)
    unit_centres = -0.5 + (i + 0.5) / n  # unit-cube voxel centres
    center, s = voxel_world_transform(translate, scale)
    world = denormalize(np.stack([unit_centres] * 3, axis=1), center, s)
    expected = translate + ((i + 0.5) / n * scale)[:, None]
    np.testing.assert_allclose(world, expected)
    # the bare .npy convention is the identity
    center, s = voxel_world_transform((-0.5, -0.5, -0.5), 1.0)
    np.testing.assert_array_equal(center, 0)
    assert s == 1.0


def test_resample_voxels():
    grid = asymmetric_grid(4)
    np.testing.assert_array_equal(resample_voxels(grid, 4), grid)
    up = resample_voxels(grid, 8)
    assert up.shape == (8, 8, 8) and up.dtype == bool
    np.testing.assert_array_equal(up[::2, ::2, ::2], grid)
    assert up.sum() == grid.sum() * 8
    np.testing.assert_array_equal(resample_voxels(up, 4), grid)
    assert resample_voxels(np.ones((64, 64, 64)), 32).shape == (32, 32, 32)


# --- meshes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".ply", ".obj", ".off", ".glb"])
def test_write_mesh_formats(tmp_path, ext):
    import trimesh

    box = trimesh.creation.box()
    path = tmp_path / f"box{ext}"
    vertices, faces = box.vertices.astype(np.float32), box.faces.astype(np.int32)
    write_mesh(path, vertices, faces, box.vertex_normals)
    mesh = read_mesh(path)
    assert mesh.vertices.shape == box.vertices.shape
    assert mesh.faces.shape == box.faces.shape
    np.testing.assert_allclose(mesh.vertices, box.vertices, atol=1e-6)
    np.testing.assert_array_equal(mesh.faces, box.faces)


def test_mesh_io_errors(tmp_path):
    vertices, faces = np.eye(3), np.array([[0, 1, 2]])
    with pytest.raises(UserError, match=r"\.stl.*supported: \.ply \.obj \.off \.glb") as info:
        write_mesh(tmp_path / "out.stl", vertices, faces)
    assert "out.stl" in str(info.value)
    with pytest.raises(UserError, match="does not exist"):
        write_mesh(tmp_path / "nope" / "out.ply", vertices, faces)
    with pytest.raises(UserError, match="cannot be written"):
        write_mesh(_directory_named(tmp_path, "d.ply"), vertices, faces)

    garbage = tmp_path / "garbage.obj"
    garbage.write_text("this is not an obj\n")
    with pytest.raises(UserError, match="garbage.obj"):
        read_mesh(garbage)
    with pytest.raises(UserError, match="not found"):
        read_mesh(tmp_path / "missing.ply")


def _directory_named(parent, name):
    """A directory called ``name`` (writing a file over it fails with an OSError)."""
    path = parent / name
    path.mkdir()
    return path
