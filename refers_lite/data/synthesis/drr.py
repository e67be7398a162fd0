"""Digitally reconstructed radiographs (DRRs): cone-beam projection of a CT attenuation volume.

Coordinates
-----------
The volume is a tensor ``mu`` of shape ``(X, Y, Z)`` in **L-A-S** orientation: index ``x`` grows
towards the patient's Left, ``y`` towards Anterior, ``z`` towards Superior, with voxel spacing
``(sx, sy, sz)`` mm.  All geometry is in millimetres in the *patient frame*, whose origin is the
centre of the volume box: voxel ``(i, j, k)`` has its centre at
``((i + 0.5) * sx - X * sx / 2, (j + 0.5) * sy - Y * sy / 2, (k + 0.5) * sz - Z * sz / 2)``.
Each voxel fills a box of its spacing: attenuation is interpolated (trilinear) between voxel
centres, held constant over the outer half voxel, and 0 (air) outside the box, so a uniform slab
of thickness T gives exactly ``mu * T`` along a perpendicular ray.

Beam geometry (cone beam, point source, flat square detector)
-------------------------------------------------------------
* ``iso = center_offset_mm``: the isocentre, the point the central ray passes through.
* ``b``: unit beam direction (source -> detector).  ``SID`` = source-to-image (detector) distance
  ``sid_mm``, ``ODD`` = isocentre-to-detector distance ``iso_to_detector_mm``,
  ``SOD = SID - ODD`` = source-to-isocentre distance.  Source ``S = iso - SOD * b``, detector
  centre ``D = iso + ODD * b``.  An object at distance ``d`` from the source along the beam is
  magnified by ``SID / d`` on the detector.
* The detector is ``detector_mm`` wide and high, ``size x size`` square pixels of pitch
  ``detector_mm / size``.  Pixel ``(row, col)`` has its centre at
  ``D + u * e_u + v * e_v`` with ``u = (col + 0.5 - size / 2) * pitch`` and
  ``v = (row + 0.5 - size / 2) * pitch``; ``e_u`` points to the image's right, ``e_v`` to the
  image's bottom.

Views (``rotation_deg = 0``)::

    view      beam b       source on  detector on  image right e_u   image down e_v
    "pa"      +y (P->A)    posterior  anterior     +x (patient L)    -z (feet)
    "ap"      -y (A->P)    anterior   posterior    +x (patient L)    -z (feet)
    "lateral" +x (R->L)    right      left         -y (posterior)    -z (feet)

So in PA and AP images the patient's **right is on the image's left** and the head is at the
top (radiology display convention, as if facing the patient).  The lateral is a standard *left
lateral* (left side against the detector) displayed with the head at the top and **anterior on
the image's left** (spine on the right).  PA puts the (anterior) heart near the detector, AP
far from it, so the heart is magnified more in AP.

``rotation_deg`` turns source and detector together about the patient's superior (z) axis
through the isocentre, right-handed about +z (from +x towards +y); ``e_v`` stays ``-z``.

Two projectors compute the same line integrals ``sum mu * step_mm`` along each ray:

* ``"raymarch"``: each ray is clipped to the volume box and sampled at ``n_samples`` evenly
  spaced midpoints with trilinear interpolation (``torch.nn.functional.grid_sample``); any pose.
* ``"slices"`` (fast, ``rotation_deg == 0`` only): the ray is sampled where it crosses each voxel
  plane perpendicular to the beam (Joseph's method); in such a plane the cone beam is an
  axis-aligned scale + shift, so the bilinear in-plane interpolation is separable and is done as
  two sparse matrix products.  Step per plane = plane spacing / cos(ray angle).

``method="auto"`` picks ``"slices"`` when it applies.  Everything runs on the volume's device.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["hu_to_mu", "PreparedVolume", "prepare_volume", "render", "to_radiograph", "to_uint8", "VIEWS"]

VIEWS = ("pa", "ap", "lateral")

# view -> (beam direction b, image-right e_u, image-down e_v) in the L-A-S patient frame.
_VIEW_AXES: dict[str, tuple[tuple[float, float, float], ...]] = {
    "pa": ((0.0, 1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "ap": ((0.0, -1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "lateral": ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, -1.0)),
}


def hu_to_mu(hu: torch.Tensor, mu_water: float = 0.02, bone_boost: float = 0.0,
             bone_threshold_hu: float = 300.0) -> torch.Tensor:
    """Linear attenuation coefficient per mm from Hounsfield units.

    ``mu = mu_water * (1 + HU / 1000)`` (air -1000 HU -> 0, water 0 HU -> ``mu_water``; 0.02/mm
    is water at a diagnostic ~70 keV effective energy), clipped at 0 (padding values such as
    -2048 HU become air).  ``bone_boost > 0`` adds ``bone_boost * mu_water * (HU - t) / 1000``
    above ``t = bone_threshold_hu``, mimicking the stronger photoelectric absorption of bone at
    radiograph energies.  Returns a float tensor of the same shape and device.
    """
    hu = hu.float()
    mu = mu_water * (1.0 + hu / 1000.0)
    if bone_boost:
        mu = mu + bone_boost * mu_water * (hu - bone_threshold_hu).clamp_min(0.0) / 1000.0
    return mu.clamp_min(0.0)


@dataclass
class PreparedVolume:
    """An attenuation volume ``mu`` (X, Y, Z), L-A-S, with its spacing in mm; caches per-view layouts."""

    mu: torch.Tensor  # (X, Y, Z) float, per mm
    spacing_mm: tuple[float, float, float]
    _layouts: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        _check_volume(self.mu)
        self.spacing_mm = _check_spacing(self.spacing_mm)

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        return tuple(n * s for n, s in zip(self.mu.shape, self.spacing_mm))  # type: ignore[return-value]

    def layout(self, axis: int) -> torch.Tensor:
        """The volume as (A, R, C): beam axis ``axis`` (0 = x, 1 = y), rows = z, columns = the other."""
        key = str(axis)
        if key not in self._layouts:
            perm = (1, 2, 0) if axis == 1 else (0, 2, 1)
            self._layouts[key] = self.mu.permute(*perm).contiguous()
        return self._layouts[key]


def _check_volume(mu: torch.Tensor) -> None:
    if not isinstance(mu, torch.Tensor):
        raise TypeError(f"volume must be a torch.Tensor, got {type(mu).__name__}")
    if mu.dim() != 3:
        raise ValueError(f"volume must have shape (X, Y, Z) (3 dims, L-A-S), got shape {tuple(mu.shape)}")
    if min(mu.shape) < 2:
        raise ValueError(f"volume needs at least 2 voxels along each axis, got shape {tuple(mu.shape)}")
    if not mu.is_floating_point():
        raise TypeError(f"volume must be floating point (attenuation per mm), got {mu.dtype}")


def _check_spacing(spacing: Sequence[float] | None) -> tuple[float, float, float]:
    if spacing is None or len(spacing) != 3:
        raise ValueError(f"spacing_mm must be 3 numbers (sx, sy, sz) in mm, got {spacing!r}")
    sp = tuple(float(s) for s in spacing)
    if not all(s > 0 and math.isfinite(s) for s in sp):
        raise ValueError(f"spacing_mm must be positive and finite, got {spacing!r}")
    return sp  # type: ignore[return-value]


def prepare_volume(mu: torch.Tensor, spacing_mm: Sequence[float],
                   target_spacing_mm: float | Sequence[float] | None = None) -> PreparedVolume:
    """Once per patient: optionally average-pool ``mu`` (X, Y, Z) to about ``target_spacing_mm``.

    The pooling factor per axis is ``max(1, round(target / spacing))``; voxels that do not fill a
    whole pooling window are cropped evenly from both ends (the box centre moves by less than one
    original voxel).  Averaging attenuation preserves line integrals.
    """
    _check_volume(mu)
    sp = _check_spacing(spacing_mm)
    if target_spacing_mm is None:
        return PreparedVolume(mu.float().contiguous(), sp)
    tgt = [float(target_spacing_mm)] * 3 if isinstance(target_spacing_mm, (int, float)) else list(target_spacing_mm)
    factors = [max(1, round(t / s)) for t, s in zip(tgt, sp)]
    sl = []
    for n, f in zip(mu.shape, factors):
        rem = n % f
        sl.append(slice(rem // 2, n - (rem - rem // 2)))
    v = mu.float()[sl[0], sl[1], sl[2]]
    if any(f > 1 for f in factors):
        v = F.avg_pool3d(v[None, None], kernel_size=factors, stride=factors)[0, 0]
    return PreparedVolume(v.contiguous(), tuple(s * f for s, f in zip(sp, factors)))  # type: ignore[arg-type]


def _pose(view: str, rotation_deg: float, device, dtype=torch.float64):
    """Unit vectors (b, e_u, e_v), each (3,), after rotating about +z by ``rotation_deg``."""
    if view not in _VIEW_AXES:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    c, s = math.cos(math.radians(rotation_deg)), math.sin(math.radians(rotation_deg))
    rot = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=dtype, device=device)
    return tuple(rot @ torch.tensor(a, dtype=dtype, device=device) for a in _VIEW_AXES[view])


def render(volume: torch.Tensor | PreparedVolume, spacing_mm: Sequence[float] | None = None, view: str = "pa",
           size: int = 256, sid_mm: float = 1800.0, iso_to_detector_mm: float = 150.0,
           detector_mm: float = 430.0, n_samples: int | None = None, rotation_deg: float = 0.0,
           center_offset_mm: Sequence[float] = (0.0, 0.0, 0.0), method: str = "auto",
           rays_per_chunk: int = 16384) -> torch.Tensor:
    """Cone-beam line integrals ``sum mu * step_mm`` on a ``(size, size)`` detector (see module doc).

    ``volume``: attenuation per mm, (X, Y, Z) L-A-S with ``spacing_mm``, or a :class:`PreparedVolume`.
    ``n_samples`` (raymarch only): samples per ray; default = longest box chord / finest spacing.
    ``method``: "auto" | "slices" | "raymarch".  Returns a float32 tensor (size, size) on the
    volume's device; row 0 is the top of the image.
    """
    pv = volume if isinstance(volume, PreparedVolume) else PreparedVolume(volume, spacing_mm)  # type: ignore[arg-type]
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if not 0.0 <= iso_to_detector_mm < sid_mm:
        raise ValueError(f"need 0 <= iso_to_detector_mm < sid_mm, got {iso_to_detector_mm}, {sid_mm}")
    if len(center_offset_mm) != 3:
        raise ValueError(f"center_offset_mm must be 3 numbers (x, y, z) mm, got {center_offset_mm!r}")
    if view not in _VIEW_AXES:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    axis_aligned = abs(math.remainder(rotation_deg, 360.0)) < 1e-9
    if method == "auto":
        method = "slices" if axis_aligned else "raymarch"
    if method == "slices":
        if not axis_aligned:
            raise ValueError("method='slices' needs rotation_deg == 0 (mod 360); use 'raymarch'")
        return _render_slices(pv, view, size, sid_mm, iso_to_detector_mm, detector_mm, center_offset_mm)
    if method == "raymarch":
        return _render_raymarch(pv, view, size, sid_mm, iso_to_detector_mm, detector_mm, n_samples,
                                rotation_deg, center_offset_mm, rays_per_chunk)
    raise ValueError(f"method must be 'auto', 'slices' or 'raymarch', got {method!r}")


def _detector_uv(size: int, detector_mm: float, device) -> torch.Tensor:
    pitch = detector_mm / size
    return (torch.arange(size, device=device, dtype=torch.float64) + 0.5 - size / 2) * pitch  # (size,)


def _render_raymarch(pv: PreparedVolume, view: str, size: int, sid: float, odd: float, detector_mm: float,
                     n_samples: int | None, rotation_deg: float, center_offset_mm: Sequence[float],
                     rays_per_chunk: int) -> torch.Tensor:
    mu, dev = pv.mu, pv.mu.device
    b, eu, ev = _pose(view, rotation_deg, dev)
    iso = torch.tensor([float(c) for c in center_offset_mm], dtype=torch.float64, device=dev)
    src = iso - (sid - odd) * b  # (3,)
    det = iso + odd * b
    uv = _detector_uv(size, detector_mm, dev)
    pix = det + uv[None, :, None] * eu + uv[:, None, None] * ev  # (H, W, 3): row -> v, col -> u
    dirs = (pix - src).reshape(-1, 3)  # (N, 3) source -> pixel, t in [0, 1]
    half = torch.tensor(pv.extent_mm, dtype=torch.float64, device=dev) / 2  # (3,)
    if n_samples is None:
        n_samples = int(math.ceil(2 * float(half.norm()) / min(pv.spacing_mm)))
    # Slab method: parameter interval of each ray inside the box [-half, half], clipped to [0, 1].
    with torch.no_grad():
        inv = 1.0 / torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
        t1, t2 = (-half - src) * inv, (half - src) * inv  # (N, 3)
        t_near = torch.minimum(t1, t2).amax(-1).clamp_min(0.0)  # (N,)
        t_far = torch.maximum(t1, t2).amin(-1).clamp_max(1.0)
        length = (t_far - t_near).clamp_min(0.0)  # (N,) in units of |dir|
    vol = mu[None, None]  # (1, 1, X, Y, Z) = (N, C, D, H, W): grid (gx, gy, gz) indexes (W=Z, H=Y, D=X)
    frac = (torch.arange(n_samples, device=dev, dtype=torch.float64) + 0.5) / n_samples  # (S,)
    out = torch.empty(dirs.shape[0], dtype=mu.dtype, device=dev)
    for lo in range(0, dirs.shape[0], rays_per_chunk):
        hi = min(lo + rays_per_chunk, dirs.shape[0])
        t = t_near[lo:hi, None] + frac[None] * length[lo:hi, None]  # (n, S)
        pts = src + t[..., None] * dirs[lo:hi, None, :]  # (n, S, 3) patient mm
        g = (pts / half).flip(-1).to(mu.dtype)  # (n, S, 3) normalised, order (z, y, x)
        vals = F.grid_sample(vol, g[None, None], mode="bilinear", padding_mode="border",
                             align_corners=False)[0, 0, 0]  # (n, S)
        step = (length[lo:hi] * dirs[lo:hi].norm(dim=-1) / n_samples).to(mu.dtype)  # (n,) mm
        out[lo:hi] = vals.sum(-1) * step
    return out.reshape(size, size)


def _lerp_weights(q: torch.Tensor, n: int, mask: torch.Tensor):
    """Linear interpolation at continuous indices ``q`` over ``n`` voxels, box semantics.

    Inside the box (``-0.5 <= q <= n - 0.5``) values are interpolated between voxel centres and
    held constant in the outer half voxel (like ``grid_sample(padding_mode="border")``); outside
    the box the weight is 0 (air).  Returns ``(i0, w0, w1)``: taps ``i0`` and ``i0 + 1``.
    """
    qq = q.clamp(0, n - 1)
    i0 = qq.floor().clamp(0, n - 2)
    w1 = qq - i0
    keep = ((q >= -0.5) & (q <= n - 0.5)).to(q.dtype) * mask
    return i0, (1 - w1) * keep, w1 * keep


def _tent_csr(q: torch.Tensor, n: int, n_cols: int, mask: torch.Tensor, dtype) -> torch.Tensor:
    """Sparse (rows, n_cols) CSR matrix of linear-interpolation weights.

    ``q``: (B, K) continuous voxel indices for K outputs in each of B blocks (voxel centres at
    integers, zero outside ``[0, n - 1]``); ``mask`` (B, 1) zeroes whole blocks.  Row ``b * K + k``
    has two entries at columns ``b * n + i0`` and ``b * n + i0 + 1``.
    """
    B, K = q.shape
    i0, w0, w1 = _lerp_weights(q, n, mask)  # (B, K) each
    base = (torch.arange(B, device=q.device) * n)[:, None]  # (B, 1)
    cols = torch.stack([i0.long() + base, i0.long() + 1 + base], -1).reshape(-1)  # (B*K*2,)
    vals = torch.stack([w0, w1], -1).reshape(-1).to(dtype)
    crow = torch.arange(0, 2 * B * K + 1, 2, device=q.device)
    with warnings.catch_warnings():  # silence torch's 'sparse CSR is beta' notice
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(crow, cols, vals, size=(B * K, n_cols), check_invariants=False)


def _render_slices(pv: PreparedVolume, view: str, size: int, sid: float, odd: float, detector_mm: float,
                   center_offset_mm: Sequence[float]) -> torch.Tensor:
    dev, dtype = pv.mu.device, pv.mu.dtype
    a_ax = 1 if view in ("pa", "ap") else 0  # beam axis
    c_ax = 0 if a_ax == 1 else 1  # image-column axis
    sign_b = -1.0 if view == "ap" else 1.0  # b = sign_b * e_axis(a)
    sign_u = 1.0 if view in ("pa", "ap") else -1.0  # e_u = sign_u * e_axis(c)
    vol = pv.layout(a_ax)  # (A, R, C): beam axis, z, column axis
    A, R, C = vol.shape
    sp, ext = pv.spacing_mm, pv.extent_mm
    iso = [float(c) for c in center_offset_mm]
    sod = sid - odd
    f64 = torch.float64
    a_pos = (torch.arange(A, device=dev, dtype=f64) + 0.5) * sp[a_ax] - ext[a_ax] / 2  # (A,) plane coords
    dist = (a_pos - (iso[a_ax] - sign_b * sod)) * sign_b  # (A,) source -> plane along the beam
    mask = ((dist > 0) & (dist < sid)).to(f64)[:, None]  # (A, 1) planes between source and detector
    scale = (dist / sid)[:, None]  # (A, 1) detector mm -> plane mm
    uv = _detector_uv(size, detector_mm, dev)  # (size,)
    # rows: z = iso_z - scale * v  -> continuous z index; columns: c = iso_c + sign_u * scale * u
    qr = (iso[2] - scale * uv[None] + ext[2] / 2) / sp[2] - 0.5  # (A, H)
    qc = (iso[c_ax] + sign_u * scale * uv[None] + ext[c_ax] / 2) / sp[c_ax] - 0.5  # (A, W)
    m_rows = _tent_csr(qr, R, A * R, mask, dtype)  # (A*H, A*R) block diagonal
    t = (m_rows @ vol.reshape(A * R, C)).reshape(A, size, C)  # (A, H, C)
    t = t.permute(0, 2, 1).reshape(A * C, size)  # (A*C, H)
    m_cols = _cols_matrix(qc, C, mask, dtype)  # (W, A*C): sums over planes too
    img = (m_cols @ t).t()  # (H, W)
    sec = torch.sqrt(1 + (uv[:, None] ** 2 + uv[None] ** 2) / sid**2)  # (H, W) 1 / cos(ray angle)
    return (img * (sp[a_ax] * sec).to(dtype)).contiguous()


def _cols_matrix(qc: torch.Tensor, n: int, mask: torch.Tensor, dtype) -> torch.Tensor:
    """(W, A*n) CSR: row u sums, over planes j, the lerp weights at columns j*n + i0, j*n + i0 + 1."""
    A, W = qc.shape
    i0, w0, w1 = _lerp_weights(qc, n, mask)  # (A, W) each
    base = (torch.arange(A, device=qc.device) * n)[:, None]  # (A, 1)
    cols = torch.stack([i0.long() + base, i0.long() + 1 + base], -1)  # (A, W, 2)
    cols = cols.permute(1, 0, 2).reshape(-1)  # (W*A*2,) row-major by u, sorted by j
    vals = torch.stack([w0, w1], -1).permute(1, 0, 2).reshape(-1).to(dtype)
    crow = torch.arange(0, 2 * A * W + 1, 2 * A, device=qc.device)
    with warnings.catch_warnings():  # silence torch's 'sparse CSR is beta' notice
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(crow, cols, vals, size=(W, A * n), check_invariants=False)


def _gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable gaussian blur of (B, H, W) with reflect padding."""
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, device=img.device, dtype=img.dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    y = img[:, None]  # (B, 1, H, W)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1))
    return y[:, 0]


def _smooth_large(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """A wide gaussian of (B, H, W), computed at a quarter of the resolution when sigma >= 4 px
    (average-pool by 4, blur by sigma / 4, bilinear back up): the result is smooth at that scale
    anyway, and it costs ~1/16 of a full-resolution blur."""
    f = 4 if sigma >= 4 and img.shape[-1] % 4 == 0 and img.shape[-2] % 4 == 0 else 1
    if f == 1:
        return _gaussian_blur(img, sigma)
    small = F.avg_pool2d(img[:, None], f)[:, 0]
    small = _gaussian_blur(small, sigma / f)
    return F.interpolate(small[:, None], size=img.shape[-2:], mode="bilinear", align_corners=False)[:, 0]


def to_radiograph(line_integrals: torch.Tensor, exposure: float = 1.0,
                  window: tuple[float, float] = (1.0, 99.5), gamma: float = 1.0, blur_sigma_px: float = 0.0,
                  noise_std: float = 0.0, generator: torch.Generator | None = None,
                  unsharp_amount: float = 0.0, unsharp_sigma_px: float = 8.0) -> torch.Tensor:
    """Film-like display image in [0, 1] (dense = bright) from line integrals (H, W) or (B, H, W).

    1. Beer-Lambert: detector intensity ``I = exp(-exposure * integral)`` (1 = unattenuated).
    2. Detector blur: gaussian of ``blur_sigma_px`` pixels on ``I``.
    3. Quantum noise: ``I += noise_std * sqrt(I) * N(0, 1)`` (Poisson-like; ``noise_std`` is the
       relative noise of an unattenuated pixel), drawn from ``generator`` (seeded = reproducible).
    4. Film density ``d = -log(I)``; with ``unsharp_amount > 0``, the local contrast enhancement
       of digital radiography: ``d += amount * (d - gaussian(d, unsharp_sigma_px))`` (it lifts lung
       detail out of the wide dynamic range between lungs and mediastinum).
    5. Windowed per image between its ``window`` percentiles (``p_lo``, ``p_hi``) to [0, 1], then
       ``** gamma``.
    Returns float32 of the input's shape.
    """
    li = line_integrals
    if li.dim() not in (2, 3):
        raise ValueError(f"line_integrals must be (H, W) or (B, H, W), got shape {tuple(li.shape)}")
    lo_p, hi_p = window
    if not 0.0 <= lo_p < hi_p <= 100.0:
        raise ValueError(f"window must be percentiles 0 <= p_lo < p_hi <= 100, got {window!r}")
    x = li.float().reshape(-1, *li.shape[-2:])  # (B, H, W)
    inten = torch.exp(-exposure * x.clamp_min(0.0))
    if blur_sigma_px > 0:
        inten = _gaussian_blur(inten, blur_sigma_px)
    if noise_std > 0:
        noise = torch.randn(inten.shape, generator=generator, device="cpu" if generator is None else generator.device,
                            dtype=inten.dtype).to(inten.device)
        inten = inten + noise_std * inten.clamp_min(0).sqrt() * noise
    dens = -torch.log(inten.clamp_min(1e-12))  # (B, H, W)
    if unsharp_amount > 0:
        dens = dens + unsharp_amount * (dens - _smooth_large(dens, unsharp_sigma_px))
    flat = dens.reshape(dens.shape[0], -1)  # (B, HW)
    n = flat.shape[-1]
    # order statistics by selection (kthvalue is 1-based), not a full sort: same values, ~5x faster
    lo = flat.kthvalue(int(round(lo_p / 100 * (n - 1))) + 1, dim=-1).values[:, None, None]
    hi = flat.kthvalue(int(round(hi_p / 100 * (n - 1))) + 1, dim=-1).values[:, None, None]
    out = ((dens - lo) / (hi - lo).clamp_min(1e-12)).clamp(0.0, 1.0)
    if gamma != 1.0:
        out = out**gamma
    return out.reshape(li.shape)


def to_uint8(img: torch.Tensor) -> torch.Tensor:
    """[0, 1] float image -> uint8 0..255 (rounded, clipped)."""
    return (img.float().clamp(0, 1) * 255).round().to(torch.uint8)
