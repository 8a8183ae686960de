#!/usr/bin/env bash
# Foundation benchmark: Tessera and DuckDB on the same 10M-row table of
# customer events, in the same run. Usage: benches/run_foundation.sh [ROWS] [REPEAT]
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${1:-10000000}"
REPEAT="${2:-5}"
. benches/setup.sh

/usr/bin/time -f "%M" -o "$WORK/tessera-foundation.rss" "$CARGO_TARGET_DIR/release/tessera-bench" foundation "$WORK" "$ROWS" "$REPEAT" > "$WORK/tessera.json"
/usr/bin/time -f "%M" -o "$WORK/duckdb-foundation.rss" "$VENV/bin/python" benches/duckdb_foundation.py "$WORK" "$ROWS" "$REPEAT" > "$WORK/duckdb.json"

"$VENV/bin/python" - "$WORK/tessera.json" "$WORK/duckdb.json" "$WORK/tessera-foundation.rss" "$WORK/duckdb-foundation.rss" <<'PY'
import json, sys
t = json.load(open(sys.argv[1])); d = json.load(open(sys.argv[2]))
rss = [int(open(p).read().split()[-1]) / 1024 for p in sys.argv[3:5]]
assert t["filtered_aggregate_rows"] == d["filtered_aggregate_rows"], "results differ"
assert t["point_filter_rows"] == d["point_filter_rows"], "results differ"
print(f"rows: {t['rows']:,}   duckdb {d['version']} (threads={d['threads']})")
print("| measure | Tessera | DuckDB | ratio (Tessera / DuckDB) |")
print("|---|---|---|---|")
for key, label in [("load_s", "bulk load (s)"), ("filtered_aggregate_s", "filtered aggregate (s)"),
                   ("point_filter_s", "point filter (s)"), ("disk_bytes", "on-disk size (MB)")]:
    a, b = t[key], d[key]
    if key == "disk_bytes":
        a, b = a / 1e6, b / 1e6
    print(f"| {label} | {a:.3f} | {b:.3f} | {a / b:.2f} |")
print(f"| peak memory of the process (MB) | {rss[0]:.0f} | {rss[1]:.0f} | {rss[0] / rss[1]:.2f} |")
PY
