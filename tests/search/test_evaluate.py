"""evaluate: metrics against hand-computed values, PCA against scikit-learn, the command end to end."""

import json

import numpy as np
import pytest
from helpers import class_folder, tiny_checkpoint
from sklearn.decomposition import PCA

import search
from encoder.search.baselines import pca_fit, pca_project
from encoder.search.evaluate import class_labels, evaluate_folder, retrieval_metrics
from encoder.search.methods import get_method


def test_metrics_by_hand():
    gallery = ["a", "a", "b", "b", "b", "c"]
    rows = np.array(
        [
            [0, 2, 1, 3, 5],  # query a: hits at 1 and 3 -> P@5 .4, AP = (1 + 2/3) / 2
            [5, 2, 3, 4, 0],  # query b: hits at 2, 3, 4 -> AP = (1/2 + 2/3 + 3/4) / 3
            [0, 1, 2, 3, 4],
        ]
    )  # query c: no hit
    m = retrieval_metrics(rows, ["a", "b", "c"], gallery, k=5)
    assert m["P@1"] == pytest.approx(1 / 3)
    assert m["P@5"] == pytest.approx((0.4 + 0.6 + 0) / 3)
    assert m["mAP@5"] == pytest.approx(((1 + 2 / 3) / 2 + (1 / 2 + 2 / 3 + 3 / 4) / 3 + 0) / 3)
    perfect = retrieval_metrics(np.array([[0, 1, -1, -1, -1]]), ["a"], gallery, k=5)  # only 2 a's exist
    assert perfect["mAP@5"] == 1.0 and perfect["P@5"] == pytest.approx(0.4)


def test_pca_matches_sklearn():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(300, 10)) @ rng.normal(size=(10, 60)) + 0.01 * rng.normal(size=(300, 60))).astype(np.float32)
    mean, comp = pca_fit(x, 8)
    ref = PCA(8).fit(x)
    np.testing.assert_allclose(mean, ref.mean_, atol=1e-4)
    # the same leading directions (up to sign) and the same captured variance
    np.testing.assert_allclose(np.abs(comp.T @ ref.components_.T).diagonal(), 1, atol=1e-3)
    ours = pca_project(x, mean, comp)
    assert ours.var(0).sum() == pytest.approx(ref.transform(x).var(0).sum(), rel=1e-4)


def test_knn_of_each_method_kind():
    g = np.array([[0.0], [5.0], [1.0], [3.0]], np.float32)
    assert get_method("raw").knn(g, np.array([[2.9]], np.float32), 4).tolist() == [[3, 2, 1, 0]]
    h = np.array([[0] * 8, [255] * 8, [1] + [0] * 7], np.uint8)
    assert get_method("phash").knn(h, h[:1], 3).tolist() == [[0, 2, 1]]  # Hamming 0, 1, 64


def test_evaluate_folder_all_methods(tmp_path):
    folder = class_folder(tmp_path / "imgs", per_class=10)
    from encoder.ae.inference import load_encoder

    enc = load_encoder(tiny_checkpoint(tmp_path / "m.pt"))
    rep = evaluate_folder(folder, enc, ["ae", "phash", "raw", "pca"], n_queries=9, seed=1)
    got = {r["method"]: r for r in rep["results"]}
    assert list(got) == ["ae", "phash", "raw", "pca"] and rep["fingerprint"] == enc.fingerprint
    assert rep["n_queries"] == 9 and rep["n_gallery"] == 21 and rep["classes"] == 3
    # three very different patterns: raw pixels and PCA find the class every time
    assert got["raw"]["P@1"] == 1.0 and got["pca"]["P@5"] == 1.0
    assert all(0 <= r[m] <= 1 for r in got.values() for m in ("P@1", "P@5", "mAP@5"))
    # same seed, same split and numbers
    again = evaluate_folder(folder, enc, ["raw"], n_queries=9, seed=1)
    assert again["results"][0]["P@5"] == got["raw"]["P@5"]
    with pytest.raises(ValueError, match="n_queries=30"):
        evaluate_folder(folder, enc, ["raw"], n_queries=30)
    with pytest.raises(ValueError, match="checkpoint"):
        evaluate_folder(folder, None, ["ae"])
    with pytest.raises(ValueError, match="hybrid"):  # removed: it never beat ae alone
        evaluate_folder(folder, enc, ["hybrid"])
    # a Method object is accepted as well as a name, with the same numbers
    assert (
        evaluate_folder(folder, enc, [get_method("raw")], n_queries=9, seed=1)["results"][0]["P@5"] == got["raw"]["P@5"]
    )
    with pytest.raises(ValueError, match="class subfolders"):
        class_labels(["a/1.png", "loose.png"], folder)


def test_evaluate_command_json_queries_folder_and_neardup(tmp_path, capsys):
    gallery = class_folder(tmp_path / "gallery", per_class=6, seed=0)
    queries = class_folder(tmp_path / "queries", per_class=2, seed=7)
    ckpt = tiny_checkpoint(tmp_path / "m.pt")
    out = tmp_path / "report.json"
    assert (
        search.main(
            ["evaluate", str(gallery), "--queries", str(queries), "--methods", "raw", "phash", "--json", "-o", str(out)]
        )
        == 0
    )
    rep = json.loads(capsys.readouterr().out)
    assert rep == json.loads(out.read_text())
    assert rep["n_queries"] == 6 and rep["n_gallery"] == 18 and rep["split"].startswith("queries from")
    assert [r["method"] for r in rep["results"]] == ["raw", "phash"]
    assert search.main(["evaluate", str(gallery), "--methods", "raw", "--n-queries", "6"]) == 0
    table = capsys.readouterr().out
    assert "P@1" in table and "raw" in table
    # near-duplicates: each transformed copy should find its original
    assert (
        search.main(
            [
                "evaluate",
                str(gallery),
                "--neardup",
                "--checkpoint",
                str(ckpt),
                "--methods",
                "ae",
                "phash",
                "raw",
                "--n-queries",
                "4",
                "--json",
            ]
        )
        == 0
    )
    nd = json.loads(capsys.readouterr().out)
    res = {r["method"]: r for r in nd["results"]}
    assert set(res) == {"ae", "phash", "raw"} and nd["n_queries"] == 4
    assert set(res["phash"]["transforms"]) == {
        "jpeg_q30",
        "resize_50",
        "crop_90",
        "bright_+20",
        "blur",
        "hflip",
        "rotate_5",
        "grey",
        "aspect_9x16",
        "crop50",
        "gamma_dark",
        "recolour",
        "overlay",
    }
    assert res["raw"]["transforms"]["jpeg_q30"]["R@5"] == 1.0 and res["raw"]["transforms"]["grey"]["R@1"] == 1.0
    assert all(v["R@1"] <= v["R@5"] for r in res.values() for v in r["transforms"].values())
    # --queries names the originals; the folder is then the distractors
    assert (
        search.main(["evaluate", str(gallery), "--neardup", "--queries", str(queries), "--methods", "phash", "--json"])
        == 0
    )
    nd = json.loads(capsys.readouterr().out)
    assert nd["n_queries"] == 6 and nd["n_gallery"] == 24
    assert nd["results"][0]["transforms"]["blur"]["R@5"] == 1.0
    assert search.main(["evaluate", str(gallery), "--methods", "ae"]) == 2  # no checkpoint
    assert "checkpoint" in capsys.readouterr().err
