"""How far class retrieval moves with what the unsupervised autoencoder can be given: a sweep.

    python bench/class_ceiling_bench.py            # 20k training images, 3 epochs per variant (~20 min, 2 cores)
    python bench/class_ceiling_bench.py --quick    # 3k training images, 1 epoch: a smoke run

Issue 15 asks for unsupervised Fashion-MNIST P@5 >= PCA-128 + 0.03. This bench measures the
ceiling of that on this budget: each variant trains the Fashion-MNIST config
(configs/fashion_mnist.yaml: tone-standardised codes, a small shift-only two-view term, whitening 0.5)
with one thing changed, on the first ``--train`` training images, and is scored on the 10k test
queries against all 60k training images (P@5 L2 and cosine, test PSNR). Post-hoc variants reuse the
config's model: average query expansion (the query becomes the mean of itself and its top 3)
and database-side augmentation (each gallery code the mean of itself and its 3 nearest). PCA-128
(the anchor, scikit-learn) and PCA-128 given the same standardisation and whitening are the
reference rows. Every row prints its difference to PCA-128 (the issue's target is +0.030).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from autoencoder_bench import p_at_5, pca, standardised_whitened_pca, train_ae, upsample  # noqa: E402

from encoder.ae.fashion_mnist import load_arrays  # noqa: E402
from encoder.ae.inference import encoder_from_model  # noqa: E402
from encoder.metrics import psnr  # noqa: E402

#: (row name, epochs, AutoencoderModule arguments changed from the Fashion-MNIST config).
VARIANTS: tuple[tuple[str, int | None, dict], ...] = (
    ("config", None, {}),
    ("two-view weight 0.01", None, {"contrastive_weight": 0.01}),
    ("two-view weight 0.05", None, {"contrastive_weight": 0.05}),
    ("light views, weight 0.01", None, {"contrastive_weight": 0.01, "augment": "light"}),
    ("strong views, weight 0.01", None, {"contrastive_weight": 0.01, "augment": "strong"}),
    ("width 32 (4x the convs)", None, {"width": 32}),
    ("linear path at full lr", None, {"linear_lr_scale": 1.0}),
    ("whitening 1.0", None, {"whiten": 1.0}),
    ("no whitening", None, {"whiten": 0.0}),
    ("10 epochs", 10, {}),
)
CONFIG = {"lr": 3e-3, "contrastive_weight": 0.001, "tone": True, "whiten": 0.5, "width": 16}


def expanded(gallery: np.ndarray, queries: np.ndarray, k: int = 3, database_side: bool = False) -> tuple:
    """Average query expansion, or (``database_side``) each gallery code replaced by the mean of
    itself and its ``k`` nearest gallery codes (L2)."""
    g, q = np.ascontiguousarray(gallery, np.float32), np.ascontiguousarray(queries, np.float32)
    index = faiss.IndexFlatL2(g.shape[1])
    index.add(g)
    if database_side:
        _, nn = index.search(g, k + 1)  # the first is the code itself
        return g[nn].mean(1), q
    _, nn = index.search(q, k)
    return g, (q + g[nn].sum(1)) / (k + 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=20000, help="training images per variant")
    ap.add_argument("--epochs", type=int, default=3, help="epochs of a variant that does not set its own")
    ap.add_argument("--only", nargs="*", help="run only the variants whose names start with these")
    ap.add_argument("--quick", action="store_true", help="3k training images, 2k queries, 1 epoch")
    a = ap.parse_args()
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)  # one line per variant, not three
    t0 = time.perf_counter()
    data = load_arrays()
    (xtr, ytr), (xte, yte) = data["train"], data["test"]
    if a.quick:
        a.train, a.epochs, xtr, ytr, xte, yte = 3000, 1, xtr[:6000], ytr[:6000], xte[:2000], yte[:2000]
    xtr, xte = upsample(xtr), upsample(xte)
    ftr = xtr.reshape(len(xtr), -1).astype(np.float32) / 255
    fte = xte.reshape(len(xte), -1).astype(np.float32) / 255
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; variants train on {a.train} images, "
        f"score {len(xte)} test queries against {len(xtr)} training images"
    )

    mean, comps = pca(ftr)
    ctr, cte = (ftr - mean) @ comps.T, (fte - mean) @ comps.T
    pca_psnr = float(
        psnr(fte.reshape(-1, 64, 64), np.clip(cte @ comps + mean, 0, 1).reshape(-1, 64, 64), per_image=True).mean()
    )
    rows = [("PCA-128", pca_psnr, p_at_5(ctr, ytr, cte, yte), p_at_5(ctr, ytr, cte, yte, True), 0.0)]
    srt, ste = standardised_whitened_pca(ftr, fte, 0.5)
    rows.append(
        ("PCA-128 std+whitened", float("nan"), p_at_5(srt, ytr, ste, yte), p_at_5(srt, ytr, ste, yte, True), 0.0)
    )

    def show(row):
        name, ps, l2, cos, secs = row
        print(
            f"{name:<30} {ps:>8.2f} {l2:>8.3f} {cos:>8.3f} {l2 - rows[0][2]:>+9.3f} {cos - rows[0][3]:>+9.3f} "
            f"{secs:>7.0f}",
            flush=True,
        )

    print(
        f"\n{'variant':<30} {'PSNR dB':>8} {'P@5 L2':>8} {'P@5 cos':>8} {'L2 - PCA':>9} {'cos - PCA':>9} {'train s':>7}"
    )
    for row in rows:
        show(row)
    for name, epochs, change in VARIANTS:
        if a.only and not any(name.startswith(o) for o in a.only):
            continue
        hp = {**CONFIG, **change}
        model, _, secs = train_ae(
            xtr[: a.train],
            ytr[: a.train],
            epochs or a.epochs,
            0.0,
            hp.pop("width"),
            256,
            hp.pop("lr"),
            hp.pop("contrastive_weight"),
            0,
            hp.pop("tone"),
            hp.pop("whiten"),
            **hp,
        )
        enc = encoder_from_model(model, "<bench>")
        ztr, zte = enc.encode(xtr), enc.encode(xte)
        ps = float(psnr(fte.reshape(-1, 64, 64), enc.decode(zte), per_image=True).mean())
        rows.append((f"{name}", ps, p_at_5(ztr, ytr, zte, yte), p_at_5(ztr, ytr, zte, yte, True), secs))
        show(rows[-1])
        if name == "config":
            for label, dba in (("  + query expansion (k=3)", False), ("  + database-side aug. (k=3)", True)):
                g, q = expanded(ztr, zte, 3, dba)
                rows.append((label, ps, p_at_5(g, ytr, q, yte), p_at_5(g, ytr, q, yte, True), 0.0))
                show(rows[-1])
    best = max(rows[2:], key=lambda r: r[2]) if len(rows) > 2 else None
    if best:
        print(
            f"\nbest L2 row: {best[0].strip()} at PCA {best[2] - rows[0][2]:+.3f} (target +0.030), "
            f"PSNR {best[1] - pca_psnr:+.2f} dB against PCA"
        )
    print(f"total bench time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
