"""What the image model sees (backend.engine.image_view), the photo-like render looks
(training.data.looks), the training views on backgrounds and the /v1/image_view endpoint."""

import numpy as np
import pytest
from PIL import Image

from backend.engine.image_view import IMAGE_SIZE, OBJECT_FILL, estimate_foreground, model_view
from training.data.looks import LOOKS, composite, random_background, random_look
from training.data.procedural import build_shape
from training.data.render import render_views


def dark_box(view):
    """(centre row, centre col, side) of the non-white pixels of a model view (224, 224, 3)."""
    mask = (view < 240).any(axis=2)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return ((rows[0] + rows[-1] + 1) / 2, (cols[0] + cols[-1] + 1) / 2,
            max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1))


def rectangle(height, width, top, left, rows, cols, colour=(40, 90, 200)):
    """(H, W, 4) uint8 RGBA, transparent but for an opaque rectangle."""
    rgba = np.zeros((height, width, 4), np.uint8)
    rgba[top:top + rows, left:left + cols, :3] = colour
    rgba[top:top + rows, left:left + cols, 3] = 255
    return rgba


@pytest.fixture(scope="module")
def chair():
    return build_shape("chair", 0, 3, 64)


def test_alpha_crop_centres_and_scales_the_object():
    """A small object off-centre in a wide image comes out centred at OBJECT_FILL."""
    view = model_view(rectangle(300, 500, 20, 350, 60, 40))
    assert view.mask_source == "alpha" and view.rgb.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    row, col, side = dark_box(view.rgb)
    assert abs(row - IMAGE_SIZE / 2) <= 2 and abs(col - IMAGE_SIZE / 2) <= 2
    assert abs(side / IMAGE_SIZE - OBJECT_FILL) < 0.02
    assert (view.rgb[0, 0] == 255).all()  # padding is white


def test_large_photo_is_averaged_down_to_the_view_of_a_small_one():
    """A 2400 px photo (block-averaged before resampling) gives the view of the same photo
    at 480 px, and a half-transparent object keeps its composite colour."""
    def photo(scale):  # near a corner, the image's sides not multiples of the block
        rgba = rectangle(480 * scale + 3, 400 * scale + 1, 220 * scale, 220 * scale,
                         250 * scale, 170 * scale)
        rgba[220 * scale:280 * scale, 220 * scale:390 * scale, 3] = 128  # translucent band
        return rgba

    large, small = model_view(photo(5)), model_view(photo(1))
    assert np.abs(np.subtract(large.box, [5 * v for v in small.box])).max() <= 5
    difference = np.abs(large.rgb.astype(int) - small.rgb)
    assert difference.mean() < 1.0 and np.percentile(difference, 99) <= 40
    assert np.abs(np.subtract(dark_box(large.rgb), dark_box(small.rgb))).max() <= 1
    middle = large.rgb[IMAGE_SIZE // 2, IMAGE_SIZE // 2]
    assert np.abs(middle.astype(int) - (40, 90, 200)).max() <= 1
    band = large.rgb[dark_box(large.rgb)[0].astype(int) - 50, IMAGE_SIZE // 2]
    assert np.abs(band.astype(int) - np.round((np.array([40, 90, 200]) + 255) / 2)).max() <= 2


def test_training_renders_keep_their_framing(chair):
    """A training render already has the object centred at about OBJECT_FILL: the crop
    changes its size by little (the renders span 0.44 to 0.66)."""
    images, _ = render_views(chair.sdf, 2, 224, np.random.default_rng(0))
    for image in images:
        view = model_view(image)
        _, _, side = dark_box(view.rgb)
        assert abs(side / IMAGE_SIZE - OBJECT_FILL) < 0.02
        assert 0.65 < view.box[2] / 224 < 1.35


def test_foreground_estimate_on_plain_backgrounds_matches_the_alpha(chair):
    """Over every look and random backgrounds: mostly the alpha's mask; a background the
    colour of the object's shaded side loses that side (the worst case here, a grey chair's
    dark legs on a dark background), never the object."""
    rng = np.random.default_rng(1)
    ious = []
    for look in LOOKS:
        for image in render_views(chair.sdf, 3, 224, rng, look)[0]:
            photo = composite(image, random_background(224, 224, rng))
            assert (photo[..., 3] == 255).all()
            estimated, problem = estimate_foreground(photo[..., :3])
            assert estimated is not None, problem
            truth = image[..., 3] >= 128
            ious.append((estimated & truth).sum() / (estimated | truth).sum())
            view, reference = model_view(photo), model_view(image)
            assert view.mask_source == "estimated" and reference.mask_source == "alpha"
            if ious[-1] > 0.95:
                assert np.abs(view.rgb.astype(int) - reference.rgb).mean() < 6
    assert np.median(ious) > 0.95 and min(ious) > 0.5, ious


def test_busy_background_keeps_the_whole_frame_and_says_so():
    rng = np.random.default_rng(2)
    noise = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    view = model_view(np.dstack([noise, np.full((120, 160), 255, np.uint8)]))
    assert view.mask_source == "none" and view.box == (-20, 0, 160)
    assert "not plain" in view.notes[0] and "alpha" in view.notes[0]


def test_large_holes_stay_open_and_small_ones_close():
    """A ring's hole is background seen through the object; a few pixels of background
    colour inside the object are part of it."""
    size = 200
    y, x = np.mgrid[:size, :size]
    radius = np.hypot(y - 100, x - 100)
    rgb = np.full((size, size, 3), 200, np.uint8)
    rgb[(radius < 60) & (radius > 30)] = (30, 30, 30)
    rgb[98:101, 98:101] = (30, 30, 30)  # specks in the ring's hole are dropped too
    rgb[45:48, 100:103] = 200  # a small patch of background colour on the ring
    mask, _ = estimate_foreground(rgb)
    assert not mask[100, 80] and not mask[99, 99]  # the hole
    assert mask[46, 101]  # the patch, filled
    assert mask[100, 45]


def test_empty_alpha_is_reported():
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., 3] = 0
    view = model_view(rgba)
    assert "empty" in view.notes[0]


def test_looks_differ_and_plain_is_the_original_grey(chair):
    rng = np.random.default_rng(3)
    plain = random_look("plain", rng)
    assert np.allclose(plain.albedo, 0.8) and plain.stripes == 0 and plain.specular == 0
    photos = [random_look("photo", rng) for _ in range(20)]
    assert len({tuple(np.round(look.albedo, 3)) for look in photos}) == 20
    novel = random_look("novel", rng)
    assert novel.stripes > 0 and not np.allclose(novel.albedo, novel.second)
    images, _ = render_views(chair.sdf, 1, 96, np.random.default_rng(0), "novel")
    object_colours = images[0][images[0][..., 3] == 255][:, :3]
    assert len(np.unique(object_colours // 32, axis=0)) > 4  # two tones, shaded
    with pytest.raises(ValueError, match="unknown look"):
        random_look("glossy", rng)


def test_training_views_on_backgrounds_reach_the_model_cut_out(tmp_path, chair, monkeypatch):
    """ImagesField with backgrounds=1 lays every view on a random background; the
    foreground estimate cuts it out again, so the model sees nearly the plain view."""
    from training.data import fields
    from training.data.fields import ImagesField

    laid = []
    monkeypatch.setattr(fields, "composite",
                        lambda rgba, background: laid.append(1) or composite(rgba, background))

    folder = tmp_path / "shape"
    (folder / "img_choy2016").mkdir(parents=True)
    image = render_views(chair.sdf, 1, 224, np.random.default_rng(4), "photo")[0][0]
    Image.fromarray(image).save(folder / "img_choy2016" / "000.png")
    plain = ImagesField(random_view=False).load(folder, np.random.default_rng(0))
    photo = ImagesField(random_view=False, backgrounds=1.0).load(folder, np.random.default_rng(0))
    assert plain.shape == photo.shape == (3, IMAGE_SIZE, IMAGE_SIZE)
    assert laid == [1] and np.abs(plain - photo).mean() < 0.03


def test_procedural_views_with_looks_and_backgrounds(tmp_path):
    from training.data.procedural import Options, generate

    generate(tmp_path, ["mug"], 1, 0, 1, Options(points=2000, views=2, image_size=48,
                                                  resolution=32, look="novel",
                                                  backgrounds=True))
    views = sorted((tmp_path / "mug" / "00000" / "img_choy2016").glob("*.png"))
    assert len(views) == 2
    rgba = np.asarray(Image.open(views[0]).convert("RGBA"))
    assert (rgba[..., 3] == 255).all() and not (rgba[0, 0, :3] == 255).all()


def test_image_view_endpoint(tmp_path):
    from backend.service.client import ServerError, launch

    local = launch()
    try:
        answer = local.client.image_view(image=rectangle(100, 100, 10, 60, 20, 30))
        assert answer["rgb"].shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
        assert answer["mask_source"] == "alpha" and answer["box"][2] == round(30 / OBJECT_FILL)
        np.testing.assert_array_equal(answer["rgb"],
                                      model_view(rectangle(100, 100, 10, 60, 20, 30)).rgb)
        with pytest.raises(ServerError, match="image frame"):
            local.client.image_view(points=np.zeros((5, 3), np.float32))
    finally:
        local.stop()


def test_numpy_components_and_holes_equal_scipy():
    """The bundled engine has no SciPy: label_components and fill_holes are numpy, and
    number and fill as scipy.ndimage does (4-connectivity)."""
    from scipy import ndimage

    from backend.engine.image_view import fill_holes, label_components

    rng = np.random.default_rng(7)
    spiral = np.zeros((60, 60), bool)
    for i in range(0, 30, 4):  # a long, winding component
        spiral[i, i:60 - i] = spiral[i:60 - i, 60 - i - 1] = True
        spiral[60 - i - 1, i + 2:60 - i] = spiral[i + 2:60 - i, i + 2] = True
    for mask in (rng.random((50, 70)) < p for p in (0.3, 0.5, 0.7)):
        for case in (mask, spiral):
            labels, count = label_components(case)
            expected, expected_count = ndimage.label(case)
            assert count == expected_count
            np.testing.assert_array_equal(labels, expected)
            np.testing.assert_array_equal(fill_holes(case), ndimage.binary_fill_holes(case))
