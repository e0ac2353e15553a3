"""Similarity search over an image folder: perceptual hashes or autoencoder codes + a FAISS index.

    python search.py index photos/ --method phash -o runs/idx
    python search.py index photos/ --method ae --checkpoint runs/train/last.ckpt -o runs/ae_idx
    python search.py query runs/ae_idx query.jpg -k 5 --plot runs/q.png --show-recon
    python search.py add runs/idx more/new.jpg ; python search.py remove runs/idx old.jpg
    python search.py dedup runs/idx --threshold 10 --csv runs/dups.csv --plot runs/dups.png
    python search.py evaluate data/fashion-mnist/test --checkpoint runs/train/last.ckpt --json
    python search.py index big/ --method ae --checkpoint m.pt -o runs/idx --devices 2 --strategy ddp

The command line lives in encoder/cli/search.py; methods, index and evaluation in encoder/search/.
"""

from __future__ import annotations

import sys

from encoder.cli.search import main

if __name__ == "__main__":
    sys.exit(main())
