"""The DuckDB side of the foundation benchmark: same Parquet file, same
queries, same measurements as `tessera-bench foundation`. Prints JSON."""
import json
import os
import statistics
import sys
import time

import duckdb

QUERIES = {
    "filtered_aggregate": "SELECT event_type, count(*) AS n, sum(amount) AS total FROM events "
    "WHERE event_date >= DATE '2025-06-01' AND event_date < DATE '2025-09-01' GROUP BY event_type ORDER BY event_type",
    "point_filter": "SELECT * FROM events WHERE customer_id = 424242 ORDER BY event_id",
}


def main():
    work, rows, repeat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    parquet = os.path.join(work, f"events-{rows}.parquet")
    path = os.path.join(work, "duckdb.db")
    for p in (path, path + ".wal"):
        if os.path.exists(p):
            os.remove(p)
    con = duckdb.connect(path)
    con.execute(
        "CREATE TABLE events (event_id BIGINT NOT NULL, customer_id BIGINT NOT NULL, event_type VARCHAR NOT NULL, "
        "channel VARCHAR NOT NULL, amount DOUBLE, event_date DATE NOT NULL)"
    )
    t = time.perf_counter()
    con.execute(f"COPY events FROM '{parquet}' (FORMAT parquet)")
    con.execute("CHECKPOINT")
    out = {"rows": rows, "load_s": time.perf_counter() - t}
    for name, sql in QUERIES.items():
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            result = con.execute(sql).to_arrow_table()
            times.append(time.perf_counter() - t)
        out[f"{name}_s"] = statistics.median(times)
        out[f"{name}_rows"] = result.num_rows
    con.close()
    out["disk_bytes"] = os.path.getsize(path)
    out["threads"] = duckdb.connect().execute("SELECT current_setting('threads')").fetchone()[0]
    out["version"] = duckdb.__version__
    print(json.dumps(out))


main()
