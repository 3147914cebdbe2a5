"""The bundled engine's parts against their PyTorch / SciPy / PyMCubes / Pillow twins: the
numpy models, the safetensors reader, marching cubes, void filling, image resampling."""

import json
import struct

import mcubes
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from scipy import ndimage

from backend.engine import meshing, pipeline
from backend.engine.generation import Generator
from backend.engine.marching import marching_cubes
from backend.engine.request import Settings
from backend.engine.runtime import NumpyRuntime, resolve_engine
from backend.engine.transforms import resize_image
from backend.errors import UserError
from backend.io import zoo
from backend.io.inputs import VoxelInput
from backend.models import numpy_engine
from backend.models.numpy_engine.safetensors import read_safetensors

BUNDLED = ["pointcloud_convonet_3plane", "voxels_convonet_3plane", "voxels_convonet_grid",
           "pointcloud_onet_small", "image_onet_small", "image_onet_photo",
           "unconditional_onet_chair",
           "pointcloud_poco"]


def model_input(model, rng):
    kind = model.input_kind
    if kind == "pointcloud":
        return (rng.random((1, 3000, 3), np.float32) - 0.5).astype(np.float32)
    if kind == "voxels":  # a centres grid: models that read the rule get it as a channel
        grid = rng.random((32, 32, 32)) > 0.7
        return pipeline.prepare(VoxelInput(grid, np.full(3, -0.5), 1.0, "centres"), model,
                                {}).inputs
    if kind == "image":
        return rng.random((1, 3, 224, 224), np.float32)
    return None


@pytest.mark.parametrize("name", BUNDLED)
def test_numpy_model_equals_the_torch_model(name):
    """Codes and fp32 logits of every bundled model agree with PyTorch's to float rounding."""
    key, _ = zoo.resolve(name)
    torch_model, card = zoo.load_resolved(key)
    numpy_model, numpy_card = zoo.load_resolved(key, engine="bundled")
    assert numpy_card["threshold"] == card["threshold"]
    inputs = model_input(torch_model, np.random.default_rng(0))
    settings = Settings(precision="fp32")
    generators = [Generator(m, card, "cpu", settings) for m in (torch_model, numpy_model)]
    assert [g.runtime.name for g in generators] == ["torch", "bundled"]
    codes = [g.encode(inputs) for g in generators]
    queries = np.random.default_rng(1).uniform(-0.55, 0.55, (20000, 3)).astype(np.float32)
    reference, logits = (g.logits(code, queries) for g, code in zip(generators, codes))
    assert np.abs(reference).max() > 1.0  # a real field, not zeros
    np.testing.assert_allclose(logits, reference, atol=1e-4, rtol=1e-4)


def test_latent_encoder_equals_torch():
    """The VAE's posterior mean from labelled points, both engines."""
    key, _ = zoo.resolve(zoo.default_model_name("sample"))
    (torch_model, card), (numpy_model, _) = (zoo.load_resolved(key, engine=e)
                                             for e in ("torch", "bundled"))
    rng = np.random.default_rng(2)
    points = (rng.random((1, 2048, 3), np.float32) - 0.5).astype(np.float32)
    occupancies = (np.linalg.norm(points, axis=-1) < 0.3).astype(np.float32)
    z = [Generator(m, card, "cpu").encode(points, occupancies).z
         for m in (torch_model, numpy_model)]
    assert np.abs(z[1]).max() > 0.01
    np.testing.assert_allclose(z[1], z[0].numpy(), atol=1e-4)


def test_bundled_normals_match_gradient_normals():
    """Finite-difference normals of the bundled engine point along torch's gradients."""
    key, _ = zoo.resolve("pointcloud_convonet_3plane")
    (torch_model, card), (numpy_model, _) = (zoo.load_resolved(key, engine=e)
                                             for e in ("torch", "bundled"))
    cloud = zoo.BUNDLED_DIR.parent / "samples" / "chair_scan.ply"
    from backend.io.inputs import read_input

    prepared = pipeline.prepare(read_input(cloud), numpy_model, card)
    settings = Settings(16, 1, precision="fp32", normals=True)
    frames = [list(Generator(m, card, "cpu", settings).frames(
        Generator(m, card, "cpu", settings).encode(prepared.inputs)))[-1]
        for m in (torch_model, numpy_model)]
    np.testing.assert_array_equal(frames[0].faces, frames[1].faces)
    cosine = (frames[0].normals * frames[1].normals).sum(1)
    assert np.median(cosine) > 0.999 and (cosine > 0.9).mean() > 0.99


def test_bundled_engine_refuses_what_it_cannot_do():
    key, _ = zoo.resolve("pointcloud_convonet_3plane")
    model, card = zoo.load_resolved(key, engine="bundled")
    with pytest.raises(UserError, match="refine_steps needs the torch engine"):
        Generator(model, card, "cpu", Settings(refine_steps=2))
    with pytest.raises(UserError, match="computes in fp32"):
        NumpyRuntime("bf16")
    with pytest.raises(UserError, match="CPU only"):
        resolve_engine("bundled", "cuda")
    with pytest.raises(UserError, match="engine must be one of"):
        resolve_engine("onnx")
    with pytest.raises(UserError, match="PyTorch test shape"):
        zoo.load_resolved("analytic:sphere", engine="bundled")


def test_safetensors_reader_reads_every_dtype(tmp_path):
    tensors = {"f32": torch.randn(3, 4), "bf16": torch.randn(5).to(torch.bfloat16),
               "f16": torch.randn(2, 2).half(), "i64": torch.arange(6).view(2, 3),
               "empty": torch.zeros(0, 7)}
    save_file(tensors, str(tmp_path / "t.safetensors"), metadata={"format": "pt"})
    read = read_safetensors(tmp_path / "t.safetensors")
    assert set(read) == set(tensors)
    for name, tensor in tensors.items():
        np.testing.assert_array_equal(read[name], tensor.float().numpy() if name == "bf16"
                                      else tensor.numpy())
        assert read[name].shape == tuple(tensor.shape)


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:5], "is not a safetensors file"),
    (lambda b: struct.pack("<Q", 10**12) + b[8:], "header length"),
    (lambda b: b[:8] + b"{" * (len(b) - 8), "no JSON"),
    (lambda b: b[:-8], "does not fit its offsets"),
])
def test_safetensors_reader_refuses_damaged_files(tmp_path, damage, message):
    path = tmp_path / "t.safetensors"
    save_file({"w": torch.randn(4, 4)}, str(path))
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(UserError, match=message):
        read_safetensors(path)


def test_weights_and_card_that_do_not_belong_together(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"decoder.fc_p.weight": torch.randn(4, 3)}, str(path))
    card = json.loads((zoo.BUNDLED_DIR / "pointcloud_onet_small.json").read_text())
    path.with_suffix(".json").write_text(json.dumps(card))
    model, _ = numpy_engine.load_model(path)
    with pytest.raises(UserError, match="has no tensor 'encoder.fc_pos.weight'"):
        model.encode_inputs(np.zeros((1, 10, 3), np.float32))


def canonical_faces(vertices, faces):
    """A mesh as a sorted list of triangles of rounded positions, each rotated to start at
    its smallest corner (orientation kept): equal for equal surfaces in any vertex order."""
    triangles = np.round(vertices[faces], 6)
    rotations = [np.roll(triangles, -r, axis=1) for r in range(3)]
    keys = [tuple(map(tuple, min(tuple(map(tuple, rot[i])) for rot in rotations)))
            for i in range(len(faces))]
    return sorted(keys)


@pytest.mark.parametrize("field", ["sphere", "random", "ties"])
def test_marching_cubes_gives_pymcubes_triangles(field):
    rng = np.random.default_rng(3)
    if field == "sphere":
        grid = np.mgrid[:48, :48, :48] - 23.5
        values = 18.0 - np.sqrt((grid ** 2).sum(0))
    elif field == "random":
        values = ndimage.gaussian_filter(rng.standard_normal((24, 25, 26)), 1.0)
    else:  # many lattice values exactly on the level
        values = rng.integers(-2, 3, (15, 16, 17)).astype(np.float64)
    expected = mcubes.marching_cubes(values, 0.0)
    vertices, faces = marching_cubes(values, 0.0)
    assert len(faces) > 100 and len(vertices) == len(expected[0])
    assert canonical_faces(vertices, faces) == canonical_faces(*expected)


def test_marching_cubes_on_degenerate_lattices():
    assert marching_cubes(np.zeros((1, 5, 5)), 0.0)[1].shape == (0, 3)
    assert marching_cubes(-np.ones((4, 4, 4)), 0.0)[1].shape == (0, 3)


def test_exterior_equals_scipy_labels():
    rng = np.random.default_rng(4)
    for p in (0.45, 0.6, 0.75):
        outside = ndimage.binary_opening(rng.random((30, 31, 32)) < p)
        labels, count = ndimage.label(outside)
        border = np.concatenate([labels[[0, -1]].ravel(), labels[:, [0, -1]].ravel(),
                                 labels[:, :, [0, -1]].ravel()])
        reached = np.zeros(count + 1, bool)
        reached[border] = True
        reached[0] = False
        expected = reached[labels]
        assert (outside & ~expected).any()  # some voids to find
        np.testing.assert_array_equal(meshing.exterior(outside), expected)


def test_resize_image_follows_pillow():
    rng = np.random.default_rng(5)
    for shape in [(300, 400), (224, 224), (100, 150), (37, 500)]:
        noise = rng.integers(0, 256, (*shape, 3)).astype(np.float64)
        image = np.round(np.cumsum(noise, 0) / np.arange(1, shape[0] + 1)[:, None, None])
        image = image.astype(np.uint8)
        expected = np.asarray(Image.fromarray(image).resize((224, 224), Image.BILINEAR))
        difference = np.abs(resize_image(image, 224).astype(int) - expected)
        assert difference.max() <= 1 and (difference > 0).mean() < 0.01


def test_connected_components_equal_scipy():
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rng = np.random.default_rng(6)
    for n, e in [(1, 0), (50, 10), (2000, 1500), (2000, 4000)]:
        edges = rng.integers(0, n, (e, 2))
        graph = coo_matrix((np.ones(e, np.int8), tuple(edges.T)), shape=(n, n))
        expected = connected_components(graph, directed=False)
        count, labels = meshing.connected_components(n, edges)
        assert count == expected[0]
        np.testing.assert_array_equal(labels, expected[1])


def test_numpy_ply_reader_and_writer_agree_with_trimesh(tmp_path):
    import trimesh

    from backend.io.inputs import read_ply_vertices_numpy
    from backend.io.meshes import write_ply_numpy

    rng = np.random.default_rng(7)
    vertices = rng.random((50, 3)).astype(np.float32)
    faces = rng.integers(0, 50, (80, 3)).astype(np.int32)
    normals = rng.random((50, 3)).astype(np.float32)
    write_ply_numpy(tmp_path / "m.ply", vertices, faces, normals)
    mesh = trimesh.load(tmp_path / "m.ply", process=False)
    np.testing.assert_array_equal(mesh.faces, faces)
    np.testing.assert_allclose(mesh.vertices, vertices)
    np.testing.assert_allclose(mesh.vertex_normals, normals, atol=1e-6)
    for encoding in ("binary", "ascii"):
        path = tmp_path / f"{encoding}.ply"
        mesh.export(path, encoding=encoding)
        np.testing.assert_allclose(read_ply_vertices_numpy(path), vertices, atol=1e-6)
    chair = zoo.BUNDLED_DIR.parent / "samples" / "chair_scan.ply"
    np.testing.assert_array_equal(read_ply_vertices_numpy(chair),
                                  trimesh.load(chair, process=False).vertices)
