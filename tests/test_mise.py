"""MISE and meshing on closed-form shapes, whose true surfaces are known."""

import numpy as np
import pytest
import torch
import trimesh

from backend.engine.generation import Generator
from backend.engine.request import Settings
from backend.engine.meshing import (FLOATER_DISTANCE, drop_floaters, drop_void_shells,
                                    fill_enclosed, marching_cubes, taubin)
from backend.engine.mise import dense_lattice, lattice_to_unit, mise, upsample
from backend.models.analytic import AnalyticModel, analytic_card


def evaluator(shape):
    decoder = AnalyticModel(shape).shape_decoder()
    return lambda points: decoder(torch.from_numpy(points)).numpy()


def run_mise(shape, resolution0, steps):
    *_, last = mise(evaluator(shape), resolution0, steps, threshold=0.0)
    return last


def dense_values(shape, resolution):
    points = lattice_to_unit(dense_lattice(resolution), resolution)
    return evaluator(shape)(points).reshape((resolution + 1,) * 3)


@pytest.mark.parametrize("shape", ["sphere", "boxes_rods"])
@pytest.mark.parametrize("resolution0,steps", [(32, 2), (16, 3)])
def test_mise_matches_dense_inside_outside(shape, resolution0, steps):
    last = run_mise(shape, resolution0, steps)
    dense = dense_values(shape, 128)
    assert last.resolution == 128
    np.testing.assert_array_equal(last.values >= 0, dense >= 0)
    # Every value MISE really evaluated is the dense value.
    np.testing.assert_allclose(last.values[last.evaluated], dense[last.evaluated], atol=1e-4)


@pytest.mark.parametrize("shape", ["sphere", "boxes_rods"])
def test_certain_points_are_skipped_without_changing_any_sign(shape):
    """With a margin, MISE evaluates fewer points (level 0 mostly: built from 16^3), every
    inside/outside sign stays the dense one (the thin rods included) and every evaluated
    value is the network's."""
    *_, paper = mise(evaluator(shape), 32, 2, threshold=0.0)
    states = list(mise(evaluator(shape), 32, 2, threshold=0.0, margin=4.0))
    last, dense = states[-1], dense_values(shape, 128)
    np.testing.assert_array_equal(last.values >= 0, dense >= 0)
    np.testing.assert_allclose(last.values[last.evaluated], dense[last.evaluated], atol=1e-4)
    assert last.evaluated.sum() == last.evaluations
    assert last.evaluations < 0.85 * paper.evaluations
    assert states[0].evaluations < 0.4 * 33 ** 3 and states[0].skipped > 0.6 * 33 ** 3
    # A skipped point keeps its filled value, more than the margin from the threshold.
    level0 = states[0]
    assert np.abs(level0.values[~level0.evaluated]).min() > 4.0
    assert (~level0.evaluated).sum() == level0.skipped


def test_an_infinite_margin_is_the_paper_mise_and_a_negative_one_is_refused():
    *_, paper = mise(evaluator("sphere"), 32, 1, threshold=0.0)
    *_, wide = mise(evaluator("sphere"), 32, 1, threshold=0.0, margin=np.inf)
    np.testing.assert_allclose(wide.values, paper.values, atol=1e-5)  # other batches
    assert wide.evaluations == paper.evaluations and wide.skipped == 0
    with pytest.raises(ValueError, match="margin"):
        next(mise(evaluator("sphere"), 16, 1, threshold=0.0, margin=-1.0))


def test_mise_evaluates_a_small_share_of_the_lattice():
    last = run_mise("sphere", 32, 2)
    assert last.evaluated.sum() == last.evaluations
    assert last.evaluations < 0.08 * 129 ** 3


def test_mise_yields_every_level_coarse_to_fine():
    levels = [(s.level, s.resolution, s.evaluations) for s in
              mise(evaluator("sphere"), 16, 2, threshold=0.0)]
    assert [lv[:2] for lv in levels] == [(0, 16), (1, 32), (2, 64)]
    assert levels[0][2] == 17 ** 3
    assert levels[0][2] < levels[1][2] < levels[2][2]


def test_upsample_is_trilinear():
    coarse = np.random.default_rng(0).normal(size=(5, 5, 5)).astype(np.float32)
    fine = upsample(coarse)
    assert fine.shape == (9, 9, 9)
    np.testing.assert_array_equal(fine[::2, ::2, ::2], coarse)
    centre = coarse[1:3, 2:4, 0:2].mean()
    np.testing.assert_allclose(fine[3, 5, 1], centre, rtol=1e-5)


@pytest.mark.parametrize("shape", ["sphere", "box", "boxes_rods"])
def test_meshes_are_watertight_and_outward(shape):
    last = run_mise(shape, 32, 2)
    vertices, faces = marching_cubes(last.values, 0.0)
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume > 0


def lattice_values(inside_of, resolution=48):
    """+1 / -1 logits of the inside test ``inside_of`` (points (N, 3) -> (N,) bool) on a
    lattice over the padded cube."""
    points = lattice_to_unit(dense_lattice(resolution), resolution)
    values = np.where(inside_of(points), 1.0, -1.0).astype(np.float32)
    return values.reshape((resolution + 1,) * 3)


def distance(points, centre=(0.0, 0.0, 0.0)):
    return np.linalg.norm(points - np.asarray(centre), axis=1)


def hollow_ball_with_core(p):
    """A ball of radius 0.4 with a sealed void (0.25) and a small ball floating in it."""
    return ((distance(p) < 0.4) & (distance(p) > 0.25)) | (distance(p) < 0.1)


def cup(p):
    """A cylinder with a pocket open at the top."""
    body = (np.abs(p[:, 1]) < 0.3) & (np.hypot(p[:, 0], p[:, 2]) < 0.35)
    return body & ~((p[:, 1] > -0.15) & (np.hypot(p[:, 0], p[:, 2]) < 0.25))


def twin_balls(p):
    return (distance(p, (-0.25, 0, 0)) < 0.2) | (distance(p, (0.25, 0, 0)) < 0.2)


def shells(vertices, faces):
    """Signed volumes of the mesh's connected pieces, largest first."""
    parts = trimesh.Trimesh(vertices, faces, process=False).split(only_watertight=False)
    return sorted((part.volume for part in parts), key=abs, reverse=True)


def test_enclosed_voids_are_filled_on_the_lattice_open_pockets_stay():
    ball = 4 / 3 * np.pi * 0.4 ** 3
    values = lattice_values(hollow_ball_with_core)
    assert len(shells(*marching_cubes(values, 0.0))) == 3  # outer, void, core
    filled = fill_enclosed(values, 0.0)
    (volume,) = shells(*marching_cubes(filled, 0.0))
    assert volume == pytest.approx(ball, rel=0.05)
    for inside_of in (cup, twin_balls):
        values = lattice_values(inside_of)
        assert np.array_equal(fill_enclosed(values, 0.0), values)
    assert Settings().fill_cavities


@pytest.mark.parametrize("seed", range(3))
def test_void_filling_on_the_inside_box_equals_labelling_the_whole_lattice(seed):
    """Random blobs, some touching the lattice's border: labelling only the inside's box
    fills exactly the voids that labelling everything would."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.normal(size=(40, 36, 30)), 2.0)
    values = (noise - np.quantile(noise, 0.3)).astype(np.float32)
    if seed % 2:
        values[:10] = -1.0  # blobs near one side only: a box smaller than the lattice
    labels, count = ndimage.label(values < 0)
    border = np.unique(np.concatenate([labels[[0, -1]].ravel(), labels[:, [0, -1]].ravel(),
                                       labels[:, :, [0, -1]].ravel()]))
    enclosed = (labels > 0) & ~np.isin(labels, border)
    assert enclosed.any()
    np.testing.assert_array_equal(fill_enclosed(values, 0.0) >= 0, (values >= 0) | enclosed)


def test_void_shells_are_dropped_from_meshes():
    """Without the lattice (tiled scenes), the void's inward-facing shell goes, and so does
    the core floating in it; a ball beside the hollow one stays."""
    def scene(p):
        return hollow_ball_with_core(p * 1.6 - [0.24, 0, 0]) | (distance(p, (-0.35, 0, 0)) < 0.1)

    vertices, faces = marching_cubes(lattice_values(scene, 64), 0.0)
    assert len(shells(vertices, faces)) == 4  # outer, void, core, the ball beside
    kept_v, kept_f = drop_void_shells(vertices, faces)
    outer, beside = shells(kept_v, kept_f)
    assert outer == pytest.approx(4 / 3 * np.pi * (0.4 / 1.6) ** 3, rel=0.05)
    assert beside == pytest.approx(4 / 3 * np.pi * 0.1 ** 3, rel=0.15)
    assert kept_f.max() == len(kept_v) - 1  # unused vertices dropped
    for inside_of in (cup, twin_balls):
        vertices, faces = marching_cubes(lattice_values(inside_of), 0.0)
        kept_v, kept_f = drop_void_shells(vertices, faces)
        assert np.array_equal(kept_v, vertices) and np.array_equal(kept_f, faces)


def test_floaters_far_from_the_points_are_dropped_near_ones_stay():
    """Twin balls with input points on the left one only: the right one (0.1 away at its
    nearest) stays when the points come within FLOATER_DISTANCE of it, and goes when no point
    does; a lone shell is never dropped."""
    vertices, faces = marching_cubes(lattice_values(twin_balls, 64), 0.0)
    rng = np.random.default_rng(0)
    directions = rng.standard_normal((500, 3))
    left = (-0.25, 0, 0) + 0.2 * directions / np.linalg.norm(directions, axis=1, keepdims=True)
    far = left[left[:, 0] < -0.25 - 0.2 * np.cos(np.radians(30))]  # the left ball's far cap
    kept_v, kept_f = drop_floaters(vertices, faces, far)
    (volume,) = shells(kept_v, kept_f)
    assert volume == pytest.approx(4 / 3 * np.pi * 0.2 ** 3, rel=0.1)
    assert kept_v[:, 0].max() < 0 and kept_f.max() == len(kept_v) - 1
    both_v, both_f = drop_floaters(vertices, faces, left)  # its near side faces 0.1 away
    assert len(both_v) == len(vertices) and np.array_equal(both_f, faces)
    alone_v, alone_f = marching_cubes(lattice_values(lambda p: distance(p) < 0.3), 0.0)
    assert drop_floaters(alone_v, alone_f, np.array([[0.9, 0.9, 0.9]]))[0] is alone_v
    assert FLOATER_DISTANCE < 0.5 * np.linalg.norm([0.9, 0.9, 0.9]) - 0.3


def test_taubin_smoothing_takes_out_ripples_and_keeps_the_volume():
    """Marching cubes of a sphere's +-1 occupancy is a staircase: Taubin pairs bring every
    vertex closer to the true radius, the volume stays within 1% and faces are untouched."""
    vertices, faces = marching_cubes(lattice_values(lambda p: distance(p) < 0.35, 48), 0.0)
    error = lambda v: np.abs(np.linalg.norm(v, axis=1) - 0.35)
    smooth = taubin(vertices, faces, 5)
    assert smooth.dtype == np.float32 and smooth.shape == vertices.shape
    assert error(smooth).mean() < 0.7 * error(vertices).mean()
    assert shells(smooth, faces)[0] == pytest.approx(shells(vertices, faces)[0], rel=0.01)
    np.testing.assert_array_equal(taubin(vertices, faces, 0), vertices)
    reference = trimesh.Trimesh(vertices.astype(np.float64), faces, process=False)
    trimesh.smoothing.filter_taubin(reference, lamb=0.5, nu=0.53, iterations=10)
    np.testing.assert_allclose(smooth, reference.vertices, atol=1e-6)


def test_the_flow_smooths_as_the_settings_and_card_say():
    """The card's smooth_steps is the default, a request's own wins, and the flow smooths
    the final mesh in the unit cube."""
    from backend.engine import pipeline
    from backend.engine.request import ReconstructRequest
    from backend.io.inputs import PointCloudInput

    model = AnalyticModel("sphere")
    card = {**analytic_card("sphere"), "smooth_steps": 4}
    assert Generator(model, card, "cpu", Settings()).smooth_steps == 4
    assert Generator(model, card, "cpu", Settings(smooth_steps=0)).smooth_steps == 0
    assert Generator(model, analytic_card("sphere"), "cpu", Settings()).smooth_steps == 0

    rng = np.random.default_rng(1)
    sphere = rng.standard_normal((2000, 3))
    sphere = 0.35 * sphere / np.linalg.norm(sphere, axis=1, keepdims=True)
    raw, smoothed = (
        pipeline.reconstruct(ReconstructRequest(PointCloudInput(sphere.astype(np.float32)),
                                                settings=Settings(16, 2, smooth_steps=steps)),
                             model, card)
        for steps in (0, None))
    *_, raw = raw
    *_, smoothed = smoothed
    assert raw.summary["smooth_steps"] == 0 and smoothed.summary["smooth_steps"] == 4
    np.testing.assert_array_equal(smoothed.frame.faces, raw.frame.faces)
    # Smoothed in the unit cube, before the mesh goes back to the input's frame.
    prepared = pipeline.prepare_points(sphere, card)
    unit = (raw.frame.vertices - prepared.center) / prepared.scale
    expected = prepared.to_world(taubin(unit, raw.frame.faces, 4))
    np.testing.assert_allclose(smoothed.frame.vertices, expected, atol=1e-5)
    assert not np.allclose(smoothed.frame.vertices, raw.frame.vertices, atol=1e-5)


def test_sphere_radius_within_half_a_fine_cell():
    last = run_mise("sphere", 32, 2)
    vertices, _ = marching_cubes(last.values, 0.0)
    radii = np.linalg.norm(vertices, axis=1)
    half_cell = 0.5 * 1.1 / 128
    assert np.abs(radii - 0.35).max() < half_cell


def test_surface_touching_the_padded_cube_is_still_closed():
    # A box larger than the padded cube: the one-cell border closes it.
    values = np.ones((17, 17, 17), dtype=np.float32)
    vertices, faces = marching_cubes(values, 0.0)
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    assert mesh.is_watertight and mesh.volume > 0
    np.testing.assert_allclose(np.abs(vertices).max(), 0.55, atol=1.1 / 16)


def generator(shape, **settings):
    return Generator(AnalyticModel(shape), analytic_card(shape), "cpu", Settings(**settings))


def frames(gen, **kwargs):
    code = gen.encode(torch.zeros(1, 1, 3))
    return list(gen.frames(code, **kwargs))


def test_generator_frames_and_postprocessing():
    gen = generator("sphere", resolution0=16, upsampling_steps=2, normals=True,
                    simplify=2000, refine_steps=3)
    result = frames(gen)
    assert [f.level for f in result] == [0, 1, 2]
    assert [f.final for f in result] == [False, False, True]
    last = result[-1]
    assert len(last.faces) <= 2100
    # Gradient normals of a sphere point along the radius, outwards.
    radial = last.vertices / np.linalg.norm(last.vertices, axis=1, keepdims=True)
    assert (np.sum(radial * last.normals, axis=1) > 0.99).all()
    assert 0 < last.network_seconds <= last.seconds


def test_generator_cancels_at_a_batch_boundary():
    from backend.engine.generation import Cancelled

    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 3

    gen = generator("sphere", resolution0=32, upsampling_steps=2, batch_points=4096)
    with pytest.raises(Cancelled):
        frames(gen, should_stop=stop)
    assert len(calls) == 4


def test_bad_settings_are_user_errors():
    from backend.errors import UserError

    for bad in [dict(resolution0=1), dict(resolution0=64, upsampling_steps=4),
                dict(threshold=1.5), dict(precision="int8"), dict(smooth_steps=-1),
                dict(smooth_steps=2.5)]:
        with pytest.raises(UserError):
            generator("sphere", **bad)
