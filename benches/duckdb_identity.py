"""Identity benchmark, DuckDB's side: the same job the way a data team does
it in SQL today (as Splink does in-database): load the Parquet files,
normalize identifiers, build the edge list, iterate connected components
(min-label propagation) until stable, then label every row. Scores the
result against the ground truth like the Tessera side. Prints one JSON
object. The load and resolution run LOADS times (default 3), each into a
new database file, and their medians are reported, as on Tessera's side;
lookups and quality are measured on the last one.
Usage: duckdb_identity.py WORK_DIR PEOPLE [LOADS]"""
import json
import os
import sys
import time

import duckdb

work, people = sys.argv[1], int(sys.argv[2])
loads = int(sys.argv[3]) if len(sys.argv) > 3 else 3
data = f"{work}/data-{people}"
spec = json.load(open(f"{work}/identity_spec.json"))
path = f"{work}/duckdb-identity.db"

BLOCKED = "('null','undefined','anonymous','none','n/a','-1','0','test@test.com','abc123','void','nil','unknown','')"

def normalized(column, kind):
    """SQL for the normalized identifier, NULL when not an identifier."""
    raw = f"lower(trim({column}))"
    if kind == "email":
        return (f"CASE WHEN {raw} IN {BLOCKED} OR regexp_matches({raw}, '^[0\\-\\s().+]*$') "
                f"OR length({raw}) - length(replace({raw}, '@', '')) <> 1 THEN NULL ELSE {raw} END")
    if kind == "phone":
        digits = f"regexp_replace({column}, '[^0-9]', '', 'g')"
        national = f"CASE WHEN length({digits}) = 11 AND {digits}[1] = '1' THEN {digits}[2:] ELSE {digits} END"
        return (f"CASE WHEN {raw} IN {BLOCKED} OR regexp_matches({raw}, '^[0\\-\\s().+]*$') OR length({national}) <> 10 "
                f"THEN NULL ELSE '+1' || {national} END")
    return f"CASE WHEN {raw} IN {BLOCKED} OR regexp_matches({raw}, '^[0\\-\\s().+]*$') THEN NULL ELSE trim({column}) END"

def load_and_resolve(con):
    """One timed run into an empty database: (load_s, resolve_s, iterations)."""
    t0 = time.time()
    for table in spec:
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM read_parquet('{data}/{table}.parquet', file_row_number = true)")
    load_s = time.time() - t0

    t1 = time.time()
    parts = []
    for table, columns in spec.items():
        for column, kind in columns:
            parts.append(f"SELECT '{table}' AS tbl, file_row_number AS rn, '{kind}' AS kind, {normalized(column, kind)} AS value FROM {table}")
    con.execute(f"CREATE TABLE ids AS SELECT * FROM ({' UNION ALL '.join(parts)}) WHERE value IS NOT NULL")
    con.execute("CREATE TABLE nodes AS SELECT row_number() OVER () AS node, kind, value FROM (SELECT DISTINCT kind, value FROM ids)")
    con.execute("CREATE TABLE row_nodes AS SELECT i.tbl, i.rn, n.node FROM ids i JOIN nodes n USING (kind, value)")
    con.execute("""CREATE TABLE edges AS
        SELECT DISTINCT a, b FROM (
          SELECT min(node) OVER (PARTITION BY tbl, rn) AS a, node AS b FROM row_nodes)
        WHERE a <> b""")
    con.execute("CREATE TABLE e AS SELECT a, b FROM edges UNION ALL SELECT b, a FROM edges")
    con.execute("CREATE TABLE labels AS SELECT node, node AS label FROM nodes")
    iterations = 0
    while True:
        iterations += 1
        con.execute("""CREATE TABLE labels2 AS
            SELECT l.node, least(l.label, coalesce(m.label, l.label)) AS label
            FROM labels l LEFT JOIN (
              SELECT e.a AS node, min(n.label) AS label FROM e JOIN labels n ON e.b = n.node GROUP BY e.a) m
            ON l.node = m.node""")
        changed = con.execute("SELECT count(*) FROM labels l JOIN labels2 m USING (node) WHERE l.label <> m.label").fetchone()[0]
        con.execute("DROP TABLE labels")
        con.execute("ALTER TABLE labels2 RENAME TO labels")
        if changed == 0 or iterations > 100:
            break
    con.execute("""CREATE TABLE row_profiles AS
        SELECT r.tbl, r.rn, min(l.label) AS profile FROM row_nodes r JOIN labels l USING (node) GROUP BY r.tbl, r.rn""")
    resolve_s = time.time() - t1
    return load_s, resolve_s, iterations


def median(values):
    return sorted(values)[len(values) // 2]


runs, con = [], None
for _ in range(loads):
    if con is not None:
        con.close()
    for p in (path, path + ".wal"):
        if os.path.exists(p):
            os.remove(p)
    con = duckdb.connect(path)
    # The files written before go to disk first, and the input files are
    # read once (into the page cache), as on Tessera's side.
    os.sync()
    for table in spec:
        with open(f"{data}/{table}.parquet", "rb") as f:
            while f.read(1 << 24):
                pass
    runs.append(load_and_resolve(con))
out = {"version": duckdb.__version__, "threads": con.execute("SELECT current_setting('threads')").fetchone()[0], "loads": loads}
out.update(load_s=median([r[0] for r in runs]), resolve_s=median([r[1] for r in runs]),
           end_to_end_s=median([r[0] + r[1] for r in runs]), iterations=runs[-1][2],
           end_to_end_runs_s=[r[0] + r[1] for r in runs],
           profiles=con.execute("SELECT count(DISTINCT profile) FROM row_profiles").fetchone()[0])

# Profile lookups as an application asks them, the data-team way: the raw
# email normalized in SQL, then its node's label. The same 200 raw values
# as Tessera's side (the first crm_contacts emails that look like one, sorted).
emails = [r[0] for r in con.execute("SELECT email FROM crm_contacts WHERE email LIKE '%_@_%.%' ORDER BY email LIMIT 200").fetchall()]
lookup = (f"SELECT l.label FROM nodes n JOIN labels l USING (node) "
          f"WHERE n.kind = 'email' AND n.value = {normalized('CAST($1 AS VARCHAR)', 'email')}")
latencies, found = [], 0
for email in emails:
    t = time.perf_counter()
    found += len(con.execute(lookup, [email]).fetchall())
    latencies.append((time.perf_counter() - t) * 1000.0)
latencies.sort()
pct = lambda p: latencies[round((len(latencies) - 1) * p)]  # as benches/src/identity.rs
out.update(lookup_p50_ms=pct(0.5), lookup_p99_ms=pct(0.99), lookup_found=found)

# Quality: rows without an identifier are clusters of one.
con.execute(f"CREATE TABLE truth AS SELECT * FROM read_csv('{data}/truth.csv', header = true)")
tp, pp, tt = con.execute("""
    WITH labelled AS (
      SELECT t.person_id, p.profile FROM truth t LEFT JOIN row_profiles p ON p.tbl = t."table" AND p.rn = t."row"),
    cell AS (SELECT count(*) AS n FROM labelled WHERE profile IS NOT NULL GROUP BY profile, person_id),
    pred AS (SELECT count(*) AS n FROM labelled WHERE profile IS NOT NULL GROUP BY profile),
    tru AS (SELECT count(*) AS n FROM labelled GROUP BY person_id)
    SELECT (SELECT sum(n * (n - 1) / 2) FROM cell), (SELECT sum(n * (n - 1) / 2) FROM pred), (SELECT sum(n * (n - 1) / 2) FROM tru)
""").fetchone()
out["pairwise_precision"] = float(tp) / float(pp) if pp else 1.0
out["pairwise_recall"] = float(tp) / float(tt) if tt else 1.0
print(json.dumps(out))
