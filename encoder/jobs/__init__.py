"""Batch jobs over a source too big for one process: shards, parts on disk, an engine that runs them.

    source (folder | list file | fsspec URL) -> manifest of shards (sources.py)
      -> one task per shard, each writing one Parquet part atomically (parts.py)
      -> run by the local process pool or Ray tasks (runners.py)
      -> one index (index_job.py; codes past 100k: one IVF merged on disk, ivf_job.py)
       | duplicate groups (dedup_job.py)

The engine is imported only by :mod:`encoder.jobs.runners` when asked for, so ``import encoder`` and
every one-machine path work without Ray. Parts and manifests need ``pyarrow`` and URLs ``fsspec``
(the ``[ray]`` extra: ``pip install '.[ray]'``).
"""
