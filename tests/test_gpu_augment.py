"""Batched crop / rotation / brightness-contrast on the device (refers_lite.data.loading.gpu_augment)."""
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

from refers_lite.data.loading.gpu_augment import StudyAugment, affine_matrices, apply_affine


def _films(*shape, seed=0):
    """Smooth-ish uint8 test images of ``shape`` (..., C, S, S): a gradient plus noise."""
    g = torch.Generator().manual_seed(seed)
    s = shape[-1]
    ramp = torch.linspace(40, 200, s).view(s, 1) + torch.linspace(0, 30, s).view(1, s)  # (S, S)
    noise = torch.randint(-20, 21, shape, generator=g)
    return (ramp + noise).clamp(0, 255).to(torch.uint8)


def _bar(size=65):
    """(1, 1, size, size) float: a bright horizontal bar right of the centre, on the middle row."""
    x = torch.zeros(1, 1, size, size)
    mid = size // 2
    x[0, 0, mid - 2:mid + 3, mid + 8:mid + 28] = 1
    return x


def _bright_rows_cols(img):
    on = (img > 0.5).nonzero()
    return on[:, 0].float().mean().item(), on[:, 1].float().mean().item()


@pytest.mark.parametrize("shape", [(2, 3, 1, 32, 32), (4, 1, 32, 32)])
def test_identity_when_nothing_to_crop_or_resize(shape):
    images = _films(*shape)
    aug = StudyAugment(out_size=32, crop_fraction=1.0)
    out = aug(images, train=False)
    assert out.dtype == torch.float32 and out.shape == shape
    torch.testing.assert_close(out, images.float() / 255, atol=1e-5, rtol=0)
    floats = images.float() / 255
    torch.testing.assert_close(aug(floats, train=False), floats, atol=1e-5, rtol=0)


@pytest.mark.parametrize("train", [True, False])
def test_shape_dtype_and_range(train):
    images = _films(2, 3, 1, 64, 64)
    aug = StudyAugment(out_size=56, brightness=0.5, contrast=0.5)
    out = aug(images, train=train, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 1, 56, 56) and out.dtype == torch.float32 and out.device == images.device
    assert out.min() >= 0 and out.max() <= 1
    flat = aug(images[:, 0], train=train, generator=torch.Generator().manual_seed(0))  # (B, C, S, S)
    assert flat.shape == (2, 1, 56, 56)
    assert aug(images[:0], train=train).shape == (0, 3, 1, 56, 56)


def test_seeded_generator_repeats_and_other_seeds_differ():
    images = _films(3, 2, 1, 48, 48)
    aug = StudyAugment(out_size=40)
    a = aug(images, train=True, generator=torch.Generator().manual_seed(5))
    b = aug(images, train=True, generator=torch.Generator().manual_seed(5))
    c = aug(images, train=True, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    torch.manual_seed(5)  # generator=None draws from the default generator
    d = aug(images, train=True)
    torch.manual_seed(5)
    assert torch.equal(d, aug(images, train=True))


def test_every_image_gets_its_own_crop():
    one = _films(1, 1, 1, 64, 64)
    images = one.expand(4, 3, 1, 64, 64).contiguous()  # 12 copies of one image
    aug = StudyAugment(out_size=32, crop_fraction=0.5, max_rotation_deg=0, brightness=0, contrast=0)
    out = aug(images, train=True, generator=torch.Generator().manual_seed(0)).reshape(12, -1)
    diffs = torch.cdist(out, out)  # (12, 12)
    assert (diffs + torch.eye(12) * 1e9).min() > 1e-3  # no two crops alike, views of one study included


def test_crops_stay_on_the_film_without_rotation():
    """The window never leaves the image before rotation: no black (zero-padded) pixels appear."""
    images = torch.full((16, 1, 40, 40), 200, dtype=torch.uint8)
    aug = StudyAugment(out_size=30, crop_fraction=0.6, max_rotation_deg=0, brightness=0, contrast=0)
    out = aug(images, train=True, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out, torch.full_like(out, 200 / 255), atol=1e-5, rtol=0)


def test_rotation_turns_the_picture_counter_clockwise_for_positive_angles():
    x = _bar()  # bar on the right of the centre
    mid = 32
    row, col = _bright_rows_cols(x[0, 0])
    assert row == mid and col > mid + 10
    up = apply_affine(x, affine_matrices(1.0, torch.tensor([90.0]), torch.zeros(1, 2)), 65)
    row, col = _bright_rows_cols(up[0, 0])
    assert row < mid - 10 and abs(col - mid) < 0.5  # right -> top: counter-clockwise on screen
    down = apply_affine(x, affine_matrices(1.0, torch.tensor([-90.0]), torch.zeros(1, 2)), 65)
    row, col = _bright_rows_cols(down[0, 0])
    assert row > mid + 10 and abs(col - mid) < 0.5
    tilt = apply_affine(x, affine_matrices(1.0, torch.tensor([10.0]), torch.zeros(1, 2)), 65)
    row, col = _bright_rows_cols(tilt[0, 0])
    assert row < mid - 1 and col > mid + 10  # a small positive angle lifts the right end


def test_rotation_matches_torchvision_rotate():
    x = _films(1, 1, 48, 48).float() / 255
    for angle in (7.0, -10.0):
        ours = apply_affine(x, affine_matrices(1.0, torch.tensor([angle]), torch.zeros(1, 2)), 48)
        ref = TF.rotate(x, angle, interpolation=TF.InterpolationMode.BILINEAR)
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)


def test_window_centre_moves_the_crop():
    x = torch.zeros(1, 1, 64, 64)
    x[0, 0, 8:16, 40:56] = 1  # a patch in the upper right
    theta = affine_matrices(0.5, torch.zeros(1), torch.tensor([[0.5, -0.5]]))  # the upper-right quarter
    out = apply_affine(x, theta, 32)
    torch.testing.assert_close(out, x[:, :, 0:32, 32:64], atol=1e-6, rtol=0)


def test_rotated_windows_are_zero_padded_at_the_corners():
    images = torch.full((1, 1, 32, 32), 255, dtype=torch.uint8)
    aug = StudyAugment(out_size=32, crop_fraction=1.0, max_rotation_deg=45, brightness=0, contrast=0)
    theta = affine_matrices(1.0, torch.tensor([45.0]), torch.zeros(1, 2))
    out = apply_affine(images.float() / 255, theta, 32)
    assert out[0, 0, 0, 0] == 0 and out[0, 0, 16, 16] == 1
    out = aug(images.expand(64, 1, 32, 32), train=True, generator=torch.Generator().manual_seed(0))
    assert (out[:, 0, 0, 0] < 0.5).float().mean() > 0.3  # most random angles blacken a corner


@pytest.mark.parametrize("size,out_size,crop", [(256, 224, 224 / 256), (64, 80, 0.75), (48, 24, 1.0)])
def test_eval_is_a_centre_crop_resized_bilinear(size, out_size, crop):
    images = _films(2, 2, 1, size, size)
    aug = StudyAugment(out_size=out_size, crop_fraction=crop)
    side = round(size * crop)
    lo = (size - side) // 2
    x = images.float().reshape(4, 1, size, size) / 255
    if aug.resize_to < size:  # the paper's "resize, then centre crop"
        ref = F.interpolate(x, size=(out_size, out_size), mode="bilinear", align_corners=False, antialias=True)
    else:
        ref = F.interpolate(x[:, :, lo:lo + side, lo:lo + side], size=(out_size, out_size), mode="bilinear",
                            align_corners=False)
    out = aug(images, train=False)
    ref = ref.reshape(2, 2, 1, out_size, out_size)
    # inside, the same numbers; on the outermost output pixels an upsampling window blends in the film just
    # outside it, which F.interpolate of the cut-out crop cannot see (it clamps to the crop's edge)
    torch.testing.assert_close(out[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], atol=1e-5, rtol=0)
    torch.testing.assert_close(out, ref, atol=40 / 255 if out_size > side else 1e-5, rtol=0)
    assert torch.equal(out, aug(images, train=False, generator=torch.Generator().manual_seed(3)))


def test_small_outputs_are_antialiased():
    """256 px film, 32 px model: resized first (antialiased), so a pixel checkerboard comes out grey."""
    ii, jj = torch.meshgrid(torch.arange(256), torch.arange(256), indexing="ij")
    checker = (((ii + jj) % 2) * 255).to(torch.uint8).view(1, 1, 256, 256)
    aug = StudyAugment(out_size=32, max_rotation_deg=10, brightness=0, contrast=0)
    for train in (False, True):
        out = aug(checker, train=train, generator=torch.Generator().manual_seed(0))
        centre = out[0, 0, 8:24, 8:24]  # away from rotated corners
        assert (centre - 0.5).abs().max() < 0.05, train


def test_brightness_and_contrast_per_image():
    images = _films(8, 1, 32, 32) // 2 + 60  # 80..185: no clamping at 0 or 255 below
    x = images.float() / 255
    shift_only = StudyAugment(out_size=32, crop_fraction=1.0, max_rotation_deg=0, brightness=0.1, contrast=0)
    out = shift_only(images, train=True, generator=torch.Generator().manual_seed(0))
    d = (out - x).flatten(1)  # (8, S*S): a constant per image
    assert (d.std(1) < 1e-5).all() and (d.mean(1).abs() <= 0.1 + 1e-6).all() and d.mean(1).std() > 0.01
    gain_only = StudyAugment(out_size=32, crop_fraction=1.0, max_rotation_deg=0, brightness=0, contrast=0.3)
    out = gain_only(images, train=True, generator=torch.Generator().manual_seed(0))
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    gain = ((out - mean) / (x - mean)).flatten(1)[:, :40]  # (8, 40): a constant per image
    torch.testing.assert_close(out.mean(dim=(1, 2, 3), keepdim=True), mean, atol=1e-5, rtol=0)
    assert (gain.std(1) < 1e-3).all() and ((gain.mean(1) - 1).abs() <= 0.3 + 1e-4).all()
    assert gain.mean(1).std() > 0.01


def test_bad_inputs():
    aug = StudyAugment(out_size=16)
    with pytest.raises(ValueError, match="shape"):
        aug(torch.zeros(16, 16, dtype=torch.uint8), train=False)
    with pytest.raises(ValueError, match="square"):
        aug(torch.zeros(1, 1, 16, 20, dtype=torch.uint8), train=False)
    with pytest.raises(TypeError, match="uint8"):
        aug(torch.zeros(1, 1, 16, 16, dtype=torch.int64), train=False)
    with pytest.raises(ValueError, match="crop_fraction"):
        StudyAugment(out_size=16, crop_fraction=1.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_and_repeats():
    images = _films(4, 3, 1, 256, 256)
    aug = StudyAugment(out_size=224)
    dev = torch.device("cuda")
    torch.testing.assert_close(aug(images.to(dev), train=False).cpu(), aug(images, train=False), atol=1e-4, rtol=0)
    a = aug(images.to(dev), train=True, generator=torch.Generator(dev).manual_seed(0))
    b = aug(images.to(dev), train=True, generator=torch.Generator(dev).manual_seed(0))
    assert a.device.type == "cuda" and torch.equal(a, b)
    with pytest.raises(ValueError, match="generator"):
        aug(images.to(dev), train=True, generator=torch.Generator().manual_seed(0))
