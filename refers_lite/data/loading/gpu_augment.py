"""The paper's image augmentation, done on the device on whole batches of uint8 radiographs.

REFERS (Methods): "we resize each radiograph to 256x256 pixels, and then apply random cropping to
produce 224x224 images. Random horizontal flip, random rotation (-10 to 10 degrees) and random
grayscale (brightness and contrast) are also applied." Evaluation: resize to 256, centre crop 224.

:class:`StudyAugment` does all of it except the flip (a flip must swap "left" and "right" in the
report too, so it is done per study on the CPU, where the text is). Per image (every view of every
study gets its own parameters):

* a crop window of side ``crop_fraction * S`` at a uniformly random position, rotated about its
  centre by an angle uniform in ``[-max_rotation_deg, max_rotation_deg]`` (positive: the picture
  turns counter-clockwise, as ``torchvision.transforms.functional.rotate``), resampled to
  ``out_size`` (bilinear);
* brightness: ``+ U(-brightness, brightness)``; contrast: scaled about the image's mean by
  ``U(1 - contrast, 1 + contrast)``; clamped to [0, 1].

Why it is fast: crop, rotation and resize of an image are one affine map of its coordinates, so
the whole batch is resampled by ONE ``F.affine_grid`` + ``F.grid_sample`` call with a (N, 2, 3)
matrix per image. There is no per-image Python loop, no PIL, no decode: the data loader only
copies uint8 pixels out of the memory-mapped cache (``refers_lite.data.loading.source_studies``), and the
conversion to float happens here, on the device, after the transfer of a quarter of the bytes.

Coordinates are ``grid_sample``'s normalised ones with ``align_corners=False``: x (columns) and y
(rows, downwards) in [-1, 1] from the outer edge of the first pixel to that of the last. A window
of half-width ``s`` (``s = crop_fraction``) centred at ``(cx, cy)`` and rotated by ``a`` maps an
output point ``p`` (in [-1, 1]^2) to the input point ``R(a) (s p) + c``.

Padding where a rotated window leaves the film: zeros (black), as torchvision's ``RandomRotation``
fills (fill=0) and as the dark surround of a radiograph; "border" would smear the edge rows into
streaks. One deliberate difference from crop-then-rotate with torchvision: the corners of the
rotated window show the film around the crop where there is film, so fewer corners are black.
Evaluation uses "border" padding only so that the half-pixel at the edge of a full-size window
clamps as ``F.interpolate`` does; a central crop never reaches outside the image.

When the window is more than one output pixel per input pixel smaller than the film (the small
test and smoke profiles: 256 px cache, 32 or 64 px model), the batch is first resized, with
antialiasing, to ``round(out_size / crop_fraction)``: exactly the paper's "resize to 256, crop 224",
and without it bilinear sampling would alias. At the paper's sizes (256 -> 224) nothing is resized.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["StudyAugment", "affine_matrices", "apply_affine"]


def affine_matrices(scale: torch.Tensor | float, angle_deg: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """(N, 2, 3) matrices for ``F.affine_grid``: output point p -> input point ``R(angle) (scale p) + centre``.

    ``scale``: window half-width in normalised units, a float or (N,); ``angle_deg``: (N,), positive
    turns the picture counter-clockwise on screen; ``centre``: (N, 2) window centre (x, y), normalised.
    """
    a = torch.deg2rad(angle_deg)  # (N,)
    s = torch.as_tensor(scale, dtype=a.dtype, device=a.device).expand_as(a)  # (N,)
    cos, sin = torch.cos(a) * s, torch.sin(a) * s  # (N,)
    # with y pointing down, [[cos, -sin], [sin, cos]] turns sampling clockwise: the picture turns counter-clockwise
    row_x = torch.stack([cos, -sin, centre[:, 0]], dim=-1)  # (N, 3): x_in = cos x - sin y + cx
    row_y = torch.stack([sin, cos, centre[:, 1]], dim=-1)  # (N, 3): y_in = sin x + cos y + cy
    return torch.stack([row_x, row_y], dim=1)  # (N, 2, 3)


def apply_affine(images: torch.Tensor, theta: torch.Tensor, out_size: int,
                 padding_mode: str = "zeros") -> torch.Tensor:
    """Resample float ``images`` (N, C, H, W) through ``theta`` (N, 2, 3) to (N, C, out_size, out_size), bilinear."""
    n, c = images.shape[:2]
    grid = F.affine_grid(theta.to(images.dtype), [n, c, out_size, out_size], align_corners=False)  # (N, out, out, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


class StudyAugment:
    """Batched crop + rotation + brightness / contrast (train) or central crop (eval); see the module doc.

    ``images``: uint8 (0..255) or float ([0, 1]) tensor (B, V, C, S, S) or (B, C, S, S) on any device.
    Returns float32 (..., C, out_size, out_size) in [0, 1] on the same device. Random numbers come from
    ``generator`` (on the images' device; None: the default one), so a seeded generator repeats exactly.
    """

    def __init__(self, out_size: int, crop_fraction: float = 224 / 256, max_rotation_deg: float = 10.0,
                 brightness: float = 0.2, contrast: float = 0.2):
        if not (isinstance(out_size, int) and out_size >= 1):
            raise ValueError(f"out_size must be a positive integer, got {out_size!r}")
        if not 0 < crop_fraction <= 1:
            raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction}")
        if not (0 <= max_rotation_deg <= 180 and 0 <= brightness <= 1 and 0 <= contrast <= 1):
            raise ValueError(f"need 0 <= max_rotation_deg <= 180, 0 <= brightness <= 1, 0 <= contrast <= 1; got "
                             f"{max_rotation_deg}, {brightness}, {contrast}")
        self.out_size, self.crop_fraction = out_size, float(crop_fraction)
        self.max_rotation_deg, self.brightness, self.contrast = float(max_rotation_deg), float(brightness), float(contrast)
        self.resize_to = round(out_size / self.crop_fraction)  # the paper's 256 for a 224 crop

    def __repr__(self) -> str:
        return (f"StudyAugment(out_size={self.out_size}, crop_fraction={self.crop_fraction:.4g}, "
                f"max_rotation_deg={self.max_rotation_deg:g}, brightness={self.brightness:g}, "
                f"contrast={self.contrast:g})")

    def _to_float(self, images: torch.Tensor) -> torch.Tensor:
        """(..., C, S, S) -> (N, C, S', S') float32 in [0, 1], resized (antialiased) when S' < S."""
        if images.ndim not in (4, 5):
            raise ValueError(f"images must be (B, V, C, S, S) or (B, C, S, S), got shape {tuple(images.shape)}")
        c, h, w = images.shape[-3:]
        if h != w:
            raise ValueError(f"images must be square, got {h}x{w}")
        if images.dtype == torch.uint8:
            x = images.reshape(-1, c, h, w).to(torch.float32).div_(255)  # (N, C, S, S)
        elif images.is_floating_point():
            x = images.reshape(-1, c, h, w).to(torch.float32)  # (N, C, S, S)
        else:
            raise TypeError(f"images must be uint8 (0..255) or floating point ([0, 1]), got {images.dtype}")
        if self.resize_to < h and x.shape[0]:
            x = F.interpolate(x, size=(self.resize_to, self.resize_to), mode="bilinear", align_corners=False,
                              antialias=True)  # (N, C, S', S')
        return x

    def __call__(self, images: torch.Tensor, train: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        lead = images.shape[:-3]  # (B,) or (B, V)
        x = self._to_float(images)  # (N, C, S, S), N = B * V
        n, c = x.shape[:2]
        if n == 0:
            return x.new_zeros(*lead, c, self.out_size, self.out_size)
        dev = x.device
        if not train:  # the central window, no rotation, no photometric change
            theta = affine_matrices(self.crop_fraction, torch.zeros(n, device=dev), torch.zeros(n, 2, device=dev))
            out = apply_affine(x, theta, self.out_size, padding_mode="border")  # (N, C, out, out)
            return out.reshape(*lead, c, self.out_size, self.out_size)

        if generator is not None and generator.device.type != dev.type:
            raise ValueError(f"generator is on {generator.device}, images on {dev}: draw on the images' device")
        u = torch.rand(n, 5, generator=generator, device=dev) * 2 - 1  # (N, 5) uniform in [-1, 1)
        angle = u[:, 0] * self.max_rotation_deg  # (N,) degrees
        centre = u[:, 1:3] * (1 - self.crop_fraction)  # (N, 2): the window stays on the film before rotation
        shift = (u[:, 3] * self.brightness).view(n, 1, 1, 1)  # (N, 1, 1, 1)
        gain = (1 + u[:, 4] * self.contrast).view(n, 1, 1, 1)  # (N, 1, 1, 1)
        theta = affine_matrices(self.crop_fraction, angle, centre)  # (N, 2, 3)
        out = apply_affine(x, theta, self.out_size, padding_mode="zeros")  # (N, C, out, out)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)  # (N, 1, 1, 1)
        out = ((out - mean) * gain + mean + shift).clamp_(0, 1)  # (N, C, out, out)
        return out.reshape(*lead, c, self.out_size, self.out_size)

