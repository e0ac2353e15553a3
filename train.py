"""Train the autoencoder and use it (LightningCLI for training; tools beside it).

    python train.py fit --config configs/fashion_mnist.yaml
    python train.py prepare-fashion-mnist --out data/fashion-mnist
    python train.py reconstruct --checkpoint CKPT IMAGES... -o runs/recon

The command line lives in encoder/cli/train.py; the model and its training in encoder/ae/.
"""

from __future__ import annotations

import sys

from encoder.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
