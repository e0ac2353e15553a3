"""Palette compression: k-means colours -> indexed PNG, with stats and figures.

    python quantize.py photo.jpg -k 16 64 256                # table + PNGs in runs/quantize
    python quantize.py photos/ -k 32 --json --dither --lab   # a folder, JSON rows
    python quantize.py photo.jpg --auto --target-psnr 38 --segment --scatter

The command line lives in encoder/cli/quantize.py; the palette engine in encoder/palette/.
"""

from __future__ import annotations

import sys

from encoder.cli.quantize import main

if __name__ == "__main__":
    sys.exit(main())
