"""The run history: what both backends record about runs, in one place beside them.

One SQLite file and a folder per run under $AMLOCAL_HOME, in modules of one job each:

    schema.py           the tables, the steps that migrate an older file, WAL for many processes
    store.py            RunStore: runs, their status history (through backends/status.py),
                        stages, tags, properties and metrics; the disk reserve
    run_files.py        a run's files: listing, opening, the size and SHA-256 PostProcessing
                        records of them (mixed into RunStore)
    run_folder.py       the only way into a run's folder (no link followed, no FIFO opened)
    records.py          a stored record checked and decoded, and run_details (get_details)
    snapshot.py         the source snapshot taken when a run is created
    compute_targets.py  the compute targets' definitions (VM sizes, node counts, priority)
    models.py           the model registry (model_input.py checks what callers give it,
                        model_files.py serves its files checked against their SHA-256)

The local backend and the Azure backend both record their runs here, and this room imports
neither of them (tests/test_rooms.py checks): what is the local backend's own (telemetry ingest,
nodes and the queue) stays in backends/local/. Code above `backends/` reaches the history only
through the Run interface. `store.py` and `models.py` re-export the names callers import from
them, wherever in the room those are defined.
"""
