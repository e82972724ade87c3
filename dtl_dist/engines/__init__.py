"""Engines: the only place that knows about clusters. Each supplies a ``map_blocks(fn, blocks, shared=())``
(see :mod:`dtl_dist.mapping`), and Dask also RS-LOCAL's shard engine (:class:`dtl_dist.engines.dask.ShardEngine`,
the groups of library rows as actors): :mod:`dtl_dist.engines.dask` (LocalCluster, scheduler file, address,
dask-mpi, dask-jobqueue) and :mod:`dtl_dist.engines.ray` (local runtime or address). Imported lazily: each pulls
in its cluster library."""
