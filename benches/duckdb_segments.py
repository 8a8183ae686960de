"""Segments benchmark, DuckDB's side: the same three questions a data team
asks in SQL, joining the event tables to the resolved identity mapping
(row -> profile) that duckdb_identity.py built in the same run. Prints one
JSON object. Usage: duckdb_segments.py WORK_DIR PEOPLE"""
import json
import statistics
import sys
import time

import duckdb

work, people = sys.argv[1], int(sys.argv[2])
con = duckdb.connect(f"{work}/duckdb-identity.db", read_only=True)
REF = "TIMESTAMP '2026-11-01 00:00:00'"


def mapped(table):
    return (f"(SELECT t.*, p.profile AS profile_id FROM {table} t "
            f"JOIN row_profiles p ON p.tbl = '{table}' AND p.rn = t.file_row_number)")


QUERIES = {
    "high_value": f"""SELECT count(*) FROM (SELECT profile_id FROM {mapped('pos_orders')} GROUP BY profile_id
        HAVING sum(amount) > 500 AND max(ordered_at) >= {REF} - INTERVAL 90 DAY)""",
    "web_engaged": f"""SELECT count(*) FROM (SELECT profile_id FROM {mapped('web_events')}
        WHERE occurred_at >= {REF} - INTERVAL 30 DAY GROUP BY profile_id HAVING count(*) >= 5)""",
    "clicked_not_bought": f"""SELECT count(*) FROM (SELECT DISTINCT profile_id FROM {mapped('email_events')} WHERE event_type = 'click') c
        WHERE profile_id NOT IN (SELECT profile_id FROM {mapped('pos_orders')} WHERE ordered_at >= {REF} - INTERVAL 180 DAY)""",
}

out = {"version": duckdb.__version__, "threads": con.execute("SELECT current_setting('threads')").fetchone()[0]}
for name, sql in QUERIES.items():
    times, answer = [], None
    for _ in range(3):
        t = time.time()
        answer = con.execute(sql).fetchone()[0]
        times.append((time.time() - t) * 1000)
    out[f"{name}_ms"] = statistics.median(times)
    out[f"{name}_count"] = answer
print(json.dumps(out))
