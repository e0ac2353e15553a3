"""encoder.hashing.dedup.find_groups: threshold edge, chains, flat images, order, errors."""

import numpy as np
import pytest

from encoder.hashing.dedup import DEFAULT_THRESHOLD, find_groups
from encoder.hashing.hashes import hamming


def _flip(h: np.ndarray, n_bits: int, start: int = 0) -> np.ndarray:
    """Copy of the (8,) hash ``h`` with bits ``start .. start + n_bits - 1`` flipped."""
    bits = np.unpackbits(h)
    bits[start : start + n_bits] ^= 1
    return np.packbits(bits)


def test_threshold_is_inclusive():
    a = np.random.default_rng(0).integers(0, 256, 8, dtype=np.uint8)
    h = np.stack([a, _flip(a, DEFAULT_THRESHOLD)])
    assert int(hamming(h[0], h[1])) == DEFAULT_THRESHOLD
    assert find_groups(h, ["a", "b"]) == [{"ids": ["a", "b"], "max_distance": DEFAULT_THRESHOLD}]
    assert find_groups(h, ["a", "b"], threshold=DEFAULT_THRESHOLD - 1) == []


def test_chains_link_and_larger_groups_come_first():
    a = np.zeros(8, np.uint8)
    # x0 - x1 - x2 each 6 bits apart (x0 to x2: 12 > threshold, linked through x1)
    chain = [a, _flip(a, 6), _flip(a, 12)]
    far = np.full(8, 255, np.uint8)
    pair = [far, _flip(far, 2, start=40)]
    h = np.stack(pair + chain)
    groups = find_groups(h, ["p1", "p0", "c0", "c1", "c2"], threshold=6)
    assert groups == [{"ids": ["c0", "c1", "c2"], "max_distance": 12}, {"ids": ["p0", "p1"], "max_distance": 2}]


def test_flat_images_left_out_unless_asked():
    h = np.zeros((3, 8), np.uint8)  # flat images all share one hash
    flat = np.array([True, True, False])
    assert find_groups(h, ["a", "b", "c"], flat=flat) == []
    assert find_groups(h, ["a", "b", "c"], flat=flat, include_flat=True) == [
        {"ids": ["a", "b", "c"], "max_distance": 0}
    ]


def test_small_and_bad_inputs():
    assert find_groups(np.zeros((1, 8), np.uint8), ["a"]) == []
    assert find_groups(np.zeros((0, 8), np.uint8), []) == []
    with pytest.raises(ValueError, match="2 hashes but 1 ids"):
        find_groups(np.zeros((2, 8), np.uint8), ["a"])
    with pytest.raises(ValueError, match="threshold=-1"):
        find_groups(np.zeros((2, 8), np.uint8), ["a", "b"], threshold=-1)
