"""A batch of metric values from azureml-core (the emulator's metric route), written whole.

azureml-core sends a run's metric batches from several threads at once, so a batch can arrive
after one holding later values: each value is put at its place in its metric's logging order
(the time run.log was called, ties in arrival order), and the whole batch is one transaction, in
which the run's limit on metric names is checked (so two batches at once cannot pass it
together).
"""

import heapq
import json

from amlocal.backends.base import SYSTEM_METRIC_PREFIX

_INSERT = ("INSERT INTO metrics (run_id, name, position, metric_type, value, step, description, "
           "logged_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")


class TooManyMetricNames(Exception):
    """The batch would give the run more metric names than it may have (`names`)."""

    def __init__(self, names):
        super().__init__(names)
        self.names = names


def add_metric_batch(store, run_id, records, max_names):
    """Add `records` ({name: [(type, value, step, logged_at)]}) to run `run_id` of the run
    history `store` in one transaction; TooManyMetricNames (and nothing written) when the run
    would then have more than `max_names` metric names. The run's system metrics (sampled by
    amlocal, named SYSTEM_METRIC_PREFIX...) do not count: the script did not log them."""
    with store.transaction() as conn:
        known = {row["name"] for row in conn.execute(
            "SELECT DISTINCT name FROM metrics WHERE run_id = ?", (run_id,))}
        names = {name for name in known | set(records)
                 if not name.startswith(SYSTEM_METRIC_PREFIX)}
        if len(names) > max_names:
            raise TooManyMetricNames(len(names))
        for name, metric_records in records.items():
            if metric_records:
                _insert_in_logging_order(conn, run_id, name, metric_records)


def _insert_in_logging_order(conn, run_id, name, records):
    """Add a metric's new values, each at its place in the metric's logging order. The values
    logged after the earliest new one (a batch or two, usually none) are taken out and put back
    merged with the new ones."""
    records = sorted(records, key=lambda record: record[3])
    first_later = conn.execute("SELECT MIN(position) FROM metrics WHERE run_id = ? AND name = ? "
                               "AND logged_at > ?", (run_id, name, records[0][3])).fetchone()[0]
    if first_later is None:
        start = conn.execute("SELECT COALESCE(MAX(position) + 1, 0) FROM metrics "
                             "WHERE run_id = ? AND name = ?", (run_id, name)).fetchone()[0]
        later = []
    else:
        start = first_later
        later = [(row["metric_type"], row["value"], row["step"], row["logged_at"],
                  row["description"]) for row in conn.execute(
                     "SELECT metric_type, value, step, logged_at, description FROM metrics "
                     "WHERE run_id = ? AND name = ? AND position >= ? ORDER BY position",
                     (run_id, name, start))]
        conn.execute("DELETE FROM metrics WHERE run_id = ? AND name = ? AND position >= ?",
                     (run_id, name, start))
    new = [(kind, json.dumps(value), step, logged_at, "")
           for kind, value, step, logged_at in records]
    merged = heapq.merge(later, new, key=lambda record: record[3])  # stable: earlier rows first
    conn.executemany(_INSERT, [(run_id, name, position, kind, value, step, description, logged_at)
                               for position, (kind, value, step, logged_at, description)
                               in enumerate(merged, start)])
