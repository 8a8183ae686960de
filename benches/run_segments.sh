#!/usr/bin/env bash
# Segments benchmark: Tessera and DuckDB on the same generated data set, in
# the same run. DuckDB answers each question by joining the events to the
# identity mapping its own resolution (duckdb_identity.py) built.
# Usage: benches/run_segments.sh [PEOPLE]  (1000000 is the reference run)
set -euo pipefail
cd "$(dirname "$0")/.."
PEOPLE="${1:-100000}"
. benches/setup.sh

/usr/bin/time -f "%M" -o "$WORK/tessera-seg.rss" "$CARGO_TARGET_DIR/release/tessera-bench" segments "$WORK" "$PEOPLE" > "$WORK/tessera-segments.json"
# The mapping DuckDB joins with: its own resolution of the same files.
if [ ! -f "$WORK/duckdb-identity.db" ] || [ ! -f "$WORK/duckdb-identity.people" ] || [ "$(cat "$WORK/duckdb-identity.people")" != "$PEOPLE" ]; then
  "$VENV/bin/python" benches/duckdb_identity.py "$WORK" "$PEOPLE" > "$WORK/duckdb-identity.json"
  echo "$PEOPLE" > "$WORK/duckdb-identity.people"
fi
"$VENV/bin/python" benches/duckdb_segments.py "$WORK" "$PEOPLE" > "$WORK/duckdb-segments.json"

"$VENV/bin/python" - "$WORK" <<'PY'
import json, sys
w = sys.argv[1]
t = json.load(open(f"{w}/tessera-segments.json")); d = json.load(open(f"{w}/duckdb-segments.json"))
rss = int(open(f"{w}/tessera-seg.rss").read().split()[-1]) / 1024
print(f"people: {t['people']:,.0f}   rows: {t['rows']:,.0f}   profiles: {t['profiles']:,.0f}   duckdb {d['version']} (threads={d['threads']})")
print("| question | Tessera from raw rows (ms) | Tessera from traits (ms) | DuckDB join to mapping (ms) | raw / DuckDB | traits / DuckDB | answers (raw, traits, DuckDB) |")
print("|---|---|---|---|---|---|---|")
for q in ["high_value", "web_engaged", "clicked_not_bought"]:
    raw, tr, dk = t[f"raw_{q}_ms"], t[f"traits_{q}_ms"], d[f"{q}_ms"]
    print(f"| {q} | {raw:.1f} | {tr:.1f} | {dk:.1f} | {raw / dk:.2f} | {tr / dk:.3f} | {t[f'raw_{q}_count']:,.0f}, {t[f'traits_{q}_count']:,.0f}, {d[f'{q}_count']:,.0f} |")
print()
print(f"Tessera: defining 6 traits {t['traits_define_s']:.1f} s, 5 segments {t['segments_define_s']:.1f} s; "
      f"refresh of 5 segments after a 1,000-row insert {t['refresh_five_segments_after_1000_rows_ms']:.1f} ms (median of 5; one segment over the raw pos_orders rows), "
      f"{t['refresh_five_trait_segments_after_1000_rows_ms']:.1f} ms with all five over traits; "
      f"in_segment over a {t['everyone_members']:,.0f}-profile bitmap {t['in_segment_everyone_ms']:.1f} ms "
      f"(count(*) of profiles alone {t['profiles_count_ms']:.1f} ms), two segments combined {t['in_segment_combination_ms']:.1f} ms; "
      f"peak memory {rss:.0f} MB")
PY
