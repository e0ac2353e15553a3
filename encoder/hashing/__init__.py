"""Perceptual hashes (pHash/dHash/aHash, imagehash-compatible) and near-duplicate groups.

Example::

    >>> from encoder.hashing import hash_paths, find_groups   # doctest: +SKIP
    >>> hashes, kept, flat = hash_paths(paths, "phash")       # doctest: +SKIP
    >>> groups = find_groups(hashes, [str(p) for p in kept], flat=flat)   # doctest: +SKIP
"""

from encoder._lazy import exports

__getattr__, __dir__ = exports(
    __name__,
    {
        **{
            n: f"encoder.hashing.hashes:{n}"
            for n in (
                "HashDef",
                "HASHES",
                "METHODS",
                "ALPHA_MODES",
                "HASH_BITS",
                "hash_paths",
                "hash_images",
                "hash_version",
                "hash_pixels",
                "small_gray",
                "is_flat",
                "hamming",
                "hash_to_hex",
            )
        },
        **{n: f"encoder.hashing.dedup:{n}" for n in ("find_groups", "DEFAULT_THRESHOLD")},
        "lanczos_resize": "encoder.hashing.lanczos:lanczos_resize",
    },
)
