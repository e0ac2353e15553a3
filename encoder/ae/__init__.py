"""The conv autoencoder: 64x64 grey images -> 128-d float codes -> images.

Public names, each imported on first use (:mod:`encoder._lazy`), so ``import encoder.ae``
costs nothing and never loads Lightning; only the training names (``AutoencoderModule``,
``ImageFolderDataModule``, ``predict_codes``) do, when read.

Example::

    >>> from encoder.ae import load_encoder, encode_paths                   # doctest: +SKIP
    >>> enc = load_encoder("runs/train/checkpoints/best.ckpt")
    >>> codes, kept = encode_paths(enc, ["a.png", "b.jpg"])              # (2, 128) float32
"""

from encoder._lazy import exports

_TABLE = {
    "encoder.ae.model": ("ConvAutoencoder", "ConvEncoder", "ConvDecoder", "ARCH", "DEFAULT_WIDTH"),
    "encoder.ae.inference": (
        "Encoder",
        "CheckpointError",
        "load_encoder",
        "load_model",
        "encoder_from_model",
        "save_encoder",
        "read_checkpoint",
        "fingerprint",
    ),
    "encoder.ae.runtime": ("encode_paths", "OnnxEncoder"),
    "encoder.ae.recon": ("reconstruct_paths", "decode_to_files", "load_codes", "save_grid"),
    "encoder.ae.export": ("export_encoder", "OnnxCheckUnavailable"),
    "encoder.ae.shards": ("predict_codes", "PredictedCodes", "merge_shards"),
    "encoder.ae.lit": ("AutoencoderModule", "LossTerm", "LOSS_TERMS"),
    "encoder.ae.datamodule": ("ImageFolderDataModule", "PathDataset"),
}

__getattr__, __dir__ = exports(
    __name__,
    {name: f"{module}:{name}" for module, names in _TABLE.items() for name in names}
    | {"export_fashion_mnist": "encoder.ae.fashion_mnist:export"},
)
