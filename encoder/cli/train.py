"""Command line of train.py: LightningCLI for training, plus data/reconstruction/export tools.

    python train.py fit --config configs/fashion_mnist.yaml      # LightningCLI (fit/validate)
    python train.py fit --config configs/smoke.yaml --print_config
    python train.py fit --config configs/default.yaml --data.root photos/ --trainer.max_epochs 5
    python train.py fit --config configs/default.yaml --ckpt_path runs/train/.../last.ckpt  # resume
    python train.py prepare-fashion-mnist --out data/fashion-mnist
    python train.py reconstruct --checkpoint CKPT IMAGES... -o runs/recon
    python train.py decode --checkpoint CKPT runs/recon/codes.npy -o runs/decoded
    python train.py export --checkpoint CKPT -o runs/encoder.onnx   (or encoder.pt; --no-check)

The tools' handlers take the parsed values as keyword arguments (never the argparse namespace)
and pass them on to the library by name.

Checkpoints are written atomically (write, fsync, rename) and read with weights_only=True.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# Only the standard library above: `train.py --help` and the tools answer without Lightning
# (5 s to import); encoder.cli.fit, the LightningCLI, is imported for fit/validate/test/predict.

TOOLS = ("prepare-fashion-mnist", "reconstruct", "decode", "export")


# ----------------------------------------------------------------------------- tools


def _tools_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train.py",
        description="Data, reconstruction and export tools "
        "(training itself: `train.py fit --config configs/<name>.yaml`).",
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("prepare-fashion-mnist", help="export Fashion-MNIST as an image folder with class subfolders")
    s.add_argument("--out", default="data/fashion-mnist")
    s.add_argument("--source", default=None, help="folder with the IDX files (default: the Debian package)")
    s.add_argument("--limit", type=int, default=None, help="only the first N images of each split")
    s = sub.add_parser("reconstruct", help="encode images, decode the codes: grid, PSNR/SSIM, codes.npy")
    s.add_argument("images", nargs="+", help="image files or folders")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("-o", "--output", default="runs/recon")
    s.add_argument("--grid", type=int, default=16, help="images in the grid (default 16)")
    s.add_argument("--save-images", action="store_true", help="also write each reconstruction as a PNG")
    s.add_argument("--json", dest="as_json", action="store_true", help="print the summary as JSON")
    s = sub.add_parser("decode", help="decode a codes .npy file back into images")
    s.add_argument("codes")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--ids", default=None, help="ids.json naming the rows (default: ids.json beside the codes)")
    s.add_argument("-o", "--output", default="runs/decoded")
    s = sub.add_parser("export", help="export the encoder for inference without Lightning (.onnx or .pt)")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("-o", "--output", default="runs/encoder.onnx")
    s.add_argument(
        "--no-check",
        dest="check",
        action="store_false",
        help="write the .onnx without checking it against torch (no onnxruntime needed)",
    )
    return p


def run_tool(argv: list[str]) -> int:
    values = vars(_tools_parser().parse_args(argv))
    handler = {"prepare-fashion-mnist": _prepare, "reconstruct": _reconstruct, "decode": _decode, "export": _export}[
        values.pop("cmd")
    ]
    from encoder.ae.export import OnnxCheckUnavailable
    from encoder.ae.inference import CheckpointError

    try:
        return handler(**values)
    except (CheckpointError, FileNotFoundError, NotADirectoryError, ValueError, OnnxCheckUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _prepare(*, out: str, source: str | None, limit: int | None) -> int:
    from encoder.ae.fashion_mnist import export

    done = export(out, source=source, limit=limit)
    print(f"Fashion-MNIST image folder ready: {done}/train (class subfolders), {done}/test")
    return 0


def _reconstruct(
    *, images: list[str], checkpoint: str, output: str, grid: int, save_images: bool, as_json: bool
) -> int:
    from encoder.ae.inference import load_encoder
    from encoder.ae.recon import reconstruct_paths
    from encoder.data import image_paths, report_skipped

    enc = load_encoder(checkpoint)
    scan = image_paths(images)
    errors = list(scan.skipped)
    summary = reconstruct_paths(
        enc, scan.paths, output, root=scan.root, grid_n=grid, errors=errors, save_images=save_images
    )
    report_skipped(errors)
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"reconstructed {summary['count']} images ({summary['skipped']} skipped): "
            f"mean PSNR {summary['mean_psnr']:.2f} dB, mean SSIM {summary['mean_ssim']:.4f}\n"
            f"grid {output}/grid.png, per-image {output}/metrics.csv, codes {output}/codes.npy"
        )
    return 0


def _decode(*, codes: str, checkpoint: str, ids: str | None, output: str) -> int:
    from encoder.ae.inference import load_encoder
    from encoder.ae.recon import decode_to_files, load_codes

    enc = load_encoder(checkpoint)
    z = load_codes(codes, enc.code_dim)
    ids_path = Path(ids) if ids else Path(codes).with_name("ids.json")
    if ids_path.exists():
        names = json.loads(ids_path.read_text())
        if not isinstance(names, list) or len(names) != len(z):
            raise ValueError(f"{ids_path} must list {len(z)} names (one per code row)")
    else:
        names = [f"{i:06d}" for i in range(len(z))]
    written = decode_to_files(enc.decode(z), names, output)
    print(f"decoded {len(written)} codes -> {output}")
    return 0


def _export(*, checkpoint: str, output: str, check: bool) -> int:
    from encoder.ae.export import export_encoder

    info = export_encoder(checkpoint, output, check=check)
    if info.get("checked") is False:
        print(f"warning: {output} was not checked against torch (--no-check)", file=sys.stderr)
    print(json.dumps(info, indent=2))
    return 0


LIGHTNING = ("fit", "validate", "test", "predict")
OVERVIEW = f"""usage: train.py {{{",".join(LIGHTNING)}}} ... | {{{",".join(TOOLS)}}} ... | --version

Train the autoencoder (LightningCLI) and use it.

Training (train.py SUBCOMMAND --help for the options of each; every key of the config can be
overridden on the command line, e.g. --data.root photos/ --trainer.max_epochs 5):
  fit                    train: train.py fit --config configs/default.yaml --data.root photos/
  validate, test, predict
                         the other LightningCLI subcommands

Tools (train.py TOOL --help):
  prepare-fashion-mnist  export Fashion-MNIST as an image folder with class subfolders
  reconstruct            encode images, decode the codes: grid, PSNR/SSIM, codes.npy
  decode                 decode a codes .npy file back into images
  export                 the encoder for inference without Lightning (.onnx checked against torch, or .pt)
"""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] in TOOLS:
        return run_tool(args)
    if args == ["--version"]:
        from encoder._version import __version__

        print(f"encoder {__version__}")
        return 0
    if not args or args[0] in ("-h", "--help"):
        print(OVERVIEW, file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    from encoder.cli.fit import run_lightning  # Lightning: only to train

    run_lightning(argv)  # None: LightningCLI reads sys.argv itself
    return 0
