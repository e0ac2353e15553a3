"""What turns images into vectors, in one place: perceptual hashes, autoencoder codes, pixels, PCA.

A :class:`Method` knows its ``kind`` (``"hash"``: (N,8) uint8 packed bits compared by Hamming;
``"code"``: (N,D) float32 compared by L2 or cosine), its ``version`` (the hash definition or the
model fingerprint an index records), the keyword ``options`` that apply to it, how to
make vectors of image files (:meth:`Method.vectors`), how to check and rebuild itself from an
index's meta (:meth:`Method.from_index`), how to query an index (:meth:`Method.query`) and,
for ``search.py evaluate``, the features of decoded images (:meth:`Method.features`).

Registry: ``phash``/``dhash``/``ahash`` (one :class:`HashMethod` per entry of
:data:`encoder.hashing.hashes.HASHES`: a new hash there is a new method here), ``ae``
(:class:`AutoencoderMethod`; ``views="crops"``: several views per picture, see
:mod:`encoder.search.views`), and for evaluation only ``raw`` and ``pca``.

Example:
    >>> m = get_method("phash", alpha="white")
    >>> m.kind, m.version == hash_version("phash", "white"), m.index_meta()
    ('hash', True, {'decode': 'full', 'alpha': 'white'})
    >>> get_method("phash", metric="cosine")
    Traceback (most recent call last):
    ...
    encoder.search.base.OptionError: metric applies to method ae, not phash
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from PIL import Image

from encoder.ae.runtime import encode_paths, onnx_encoder_for_index
from encoder.data import GRAY_PREPROCESS_VERSION
from encoder.hashing.hashes import ALPHA_MODES, HASHES, hash_images, hash_paths, hash_pixels, hash_version, is_flat
from encoder.search import ann
from encoder.search.ae_eval import AutoencoderEvaluation
from encoder.search.base import CheckpointGone, Method, Neighbours, OptionError, Vectors  # noqa: F401  (the interface, re-exported)
from encoder.search.baselines import PcaMethod, RawMethod
from encoder.search.errors import IndexMismatchError, check_meta
from encoder.search.verify import FUSE_K, HASH_FILE, Verifier, attachment
from encoder.search.views import (
    AUTO_CROPS_MIN_SIDE,
    VIEWS,
    auto_views,
    check_views,
    index_view_set,
    merge_best,
    merge_query_views,
    view_count,
    views_decoder,
)

DEFAULT_ALPHA = "imagehash"
# ``evaluation_methods(["phash-mirror"])``: the hash with mirror-aware queries (evaluation only)
MIRROR_SUFFIX = "-mirror"
# ``evaluation_methods(["ae-crops"])``: codes of several views per picture (encoder.search.views)
CROPS_SUFFIX = "-crops"
AE_VARIANTS = tuple(f"ae{c}{m}" for c in ("", CROPS_SUFFIX) for m in ("", MIRROR_SUFFIX))[1:]
# An index built before hashes recorded their alpha mode composited transparent images on white.
LEGACY_ALPHA = "white"

# ----------------------------------------------------------------------------- hashes


class HashMethod(Method):
    """A perceptual hash of :data:`encoder.hashing.hashes.HASHES`: (N,8) uint8, Hamming."""

    kind = "hash"
    options = frozenset({"draft", "alpha", "mirror", "workers", "faiss_type"})
    indexable = True

    def __init__(
        self,
        name: str,
        *,
        draft: bool = False,
        alpha: str | None = None,
        mirror: bool = False,
        workers: int | None = None,
        faiss_type: str = "auto",
    ):
        if name not in HASHES:
            raise ValueError(f"method={name!r} must be one of {tuple(HASHES)}")
        alpha = DEFAULT_ALPHA if alpha is None else alpha
        if alpha not in ALPHA_MODES:
            raise ValueError(f"alpha={alpha!r} must be one of {tuple(ALPHA_MODES)}")
        self.name, self.draft, self.alpha, self.mirror = name, bool(draft), alpha, bool(mirror)
        self.workers, self.faiss_type = workers, faiss_type

    @classmethod
    def create(cls, name: str, **options: Any) -> HashMethod:
        return cls(name, **options)

    @property
    def version(self) -> str:
        return hash_version(self.name, self.alpha)

    @property
    def label(self) -> str:
        return f"{self.name}{MIRROR_SUFFIX}" if self.mirror else self.name

    def index_meta(self) -> dict[str, Any]:
        return {"decode": "draft" if self.draft else "full", "alpha": self.alpha}

    def index_options(self) -> dict[str, Any]:
        return {"faiss_type": self.faiss_type}

    @classmethod
    def from_index(cls, meta: Mapping[str, Any], attachments: Mapping | None = None, **options: Any) -> HashMethod:
        m = cls(meta["method"], draft=meta.get("decode") == "draft", alpha=meta.get("alpha", LEGACY_ALPHA), **options)
        check_meta(meta, version=m.version)
        return m

    def vectors(self, paths, *, errors=None, progress=False, scratch_dir=None, mirror: bool = False) -> Vectors:
        hashes, kept, flat = hash_paths(
            paths,
            self.name,
            draft=self.draft,
            alpha=self.alpha,
            workers=self.workers,
            errors=errors,
            progress=progress,
            mirror=mirror,
        )
        return Vectors(hashes, kept, flat)

    def query(self, index, paths, k, *, errors=None, progress=False) -> Neighbours:
        got = self.vectors(paths, errors=errors, progress=progress)
        distances, ids = index.search(got.vectors, k)
        if self.mirror and len(got.paths):  # also hash the flipped query; keep the better distance per id
            flipped = self.vectors(got.paths, errors=errors, mirror=True)
            distances, ids = merge_best([(distances, ids), index.search(flipped.vectors, k)], k)
        return Neighbours(got.paths, [[int(d) for d in row] for row in distances], ids)

    def features(self, images, sources) -> np.ndarray:
        """(N,8) hashes; with ``mirror`` (N,16): each hash, then the hash of the mirrored image."""
        h = self._hashes(sources, mirror=False)
        return np.concatenate([h, self._hashes(sources, mirror=True)], 1) if self.mirror else h

    def gallery_features(self, images, sources) -> np.ndarray:
        """(N,8) hashes: only queries are mirrored."""
        return self._hashes(sources, mirror=False)

    def _hashes(self, sources, mirror: bool) -> np.ndarray:
        if len(sources) and isinstance(sources[0], Image.Image):
            flip = Image.Transpose.FLIP_LEFT_RIGHT
            return hash_images([im.transpose(flip) if mirror else im for im in sources], self.name, alpha=self.alpha)
        h, kept, _ = hash_paths(sources, self.name, alpha=self.alpha, errors=[], mirror=mirror)
        if len(kept) != len(sources):
            raise ValueError(f"{len(sources) - len(kept)} images decode to grey but cannot be hashed with {self.name}")
        return h

    def knn(self, gallery, queries, k, metric="l2", *, distances: bool = False):
        """Top-k rows by Hamming; with ``mirror`` each gallery row at the smaller distance of the query
        and its mirror (as :meth:`query` does); ``distances``: ``(distances, rows)``."""
        nb = gallery.shape[1]
        index = faiss.IndexBinaryFlat(nb * 8)
        index.add(np.ascontiguousarray(gallery))
        k = min(k, len(gallery))
        d, i = index.search(np.ascontiguousarray(queries[:, :nb]), k)
        if self.mirror:
            d, i = (
                np.array(a) for a in merge_best([(d, i), index.search(np.ascontiguousarray(queries[:, nb:]), k)], k)
            )
        return (d, i.astype(np.int64)) if distances else i.astype(np.int64)


# ----------------------------------------------------------------------------- autoencoder codes


#: The pHash that verifies an ae search of view set "crops" (encoder.search.verify).
VERIFIER = Verifier(lambda px: (hash_pixels(px, "phash"), is_flat(px)))


class AutoencoderMethod(AutoencoderEvaluation, Method):
    """Codes of a trained autoencoder: (N,code_dim) float32, L2 or cosine; version = model fingerprint.

    ``devices`` != 1 or ``strategy`` != ``"auto"`` encodes with Lightning predict over several
    processes (:func:`encoder.ae.shards.predict_codes`); its resumable code parts go to ``shard_dir``
    (kept) or, when it is None, to the ``scratch_dir`` given to :meth:`vectors` (deleted once merged;
    a killed run's parts stay there and its rerun encodes only the rest).

    ``views="crops"`` (:mod:`encoder.search.views`): each gallery picture is encoded as several
    views (an index of several rows per id, meta ``view_set``) and each query as its whole picture
    and centred square; a gallery image scores its best distance over all pairs (and, with
    ``mirror``, over the flipped query views too). ``views="auto"`` (the default) picks crops for
    a gallery whose median short side is :data:`encoder.search.views.AUTO_CROPS_MIN_SIDE` px or more,
    else full, when it first sees the gallery (:meth:`vectors`, :meth:`fit`; a query takes the
    index's); :meth:`index_meta` reports the choice (``view_set``, and ``views_auto``: the median
    short side it was chosen from).
    """

    name = "ae"
    options = frozenset(
        {"checkpoint", "batch_size", "workers", "faiss_type", "metric", "memory_budget", "search_params", "mirror"}
        | {"devices", "strategy", "accelerator", "num_nodes", "shard_dir", "show_recon", "views"}
    )
    indexable = True

    def __init__(
        self,
        checkpoint: str | None = None,
        *,
        encoder: Any = None,
        batch_size: int = 256,
        workers: int | None = None,
        faiss_type: str = "auto",
        metric: str = "l2",
        memory_budget: int | None = None,
        search_params: str | None = None,
        devices: int = 1,
        strategy: str = "auto",
        accelerator: str = "auto",
        num_nodes: int = 1,
        shard_dir: str | None = None,
        show_recon: bool = False,
        mirror: bool = False,
        views: str = "auto",
        verify: bool = True,
    ):
        if views not in ("auto", *VIEWS):
            raise OptionError(f"`views`={views!r} must be one of {('auto', *VIEWS)}")
        self.devices, self.strategy, self.accelerator, self.num_nodes = devices, strategy, accelerator, num_nodes
        self.views, self.views_auto = views, None
        self._check_views_distributed()
        if encoder is None:
            if checkpoint is None:
                raise OptionError("`checkpoint` is required for `method` ae")
            # torch is imported only when an ae method is used: a hash query stays cheap
            from encoder.ae.inference import load_encoder

            encoder = load_encoder(checkpoint)
        ann.check_metric(metric)
        self.encoder, self.image_size = encoder, encoder.image_size
        self.batch_size, self.workers, self.faiss_type, self.metric = batch_size, workers, faiss_type, metric
        self.memory_budget, self.search_params, self.show_recon = memory_budget, search_params, show_recon
        self.shard_dir, self.mirror = shard_dir, bool(mirror)
        self.verifier, self._hashes = (VERIFIER if verify else None), []  # hashes: see index_attachments

    @property
    def distributed(self) -> bool:
        return self.devices != 1 or self.strategy != "auto"

    def _check_views_distributed(self) -> None:
        if self.views == "crops" and self.distributed:
            raise OptionError(
                "`views` crops is not supported with distributed encoding (`devices`/`strategy`); "
                "encode with one process or use `views` full"
            )

    def resolve_views(self, sources: Sequence, size_of: Callable | None = None) -> str:
        """``views="auto"``: crops or full, from the short sides of the gallery's files (or PIL images;
        ``size_of`` as :func:`encoder.search.views.auto_views`'s). -> the view set."""
        if self.views == "auto":
            self.views, side = auto_views(sources, size_of=size_of) if size_of else auto_views(sources)
            self.views_auto = {"median_short_side": side, "crops_from": AUTO_CROPS_MIN_SIDE}
            self._check_views_distributed()
        return self.views

    @property
    def version(self) -> str:
        return self.encoder.fingerprint

    @property
    def label(self) -> str:
        plain = "-unverified" if self.views == "crops" and self.verifier is None else ""  # verify=False, for comparison
        return (
            f"{self.name}{CROPS_SUFFIX if self.views == 'crops' else ''}{MIRROR_SUFFIX if self.mirror else ''}{plain}"
        )

    def index_meta(self) -> dict[str, Any]:
        if self.views == "auto":
            raise OptionError("`views` auto is chosen from the gallery: call vectors() before index_meta()")
        enc = self.encoder
        return {
            "checkpoint": str(Path(enc.path).absolute()),
            "code_dim": enc.code_dim,
            "image_size": enc.image_size,
            "preprocess": GRAY_PREPROCESS_VERSION,
            "view_set": self.views,
            **({"views_auto": self.views_auto} if self.views_auto else {}),
        }

    def index_options(self) -> dict[str, Any]:
        return {
            "faiss_type": self.faiss_type,
            "metric": self.metric,
            "memory_budget": self.memory_budget,
            "search_params": self.search_params or "auto",
            "views": view_count(self.views, "gallery"),
        }

    def index_attachments(self, ids: Sequence[str] | None = None, index=None) -> dict[str, bytes]:
        """A new index's model ONNX graphs (checked against torch): queries then need neither torch nor the
        checkpoint. With ``ids`` (of the rows of the last :meth:`vectors`), the pictures' hashes that verify
        a search (:mod:`encoder.search.verify`), with those of ``index`` when adding to one that has them."""
        out = {}
        if index is None and hasattr(self.encoder, "model"):
            from encoder.ae.export import onnx_attachments  # torch: the index is being built with it anyway

            out = onnx_attachments(self.encoder.model)
        old = None if index is None else index.attachments.get(HASH_FILE, b"")
        if ids is not None and self.verifying and self._hashes and old != b"":
            hashes, flat = (np.concatenate(a) for a in zip(*self._hashes))
            out.update(attachment(list(ids)[:: view_count(self.views)], hashes, flat, old))
        return out

    @classmethod
    def from_index(
        cls,
        meta: Mapping[str, Any],
        *,
        checkpoint: str | None = None,
        attachments: Mapping | None = None,
        **options: Any,
    ) -> AutoencoderMethod:
        """The model that made the index: its ONNX graphs kept in the index (no torch), else the checkpoint
        it records, or ``checkpoint`` (loaded with torch); another model, or ``views`` other than the
        index's view set, is refused."""
        options["views"] = index_view_set(meta, options.get("views"))
        if checkpoint is None and attachments and not {"devices", "strategy"} & set(options):
            enc = onnx_encoder_for_index(dict(meta), dict(attachments))
            if enc is not None:
                return cls(encoder=enc, **options)
        if checkpoint is None:
            checkpoint = meta.get("checkpoint")
            if not checkpoint:
                raise OptionError("`checkpoint` is required for `method` ae")
            if not Path(checkpoint).is_file():
                raise CheckpointGone(
                    f"the index was built with checkpoint {checkpoint}, which is gone; "
                    "pass `checkpoint` with the same model"
                )
        m = cls(checkpoint, **options)
        if meta.get("version") != m.version:
            raise IndexMismatchError(
                f"checkpoint {checkpoint} has model fingerprint {m.version} but the index was built with "
                f"model fingerprint {meta.get('version')} ({meta.get('checkpoint')}); codes of two models "
                "cannot be compared - build a new index with this checkpoint"
            )
        return m

    @classmethod
    def for_evaluation(cls, name, *, checkpoint=None, encoder=None, mirror: bool = False) -> AutoencoderMethod:
        """``name``: ``ae`` or one of :data:`AE_VARIANTS` (``ae-crops-mirror``: views and mirrored queries)."""
        if encoder is None and checkpoint is None:
            raise OptionError(f"method {name!r} needs a `checkpoint`")
        views = "crops" if CROPS_SUFFIX in name else "full"
        return cls(checkpoint, encoder=encoder, mirror=mirror or name.endswith(MIRROR_SUFFIX), views=views)

    def vectors(self, paths, *, errors=None, progress=False, scratch_dir=None) -> Vectors | None:
        """Codes of the readable files; None on the ranks > 0 of a distributed run (rank 0 gets all).

        With ``views="crops"``: V rows per kept file (its gallery views, the whole picture first) and
        each path repeated V times, as :meth:`encoder.search.index.Index.create` with ``views=V`` takes them.
        """
        paths = list(paths)
        self.resolve_views(paths)
        if self.distributed:
            return self._vectors_distributed(paths, errors, scratch_dir)
        decode = (
            views_decoder(self.encoder.image_size, self.views, workers=self.workers or 0)
            if self.views != "full"
            else None
        )
        if self.verifying:  # each picture's hash, from its view 0, for index_attachments
            decode, self._hashes = self.verifier.recording(decode, "gallery")
        codes, kept = encode_paths(
            self.encoder, paths, self.batch_size, errors, progress, self.workers or 0, decode=decode
        )
        per = view_count(self.views, "gallery")
        return Vectors(codes, [p for p in kept for _ in range(per)], None)

    def _vectors_distributed(self, paths: list, errors: list | None, scratch_dir) -> Vectors | None:
        from encoder.ae.shards import predict_codes  # Lightning: only for a distributed run

        if self.shard_dir is None and scratch_dir is None:
            raise ValueError("distributed encoding needs shard_dir (or a scratch_dir)")
        model = getattr(self.encoder, "model", None)
        if model is None:
            raise ValueError("distributed encoding needs the torch model of a checkpoint, not ONNX graphs")
        out = Path(self.shard_dir if self.shard_dir is not None else scratch_dir)
        res = predict_codes(
            model,
            paths,
            out,
            devices=self.devices,
            strategy=self.strategy,
            accelerator=self.accelerator,
            num_nodes=self.num_nodes,
            batch_size=self.batch_size,
            num_workers=self.workers or 0,
        )
        if res is None:
            return None
        if self.shard_dir is None:  # the scratch folder is of no use once merged
            shutil.rmtree(out, ignore_errors=True)
        if errors is not None:
            errors.extend((Path(paths[r]), reason) for r, reason in res.skipped)
        return Vectors(res.codes, [Path(paths[r]) for r in res.rows], None)

    def query(self, index, paths, k, *, errors=None, progress=False) -> Neighbours:
        """Top-``k`` of each query; with ``mirror`` or views, every query view (and its flip) is searched
        and each id kept at its best distance; ``views="auto"`` takes the index's view set."""
        if self.views == "auto":
            self.views = index_view_set(index.meta, None)
        if self.views == "full" and not self.mirror:
            got = self.vectors(paths, errors=errors, progress=progress)
            kept, distances, ids = got.paths, *index.search(got.vectors, k, params=self.search_params)
        else:
            decode = views_decoder(
                self.encoder.image_size, self.views, "query", mirror=self.mirror, workers=self.workers or 0
            )
            decode, hashes = self.verifier.recording(decode, "query") if self.verifying else (decode, [])
            codes, kept = encode_paths(
                self.encoder, paths, self.batch_size, errors, progress, self.workers or 0, decode=decode
            )
            want = max(k, FUSE_K) if self.verifying else k  # the hash re-ranks the first FUSE_K
            distances, ids = merge_query_views(*index.search(codes, want, params=self.search_params), len(kept), want)
            if self.verifying:
                distances, ids = self.verifier.verify_query(index, codes, hashes, distances, ids, k)
            distances, ids = [d[:k] for d in distances], [i[:k] for i in ids]
        recons = None
        if self.show_recon:  # each neighbour decoded from its stored code
            recons = [self.encoder.decode(np.asarray(index.vectors[index.rows(row)])) if row else [] for row in ids]
        return Neighbours(kept, [[round(float(d), 6) for d in row] for row in distances], ids, recons)

    def fit(self, images, sources) -> AutoencoderMethod:
        """``views="auto"`` chooses from the gallery's ``sources`` (files or PIL images); nothing is learnt."""
        self.resolve_views(sources)
        return self


# ----------------------------------------------------------------------------- registry

_CLASSES: dict[str, type[Method]] = {
    **{n: HashMethod for n in HASHES},
    "ae": AutoencoderMethod,
    "raw": RawMethod,
    "pca": PcaMethod,
}
METHODS = tuple(_CLASSES)
INDEX_METHODS = tuple(n for n, c in _CLASSES.items() if c.indexable)
EVALUATION_METHODS = METHODS + tuple(f"{n}{MIRROR_SUFFIX}" for n in HASHES) + AE_VARIANTS  # ``evaluate --methods``


def _method_class(name: str) -> type[Method]:
    try:
        return _CLASSES[name]
    except KeyError:
        raise ValueError(f"method={name!r} must be one of {METHODS}") from None


def kind_of(name: str) -> str:
    """``"hash"`` or ``"code"``: what the vectors of method ``name`` are."""
    return _method_class(name).kind


#: Every option some indexable method takes (an option of none of them is not a method option).
OPTIONS = frozenset().union(*(_CLASSES[n].options for n in INDEX_METHODS))


def _owners(option: str) -> str:
    return ", ".join(n for n in INDEX_METHODS if option in _CLASSES[n].options)


def check_options(name: str, options: Iterable[str], *, index: bool = False) -> None:
    """:class:`OptionError` naming the first of ``options`` (:data:`OPTIONS`) that does not apply to
    method ``name``; ``index=True`` words it for a command on an existing index of that method."""
    cls = _method_class(name)
    for opt in options:
        if opt not in cls.options:
            raise OptionError(
                f"`{opt}` applies to {_owners(opt)} indexes, not {name}"
                if index
                else f"`{opt}` applies to `method` {_owners(opt)}, not {name}"
            )


def applicable_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The ``options`` that method ``name`` takes (the others left out): for a caller that offers the
    same settings to every index it serves, such as the web page's ``show_recon``.

    Example:
        >>> applicable_options("phash", {"show_recon": True, "mirror": True})
        {'mirror': True}
    """
    return {k: v for k, v in options.items() if k in _method_class(name).options}


def get_method(name: str, **options: Any) -> Method:
    """The method ``name`` with the given options; an option that does not apply is refused."""
    check_options(name, [o for o in options if o in OPTIONS])
    return _method_class(name).create(name, **options)


def method_for_index(meta: Mapping[str, Any], attachments: Mapping[str, bytes] | None = None, **options: Any) -> Method:
    """The method that made an index (from its meta and attachments), checked against it; inapplicable
    options refused."""
    name = meta.get("method")
    if name not in INDEX_METHODS:
        raise IndexMismatchError(f"index method {name!r} is not a method this command can query")
    check_options(name, [o for o in options if o in OPTIONS], index=True)
    return _CLASSES[name].from_index(meta, attachments=attachments, **options)


def evaluation_methods(
    names: Sequence[str | Method], *, checkpoint: str | None = None, encoder: Any = None, views: str | None = None
) -> list[Method]:
    """Methods to compare, in order, without repeats; the autoencoder is loaded only if ``ae`` is asked for.
    ``views="crops"`` turns ``ae``/``ae-mirror`` into their views variants (``search.py evaluate --views``)."""
    if views not in (None, "full"):
        check_views(views)
        if not any(isinstance(n, str) and n.startswith("ae") for n in names):
            raise OptionError(f"`views` applies to the ae methods, and `methods` {' '.join(map(str, names))} has none")
        names = [n.replace("ae", "ae" + CROPS_SUFFIX, 1) if n in ("ae", "ae" + MIRROR_SUFFIX) else n for n in names]
    out = []
    for n in dict.fromkeys(names):
        if isinstance(n, Method):
            out.append(n)
        elif isinstance(n, str) and n.endswith(MIRROR_SUFFIX) and n[: -len(MIRROR_SUFFIX)] in HASHES:
            out.append(HashMethod(n[: -len(MIRROR_SUFFIX)], mirror=True))
        elif n in AE_VARIANTS:
            out.append(AutoencoderMethod.for_evaluation(n, checkpoint=checkpoint, encoder=encoder))
        elif n not in _CLASSES:
            raise ValueError(f"methods={[n]} unknown; choose from {METHODS}")
        else:
            out.append(_CLASSES[n].for_evaluation(n, checkpoint=checkpoint, encoder=encoder))
        encoder = out[-1].encoder if encoder is None else encoder  # ae variants share one loaded model
    return out
