"""Train the autoencoder and use it: see encoder/train_cli.py and README.md.

    python train.py fit --config configs/fashion_mnist.yaml
    python train.py prepare-fashion-mnist --out data/fashion-mnist
    python train.py reconstruct --checkpoint CKPT IMAGES... -o runs/recon
"""
import sys

from encoder.train_cli import main

if __name__ == "__main__":
    sys.exit(main())
