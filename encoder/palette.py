"""K-means colour quantization: fit a palette, assign every pixel, save an indexed PNG.

The k-means objective over all pixels equals a *weighted* k-means over the image's
distinct colours (each weighted by its pixel count), which is usually 2-10x smaller
than the pixel count, and the 6-bit-per-channel histogram cells (mean colour, pixel
count; built with ``np.bincount`` on packed colour ints) are smaller still. So
:func:`fit_palette` seeds with weighted k-means++ and runs Lloyd on the cells, then
polishes with a few Lloyd steps on the exact distinct colours (torch matmuls; CUDA
when available). The final per-pixel assignment is exact: the nearest palette colour
of each distinct colour (whole 6-bit cells at once where the cell is unambiguous, for
K <= 64; brute force in cache-sized chunks otherwise), then a 2**24-entry lookup table
maps every pixel to its label.

Alpha: images are loaded by :mod:`encoder.data` and composited on white.

Example::

    >>> from encoder.data import load_rgb
    >>> rgb = load_rgb("photo.jpg")                 # (H, W, 3) uint8
    >>> q = quantize(rgb, k=16, seed=0)             # Quantized
    >>> q.palette.shape, q.labels.shape             # (16, 3) uint8, (H, W) uint8
    >>> png = q.png_bytes()                         # a real mode-"P" PNG
    >>> psnr(rgb, q.image())                        # dB
"""

from __future__ import annotations

import functools
import io
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from PIL import Image

K_MIN, K_MAX = 2, 256
DEFAULT_MAX_POINTS = 1 << 18  # more distinct colours than this: polish on 7-bit cells
METHODS = ("kmeans", "random")


def check_k(k: int) -> int:
    """Return ``k`` as int if it is in [2, 256], else raise ``ValueError`` naming it."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not K_MIN <= int(k) <= K_MAX:
        raise ValueError(f"k={k!r} must be an integer in [{K_MIN}, {K_MAX}] (a PNG palette holds at most 256 colours)")
    return int(k)


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or image.size == 0:
        raise ValueError(f"image must be a non-empty (H, W, 3) uint8 array, got shape={image.shape} dtype={image.dtype}")
    return image


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# torch threads for the k-means work on CPU. Its matrix products are small (2,048 x K blocks),
# so a second thread saves at most ~20% (china.jpg, K=256: 0.85-1.08 s vs 1.09-1.11 s with one),
# while with the cores busy elsewhere 2 threads took 23.65 s vs 2.22 s with one (the threads
# wait on each other at every small op). Folders of images are better spread over processes.
TORCH_THREADS = 1


def _one_torch_thread(fn):
    """Run ``fn`` with ``TORCH_THREADS`` torch threads, restoring the caller's setting."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        old = torch.get_num_threads()
        if old == TORCH_THREADS:
            return fn(*args, **kwargs)
        torch.set_num_threads(TORCH_THREADS)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(old)
    return wrapper


# ----------------------------------------------------------------------------- colour sets

def pack(pixels: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 -> (N,) int32 colour ints ``r << 16 | g << 8 | b``."""
    p = pixels.astype(np.int32)
    return (p[:, 0] << 16) | (p[:, 1] << 8) | p[:, 2]


def unpack(codes: np.ndarray) -> np.ndarray:
    """(M,) int colour ints -> (M, 3) uint8."""
    codes = np.asarray(codes, dtype=np.int64)
    return np.stack([(codes >> 16) & 255, (codes >> 8) & 255, codes & 255], axis=1).astype(np.uint8)


def distinct_colors(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct colours of ``pixels`` (N, 3) uint8 and their pixel counts.

    Returns ``(colors (M, 3) uint8, counts (M,) int64)``, colours sorted by packed value.
    Uses a sort for small inputs and a 2**24-bin ``np.bincount`` for large ones
    (linear in N). Example: ``distinct_colors(np.array([[1,2,3],[1,2,3]], np.uint8))``
    -> ``([[1,2,3]], [2])``.
    """
    codes = pack(pixels)
    if len(codes) < (1 << 20):
        u, c = np.unique(codes, return_counts=True)
        return unpack(u), c.astype(np.int64)
    counts = np.bincount(codes, minlength=1 << 24)
    u = np.flatnonzero(counts)
    return unpack(u), counts[u]


def binned_colors(pixels: np.ndarray, bits: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Histogram cells of ``bits`` per channel: (mean colour (M, 3) float64, count (M,) int64)."""
    p = pixels.astype(np.int32)
    s = 8 - bits
    cell = ((p[:, 0] >> s) << (2 * bits)) | ((p[:, 1] >> s) << bits) | (p[:, 2] >> s)
    n = np.bincount(cell, minlength=1 << (3 * bits))
    nz = np.flatnonzero(n)
    sums = np.stack([np.bincount(cell, weights=p[:, c], minlength=1 << (3 * bits))[nz] for c in range(3)], axis=1)
    return sums / n[nz, None], n[nz].astype(np.int64)


# ----------------------------------------------------------------------------- Lab, errors

def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (..., 3) uint8 (or float in [0, 255]) -> CIE Lab (..., 3) float64 (D65).

    Example: ``srgb_to_lab(np.array([255, 255, 255], np.uint8))`` -> ``[100, 0, 0]`` (approx.).
    """
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    m = np.array([[0.412453, 0.357580, 0.180423],
                  [0.212671, 0.715160, 0.072169],
                  [0.019334, 0.119193, 0.950227]])
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    L = np.where(xyz[..., 1] > 0.008856, 116.0 * np.cbrt(xyz[..., 1]) - 16.0, 903.3 * xyz[..., 1])
    a = 500.0 * (f[..., 0] - f[..., 1])
    b = 200.0 * (f[..., 1] - f[..., 2])
    return np.stack([L, a, b], axis=-1)


def lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """CIE Lab (..., 3) float (D65) -> sRGB (..., 3) uint8 (clipped to the gamut)."""
    lab = np.asarray(lab, dtype=np.float64)
    fy = (lab[..., 0] + 16.0) / 116.0
    fx = fy + lab[..., 1] / 500.0
    fz = fy - lab[..., 2] / 200.0
    f = np.stack([fx, fy, fz], axis=-1)
    xyz = np.where(f > 0.206893, f ** 3, (f - 16.0 / 116.0) / 7.787) * np.array([0.95047, 1.0, 1.08883])
    m = np.array([[0.412453, 0.357580, 0.180423],
                  [0.212671, 0.715160, 0.072169],
                  [0.019334, 0.119193, 0.950227]])
    c = np.clip(xyz @ np.linalg.inv(m).T, 0.0, 1.0)
    c = np.where(c > 0.0031308, 1.055 * c ** (1 / 2.4) - 0.055, 12.92 * c)
    return np.clip(np.rint(c * 255.0), 0, 255).astype(np.uint8)


def ciede2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference between Lab arrays (..., 3) -> (...) float64 (kL=kC=kH=1).

    Follows Sharma, Wu & Dalal (2005). Example: identical colours give 0; a just
    noticeable difference is about 1-2.
    """
    L1, a1, b1 = np.moveaxis(np.asarray(lab1, np.float64), -1, 0)
    L2, a2, b2 = np.moveaxis(np.asarray(lab2, np.float64), -1, 0)
    C1, C2 = np.hypot(a1, b1), np.hypot(a2, b2)
    Cm7 = ((C1 + C2) / 2.0) ** 7
    G = 0.5 * (1.0 - np.sqrt(Cm7 / (Cm7 + 25.0 ** 7)))
    a1p, a2p = (1.0 + G) * a1, (1.0 + G) * a2
    C1p, C2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360.0
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360.0
    dLp = L2 - L1
    dCp = C2p - C1p
    dh = h2p - h1p
    dh = np.where(dh > 180.0, dh - 360.0, np.where(dh < -180.0, dh + 360.0, dh))
    zero = (C1p * C2p) == 0
    dh = np.where(zero, 0.0, dh)
    dHp = 2.0 * np.sqrt(C1p * C2p) * np.sin(np.radians(dh) / 2.0)
    Lpm = (L1 + L2) / 2.0
    Cpm = (C1p + C2p) / 2.0
    hs = h1p + h2p
    hpm = np.where(np.abs(h1p - h2p) <= 180.0, hs / 2.0, np.where(hs < 360.0, (hs + 360.0) / 2.0, (hs - 360.0) / 2.0))
    hpm = np.where(zero, hs, hpm)
    T = (1 - 0.17 * np.cos(np.radians(hpm - 30)) + 0.24 * np.cos(np.radians(2 * hpm))
         + 0.32 * np.cos(np.radians(3 * hpm + 6)) - 0.20 * np.cos(np.radians(4 * hpm - 63)))
    dtheta = 30.0 * np.exp(-(((hpm - 275.0) / 25.0) ** 2))
    Cpm7 = Cpm ** 7
    RC = 2.0 * np.sqrt(Cpm7 / (Cpm7 + 25.0 ** 7))
    SL = 1.0 + 0.015 * (Lpm - 50.0) ** 2 / np.sqrt(20.0 + (Lpm - 50.0) ** 2)
    SC = 1.0 + 0.045 * Cpm
    SH = 1.0 + 0.015 * Cpm * T
    RT = -np.sin(np.radians(2.0 * dtheta)) * RC
    return np.sqrt((dLp / SL) ** 2 + (dCp / SC) ** 2 + (dHp / SH) ** 2 + RT * (dCp / SC) * (dHp / SH))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two uint8 images of the same shape (``inf`` when identical)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0 ** 2 / mse))


def mean_ciede2000(image: np.ndarray, palette: np.ndarray, labels: np.ndarray) -> float:
    """Mean CIEDE2000 between ``image`` (H, W, 3) uint8 and ``palette[labels]``.

    Computed once per (distinct colour, label) pair weighted by pixel count, so it is
    cheap on photos.
    """
    pix = pack(image.reshape(-1, 3)).astype(np.int64) * 256 + labels.reshape(-1).astype(np.int64)
    pairs, counts = np.unique(pix, return_counts=True)
    cols, labs = unpack(pairs >> 8), (pairs & 255)
    d = ciede2000(srgb_to_lab(cols), srgb_to_lab(np.asarray(palette)[labs]))
    return float(np.sum(d * counts) / counts.sum())


# ----------------------------------------------------------------------------- k-means

def _sqdist_argmin(x: torch.Tensor, c: torch.Tensor, chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centre for each row of ``x`` (M, 3) among ``c`` (K, 3): (labels, squared distance).

    Chunks of about 2**19 distances (2048 rows at K=256) keep the (chunk, K) block in
    cache: 3x faster than 32k-row chunks at K=256, and few calls at small K.
    """
    chunk = chunk or max(2048, (1 << 19) // max(1, c.shape[0]))
    cn = (c * c).sum(1)
    labels, dists = [], []
    buf = torch.empty(min(chunk, x.shape[0]), c.shape[0], dtype=x.dtype, device=x.device)  # reused: no page
    for s in range(0, x.shape[0], chunk):                                                # faults per chunk
        xs = x[s:s + chunk]
        d = torch.addmm(cn.unsqueeze(0), xs, c.T, alpha=-2.0, out=buf[: len(xs)])  # ||c||^2 - 2 x.c
        if d.is_cuda:
            m, i = d.min(1)
        else:  # numpy's SIMD argmin: 10x faster than torch's min(1) on CPU (measured, 2048 x 256)
            dn = d.numpy()
            i_np = dn.argmin(1)  # first minimum on ties, as torch's
            m = torch.from_numpy(np.take_along_axis(dn, i_np[:, None], 1)[:, 0])
            i = torch.from_numpy(i_np)
        labels.append(i)
        dists.append((m + (xs * xs).sum(1)).clamp_min_(0))
    return torch.cat(labels), torch.cat(dists)


def _kmeanspp(x: np.ndarray, w: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy weighted k-means++ seeding (as scikit-learn: 2 + log k candidates per step).

    numpy, not torch: k small sequential steps, where per-op overhead dominates.
    """
    n_local = 2 + int(np.log(k))
    cw = np.cumsum(w)
    first = min(int(np.searchsorted(cw, rng.random() * cw[-1], side="right")), len(x) - 1)
    centers = [first]
    xn = (x * x).sum(1)
    xt = np.ascontiguousarray(x.T)
    closest = ((x - x[first]) ** 2).sum(1)
    for _ in range(1, k):
        cp = np.cumsum(w * closest)
        if cp[-1] <= 0:
            break
        cand = np.minimum(np.searchsorted(cp, rng.random(n_local) * cp[-1], side="right"), len(x) - 1)
        d = x[cand] @ xt  # (n_local, M) squared distances via ||a||^2 - 2ab + ||b||^2
        d *= -2.0
        d += xn[None]
        d += xn[cand][:, None]
        np.maximum(d, 0.0, out=d)
        np.minimum(d, closest[None], out=d)
        best = int(np.argmin(d @ w))
        centers.append(int(cand[best]))
        closest = d[best]
    return x[centers]


def _nearest_rgb(colors: np.ndarray, palette: np.ndarray, bits: int = 6) -> np.ndarray:
    """Exact nearest palette index for distinct colours (M, 3) uint8 -> (M,) int64.

    Colours are grouped into cubic cells of side ``2**(8-bits)``. For a cell with centre
    c and half-diagonal r, if the second-nearest palette colour is more than 2r farther
    from c than the nearest one, every colour in the cell has that nearest colour
    (triangle inequality), so one (cells x K) pass labels most colours; only colours in
    the remaining "ambiguous" cells are compared with the whole palette.
    """
    c = colors.astype(np.int32)
    s = 8 - bits
    cell = ((c[:, 0] >> s) << (2 * bits)) | ((c[:, 1] >> s) << bits) | (c[:, 2] >> s)
    present = np.zeros(1 << (3 * bits), dtype=np.int32)
    present[cell] = 1
    ucell = np.flatnonzero(present)
    rank = np.cumsum(present) - 1  # cell id -> row in ucell
    inv = rank[cell]
    side = 1 << s
    centres = np.stack([(ucell >> (2 * bits)) & ((1 << bits) - 1), (ucell >> bits) & ((1 << bits) - 1),
                        ucell & ((1 << bits) - 1)], axis=1) * side + (side - 1) / 2.0
    pal = torch.from_numpy(palette.astype(np.float32))
    x = torch.from_numpy(centres.astype(np.float32))
    pn = (pal * pal).sum(1)
    best, ok = [], []
    margin = 2.0 * np.sqrt(3.0) * (side - 1) / 2.0 + 1e-3
    for i in range(0, len(x), 2048):
        xs = x[i:i + 2048]
        d = torch.addmm(pn.unsqueeze(0), xs, pal.T, alpha=-2.0) + (xs * xs).sum(1, keepdim=True)
        if pal.shape[0] >= 2:
            v, j = d.topk(2, dim=1, largest=False)
            v = v.clamp_min(0).sqrt()
            ok.append((v[:, 1] - v[:, 0]) > margin)
        else:
            j = torch.zeros(len(xs), 1, dtype=torch.long)
            ok.append(torch.ones(len(xs), dtype=torch.bool))
        best.append(j[:, 0])
    cell_label = torch.cat(best).numpy()
    cell_ok = torch.cat(ok).numpy()
    labels = cell_label[inv]
    amb = np.flatnonzero(~cell_ok[inv])
    if len(amb):
        # integer RGB: every term of ||p||^2 - 2 x.p is an integer < 2**24, so float32
        # is exact and ties resolve to the lowest index, as in brute force
        idx, _ = _sqdist_argmin(torch.from_numpy(colors[amb].astype(np.float32)), pal)
        labels[amb] = idx.numpy()
    return labels


@_one_torch_thread
def weighted_kmeans(
    points: np.ndarray,
    weights: np.ndarray,
    k: int,
    *,
    seed: int = 0,
    max_iter: int = 100,
    tol: float = 1e-6,
    init: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Weighted Lloyd k-means with k-means++ seeding.

    Args:
        points: (M, D) float, e.g. distinct colours.
        weights: (M,) positive, e.g. pixel counts.
        k: number of centres (``k <= M``).
        seed: seeds the k-means++ draws, so results reproduce.
        max_iter, tol: stop when the relative inertia change is below ``tol``.
        init: (k, D) starting centres instead of k-means++.

    Returns:
        ``(centers (k, D) float64, inertia)``, inertia = sum of weight * squared distance.

    Example: ``weighted_kmeans(np.array([[0.],[1.],[10.]]), np.array([1, 1, 2]), 2)``
    -> centres ``[[0.5], [10.]]`` (in some order), inertia 0.5.
    """
    dev = _device()
    x = torch.as_tensor(np.asarray(points), dtype=torch.float32, device=dev)
    w = torch.as_tensor(np.asarray(weights), dtype=torch.float32, device=dev)
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"k={k} must be in [1, n_points={x.shape[0]}]")
    if init is None:
        init = _kmeanspp(np.asarray(points, np.float64), np.asarray(weights, np.float64), k,
                         np.random.default_rng(seed))
    c = torch.as_tensor(init, dtype=torch.float32, device=dev)
    if c.shape[0] < k:  # fewer distinct points carry weight than k
        c = torch.cat([c, x[: k - c.shape[0]]])
    xw = x * w[:, None]
    prev = None
    for _ in range(max_iter):
        labels, d = _sqdist_argmin(x, c)
        inertia = float((d * w).sum())
        ws = torch.zeros(k, device=dev).index_add_(0, labels, w)
        sums = torch.zeros(k, x.shape[1], device=dev).index_add_(0, labels, xw)
        empty = ws == 0
        new = sums / ws.clamp_min(1e-12)[:, None]
        if bool(empty.any()):  # re-seed empty clusters on the worst-served points
            far = torch.argsort(d * w, descending=True)[: int(empty.sum())]
            new[empty] = x[far]
        c = new
        if prev is not None and abs(prev - inertia) <= tol * max(prev, 1e-12):
            break
        prev = inertia
    labels, d = _sqdist_argmin(x, c)
    return c.double().cpu().numpy(), float((d * w).sum())


# ----------------------------------------------------------------------------- API

@dataclass
class Quantized:
    """A palette image: ``palette`` (n_colors, 3) uint8 and ``labels`` (H, W) uint8 indices."""

    palette: np.ndarray
    labels: np.ndarray
    k: int
    seconds: float = 0.0
    info: dict = field(default_factory=dict)

    @property
    def n_colors(self) -> int:
        return int(self.palette.shape[0])

    def image(self) -> np.ndarray:
        """The quantized image (H, W, 3) uint8 = ``palette[labels]``."""
        return self.palette[self.labels]

    def to_pil(self) -> Image.Image:
        """A mode-"P" Pillow image holding exactly this palette and these indices."""
        im = Image.fromarray(self.labels.astype(np.uint8), mode="P")
        im.putpalette(self.palette.astype(np.uint8).reshape(-1).tolist())
        return im

    def png_bytes(self) -> bytes:
        """The indexed PNG file's bytes (bit depth 1/2/4/8 chosen by Pillow from the palette size)."""
        buf = io.BytesIO()
        bits = next(b for b in (1, 2, 4, 8) if self.n_colors <= 1 << b)
        self.to_pil().save(buf, format="PNG", optimize=True, bits=bits)
        return buf.getvalue()


def png_bytes(image: np.ndarray) -> bytes:
    """A lossless RGB PNG of ``image`` (H, W, 3) uint8 (the "bytes before" reference)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=False, compress_level=9)
    return buf.getvalue()


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of an (H, W) grey or (H, W, 3) RGB uint8 array."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def format_table(rows: Sequence[dict]) -> str:
    """A plain-text table of :func:`evaluate` rows (with ``file`` and ``method`` keys)."""
    head = (f"{'file':<24} {'method':<7} {'K':>4} {'colours':>15} {'PNG before':>10} {'source':>9} "
            f"{'after':>8} {'ratio':>6} {'PSNR':>6} {'dE2000':>6} {'sec':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        name = r.get("file", "")
        name = name if len(name) <= 24 else "..." + name[-21:]
        lines.append(
            f"{name:<24} {r.get('method', 'kmeans'):<7} {r['k']:>4} {r['colors_before']:>7,}->{r['colors_after']:<3}  "
            f"{r['bytes_before']:>10,} {r['bytes_source'] or 0:>9,} {r['bytes_after']:>8,} {r['ratio']:>6.2f} "
            f"{r['psnr'] if r['psnr'] is not None else float('inf'):>6.2f} {r['ciede2000']:>6.2f} {r['seconds']:>6.3f}")
    return "\n".join(lines)


@_one_torch_thread
def fit_palette(
    image: np.ndarray,
    k: int,
    *,
    seed: int = 0,
    lab: bool = False,
    max_points: int = DEFAULT_MAX_POINTS,
    polish_iter: int = 10,
    n_init: int = 3,
) -> np.ndarray:
    """Fit a k-colour palette to ``image`` (H, W, 3) or pixels (N, 3) uint8 -> (k', 3) uint8.

    Minimises the sum over *all* pixels of squared distance (RGB, or CIE Lab when
    ``lab``) via weighted k-means on the distinct colours. If the image has at most
    ``k`` distinct colours they are returned as they are (lossless; ``k' < k``).

    Args:
        max_points: above this many distinct colours, polish on 7-bit cells instead.
        polish_iter: Lloyd steps on the exact colours after the cell-level fit.
        n_init: seeds tried on the cells for k <= 64 (lowest inertia kept).

    Example: ``fit_palette(rgb, 16)`` -> (16, 3) uint8, sorted rows.
    """
    k = check_k(k)
    pixels = np.asarray(image).reshape(-1, 3)
    if pixels.dtype != np.uint8 or pixels.size == 0:
        raise ValueError(f"pixels must be non-empty uint8 (..., 3), got shape={np.shape(image)} dtype={pixels.dtype}")
    colors, counts = distinct_colors(pixels)
    if len(colors) <= k:
        return colors
    # Stage 1: k-means++ and Lloyd on 6-bit histogram cells (mean colour, pixel count),
    # best of n_init seeds for K <= 64 where a run is cheap and luck matters most;
    # stage 2: polish_iter Lloyd steps on the exact distinct colours (7-bit cells when
    # there are more than max_points of them). Measured on the bench photos: this is
    # what it takes to match full-pixel k-means within 0.1 dB at K=16..256.
    if len(colors) > max_points:
        pts, wts = binned_colors(pixels, bits=7)
    else:
        pts, wts = colors.astype(np.float64), counts
    coarse, cw = binned_colors(pixels, bits=6)
    conv = srgb_to_lab if lab else (lambda a: np.asarray(a, np.float64))
    init = None
    if len(coarse) >= 4 * k:
        runs = [weighted_kmeans(conv(coarse), cw, k, seed=seed + i, max_iter=30, tol=1e-5)
                for i in range(n_init if k <= 64 else 1)]
        init = min(runs, key=lambda r: r[1])[0]
    centers, _ = weighted_kmeans(conv(pts), wts, k, seed=seed, init=init,
                                 max_iter=polish_iter if init is not None else 100, tol=1e-6)
    if lab:
        pal = lab_to_srgb(centers)
    else:
        pal = np.clip(np.rint(centers), 0, 255).astype(np.uint8)
    return np.unique(pal, axis=0)  # rounding can merge centres


def random_palette(image: np.ndarray, k: int, *, seed: int = 0) -> np.ndarray:
    """The baseline: ``k`` colours drawn uniformly at random from the RGB cube -> (k', 3) uint8."""
    k = check_k(k)
    rng = np.random.default_rng(seed)
    return np.unique(rng.integers(0, 256, (k, 3), dtype=np.uint8), axis=0)


@_one_torch_thread
def assign(image: np.ndarray, palette: np.ndarray, *, lab: bool = False) -> np.ndarray:
    """Exact nearest palette index for every pixel.

    Args:
        image: (H, W, 3) or (N, 3) uint8.
        palette: (K, 3) uint8, K <= 256.
        lab: measure distance in CIE Lab instead of RGB.

    Returns:
        labels with the image's leading shape, uint8 (ties go to the lowest index).
    """
    image = np.asarray(image)
    pixels = image.reshape(-1, 3)
    palette = np.asarray(palette, dtype=np.uint8)
    colors, _ = distinct_colors(pixels)
    if lab:
        idx, _ = _sqdist_argmin(torch.from_numpy(srgb_to_lab(colors)), torch.from_numpy(srgb_to_lab(palette)))
        idx = idx.numpy()
    elif len(palette) <= 64:
        idx = _nearest_rgb(colors, palette)
    else:
        # measured: at K=256 most cells are ambiguous, so the cell pass does not pay
        idx = _sqdist_argmin(torch.from_numpy(colors.astype(np.float32)),
                             torch.from_numpy(palette.astype(np.float32)))[0].numpy()
    lut = np.zeros(1 << 24, dtype=np.uint8)
    lut[pack(colors)] = idx.astype(np.uint8)
    return lut[pack(pixels)].reshape(image.shape[:-1])


@_one_torch_thread
def quantize(
    image: np.ndarray,
    k: int,
    *,
    seed: int = 0,
    method: str = "kmeans",
    lab: bool = False,
    dither: bool = False,
) -> Quantized:
    """Fit a palette and assign every pixel: (H, W, 3) uint8 -> :class:`Quantized`.

    ``method`` is ``"kmeans"`` or ``"random"`` (the random-palette baseline). With
    ``dither``, Floyd-Steinberg error diffusion is done by Pillow's C quantizer with
    our palette.
    """
    k = check_k(k)
    image = _check_image(image)
    if method not in METHODS:
        raise ValueError(f"method={method!r} must be one of {METHODS}")
    t0 = time.perf_counter()
    pal = fit_palette(image, k, seed=seed, lab=lab) if method == "kmeans" else random_palette(image, k, seed=seed)
    if dither:
        pim = Image.new("P", (1, 1))
        pim.putpalette(pal.reshape(-1).tolist() + pal[0].tolist() * (256 - len(pal)))
        out = Image.fromarray(image).quantize(palette=pim, dither=Image.Dither.FLOYDSTEINBERG)
        labels = np.asarray(out).copy()
        labels[labels >= len(pal)] = 0  # padding entries repeat colour 0
    else:
        labels = assign(image, pal, lab=lab)
    # keep only used colours so the PNG palette is as small as it can be
    used = np.flatnonzero(np.bincount(labels.reshape(-1), minlength=len(pal)))
    remap = np.zeros(len(pal), np.uint8)
    remap[used] = np.arange(len(used), dtype=np.uint8)
    q = Quantized(palette=pal[used], labels=remap[labels], k=k)
    q.seconds = time.perf_counter() - t0
    return q


def evaluate(image: np.ndarray, q: Quantized, *, source_bytes: int | None = None) -> dict:
    """Stats for one result: colours before/after, bytes before/after, ratio, PSNR, CIEDE2000.

    ``bytes_before`` is a lossless RGB PNG of the same pixels; ``source_bytes`` (the
    input file's size) is reported beside it. ``ratio = bytes_before / bytes_after``.
    """
    before = len(png_bytes(image))
    after = len(q.png_bytes())
    return {
        "k": q.k,
        "colors_before": int(len(distinct_colors(image.reshape(-1, 3))[0])),
        "colors_after": q.n_colors,
        "bytes_before": before,
        "bytes_source": source_bytes,
        "bytes_after": after,
        "ratio": before / after,
        "psnr": psnr(image, q.image()),
        "ciede2000": mean_ciede2000(image, q.palette, q.labels),
        "seconds": q.seconds,
    }


def segment_colors(n: int) -> np.ndarray:
    """``n`` well-separated label colours (n, 3) uint8 (golden-angle hues)."""
    import colorsys

    return np.array([[round(255 * v) for v in colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.65 + 0.35 * (i % 2), 0.95 - 0.3 * (i % 3 == 2))]
                     for i in range(n)], dtype=np.uint8)


def segmentation(q: Quantized) -> np.ndarray:
    """The label map as an image: for 2 colours a grey mask (H, W) uint8 with values
    {0, 255} (darker palette colour -> 0); otherwise (H, W, 3) uint8 distinct colours."""
    if q.n_colors <= 2:
        lum = q.palette.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        order = np.argsort(lum, kind="stable")
        val = np.zeros(q.n_colors, np.uint8)
        val[order[-1]] = 255 if q.n_colors == 2 else 0
        return val[q.labels]
    return segment_colors(q.n_colors)[q.labels]


def auto_k(
    image: np.ndarray,
    *,
    target_psnr: float | None = None,
    max_bytes: int | None = None,
    ks: Sequence[int] = (2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256),
    seed: int = 0,
    lab: bool = False,
) -> tuple[int | None, list[dict]]:
    """The smallest K in ``ks`` whose result reaches ``target_psnr`` (dB), or the largest
    K whose PNG fits in ``max_bytes``. Exactly one target must be given.

    Returns ``(k or None if none qualifies, curve)``, curve = one :func:`evaluate` dict
    per K tried (ascending), for the error-vs-K plot.
    """
    if (target_psnr is None) == (max_bytes is None):
        raise ValueError("give exactly one of target_psnr or max_bytes")
    if max_bytes is not None and max_bytes <= 0:
        raise ValueError(f"max_bytes={max_bytes} must be > 0")
    ks = sorted({check_k(k) for k in ks})
    image = _check_image(image)
    curve, chosen = [], None
    for k in ks:
        row = evaluate(image, quantize(image, k, seed=seed, lab=lab))
        curve.append(row)
        if target_psnr is not None and row["psnr"] >= target_psnr:
            chosen = k
            break
        if max_bytes is not None:
            if row["bytes_after"] <= max_bytes:
                chosen = k
            else:
                break
        if row["colors_after"] < k:  # lossless already, larger K changes nothing
            break
    return chosen, curve


__all__ = [
    "K_MIN", "K_MAX", "Quantized", "check_k", "distinct_colors", "binned_colors", "srgb_to_lab",
    "lab_to_srgb", "ciede2000", "psnr", "mean_ciede2000", "weighted_kmeans", "fit_palette",
    "random_palette", "assign", "quantize", "evaluate", "png_bytes", "encode_png", "format_table", "segmentation",
    "segment_colors", "auto_k",
]
