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
# A stored metric value (JSON text) as a number, or NULL: JSON numbers start with a digit or '-'
# and a digit (strings, lists, objects, true/false/null and Python's NaN/-Infinity do not).
_NUMBER = ("(CASE WHEN value GLOB '[0-9]*' OR value GLOB '-[0-9]*' THEN CAST(value AS REAL) END)")
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
            # Counting per name reads the index (run_id, name, position) only, and the other
            # types are few: two cheap passes instead of sorting every row by name and type.
            names = conn.execute("SELECT name, COUNT(*), MIN(rowid) FROM metrics "
                                 "WHERE run_id = ? GROUP BY name", (run_id,)).fetchall()
            others = conn.execute("SELECT name, metric_type, COUNT(*), MIN(rowid) FROM metrics "
                                  "WHERE run_id = ? AND metric_type != 'scalar' "
                                  "GROUP BY name, metric_type", (run_id,)).fetchall()
        found = [(first, name, kind, count) for name, kind, count, first in others]
        taken = {}
        for name, _kind, count, _first in others:
            taken[name] = taken.get(name, 0) + count
        for name, count, first in names:
            if count > taken.get(name, 0):
                found.append((first, name, "scalar", count - taken.get(name, 0)))
        return [{"name": name, "type": kind, "count": count}
                for _first, name, kind, count in sorted(found)]

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

    def scalar_series(self, run_id, name, buckets=None):
        """A metric's scalar values in logging order: {x, y, total, uses_steps, min, max, last}.

        x is each value's step when every value has one, else its place in the logging order
        (1..n); a value that is not a number (a string logged under the same name, NaN) is None.
        With `buckets`, a longer series is cut into that many stretches of consecutive values
        and each keeps only its smallest and largest value, in their order (spikes and dips stay
        visible, unlike averaging or taking every n-th value). That is computed in SQL: 100,000
        values cost two scans, not 100,000 Python objects.
        """
        self.get_status(run_id)
        params = (run_id, name)
        values = (f"SELECT position, step, {_NUMBER} AS number FROM metrics WHERE run_id = ? AND "
                  "name = ? AND metric_type = 'scalar'")
        with self._connection() as conn:
            # the index (run_id, name, position) answers at once
            span = conn.execute("SELECT MAX(position) + 1 FROM metrics WHERE run_id = ? AND "
                                "name = ?", params).fetchone()[0] or 0
            if buckets is None or span <= 2 * buckets:
                rows = [(position, step, number, 1, int(step is not None)) for position, step, number
                        in conn.execute(f"{values} ORDER BY position", params)]
                extremes = rows
            else:
                # SQLite gives a bare column the row of the one MIN() or MAX() in its group
                rows, extremes = set(), []
                for extreme in ("MIN", "MAX"):
                    found = conn.execute(
                        f"SELECT position, step, {extreme}(number), COUNT(*), COUNT(step) "
                        f"FROM ({values}) GROUP BY position * ? / ?",
                        (*params, buckets, span)).fetchall()
                    rows.update((row[0], row[1], row[2]) for row in found)
                    extremes = extremes or found  # the counts, from one of the two passes
                rows = sorted(rows)
            last = conn.execute(f"SELECT number FROM ({values}) WHERE number IS NOT NULL "
                                "ORDER BY position DESC LIMIT 1", params).fetchone()
        total = sum(row[3] for row in extremes)
        uses_steps = total > 0 and sum(row[4] for row in extremes) == total
        numbers = [row[2] for row in rows if row[2] is not None]
        return {"x": [row[1] if uses_steps else row[0] + 1 for row in rows],
                "y": [row[2] for row in rows], "total": total, "uses_steps": uses_steps,
                "min": min(numbers, default=None), "max": max(numbers, default=None),
                "last": last[0] if last else None}

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

