"""encoder: image codes for compression and similarity search.

Four products over one image loader (:mod:`encoder.data`) and one atomic writer
(:mod:`encoder.atomic`):

* :mod:`encoder.ae`       the conv autoencoder: 64x64 grey -> 128-d codes -> images
* :mod:`encoder.hashing`  pHash/dHash/aHash (imagehash-compatible), duplicate groups
* :mod:`encoder.search`   one Method interface, the on-disk FAISS index, evaluation
* :mod:`encoder.palette`  k-means colour palettes, indexed PNGs, segmentation

The names below are the README's Python API; each is imported on first use, so
``import encoder`` costs nothing and inference never loads Lightning. ``encoder.__version__``
is the installed package's version (``pyproject.toml`` in a source checkout).

Example::

    >>> from encoder import load_encoder, encode_paths, Index, quantize   # doctest: +SKIP
"""

from encoder._lazy import exports

__getattr__, __dir__ = exports(
    __name__,
    {
        "__version__": "encoder._version:__version__",
        "load_rgb": "encoder.data:load_rgb",
        "load_gray": "encoder.data:load_gray",
        "image_paths": "encoder.data:image_paths",
        "ImageLoadError": "encoder.data:ImageLoadError",
        "psnr": "encoder.metrics:psnr",
        "ssim": "encoder.metrics:ssim",
        "load_encoder": "encoder.ae.inference:load_encoder",
        "encode_paths": "encoder.ae.inference:encode_paths",
        "hash_paths": "encoder.hashing.hashes:hash_paths",
        "find_groups": "encoder.hashing.dedup:find_groups",
        "Index": "encoder.search.index:Index",
        "quantize": "encoder.palette.api:quantize",
        "palette_stats": "encoder.palette.report:palette_stats",
    },
)
