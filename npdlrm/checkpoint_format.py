"""The checkpoint file format: its name and version, the root attributes, the dense
optimizer state keys, and the layout that `checkpoint.py` (single-file saves and the
writers), `checkpoint_reader.py` (reads of either layout) and `checkpoint_checks.py`
(checksums, finite values, checks against a model) share.

File layout (format "npdlrm-checkpoint", version 1):

    /                       attrs format, format_version, npdlrm_version, created (UTC ISO 8601)
    /config                 JSON string: DLRMConfig.to_dict()
    /train_state            JSON string: the caller's dict ({} when none was given)
    /params/<name>          one dataset per model.state_dict() entry, its exact shape and dtype
    /optimizer              only when an optimizer was saved; attrs hyper_parameters (JSON:
                            Optimizer.to_dict()), step_count
    /optimizer/dense/<key>  model.params.state: adagrad.sum, adam.m, adam.v (P,), adam.step ()
    /optimizer/tables       attr state_kinds: JSON list, EmbeddingTable.state_kind per table
    /optimizer/tables/<k>   EmbeddingTable.state of table k: (V, D) adagrad, (V,) rwsadagrad
                            (k: the index in model.embeddings.tables, which with the
                            embedding variants lists every stored table in the order of
                            embedding_layout.stored_tables: embeddings.<t>.weight_q and
                            weight_r of a QR table, weight and pooling_weight (n, 1) of a
                            learned-weight table; an MD table's (D, d) projection is a
                            /params entry like the MLPs', its state in /optimizer/dense)
                            (absent when the table has no state)

A sharded checkpoint (same format and version, root attr `sharded` true; written by
`npdlrm.parallel.checkpoint.save_sharded`) is a manifest at the path and shard files
beside it (names: npdlrm/parallel/checkpoint.py):

    manifest  /             attrs format, format_version, sharded, token, npdlrm_version, created
              /config, /train_state   as above
              /plan         JSON: the ShardingPlan.to_dict() of the job that saved it
              /shard_files  JSON list: the shard files' names (same folder), by saving rank
              /pieces       JSON list: [table, [r0, r1], [c0, c1], shard file index, group]
              /optimizer    attrs hyper_parameters, step_count, state_kind (JSON: the tables'
                            optimizer state kind, or null before the first step)
    shard     /params/<name>           the MLP parameters (shard file 0 only)
              /optimizer/dense/<key>   model.params.state (shard file 0 only)
              /<group>/weight          rows r0:r1, columns c0:c1 of a table
              /<group>/state           its optimizer state: (r1-r0, c1-c0) adagrad, (r1-r0,)
                                       rwsadagrad (absent when none)

Every tensor dataset of either layout carries an attribute `crc32` (zlib.crc32 of its
bytes); a load verifies it, and refuses non-finite values, before anything changes
(`verify=False`, `--no-verify`: skip the checksum pass). Files written before the
checksums load without that check.

The pieces of a table tile it exactly once (a replicated table is stored once). Either
layout loads into a whole model or into the shards of a distributed one: each target
reads, with hyperslab reads, its overlap with every stored piece.
"""
FORMAT = "npdlrm-checkpoint"
FORMAT_VERSION = 1
SHARDED = "sharded"  # root attribute of a sharded checkpoint's manifest
DENSE_STATE_KEYS = ("adagrad.sum", "adam.m", "adam.v", "adam.step")
