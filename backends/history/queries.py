"""Read-only views of the run history for pages that show many runs or long metrics (the web UI):
sorted, filtered and paginated in SQL, so that a table of 10,000 runs or a metric of 100,000
values costs one query, never a record per row.

`RunQueries` is mixed into RunStore (store.py), like RunFiles: it needs the store's _connection.
"""

import json

from amlocal.errors import UserInputError

# The columns a run table may be sorted by, and the SQL each means (no user text reaches SQL).
RUN_SORTS = {
    "created": "created_at",
    "experiment": "experiment",
    "status": "status",
    "backend": "backend",
    "compute": "compute",
    "duration": "(COALESCE(ended_at, strftime('%s', 'now')) - created_at)",
    "id": "id",
}
_RUN_COLUMNS = ("id, number, experiment, status, backend, executor, compute, created_at, "
                "started_at, ended_at, tags, parent_id, display_name, error")


class RunQueries:
    """The query half of RunStore for the web UI: one SQL statement per view."""

    def run_table(self, *, experiment=None, status=None, backend=None, tag=None, sort="created",
                  descending=True, offset=0, limit=50):
        """(rows, total): a page of runs, filtered and sorted in SQL.

        `tag` is "key" (the run has that tag) or "key=value". Each row is a dict of the runs
        columns of _RUN_COLUMNS, tags decoded ({} where the stored JSON is damaged). Newest first
        unless told otherwise; ties keep a stable order by id.
        """
        if sort not in RUN_SORTS:
            raise UserInputError(f"unknown sort {sort!r}: one of {', '.join(RUN_SORTS)}")
        where, params = [], []
        for column, value in (("experiment", experiment), ("status", status),
                              ("backend", backend)):
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        if tag:
            key, has_value, value = tag.partition("=")
            where.append("EXISTS (SELECT 1 FROM json_each(CASE WHEN json_valid(runs.tags) "
                         "THEN runs.tags ELSE '{}' END) WHERE json_each.key = ?"
                         + (" AND json_each.value = ?" if has_value else "") + ")")
            params += [key, value] if has_value else [key]
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        direction = "DESC" if descending else "ASC"
        with self._connection() as conn:
            total = conn.execute(f"SELECT COUNT(*) FROM runs{clause}", params).fetchone()[0]
            rows = conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs{clause} "
                f"ORDER BY {RUN_SORTS[sort]} {direction}, id {direction} LIMIT ? OFFSET ?",
                [*params, int(limit), int(offset)]).fetchall()
        return [_table_row(row) for row in rows], total

    def run_facets(self):
        """{experiments, statuses, backends}: the distinct values a run table can filter by."""
        with self._connection() as conn:
            return {column + "s" if column != "status" else "statuses": [
                row[0] for row in conn.execute(
                    f"SELECT DISTINCT {column} FROM runs ORDER BY {column}")]
                for column in ("experiment", "status", "backend")}

    def child_rows(self, parent_id):
        """The child runs of `parent_id` as run_table rows, oldest first."""
        with self._connection() as conn:
            rows = conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE parent_id = ? "
                                "ORDER BY created_at, id", (parent_id,)).fetchall()
        return [_table_row(row) for row in rows]

    def metric_summaries(self, run_id):
        """Each metric of the run: {name, type, count}, in order of first logging."""
        self.get_status(run_id)  # RunNotFoundError for an unknown run
        with self._connection() as conn:
            return [dict(row) for row in conn.execute(
                "SELECT name, metric_type AS type, COUNT(*) AS count FROM metrics "
                "WHERE run_id = ? GROUP BY name, metric_type ORDER BY MIN(rowid)", (run_id,))]

    def metric_records_named(self, run_id, names):
        """get_metric_records' rows of the given metric names only (logging order)."""
        names = list(names)
        if not names:
            return []
        records = []
        with self._connection() as conn:
            for start in range(0, len(names), 500):  # SQLite's bound on parameters
                chunk = names[start:start + 500]
                records += [(row["rowid"], _metric_record(row)) for row in conn.execute(
                    "SELECT rowid, name, position, metric_type, value, step, description, "
                    f"logged_at FROM metrics WHERE run_id = ? AND name IN "
                    f"({', '.join('?' * len(chunk))})", (run_id, *chunk))]
        return [record for _rowid, record in sorted(records, key=lambda item: item[0])]

    def scalar_series(self, run_id, name):
        """(steps, values) of a metric's scalar values in logging order; a value that is not a
        number (a string logged under the same name, a damaged row) is None."""
        self.get_status(run_id)
        steps, values = [], []
        with self._connection() as conn:
            for step, value in conn.execute(
                    "SELECT step, CASE WHEN json_valid(value) AND json_type(value) IN "
                    "('integer', 'real') THEN CAST(value AS REAL) END FROM metrics "
                    "WHERE run_id = ? AND name = ? AND metric_type = 'scalar' ORDER BY position",
                    (run_id, name)):
                steps.append(step)
                values.append(value)
        return steps, values

    def scalar_values_of_runs(self, run_ids, name):
        """{run id: [numeric values of scalar metric `name`]} for several runs in one query."""
        run_ids = list(run_ids)
        found = {run_id: [] for run_id in run_ids}
        with self._connection() as conn:
            for start in range(0, len(run_ids), 500):
                chunk = run_ids[start:start + 500]
                for run_id, value in conn.execute(
                        "SELECT run_id, CAST(value AS REAL) FROM metrics WHERE name = ? AND "
                        "metric_type = 'scalar' AND json_valid(value) AND json_type(value) IN "
                        f"('integer', 'real') AND run_id IN ({', '.join('?' * len(chunk))}) "
                        "ORDER BY run_id, position", (name, *chunk)):
                    found[run_id].append(value)
        return found


def _table_row(row):
    record = dict(row)
    try:
        tags = json.loads(record["tags"])
    except (TypeError, json.JSONDecodeError):
        tags = {}
    record["tags"] = tags if isinstance(tags, dict) else {}
    return record


def _metric_record(row):
    try:
        value, damaged = json.loads(row["value"]), False
    except (TypeError, json.JSONDecodeError):
        value, damaged = row["value"], True
    return {"name": row["name"], "position": row["position"], "type": row["metric_type"],
            "value": value, "step": row["step"], "description": row["description"] or "",
            "logged_at": row["logged_at"], "damaged": damaged}

