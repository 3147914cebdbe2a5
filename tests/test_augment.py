"""data.augment: rotation/scale move cloud and queries together, partial views, density
resampling, config checks, and nothing changes while augmentation is off."""

import numpy as np
import pytest

from backend.errors import UserError
from training.config import check_config
from training.data.augment import (augment_options, augment_sample, distinct_subset,
                                   partial_scan, resample_density, visible_points)
from training.data.datasets import collate
from training.data.fields import PointCloudField, run_fields

RADIUS = 0.3


def sphere_sample(n=20000, queries=4000, seed=0):
    rng = np.random.default_rng(seed)
    normals = rng.standard_normal((n, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    points = rng.uniform(-0.55, 0.55, (queries, 3)).astype(np.float32)
    return {"inputs": (RADIUS * normals).astype(np.float32),
            "inputs.normals": normals.astype(np.float32), "points": points,
            "points.occ": (np.linalg.norm(points, axis=1) < RADIUS).astype(np.float32),
            "category": "c", "shape": "s", "index": 0}


def data_section(augment=None, **overrides):
    raw = {"model": {"paper": "pointcloud"}, "data": {**overrides}}
    if augment is not None:
        raw["data"]["augment"] = augment
    return check_config(raw)["data"]


@pytest.mark.parametrize("rotation", ["up", "any"])
def test_rotation_keeps_distances_and_labels(rotation):
    sample = sphere_sample()
    before = {key: value.copy() for key, value in sample.items() if isinstance(value, np.ndarray)}
    augment_sample(sample, np.random.default_rng(1), {"rotation": rotation})
    assert not np.allclose(sample["points"], before["points"])
    # Pairwise distances within and across cloud and queries are kept.
    both = np.concatenate([before["inputs"][:200], before["points"][:200]])
    moved = np.concatenate([sample["inputs"][:200], sample["points"][:200]])
    dist = lambda x: np.linalg.norm(x[:, None] - x[None], axis=-1)  # noqa: E731
    np.testing.assert_allclose(dist(moved), dist(both), atol=1e-5)
    # Inside/outside of the (sphere-labelled) queries is unchanged.
    inside = np.linalg.norm(sample["points"], axis=1) < RADIUS
    np.testing.assert_array_equal(inside, sample["points.occ"] > 0.5)
    # Normals still point outward from the rotated surface.
    np.testing.assert_allclose(sample["inputs.normals"], sample["inputs"] / RADIUS, atol=1e-5)
    if rotation == "up":  # about y: heights stay
        np.testing.assert_allclose(sample["points"][:, 1], before["points"][:, 1], atol=1e-6)


def test_anisotropic_scale_within_bounds_and_consistent():
    for seed in range(20):
        sample = sphere_sample(n=500, queries=500, seed=seed)
        before = sample["points"].copy(), sample["inputs"].copy()
        augment_sample(sample, np.random.default_rng(seed), {"anisotropic_scale": [0.8, 1.25]})
        factors = sample["points"] / before[0]
        assert np.all(factors > 0.8 - 1e-5) and np.all(factors < 1.25 + 1e-5)
        per_axis = np.median(factors, axis=0)
        np.testing.assert_allclose(factors, np.broadcast_to(per_axis, factors.shape), rtol=1e-4)
        np.testing.assert_allclose(sample["inputs"] / before[1], factors[:500], rtol=1e-3)
        # Labels: inside the scaled ellipsoid exactly where inside the sphere before.
        inside = np.linalg.norm(sample["points"] / per_axis, axis=1) < RADIUS
        np.testing.assert_array_equal(inside, sample["points.occ"] > 0.5)
        # Normals stay perpendicular to the surface: gradient of |x / s|^2.
        gradient = sample["inputs"] / per_axis ** 2
        gradient /= np.linalg.norm(gradient, axis=1, keepdims=True)
        np.testing.assert_allclose(sample["inputs.normals"], gradient, atol=1e-4)


def test_partial_view_of_a_sphere_keeps_a_facing_cap():
    sample = sphere_sample()
    points, normals = sample["inputs"], sample["inputs.normals"]
    for seed in range(5):
        rng = np.random.default_rng(seed)
        direction = rng.standard_normal(3)
        camera = 2.0 * direction / np.linalg.norm(direction)
        mask = visible_points(points, normals, camera)
        assert 0.35 < mask.mean() < 0.65
        facing = np.einsum("ij,ij->i", normals[mask], camera - points[mask])
        assert np.all(facing > 0)
        mask = partial_scan(points, normals, rng, [1, 1])
        assert 0.35 < mask.mean() < 0.65


def test_z_buffer_drops_occluded_points():
    # Two parallel squares facing +z; from the camera on +z the farther one is hidden.
    rng = np.random.default_rng(0)
    near = np.c_[rng.uniform(-0.3, 0.3, (100000, 2)), np.full(100000, 0.2)]
    far = np.c_[rng.uniform(-0.1, 0.1, (500, 2)), np.full(500, -0.2)]
    points = np.concatenate([near, far]).astype(np.float32)
    normals = np.tile(np.float32([0, 0, 1]), (len(points), 1))
    mask = visible_points(points, normals, [0, 0, 2.0])
    assert mask[:100000].mean() > 0.99 and mask[100000:].mean() < 0.05


def test_density_resampling_draws_from_a_subset_of_the_drawn_size():
    rng = np.random.default_rng(0)
    sizes = []
    for _ in range(50):
        index = resample_density(40000, 1000, rng, [300, 30000])
        assert index.shape == (1000,)
        sizes.append(len(np.unique(index)))
    assert min(sizes) < 1000 and max(sizes) <= 1000  # sparse draws repeat points
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    index = resample_density(40000, 1000, rng_a, [300, 300])
    n = 300
    rng_b.uniform()  # the drawn count (fixed by the range)
    subset = rng_b.choice(40000, size=n, replace=False)
    assert set(index) <= set(subset) and len(np.unique(index)) <= n
    # Exactly input_points points from the whole augment step, noise from noise_range.
    sample = sphere_sample()
    options = {"points_range": [300, 300], "noise_range": [0.0, 0.0], "input_points": 2000,
               "input_noise": 0.005}
    augment_sample(sample, np.random.default_rng(0), options)
    assert sample["inputs"].shape == (2000, 3) and sample["inputs.normals"].shape == (2000, 3)
    assert len(np.unique(sample["inputs"], axis=0)) <= 300
    np.testing.assert_allclose(np.linalg.norm(sample["inputs"], axis=1), RADIUS, atol=1e-5)


def test_sparse_fill_none_keeps_distinct_points_and_collate_cuts_to_one_density():
    rng = np.random.default_rng(0)
    counts = []
    for _ in range(200):
        index, n = distinct_subset(40000, 3000, rng, [300, 3000])
        assert index.shape == (3000,) and len(np.unique(index)) == 3000
        assert 300 <= n <= 3000
        counts.append(n)
    # Log-uniform: as many draws below the geometric mean (949) as above it.
    assert 0.35 < np.mean(np.array(counts) < np.sqrt(300 * 3000)) < 0.65
    index, n = distinct_subset(500, 3000, rng, [300, 3000])  # fewer points than asked
    assert sorted(index) == list(range(500)) and n <= 500

    options = {"points_range": [300, 3000], "sparse_fill": "none", "noise_range": [0.0, 0.0],
               "input_points": 2000, "input_noise": 0.005}
    samples = [augment_sample(sphere_sample(seed=seed), np.random.default_rng(seed), options)
               for seed in range(3)]
    for sample in samples:
        assert len(np.unique(sample["inputs"], axis=0)) == 2000
    batch = collate(samples)
    first = samples[0]["inputs.count"]
    assert "inputs.count" not in batch and first != samples[1]["inputs.count"]
    assert batch["inputs"].shape == (3, first, 3) and batch["inputs.normals"].shape[1] == first
    np.testing.assert_array_equal(batch["inputs"][1].numpy(), samples[1]["inputs"][:first])
    assert batch["points"].shape == (3, 4000, 3)  # query points are not cut
    sample = augment_sample(sphere_sample(), np.random.default_rng(0),
                            {**options, "sparse_fill": "resample"})
    assert "inputs.count" not in sample and len(np.unique(sample["inputs"], axis=0)) < 2000


def test_full_augment_keeps_shapes():
    data = data_section({"rotation": "any", "anisotropic_scale": [0.8, 1.25],
                         "points_range": [300, 30000], "noise_range": [0.0, 0.01],
                         "partial_views": [1, 3], "partial_probability": 0.3},
                        input_points=3000)
    options = augment_options(data)
    for seed in range(5):
        sample = augment_sample(sphere_sample(), np.random.default_rng(seed), options)
        assert sample["inputs"].shape == (3000, 3) and sample["inputs"].dtype == np.float32
        assert sample["points"].shape == (4000, 3)
    assert isinstance(run_fields(data, True)["inputs"], PointCloudField)
    assert run_fields(data, True)["inputs"].transform is None
    assert run_fields(data, False)["inputs"].transform is not None  # validation unchanged


def test_defaults_change_nothing():
    data = data_section()
    assert data["augment"] == {"rotation": "none", "anisotropic_scale": None,
                               "points_range": None, "noise_range": None,
                               "partial_views": None, "partial_probability": 1.0,
                               "sparse_fill": "resample"}
    assert augment_options(data) is None
    assert augment_options(data_section({"partial_probability": 0.3})) is None
    assert augment_options({**data, "input": "voxels",
                            "augment": {**data["augment"], "rotation": "up"}}) is None
    assert run_fields(data, True)["inputs"].transform is not None
    sample = sphere_sample()
    same = augment_sample(sphere_sample(), np.random.default_rng(0), data["augment"])
    for key, value in sample.items():
        assert np.array_equal(value, same[key]) if isinstance(value, np.ndarray) \
            else value == same[key]


@pytest.mark.parametrize("augment, expected", [
    ({"rotate": "up"}, "unknown key 'data.augment.rotate'"),
    ({"rotation": "z"}, "'data.augment.rotation' must be one of none, up, any"),
    ({"anisotropic_scale": 1.2}, "'data.augment.anisotropic_scale' must be a list [min, max]"),
    ({"anisotropic_scale": [1.25, 0.8]}, "min <= max"),
    ({"points_range": [300, 3e4]}, "'data.augment.points_range' must be a list [min, max]"),
    ({"points_range": [0, 10]}, "'data.augment.points_range' must be >= 1"),
    ({"noise_range": [0.0, 0.01, 0.02]}, "must be a list [min, max] of two float"),
    ({"partial_probability": 1.5}, "'data.augment.partial_probability' must be <= 1"),
    ("up", "'data.augment' must be a mapping"),
])
def test_config_errors(augment, expected):
    with pytest.raises(UserError) as error:
        data_section(augment)
    assert expected in str(error.value)


def test_config_values():
    data = data_section({"rotation": "up", "anisotropic_scale": [1, 2],
                         "points_range": [300, 30000]})
    assert data["augment"]["anisotropic_scale"] == [1.0, 2.0]
    assert data["augment"]["points_range"] == [300, 30000]
    assert data["augment"]["partial_views"] is None
    assert data_section(None)["augment"]["rotation"] == "none"
