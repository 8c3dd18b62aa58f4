"""A run's stored record as callers see it: checked and decoded from its row, and the one shape
of its details (what `get_details()` and `amlocal runs show --json` give) for every backend."""

import datetime
import json

from amlocal.backends import status as run_status
from amlocal.backends.base import STAGES
from amlocal.errors import RunRecordCorruptedError


def iso_time(timestamp):
    """A stored epoch time as the ISO 8601 UTC text run details show (milliseconds, Z)."""
    if timestamp is None:
        return None
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def run_details(record, run_dir):
    """A run's details (what `get_details()` and `amlocal runs show --json` give) from its stored
    record: one shape for every backend, which a backend may add to or override."""
    spec = record["spec"]
    ended = record["ended_at"]
    return {
        "id": record["id"],
        "number": record["number"],
        "experiment": record["experiment"],
        "status": record["status"],
        "backend": record["backend"],
        "executor": record["executor"],
        "compute": record["compute"],
        "node_count": spec.get("node_count", 1),
        "distribution": spec.get("distribution"),
        "nodes": record["nodes"],
        "preemptions": record["preemptions"],
        "max_run_duration_seconds": spec.get("max_run_duration_seconds"),
        "script": spec.get("script"),
        "arguments": spec.get("arguments", []),
        "source_dir": spec.get("source_dir"),
        "inputs": spec.get("inputs", {}),
        "environment": spec.get("environment", {}),
        "image": record["image"],
        "exit_code": record["exit_code"],
        "error": record["error"],
        "created_at": iso_time(record["created_at"]),
        "started_at": iso_time(record["started_at"]),
        "ended_at": iso_time(ended),
        "duration_s": round(ended - record["created_at"], 3) if ended else None,
        "stages": [{**stage, "started_at": iso_time(stage["started_at"]),
                    "ended_at": iso_time(stage["ended_at"])} for stage in record["stages"]],
        "tags": record["tags"],
        "properties": record["properties"],
        "parent_id": record["parent_id"],
        "display_name": record["display_name"],
        "sweep": spec.get("sweep"),
        "run_dir": str(run_dir),
    }


def run_record(row, stages):
    """A runs row as a dict, checked: a damaged record is reported, never served."""
    record = dict(row)

    def damaged(what):
        return RunRecordCorruptedError(f"run {record['id']}'s record is damaged ({what}); it is not "
                                       "served: its files are still in its folder")

    for column in ("spec", "tags", "properties", "nodes"):
        try:
            record[column] = json.loads(record[column])
        except (TypeError, json.JSONDecodeError) as error:
            raise damaged(f"{column} is not valid JSON: {error}") from None
    if not isinstance(record["spec"], dict):
        raise damaged("its spec is not an object")
    if record["status"] not in run_status.ALL_STATUSES:
        raise damaged(f"unknown status {record['status']!r}")
    if [stage["name"] for stage in stages] != list(STAGES):
        raise damaged("its stages are incomplete")
    record["stages"] = [
        {
            "name": stage["name"],
            "status": stage["status"],
            "started_at": stage["started_at"],
            "ended_at": stage["ended_at"],
            "duration_s": (round(stage["ended_at"] - stage["started_at"], 3)
                           if stage["ended_at"] is not None and stage["started_at"] is not None
                           else None),
            "detail": stage["detail"],
        }
        for stage in stages
    ]
    return record
