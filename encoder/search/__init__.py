"""Similarity search: methods (hashes, autoencoder codes), the on-disk index, evaluation, pictures."""

from encoder._lazy import exports

__getattr__, __dir__ = exports(
    __name__,
    {
        "Index": "encoder.search.index:Index",
        "writer_lock": "encoder.search.lock:writer_lock",
        **{n: f"encoder.search.errors:{n}" for n in ("IndexMismatchError", "CorruptIndexError", "IndexBusyError")},
        **{
            n: f"encoder.search.methods:{n}"
            for n in (
                "Method",
                "HashMethod",
                "AutoencoderMethod",
                "RawMethod",
                "PcaMethod",
                "Vectors",
                "Neighbours",
                "get_method",
                "method_for_index",
                "evaluation_methods",
                "METHODS",
                "INDEX_METHODS",
            )
        },
        **{
            n: f"encoder.search.evaluate:{n}"
            for n in ("evaluate_folder", "evaluate_neardup", "retrieval_metrics", "format_report", "format_neardup")
        },
        **{n: f"encoder.search.plots:{n}" for n in ("plot_query", "plot_groups")},
        "TRANSFORMS": "encoder.search.neardup:TRANSFORMS",
    },
)
