"""K-means colour quantization: fit a palette, assign every pixel, keep an indexed image.

The k-means objective over all pixels equals a *weighted* k-means over the image's
distinct colours (each weighted by its pixel count), which is usually 2-10x smaller
than the pixel count, and the 6-bit-per-channel histogram cells (mean colour, pixel
count) are smaller still. So :func:`fit_palette` seeds on the cells (Var-Part, plus
k-means++ starts for n_colors <= 64), runs Lloyd on them, then polishes with a few
over-relaxed Lloyd steps on the exact distinct colours (engine: :mod:`encoder.palette.kmeans`).
:func:`assign` is exact: the nearest palette colour of each distinct colour, then a
2**24-entry lookup table maps every pixel to its label. :func:`quantize` is the two in
turn, sharing one distinct-colour pass (:class:`~encoder.palette.colors.ColorSet`).

Sizes: ``n_colors`` is the palette size asked for (2..256); the palette returned can be
smaller (an image with fewer distinct colours, centres merged by rounding, colours no
pixel uses), so ``len(q.palette)`` is the size used.

Alpha: images are loaded by :mod:`encoder.data` and composited on white.

Memory: every step over the pixels (packing, the lookup, the used-colour pass, the quantized
image) runs in chunks of ``colors.CHUNK`` pixels, so the peak is the image, its packed
colours (int32) and their sorted copy; files are read in strips by
:func:`encoder.data.load_rgb` (measured by bench/palette_memory_bench.py).

Example::

    >>> from encoder.data import load_rgb
    >>> rgb = load_rgb("photo.jpg")                 # (H, W, 3) uint8
    >>> q = quantize(rgb, 16, seed=0)               # Quantized
    >>> q.palette.shape, q.labels.shape             # (16, 3) uint8, (H, W) uint8
    >>> png = q.png_bytes()                         # a real mode-"P" PNG
    >>> pal = fit_palette(rgb, 16); labels = assign(rgb, pal)   # the same, in two steps
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from encoder.palette.colors import CHUNK, ColorSet, binned_colors, lab_to_srgb, srgb_to_lab
from encoder.palette.kmeans import kmeanspp, lloyd, nearest, pad, varpart
from encoder.palette.limits import N_COLORS_MAX, N_COLORS_MIN, check_n_colors  # noqa: F401  (re-exported)

DEFAULT_MAX_POINTS = 1 << 18  # more distinct colours than this: polish on 7-bit cells
# The fewest polish steps that keep every bench photo within 0.1 dB of full-pixel k-means
# (figures: docs/measured.md).
POLISH_ITER = 3  # over-relaxed Lloyd steps on the distinct colours after the fit on 6-bit cells
# ... one more above 64 colours, where the cells are coarsest for the centres.
POLISH_ITER_LARGE = 4
COARSE_ITER, COARSE_TOL = 30, 1e-3  # Lloyd on the 6-bit cells: at most, and relative inertia change
METHODS = ("kmeans", "random")
# n_colors <= 64: best of N_INIT_SMALL starts (Var-Part + k-means++ seeds drawn on 5-bit cells):
# 5-bit cells place seeds as well as 6-bit ones at a fraction of the cost, 4-bit ones do not.
KPP_BITS = 5
# Few colours (graphics, screenshots, charts, flat wallpapers: a few exact colours hold most
# pixels, with a tail of edge and gradient colours): the 6-bit cells are then too few to place
# the centres, so when the distinct colours are few in absolute terms and the cells few per
# centre, seeds and Lloyd run on the exact colours themselves, to convergence (that is
# full-pixel k-means, cheap at this size). Photos keep the cell path.
EXACT_MAX_COLORS = 24_576
# On the exact colours, N_INIT_EXACT starts for images of up to EXACT_STARTS_MAX_COLORS colours:
# few colours make each start cheap and Var-Part alone can land far from full k-means there;
# above, 3 starts for n_colors <= 64 as for photos.
N_INIT_EXACT = 5
EXACT_STARTS_MAX_COLORS = 8192
# Also on the exact colours: an image whose 10 commonest colours hold PEAKY_SHARE of its pixels
# (a screenshot with a photo in it), which the cells fit badly; photos hold far less in their
# commonest colours and would pay up to 5x the time on the exact path.
PEAKY_SHARE = 0.3
PEAKY_MAX_COLORS = 65_536
CELLS_PER_CENTRE = 32
N_INIT_SMALL = 3


def check_image(image: np.ndarray) -> np.ndarray:
    """``image`` as an array if it is a non-empty (H, W, 3) uint8 image, else ``ValueError``."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or image.size == 0:
        raise ValueError(
            f"image must be a non-empty (H, W, 3) uint8 array, got shape={image.shape} dtype={image.dtype}"
        )
    return image


def _color_set(image: np.ndarray, color_set: ColorSet | None) -> ColorSet:
    """``color_set`` if given (checked to be of an image of this many pixels), else ``ColorSet.of(image)``."""
    if color_set is None:
        return ColorSet.of(image)
    if len(color_set.packed) * 3 != np.size(image):
        raise ValueError(f"color_set holds {len(color_set.packed)} pixels, the image {np.size(image) // 3}")
    return color_set


@dataclass
class Quantized:
    """A palette image: ``palette`` (n, 3) uint8 and ``labels`` (H, W) uint8 indices into it.

    ``n_colors`` is the palette size asked for; ``len(palette) <= n_colors`` is the size
    used (only colours that some pixel takes are kept). ``seconds``: fit + assignment time.
    """

    palette: np.ndarray
    labels: np.ndarray
    n_colors: int
    seconds: float = 0.0
    info: dict = field(default_factory=dict)

    def image(self) -> np.ndarray:
        """The quantized image (H, W, 3) uint8 = ``palette[labels]``."""
        flat = self.labels.reshape(-1)
        out = np.empty((len(flat), 3), np.asarray(self.palette).dtype)
        for s in range(0, len(flat), CHUNK):  # by chunks: take's index copy costs 8 bytes per pixel
            np.take(self.palette, flat[s : s + CHUNK], axis=0, out=out[s : s + CHUNK])  # 4x faster than fancy indexing
        return out.reshape(*self.labels.shape, 3)

    def to_pil(self) -> Image.Image:
        """A mode-"P" Pillow image holding exactly this palette and these indices."""
        im = Image.fromarray(np.asarray(self.labels, np.uint8), mode="P")
        im.putpalette(self.palette.astype(np.uint8).reshape(-1).tolist())
        return im

    def png_bytes(self, compress_level: int | None = None) -> bytes:
        """The indexed PNG file's bytes (bit depth 1/2/4/8 from the palette size).

        ``compress_level`` is zlib's (0-9); None chooses: 9 for images up to 1 MP and for
        few-colour images, 6 for larger photos, where level 9 takes over 3x the time to save
        under 1% (figures: docs/measured.md).
        """
        if compress_level is None:
            few = self.info.get("colors_before", EXACT_MAX_COLORS + 1) <= EXACT_MAX_COLORS
            compress_level = 9 if few or self.labels.size <= 1 << 20 else 6
        buf = io.BytesIO()
        bits = next(b for b in (1, 2, 4, 8) if len(self.palette) <= 1 << b)
        self.to_pil().save(buf, format="PNG", compress_level=compress_level, bits=bits)
        return buf.getvalue()


def fit_palette(
    image: np.ndarray,
    n_colors: int,
    *,
    seed: int = 0,
    lab: bool = False,
    max_points: int = DEFAULT_MAX_POINTS,
    polish_iter: int | None = None,
    n_init: int | None = None,
    threads: int | None = None,
    color_set: ColorSet | None = None,
) -> np.ndarray:
    """Fit an ``n_colors`` palette to ``image`` (H, W, 3) or pixels (N, 3) uint8 -> (n, 3) uint8.

    Minimises the sum over *all* pixels of squared distance (RGB, or CIE Lab when
    ``lab``) via weighted k-means on the distinct colours. If the image has at most
    ``n_colors`` distinct colours they are returned as they are (lossless; ``n < n_colors``).

    Args:
        max_points: above this many distinct colours, polish on 7-bit cells instead.
        polish_iter: Lloyd steps on the exact colours after the cell-level fit (default
            ``POLISH_ITER``, ``POLISH_ITER_LARGE`` above 64 colours).
        n_init: starts tried, lowest inertia kept (default for n_colors <= 64: Var-Part plus
            k-means++ seeds, 3 on the cells of a photo, 5 on the exact colours of a few-colour
            image (see ``EXACT_MAX_COLORS``); above 64, Var-Part alone).
        threads: nearest-centre search threads on CPU (None: one per available core);
            the result does not depend on it.
        color_set: ``ColorSet.of(image)`` if the caller has it already (:func:`quantize`).

    Example: ``fit_palette(rgb, 16)`` -> (16, 3) uint8, sorted rows.
    """
    n_colors = check_n_colors(n_colors)
    pixels = np.asarray(image).reshape(-1, 3)
    if pixels.dtype != np.uint8 or pixels.size == 0:
        raise ValueError(f"pixels must be non-empty uint8 (..., 3), got shape={np.shape(image)} dtype={pixels.dtype}")
    cs = _color_set(pixels, color_set)
    return _fit_colors(
        cs.colors,
        cs.counts,
        n_colors,
        seed=seed,
        lab=lab,
        max_points=max_points,
        polish_iter=polish_iter,
        n_init=n_init,
        threads=threads,
    )


def _fit_colors(
    colors: np.ndarray,
    counts: np.ndarray,
    n_colors: int,
    *,
    seed: int,
    lab: bool,
    max_points: int,
    polish_iter: int | None,
    n_init: int | None,
    threads: int | None,
) -> np.ndarray:
    """:func:`fit_palette` on distinct colours (M, 3) uint8 with pixel counts (M,)."""
    if len(colors) <= n_colors:
        return colors
    if polish_iter is None:
        polish_iter = POLISH_ITER if n_colors <= 64 else POLISH_ITER_LARGE
    conv = srgb_to_lab if lab else (lambda a: np.asarray(a, np.float64))
    coarse, cw = binned_colors(colors, bits=6, counts=counts)
    few = len(colors) <= EXACT_MAX_COLORS and len(coarse) < CELLS_PER_CENTRE * n_colors or _peaky(counts, colors)
    if n_init is None:  # starts: cheap on a few thousand exact colours (see N_INIT_EXACT)
        n_init = (
            N_INIT_EXACT if few and len(colors) <= EXACT_STARTS_MAX_COLORS else N_INIT_SMALL if n_colors <= 64 else 1
        )
    if few or len(coarse) < 4 * n_colors:  # Lloyd on the colours themselves, to convergence
        x, w = binned_colors(colors, bits=7, counts=counts) if len(colors) > max_points else (colors, counts)
        x, w = conv(x), np.asarray(w, np.float64)
        starts = [varpart(x, w, n_colors)] + [
            kmeanspp(x, w, n_colors, np.random.default_rng(seed + i)) for i in range(1, n_init if few else 1)
        ]
        runs = [lloyd(x, w, pad(c, x, n_colors), 100, 1e-6, threads=threads) for c in starts]
        centers = min(runs, key=lambda r: r[1])[0]
    else:
        centers = _fit_cells(
            colors,
            counts,
            n_colors,
            coarse,
            cw,
            conv,
            seed=seed,
            max_points=max_points,
            polish_iter=polish_iter,
            n_init=n_init,
            threads=threads,
        )
    if lab:
        pal = lab_to_srgb(centers)
    else:
        pal = np.clip(np.rint(centers), 0, 255).astype(np.uint8)
    return np.unique(pal, axis=0)  # rounding can merge centres


def _peaky(counts: np.ndarray, colors: np.ndarray) -> bool:
    """Dominated by a few exact colours (``PEAKY_SHARE`` of the pixels in the 10 commonest) and
    with at most ``PEAKY_MAX_COLORS`` colours: fitted on the exact colours too."""
    if len(colors) > PEAKY_MAX_COLORS or len(counts) <= 10:
        return False
    return float(np.partition(counts, len(counts) - 10)[-10:].sum()) >= PEAKY_SHARE * float(counts.sum())


def _fit_cells(colors, counts, n_colors, coarse, cw, conv, *, seed, max_points, polish_iter, n_init, threads):
    """Photos: seeds and Lloyd on 6-bit histogram cells (mean colour, pixel count), then polish.

    Var-Part, plus k-means++ starts (drawn on 5-bit cells) for n_colors <= 64 where a run is
    cheap and luck matters most; the start with the lowest cell-level inertia goes on to
    polish_iter over-relaxed Lloyd steps on the exact distinct colours (7-bit cells when there
    are more than max_points of them). Measured on the bench photos: this matches full-pixel
    k-means within 0.1 dB at K=16..256 (see the constants at the top).
    """
    if len(colors) > max_points:
        fine, fw = binned_colors(colors, bits=7, counts=counts)
    else:
        fine, fw = colors, counts.astype(np.float64)
    xc = conv(coarse)
    starts = [varpart(xc, cw, n_colors)]
    if n_init > 1:
        sx, sw = binned_colors(colors, bits=KPP_BITS, counts=counts)
        starts += [kmeanspp(conv(sx), sw, n_colors, np.random.default_rng(seed + i)) for i in range(1, n_init)]
    runs = [lloyd(xc, cw, pad(c, xc, n_colors), COARSE_ITER, COARSE_TOL, threads=threads) for c in starts]
    centers = min(runs, key=lambda r: r[1])[0]
    return lloyd(conv(fine), fw, centers, polish_iter, 0.0, threads=threads)[0]


def random_palette(n_colors: int, *, seed: int = 0) -> np.ndarray:
    """The baseline: ``n_colors`` colours drawn uniformly from the RGB cube -> (n, 3) uint8, sorted.

    Example: ``random_palette(16, seed=1)`` -> (16, 3) uint8 (fewer if a draw repeats).
    """
    n_colors = check_n_colors(n_colors)
    rng = np.random.default_rng(seed)
    return np.unique(rng.integers(0, 256, (n_colors, 3), dtype=np.uint8), axis=0)


def assign(
    image: np.ndarray,
    palette: np.ndarray,
    *,
    lab: bool = False,
    dither: bool = False,
    threads: int | None = None,
    color_set: ColorSet | None = None,
) -> np.ndarray:
    """Exact nearest palette index for every pixel.

    Args:
        image: (H, W, 3) or (N, 3) uint8 (with ``dither``: (H, W, 3)).
        palette: (K, 3) uint8, K <= 256.
        lab: measure distance in CIE Lab instead of RGB.
        dither: Floyd-Steinberg error diffusion instead, by Pillow's C quantizer with this
            palette (its distances are RGB: ``lab`` does not apply).
        threads: nearest-centre search threads on CPU (None: one per available core).
        color_set: ``ColorSet.of(image)`` if the caller has it already (:func:`quantize`).

    Returns:
        labels with the image's leading shape, uint8 (ties go to the lowest index).

    Example: ``assign(rgb, fit_palette(rgb, 16))`` -> (H, W) uint8 in [0, 16).
    """
    image = np.asarray(image)
    palette = np.asarray(palette, dtype=np.uint8)
    if dither:
        pim = Image.new("P", (1, 1))
        pim.putpalette(palette.reshape(-1).tolist() + palette[0].tolist() * (256 - len(palette)))
        out = Image.fromarray(image).quantize(palette=pim, dither=Image.Dither.FLOYDSTEINBERG)
        labels = np.asarray(out).copy()
        labels[labels >= len(palette)] = 0  # padding entries repeat colour 0
        return labels
    cs = _color_set(image, color_set)
    idx = np.empty(len(cs.colors), np.uint8)
    centres = srgb_to_lab(palette) if lab else palette
    for s in range(0, len(idx), CHUNK):  # by chunks of colours: a photo can have millions
        x = srgb_to_lab(cs.colors[s : s + CHUNK]) if lab else cs.colors[s : s + CHUNK]
        idx[s : s + CHUNK] = nearest(x, centres, threads=threads)[0]
    return _lookup(cs.packed, cs.keys, idx).reshape(image.shape[:-1])


_LUT = threading.local()


def _lookup(packed: np.ndarray, keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values[j]`` for each ``packed[i] == keys[j]`` (every value packed is a key), via a 2**24 table.

    The table (16 MB, one per thread) is kept between calls: a fresh one costs page faults
    on every write (~3 ms per photo), and stale entries are never read, since every colour
    looked up was written just before.
    """
    lut = getattr(_LUT, "table", None)
    if lut is None:
        lut = _LUT.table = np.empty(1 << 24, dtype=np.uint8)
    lut[keys] = values
    out = np.empty(len(packed), np.uint8)
    for s in range(0, len(packed), CHUNK):  # bounded index temporaries, whatever the image size
        out[s : s + CHUNK] = lut[packed[s : s + CHUNK]]
    return out


def quantize(
    image: np.ndarray,
    n_colors: int,
    *,
    seed: int = 0,
    method: str = "kmeans",
    lab: bool = False,
    dither: bool = False,
    threads: int | None = None,
) -> Quantized:
    """Fit a palette and assign every pixel: (H, W, 3) uint8 -> :class:`Quantized`.

    Exactly :func:`fit_palette` (``method="kmeans"``; ``"random"``: :func:`random_palette`,
    the baseline) then :func:`assign`, the distinct colours found once for both; colours
    no pixel takes are then dropped, so the indexed PNG's palette is as small as it can be.

    Example: ``quantize(rgb, 64).png_bytes()`` -> an indexed PNG of at most 64 colours.
    """
    n_colors = check_n_colors(n_colors)
    image = check_image(image)
    if method not in METHODS:
        raise ValueError(f"method={method!r} must be one of {METHODS}")
    t0 = time.perf_counter()
    # the one distinct-colour pass, unless neither step needs it (a dithered random palette)
    cs = ColorSet.of(image) if method == "kmeans" or not dither else None
    if method == "kmeans":
        pal = fit_palette(image, n_colors, seed=seed, lab=lab, threads=threads, color_set=cs)
    else:
        pal = random_palette(n_colors, seed=seed)
    labels = assign(image, pal, lab=lab, dither=dither, threads=threads, color_set=cs)
    used = np.zeros(len(pal), bool)
    flat = labels.reshape(-1)
    for s in range(0, len(flat), CHUNK):  # by chunks: an index array costs 8 bytes per entry
        used[flat[s : s + CHUNK]] = True  # 1.5 ns per pixel (a bincount: 3.3)
    if not used.all():  # keep only used colours so the PNG palette is as small as it can be
        remap = np.zeros(len(pal), np.uint8)
        remap[used] = np.arange(np.count_nonzero(used), dtype=np.uint8)
        for s in range(0, len(flat), CHUNK):
            flat[s : s + CHUNK] = remap[flat[s : s + CHUNK]]
        labels = flat.reshape(labels.shape)
    q = Quantized(palette=pal[used], labels=labels, n_colors=n_colors)
    if cs is not None:
        q.info["colors_before"] = len(cs.colors)
    q.seconds = time.perf_counter() - t0
    return q


__all__ = [
    "N_COLORS_MIN",
    "N_COLORS_MAX",
    "Quantized",
    "check_n_colors",
    "check_image",
    "fit_palette",
    "random_palette",
    "assign",
    "quantize",
]
