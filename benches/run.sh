#!/usr/bin/env bash
# Every benchmark in BENCHMARKS.md in one run, each against its peer on the
# same data: builds the release binaries, generates the data, runs Tessera
# and DuckDB / PostgreSQL 15 side by side, runs the criterion
# micro-benchmarks, and rewrites the generated blocks of BENCHMARKS.md
# (machine, versions, data size, each figure for both systems, the ratio,
# peak memory, resolution quality).
#
# Usage: benches/run.sh [--smoke] [--only foundation,identity,segments,wire,micro] [--out FILE]
#   (no option)  the reference run: 1 M people, 10 M event rows; writes BENCHMARKS.md
#   --smoke      100 k people, 1 M event rows, small wire run; writes
#                $BENCH_WORK/BENCHMARKS.smoke.md (a copy), BENCHMARKS.md untouched
#   --only LIST  run only these parts; the other blocks keep their figures
#   --out FILE   write the blocks into FILE instead
# Work files go to $BENCH_WORK (default /tmp/tessera-bench). Needs root for
# the PostgreSQL part (Debian package, cluster run as the postgres user).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${BENCH_WORK:-/tmp/tessera-bench}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tessera-target}"
PARTS="foundation,identity,segments,wire,micro"
PEOPLE=1000000
EVENTS=10000000
REPEAT=5
WIRE=(10000000 1000000 20000 50 20)
OUT=BENCHMARKS.md
SMOKE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1; PEOPLE=100000; EVENTS=1000000; REPEAT=3; WIRE=(1000000 100000 2000 20 5); OUT="$WORK/BENCHMARKS.smoke.md" ;;
    --only) PARTS="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown option '$1' (see benches/run.sh --help)" >&2; exit 2 ;;
  esac
  shift
done
for part in ${PARTS//,/ }; do
  case "$part" in foundation|identity|segments|wire|micro) ;; *) echo "unknown part '$part'" >&2; exit 2 ;; esac
done
mkdir -p "$WORK"
[ -n "$SMOKE" ] && [ ! -f "$OUT" ] && cp BENCHMARKS.md "$OUT"
# Fail before hours of work if the blocks to fill are missing.
python3 benches/report.py check "$OUT" ${PARTS//,/ }
wants() { [[ ",$PARTS," == *",$1,"* ]]; }
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
# BENCHMARKS.md itself (the output) does not count as a change to what is measured.
[ -z "$(git status --porcelain --untracked-files=no -- . ":!BENCHMARKS.md" 2>/dev/null)" ] || COMMIT="$COMMIT+changes"
export TESSERA_COMMIT="$COMMIT"

# One part: its script's table goes to $WORK/report-NAME.md, its log
# beside it, the wall time into the header.
run_part() {
  local name="$1"; shift
  echo "== $name: $*" >&2
  local start; start=$(date +%s)
  "$@" > "$WORK/report-$name.md" 2> "$WORK/run-$name.log" || { echo "$name failed; see $WORK/run-$name.log" >&2; tail -20 "$WORK/run-$name.log" >&2; exit 1; }
  echo "$name $(( $(date +%s) - start ))" >> "$WORK/run-times.txt"
  python3 benches/report.py splice "$OUT" "$name" "$WORK/report-$name.md" "$COMMIT" "$(describe "$name")"
}
describe() {
  case "$1" in
    foundation) echo "$EVENTS event rows, median of $REPEAT runs" ;;
    identity|segments) echo "$PEOPLE people" ;;
    wire) echo "COPY ${WIRE[0]} rows; queries on ${WIRE[1]} rows; ${WIRE[2]} point queries; ${WIRE[3]} clients for ${WIRE[4]} s" ;;
    micro) echo "criterion, release build" ;;
  esac
}
: > "$WORK/run-times.txt"
wants foundation && run_part foundation benches/run_foundation.sh "$EVENTS" "$REPEAT"
wants identity && run_part identity benches/run_identity.sh "$PEOPLE"
wants segments && run_part segments benches/run_segments.sh "$PEOPLE"
wants wire && run_part wire benches/run_pg_wire.sh "${WIRE[@]}"
if wants micro; then
  export CRITERION_HOME="$WORK/criterion"
  rm -rf "$CRITERION_HOME"
  run_part micro bash -c 'cargo bench -p tessera-benches --bench micro -- --noplot >&2 && python3 benches/report.py micro "$CRITERION_HOME"'
fi
python3 benches/report.py header "$OUT" "$COMMIT" "$WORK" "$PARTS"
echo "wrote $OUT" >&2
