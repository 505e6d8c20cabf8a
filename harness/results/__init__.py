"""Stage 8, results: the run directory on disk (paths, CSV I/O, manifest writes); no figures computed here."""

from harness.results.files import (
    RequestLog,
    read_requests,
    read_rounds,
    write_bench_serve,
    write_cell_rounds,
    write_rounds,
    write_table,
)
from harness.results.rundir import RunDir, base_manifest, new_run_id, read_manifest, utc_now

__all__ = [
    "RequestLog",
    "RunDir",
    "base_manifest",
    "new_run_id",
    "read_manifest",
    "read_requests",
    "read_rounds",
    "utc_now",
    "write_bench_serve",
    "write_cell_rounds",
    "write_rounds",
    "write_table",
]
