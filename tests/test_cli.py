"""The command line, end to end in a subprocess, with the analytic models (no weights)."""

import json

import numpy as np
import pytest
import trimesh

from backend.io.binvox import write_binvox


def sphere_points(n=2000, radius=1.0, center=(0.0, 0.0, 0.0), seed=0):
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n, 3))
    return (radius * d / np.linalg.norm(d, axis=1, keepdims=True) + center).astype(np.float32)


def test_reconstruct_returns_mesh_in_the_input_frame(tmp_path, run_cli):
    center, radius = np.array([3.0, -2.0, 7.5]), 4.0
    np.save(tmp_path / "cloud.npy", sphere_points(radius=radius, center=center))
    out = tmp_path / "mesh.ply"
    result = run_cli("reconstruct", tmp_path / "cloud.npy", "-o", out, "--model",
                     "analytic:sphere", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    mesh = trimesh.load(out, process=False)
    assert summary["faces"] == len(mesh.faces) and mesh.is_watertight
    # The cloud spans 2 * radius, so the unit cube is scaled by that; the analytic sphere
    # (radius 0.35 in the unit cube) comes back centred on the cloud with radius 0.7 * radius.
    assert np.allclose(mesh.vertices.mean(axis=0), center, atol=0.02 * radius)
    radii = np.linalg.norm(mesh.vertices - center, axis=1)
    assert np.abs(radii - 0.7 * radius).max() < 2 * radius * 1.1 / 128


def test_reconstruct_prints_levels_and_summary(tmp_path, run_cli):
    np.savetxt(tmp_path / "cloud.xyz", sphere_points(500))
    result = run_cli("reconstruct", tmp_path / "cloud.xyz", "-o", tmp_path / "sub/m.obj",
                     "--model", "analytic:box", "--resolution0", "16", "--upsampling-steps", "1")
    assert result.returncode == 0, result.stderr
    assert "level 1/2" in result.stderr and "level 2/2" in result.stderr
    assert "network evaluations" in result.stdout
    assert (tmp_path / "sub/m.obj").exists()


def test_voxel_npy_comes_back_in_the_unit_cube(tmp_path, run_cli):
    grid = np.zeros((32, 32, 32), dtype=bool)
    grid[4:20, 8:28, 10:22] = True
    np.save(tmp_path / "vox.npy", grid)
    out = tmp_path / "vox.off"
    result = run_cli("reconstruct", tmp_path / "vox.npy", "-o", out, "--model", "analytic:box")
    assert result.returncode == 0, result.stderr
    # The analytic box in the unit cube maps to itself: the npy grid covers [-0.5, 0.5]^3.
    mesh = trimesh.load(out, process=False)
    np.testing.assert_allclose(mesh.bounds[1], [0.301, 0.203, 0.127], atol=1.1 / 128)


def test_binvox_translate_and_scale_are_honoured(tmp_path, run_cli):
    grid = np.zeros((32, 32, 32), dtype=bool)
    grid[8:24, 8:24, 8:24] = True
    write_binvox(tmp_path / "v.binvox", grid, translate=(10.0, 0.0, 0.0), scale=2.0)
    result = run_cli("reconstruct", tmp_path / "v.binvox", "-o", tmp_path / "v.ply",
                     "--model", "analytic:sphere")
    assert result.returncode == 0, result.stderr
    mesh = trimesh.load(tmp_path / "v.ply", process=False)
    # Unit-cube origin -> translate + 0.5 * scale; radius 0.35 -> 0.7.
    np.testing.assert_allclose(mesh.vertices.mean(axis=0), [11.0, 1.0, 1.0], atol=0.02)
    np.testing.assert_allclose(np.linalg.norm(mesh.vertices - [11, 1, 1], axis=1).max(),
                               0.7, atol=0.02)


def test_occupancy_logits(tmp_path, run_cli):
    np.save(tmp_path / "cloud.npy", sphere_points())
    queries = np.array([[0, 0, 0], [0.5, 0, 0], [0.3, 0.1, 0.0]], dtype=np.float32)
    np.save(tmp_path / "q.npy", queries)
    result = run_cli("occupancy", "--model", "analytic:sphere", tmp_path / "cloud.npy",
                     "--points", tmp_path / "q.npy", "-o", tmp_path / "logits.npy")
    assert result.returncode == 0, result.stderr
    logits = np.load(tmp_path / "logits.npy")
    expected = -50.0 * (np.linalg.norm(queries, axis=1) - 0.35)
    np.testing.assert_allclose(logits, expected, rtol=1e-5)


def write(path, content):
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


BAD_INPUTS = {
    "missing file": (lambda d: d / "nope.ply", "not found"),
    "unknown extension": (lambda d: write(d / "cloud.foo", "1 2 3\n"), ".foo"),
    "empty cloud": (lambda d: write(d / "e.xyz", "# nothing\n"), "point"),
    "one point": (lambda d: write(d / "one.xyz", "1 2 3\n"), "at least 2"),
    "nan coordinates": (lambda d: write(d / "nan.xyz", "1 2 3\nnan 0 0\n4 5 6\n"), "NaN"),
    "inf coordinates": (lambda d: write(d / "inf.xyz", "1 2 3\ninf 0 0\n4 5 6\n"), "Inf"),
    "wrong column count": (lambda d: write(d / "cols.xyz", "1 2 3 4\n5 6 7 8\n"), "column"),
    "voxels not 3-D": (lambda d: np.save(d / "v.npy", np.ones((4, 4, 4, 4), bool))
                       or d / "v.npy", "shape"),
    "non-image bytes": (lambda d: write(d / "img.png", b"\x00garbage" * 50), "image"),
    "directory": (lambda d: (d / "dir.ply").mkdir() or d / "dir.ply", "dir.ply"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_clear_line(tmp_path, run_cli, case):
    make, expected = BAD_INPUTS[case]
    path = make(tmp_path)
    result = run_cli("reconstruct", path, "-o", tmp_path / "out.ply", "--model",
                     "analytic:sphere")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected.lower() in lines[0].lower()
    assert "Traceback" not in result.stderr


def test_bad_model_and_output_are_one_clear_line(tmp_path, run_cli):
    np.save(tmp_path / "cloud.npy", sphere_points(100))
    garbage = tmp_path / "garbage.pt"
    import torch

    torch.save({"model": {"foo.weight": torch.zeros(3)}}, garbage)
    cases = [(["--model", "no-such-model"], "unknown model"),
             (["--model", "analytic:cylinder"], "analytic shape"),
             (["--model", str(garbage)], "garbage.pt"),
             (["--model", str(tmp_path / "missing.safetensors")], "not found")]
    for extra, expected in cases:
        result = run_cli("reconstruct", tmp_path / "cloud.npy", "-o", tmp_path / "o.ply",
                         *extra)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, (extra, result.stderr)
        assert expected in lines[0], (extra, lines[0])
    result = run_cli("reconstruct", tmp_path / "cloud.npy", "-o", tmp_path / "o.stl",
                     "--model", "analytic:sphere")
    assert result.returncode == 2 and ".stl" in result.stderr


def test_folder_reconstruction_resumes_and_reports_a_bad_file(tmp_path, run_cli):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    np.save(inputs / "a.npy", sphere_points(500, seed=1))
    np.savetxt(inputs / "b.xyz", sphere_points(500, radius=2.0, seed=2))
    (inputs / "broken.ply").write_text("ply\nformat ascii 1.0\nelement vertex 9\nend_header\n"
                                       "1 2\n")
    (inputs / "notes.md").write_text("not an input: ignored")
    args = ("reconstruct", inputs, "-o", out, "--model", "analytic:sphere", "--resolution0",
            "16", "--upsampling-steps", "1", "--json")
    first = run_cli(*args)
    # The bad file fails the run (exit 2, named), the others are written all the same.
    assert first.returncode == 2 and "broken.ply" in first.stderr, first.stderr
    rows = {row["input"]: row for row in json.loads(first.stdout)}
    assert set(rows) == {"a.npy", "b.xyz", "broken.ply"}
    assert rows["broken.ply"]["status"] == "failed" and rows["broken.ply"]["message"]
    assert rows["a.npy"]["status"] == rows["b.xyz"]["status"] == "done"
    assert sorted(p.name for p in out.iterdir()) == ["a.ply", "b.ply"]
    assert trimesh.load(out / "b.ply", process=False).is_watertight
    written = (out / "a.ply").stat().st_mtime_ns

    (inputs / "broken.ply").unlink()
    second = run_cli(*args)
    assert second.returncode == 0, second.stderr
    assert [row["status"] for row in json.loads(second.stdout)] == ["skipped", "skipped"]
    assert (out / "a.ply").stat().st_mtime_ns == written

    # Without --json: one summary table on stdout, a progress bar on stderr.
    (out / "b.ply").unlink()
    third = run_cli(*args[:-1])
    assert third.returncode == 0, third.stderr
    assert "2 inputs: 1 done, 1 skipped" in third.stdout
    assert (out / "b.ply").exists() and "2/2" in third.stderr


def test_folder_reconstruction_writes_the_format_asked_and_refuses_a_mesh_file_as_output(
        tmp_path, run_cli):
    np.save(tmp_path / "a.npy", sphere_points(200))
    result = run_cli("reconstruct", tmp_path, "-o", tmp_path / "mesh.ply", "--model",
                     "analytic:sphere")
    assert result.returncode == 2 and "output folder" in result.stderr
    result = run_cli("reconstruct", tmp_path, "-o", tmp_path / "out", "--model",
                     "analytic:sphere", "--format", "obj", "--upsampling-steps", "0", "--quiet")
    assert result.returncode == 0, result.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.obj"]
