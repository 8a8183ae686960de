"""Replay the catalog queries BI tools and shells send on connect
(catalog_queries.json: Metabase, DBeaver, Grafana, psql, pgcli), each
through the simple protocol, against a running tessera server with a
table and a view. Every query must run without error."""
import json
import os
import sys

import psycopg
from psycopg import pq

PORT = int(os.environ["TESSERA_PORT"])
queries = json.load(open(os.path.join(os.path.dirname(__file__), "catalog_queries.json")))
failures = []
ok_status = (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK, pq.ExecStatus.EMPTY_QUERY)
total = 0
with psycopg.connect(host="127.0.0.1", port=PORT, user="tessera", dbname="tessera", autocommit=True) as conn:
    conn.execute("CREATE TABLE IF NOT EXISTS customer (id BIGINT NOT NULL, name TEXT)")
    conn.execute("CREATE TABLE IF NOT EXISTS tt (a INT, b TEXT)")
    # Queries Tessera cannot run yet must fail cleanly: an error response,
    # and the connection goes on working.
    for q in queries.pop("known_gaps", []):
        res = conn.pgconn.exec_(q.encode())
        assert res.status == pq.ExecStatus.FATAL_ERROR, "a known gap now runs: move it to its client's list"
        assert conn.execute("SELECT 1").fetchone() == (1,)
    for client, qs in queries.items():
        for q in qs:
            total += 1
            # Simple protocol, one query string at a time, as psql sends.
            res = conn.pgconn.exec_(q.encode())
            if res.status not in ok_status:
                failures.append((client, q, (res.error_message or b"").decode(errors="replace").strip()))
for client, q, e in failures:
    print(f"--- {client}: {e}\n{q[:300]}")
print(f"catalog queries: {total - len(failures)} of {total} ran")
sys.exit(1 if failures else 0)
