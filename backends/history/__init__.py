"""The run history: what both backends record about runs, in one place beside them.

SQLite (`store.py`: runs, their status history, stages, metrics, tags and properties, the model
registry's and the compute targets' tables, with the schema's migrations) plus a folder per run
that the host enters only through `run_folder.py`; the source snapshot (`snapshot.py`) and the
model registry (`models.py`) live here too. The local backend and the Azure backend both record
their runs here; code above `backends/` reaches it only through the Run interface.
"""
