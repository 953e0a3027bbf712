"""load_image copes with every image mode users meet; Preprocess reproduces TF-slim's evaluation crop."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenet.preprocess import ImageError, Preprocess, load_image, preprocess_for, to_rgb


def _gradient(width: int = 40, height: int = 30) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // (width - 1), y * 255 // (height - 1), np.full_like(x, 77)], -1).astype(np.uint8)


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200  # red, but fully transparent on the left half
    rgba[:, 4:, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = np.asarray(load_image(tmp_path / "a.png"))
    assert out.shape == (8, 8, 3)
    assert (out[:, :4] == 255).all()  # the hidden red must not show through
    assert (out[:, 4:] == (200, 0, 0)).all()


def test_palette_grayscale_cmyk_become_rgb(tmp_path):
    rgb = Image.fromarray(_gradient())
    rgb.convert("P").save(tmp_path / "p.png")
    rgb.convert("L").save(tmp_path / "l.jpg")
    rgb.convert("CMYK").save(tmp_path / "c.jpg")
    rgb.convert("1").save(tmp_path / "b.bmp")
    for name in ("p.png", "l.jpg", "c.jpg", "b.bmp"):
        img = load_image(tmp_path / name)
        assert img.mode == "RGB" and img.size == (40, 30), name
    gray = np.asarray(load_image(tmp_path / "l.jpg")).astype(int)
    assert np.abs(gray[..., 0] - gray[..., 2]).max() == 0  # a gray image stays gray


def test_16bit_grayscale_is_scaled_not_clipped(tmp_path):
    values = np.linspace(0, 65535, 64 * 4).reshape(4, 64).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    out = np.asarray(load_image(tmp_path / "g16.png"))[..., 0]
    assert out.min() == 0 and out.max() == 255
    assert 120 <= out.mean() <= 135  # mid-range stays mid-range


def test_dark_16bit_image_is_as_dark_as_its_8bit_equivalent(tmp_path):
    """A 16-bit file whose brightest pixel is 198 of 65535 is nearly black, not an 8-bit picture:
    the mode (or, for PGM, the file's maxval) declares the depth, not the brightest pixel."""
    values = np.linspace(0, 198, 64 * 4).reshape(4, 64).astype(np.uint16)
    eight_bit = np.round(values / 257).astype(np.uint8)  # the same light on the 0-255 scale
    Image.fromarray(values).save(tmp_path / "dark16.png")
    Image.fromarray(values).save(tmp_path / "dark16.pgm")  # maxval 65535; Pillow reopens it as mode "I"
    assert Image.open(tmp_path / "dark16.png").mode == "I;16"
    for name in ("dark16.png", "dark16.pgm"):
        out = np.asarray(load_image(tmp_path / name))
        assert np.array_equal(out, np.repeat(eight_bit[..., None], 3, -1)), name
    assert np.array_equal(np.asarray(to_rgb(Image.fromarray(values))), np.repeat(eight_bit[..., None], 3, -1))
    # Pillow's 32-bit "I" declares no depth: 8-bit data converted to it stays 8-bit data.
    gray = Image.fromarray(_gradient()[..., 0])
    gray.convert("I").save(tmp_path / "i32.tiff")
    for img in (gray.convert("I"), load_image(tmp_path / "i32.tiff")):
        assert np.array_equal(np.asarray(to_rgb(img))[..., 0], np.asarray(gray))


def test_exif_rotation_is_applied(tmp_path):
    img = Image.fromarray(_gradient(40, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    img.save(tmp_path / "r.jpg", exif=exif.tobytes())
    assert load_image(tmp_path / "r.jpg").size == (30, 40)


def test_unreadable_files_raise_image_error(tmp_path):
    (tmp_path / "text.jpg").write_text("not an image")
    Image.fromarray(_gradient()).save(tmp_path / "full.jpg", quality=95)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    for name in ("text.jpg", "cut.jpg", "absent.png"):
        with pytest.raises(ImageError, match=re.escape(name)):
            load_image(tmp_path / name)
    assert issubclass(ImageError, ValueError)


def test_eval_transform_matches_tf_central_crop_by_hand():
    pre = Preprocess(resolution=16, crop_fraction=0.5, interpolation="nearest")
    arr = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    x = pre.eval_transform()(Image.fromarray(arr))
    # Half of each side kept (rows/cols 8..23); nearest resize to 16 is then the identity.
    expected = (torch.from_numpy(arr[8:24, 8:24]).float() - 127.5) / 127.5
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    torch.testing.assert_close(x, expected.permute(2, 0, 1), atol=1e-6, rtol=0)


def test_resize_shorter_mode_keeps_aspect_and_exact_size():
    pre = Preprocess(resolution=(20, 24), crop_mode="resize_shorter", mean=(0.485, 0.456, 0.406),
                     std=(0.229, 0.224, 0.225))
    x = pre.eval_transform()(Image.fromarray(_gradient(100, 50)))
    assert x.shape == (3, 20, 24)


def test_preprocess_round_trips_and_validates():
    pre = Preprocess(resolution=(192, 160), crop_fraction=0.9, interpolation="bicubic")
    assert Preprocess.from_dict(pre.to_dict()) == pre
    with pytest.raises(ValueError, match="crop_fraction"):
        Preprocess(crop_fraction=0)
    with pytest.raises(ValueError, match="interpolation"):
        Preprocess(interpolation="lanczos5")
    with pytest.raises(ValueError, match="unknown preprocessing"):
        Preprocess.from_dict({"resolution": 224, "colour": "blue"})


def test_one_default_recipe_and_the_models_own_before_it():
    default = Preprocess.default(96)
    assert default == Preprocess(resolution=(96, 96), mean=(0.5,) * 3, std=(0.5,) * 3, crop_fraction=0.875)
    fresh = SimpleNamespace(arch_cfg=SimpleNamespace(resolution=(64, 48)))
    assert preprocess_for(fresh) == Preprocess.default((64, 48))  # no published weights
    published = Preprocess(resolution=64, crop_mode="resize_shorter", interpolation="bicubic")
    fresh.pretrained_cfg = SimpleNamespace(preprocess=published)
    assert preprocess_for(fresh) is published


def test_with_resize_tf_brings_bilinear_with_it():
    timm_like = Preprocess(resolution=32, interpolation="bicubic", crop_mode="resize_shorter")
    assert timm_like.with_resize(None) is timm_like
    assert timm_like.with_resize("tf") == timm_like.replace(resize="tf", interpolation="bilinear")
    assert timm_like.with_resize("pillow") == timm_like  # already Pillow's


def test_to_rgb_float_image():
    img = Image.fromarray(np.full((4, 4), 0.5, np.float32), mode="F")
    assert np.asarray(to_rgb(img))[0, 0, 0] in (127, 128)


def test_grayscale_recipe_gives_one_channel():
    pre = Preprocess(resolution=8, mean=(0.5,), std=(0.5,), crop_fraction=1.0)
    x = pre.eval_transform()(Image.fromarray(np.full((8, 8, 3), (255, 0, 0), np.uint8)))
    assert x.shape == (1, 8, 8)
    torch.testing.assert_close(x, torch.full((1, 8, 8), 0.299 * 2 - 1), atol=1e-3, rtol=0)  # luma of pure red
    with pytest.raises(ValueError, match="same length"):
        Preprocess(mean=(0.5,), std=(0.5, 0.5, 0.5))


# ------------------------------------------------------------------------- TF's evaluation resize


def _tf1_resize_reference(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """TF1 resize_bilinear (align_corners=False, half_pixel_centers=False), written out pixel by
    pixel from its definition, independently of mobilenet.preprocess: output (y, x) samples the
    input at (y * in_h / out_h, x * in_w / out_w), interpolating the neighbours below and right
    (clamped at the last row / column)."""
    in_h, in_w = image.shape[:2]
    out = np.zeros((out_h, out_w, image.shape[2]), np.float64)
    for y in range(out_h):
        sy = y * (in_h / out_h)
        y0 = int(np.floor(sy))
        y1 = min(y0 + 1, in_h - 1)
        fy = sy - y0
        for x in range(out_w):
            sx = x * (in_w / out_w)
            x0 = int(np.floor(sx))
            x1 = min(x0 + 1, in_w - 1)
            fx = sx - x0
            top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
            bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
            out[y, x] = top * (1 - fy) + bottom * fy
    return out


@pytest.mark.parametrize(("size", "out"), [((227, 227), (128, 128)), ((199, 199), (224, 224)),
                                           ((50, 37), (21, 64))])
def test_tf_resize_matches_an_independent_implementation(size, out):
    from mobilenet.preprocess import tf_resize_bilinear

    image = np.random.default_rng(size[0]).integers(0, 256, (*size, 3)).astype(np.uint8)
    got = tf_resize_bilinear(image, out)
    want = _tf1_resize_reference(image.astype(np.float64), *out)
    assert got.shape == (*out, 3) and got.dtype == np.float32
    assert np.abs(got - want).max() < 1e-2  # float32 (as TF computes) against float64: 1/100 of a level


def test_tf_preprocess_is_tf_slims_eval_and_differs_from_pillows():
    """central_crop's integer box, TF's resize without rounding, (x - 127.5) / 127.5; Pillow's
    antialiased resize moves the 128-px input by whole uint8 levels, which is what the option
    is for and why TF weights default to resize='tf'."""
    from mobilenet.preprocess import tf_resize_bilinear

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (227, 227, 3)).astype(np.uint8)
    img = Image.fromarray(pixels)
    tf = Preprocess(resolution=128, resize="tf")
    left, top, right, bottom = tf.crop_box(227, 227)
    assert (left, top, right, bottom) == (14, 14, 213, 213)  # int((227 - 227 * 0.875) / 2) = 14
    want = _tf1_resize_reference(pixels[14:213, 14:213].astype(np.float64), 128, 128) / 127.5 - 1
    got = tf.eval_transform()(img).permute(1, 2, 0).numpy()
    assert np.abs(got - want).max() < 1e-4
    assert np.array_equal(tf_resize_bilinear(pixels, (227, 227)), pixels.astype(np.float32))  # identity size
    pillow = Preprocess(resolution=128).eval_transform()(img).permute(1, 2, 0).numpy()
    assert np.abs(pillow - got).mean() * 127.5 > 4  # several uint8 levels apart on average
    with pytest.raises(ValueError, match="resize must be one of"):
        Preprocess(resize="antialias")


@pytest.mark.parametrize(("width", "height"), [(500, 375), (375, 500), (333, 501), (640, 427), (50, 50)])
def test_shorter_side_resize_truncates_as_torchvision_and_timm(width, height):
    """timm's eval resize is ``Resize(math.floor(224 / crop_pct))`` in torchvision, which truncates
    both sides: 248 px at timm's crop 0.9, not 249 (issue 18, item 11)."""
    torchvision = pytest.importorskip("torchvision")
    pre = Preprocess(resolution=224, crop_fraction=0.9, crop_mode="resize_shorter", interpolation="bicubic")
    expected = torchvision.transforms.Resize(248)(Image.new("RGB", (width, height))).size
    assert pre.shorter_side_size(width, height) == (max(224, expected[0]), max(224, expected[1]))
    # transformers' 192 + 32 shorter side, whose crop fraction is not exact in floats
    assert Preprocess(resolution=192, crop_fraction=192 / 224, crop_mode="resize_shorter").shorter_side_size(
        300, 300) == (224, 224)


def test_timm_125_preprocessing_is_timms_own_eval_transform():
    timm = pytest.importorskip("timm")
    from mobilenet.preprocess import sample_photos
    from mobilenet.weights.publishers import timm_preprocess

    data_cfg = timm.data.resolve_data_config({}, model=timm.create_model("mobilenetv1_125", pretrained=False))
    assert data_cfg["crop_pct"] == 0.9
    photo = load_image(sample_photos()[0])
    theirs = timm.data.create_transform(**data_cfg)(photo)
    ours = timm_preprocess(224, 1.25).eval_transform()(photo)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


def _noise(width: int, height: int) -> Image.Image:
    # Random pixels: a crop one pixel off changes nearly every value, where a smooth photo hides it.
    return Image.fromarray(np.random.default_rng(width * height).integers(0, 256, (height, width, 3), np.uint8))


@pytest.mark.parametrize("alpha", [1.0, 1.25])
@pytest.mark.parametrize(("width", "height"), [(640, 427), (427, 640), (512, 418), (300, 257)])
def test_timm_preprocessing_matches_timm_when_the_crop_margin_is_odd(alpha, width, height):
    """timm's eval transform is torchvision's Resize + CenterCrop, whose offset rounds an odd
    margin half to even: 640x427 resizes to 383x256 at timm's crop 0.875 (371x248 at 0.9), and
    the 159 (147) px margin starts the crop at 80 (74), where ``margin // 2`` gave 79 (73).
    512x418 is dogs.jpg's case for 1.25 (dragonfly.bmp), 300x257 a margin of 4k + 1 (same start)."""
    timm = pytest.importorskip("timm")
    from mobilenet.weights.publishers import timm_preprocess

    name = {1.0: "mobilenetv1_100", 1.25: "mobilenetv1_125"}[alpha]
    data_cfg = timm.data.resolve_data_config({}, model=timm.create_model(name, pretrained=False))
    photo = _noise(width, height)
    theirs = timm.data.create_transform(**data_cfg)(photo)
    ours = timm_preprocess(224, alpha).eval_transform()(photo)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


@pytest.mark.assets
@pytest.mark.parametrize(("photo", "alpha"), [("dogs.jpg", 1.0), ("dogs.jpg", 1.25), ("dragonfly.bmp", 1.25)])
def test_timm_preprocessing_matches_timm_on_real_photos_with_odd_margins(assets_dir, photo, alpha):
    timm = pytest.importorskip("timm")
    from mobilenet.weights.publishers import timm_preprocess

    name = {1.0: "mobilenetv1_100", 1.25: "mobilenetv1_125"}[alpha]
    data_cfg = timm.data.resolve_data_config({}, model=timm.create_model(name, pretrained=False))
    image = load_image(assets_dir / "photos" / photo)
    theirs = timm.data.create_transform(**data_cfg)(image)
    torch.testing.assert_close(timm_preprocess(224, alpha).eval_transform()(image), theirs, atol=1e-6, rtol=0)


@pytest.mark.parametrize("resize", ["pillow", "tf"])
@pytest.mark.parametrize(("width", "height", "rounded", "floored"), [(11, 8, 2, 1), (8, 13, 2, 2)])
def test_crop_offset_is_each_publishers_own_centre_crop(resize, width, height, rounded, floored):
    """On an image whose shorter side is already the crop, the recipe is the centre crop alone.
    A margin of 3 starts at 2 in torchvision's CenterCrop (``round``, timm's) and 1 in
    transformers' center_crop (``floor``); a margin of 5 at 2 in both (half to even, not up).
    Pillow's resize and TF's crop alike."""
    torchvision = pytest.importorskip("torchvision")
    image = _noise(width, height)
    recipe = Preprocess(resolution=8, crop_fraction=1.0, crop_mode="resize_shorter", mean=(0.0,) * 3,
                        std=(1.0,) * 3, resize=resize)
    assert recipe.shorter_side_size(width, height) == (width, height)  # resized to itself

    def crop(start: int) -> torch.Tensor:
        pixels = np.asarray(image, dtype=np.float32) / 255
        window = pixels[:, start:start + 8] if width > height else pixels[start:start + 8]
        return torch.from_numpy(window).permute(2, 0, 1)

    reference = torchvision.transforms.functional.pil_to_tensor(torchvision.transforms.CenterCrop(8)(image)) / 255
    assert torch.equal(reference, crop(rounded))
    torch.testing.assert_close(recipe.eval_transform()(image), reference, atol=1e-6, rtol=0)
    floor = recipe.replace(crop_offset="floor").eval_transform()(image)
    torch.testing.assert_close(floor, crop(floored), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="crop_offset must be one of"):
        recipe.replace(crop_offset="ceil")


def test_floor_crop_offset_is_transformers_center_crop():
    transformers = pytest.importorskip("transformers")
    image = _noise(11, 8)
    processor = transformers.MobileNetV1ImageProcessor(do_resize=False, crop_size={"height": 8, "width": 8},
                                                       do_normalize=False)
    theirs = torch.as_tensor(processor(image, return_tensors="pt")["pixel_values"][0])
    recipe = Preprocess(resolution=8, crop_fraction=1.0, crop_mode="resize_shorter", mean=(0.0,) * 3,
                        std=(1.0,) * 3, crop_offset="floor")
    torch.testing.assert_close(recipe.eval_transform()(image), theirs, atol=1e-6, rtol=0)


# TensorFlow 2.21's tf.io.decode_jpeg(channels=3) of matplotlib's grace_hopper.jpg (600x512): the
# SHA-256 of its uint8 pixels and two of them. Taken with TensorFlow itself, which also matched
# decode_like_tf bit for bit on all 1,300 JPEGs of shared/assets/imagenet-val1300 and the photos.
TF_GRACE_HOPPER = ("b50ac7c330a56975677622ef5a46f0d326167b2c4bc0f07d3f44f4b21740d7ef",
                   {(100, 100): [102, 83, 87], (300, 200): [103, 23, 12]})
TF_BURGER = "a7db880532ce7faf8ba2a85a739ac2a59a35fc888fb2af5f80a1fdfeaf93f0dd"  # shared/assets/photos/burger.jpg


def _sha256(image: Image.Image) -> str:
    import hashlib

    return hashlib.sha256(np.asarray(image).tobytes()).hexdigest()


def test_tf_decoder_gives_tensorflows_own_pixels():
    from mobilenet.preprocess import sample_photos

    photo = sample_photos()[0]
    assert photo.name == "grace_hopper.jpg"
    decoded = Preprocess(decoder="tf").open_image(photo)
    digest, pixels = TF_GRACE_HOPPER
    assert decoded.size == (512, 600) and _sha256(decoded) == digest
    for (row, col), rgb in pixels.items():
        assert np.asarray(decoded)[row, col].tolist() == rgb
    pillow = np.asarray(Preprocess().open_image(photo), dtype=np.int16)  # Pillow's accurate IDCT differs
    assert (pillow != np.asarray(decoded)).mean() > 0.5


@pytest.mark.assets
def test_tf_decoder_on_a_real_photo(assets_dir):
    assert _sha256(Preprocess(decoder="tf").open_image(assets_dir / "photos" / "burger.jpg")) == TF_BURGER


def test_tf_decoder_leaves_other_files_to_pillow_and_keeps_its_errors(tmp_path):
    from mobilenet.weights.publishers import tf_preprocess, timm_preprocess

    pre = tf_preprocess(224)
    assert pre.decoder == "tf" and timm_preprocess(224, 1.0).decoder == "pillow"
    Image.fromarray(_gradient(30, 20)).save(tmp_path / "a.png")
    assert np.array_equal(np.asarray(pre.open_image(tmp_path / "a.png")), _gradient(30, 20))
    Image.fromarray(_gradient(64, 48)).save(tmp_path / "full.jpg", quality=90)
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "full.jpg").read_bytes()[:600])
    with pytest.raises(ImageError, match=r"cut\.jpg"):
        pre.open_image(tmp_path / "cut.jpg")
    with pytest.raises(ImageError, match="no such file"):
        pre.open_image(tmp_path / "missing.jpg")


def test_tf_decoder_applies_exif_rotation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90° clockwise to show
    Image.fromarray(_gradient(40, 20)).save(tmp_path / "r.jpg", exif=exif)
    tf_decoded, pillow = Preprocess(decoder="tf").open_image(tmp_path / "r.jpg"), load_image(tmp_path / "r.jpg")
    assert tf_decoded.size == pillow.size == (20, 40)
