"""The palette size a PNG can hold, checked in one place (no numpy: the command line checks its
arguments before the heavy imports).

Example: ``check_n_colors(64)`` -> 64; ``check_n_colors(300)`` raises ValueError naming 300.
"""

from __future__ import annotations

import numbers

N_COLORS_MIN, N_COLORS_MAX = 2, 256


def check_n_colors(n_colors: int) -> int:
    """Return ``n_colors`` as int if it is in [2, 256], else raise ``ValueError`` naming it."""
    if (
        isinstance(n_colors, bool)
        or not isinstance(n_colors, numbers.Integral)  # numpy ints are Integral
        or not N_COLORS_MIN <= int(n_colors) <= N_COLORS_MAX
    ):
        raise ValueError(
            f"n_colors={n_colors!r} must be an integer in [{N_COLORS_MIN}, {N_COLORS_MAX}] "
            "(a PNG palette holds at most 256 colours)"
        )
    return int(n_colors)


__all__ = ["N_COLORS_MIN", "N_COLORS_MAX", "check_n_colors"]
