"""Wire-protocol benchmark client: the same psycopg 3 code against
`tessera serve` and against PostgreSQL (driven by benches/run_pg_wire.sh).

  pg_wire.py gen CSV ROWS
      write the event table as CSV (deterministic, seed 42), once.
  pg_wire.py run --system NAME --port PORT --user USER --csv CSV [options]
      run every measurement against one server and print JSON:
      1. COPY events FROM STDIN of the first --copy-rows lines of CSV
         (timed from the client; the server's memory is sampled);
      2. reload events with the first --table-rows lines (PostgreSQL then
         gets a btree index on event_id and VACUUM ANALYZE);
      3. point query by key, prepared, one client: --queries random keys;
      4. --clients concurrent clients running a mix for --seconds.
"""
import argparse
import asyncio
import datetime
import json
import multiprocessing
import os
import platform
import random
import sys
import threading
import time

DDL = """CREATE TABLE events (
    event_id BIGINT NOT NULL,
    cookie TEXT,
    email TEXT,
    event_type TEXT,
    amount DOUBLE PRECISION,
    occurred_at TIMESTAMP
)"""
COLUMNS = "event_id, cookie, email, event_type, amount, occurred_at"
EVENT_TYPES = ["page_view", "product_view", "add_to_cart", "purchase", "email_open", "email_click", "login", "search"]
EVENT_WEIGHTS = [40, 20, 8, 5, 10, 4, 5, 8]

POINT_SQL = "SELECT * FROM events WHERE event_id = %s"
# Small aggregate: the events of a 1,000-id window by type (an index range
# on PostgreSQL, row-group pruning on the sequential key in Tessera).
AGG_SQL = ("SELECT event_type, count(*), sum(amount) FROM events "
           "WHERE event_id >= %s AND event_id < %s GROUP BY event_type")
# Count with a filter: a scan of the whole table on both.
COUNT_SQL = "SELECT count(*) FROM events WHERE event_type = %s AND amount > %s"
MIX = [("point", 80), ("aggregate", 10), ("count", 10)]


# ---------------------------------------------------------------- data


def generate(path, rows, seed=42):
    """Customer events in arrival order: sequential ids, one cookie per
    customer (rows / 10 customers), an email on 60% of the events of known
    customers, eight event types, an amount on purchases (else NULL), a
    timestamp over 2025-2026."""
    rng = random.Random(seed)
    customers = max(rows // 10, 1)
    start = datetime.datetime(2025, 1, 1)
    span = 2 * 365 * 86400
    days = {}
    tmp = path + ".part"
    chunk = 200_000
    with open(tmp, "w", newline="") as f:
        for base in range(1, rows + 1, chunk):
            n = min(chunk, rows - base + 1)
            types = rng.choices(EVENT_TYPES, EVENT_WEIGHTS, k=n)
            lines = []
            for k in range(n):
                i = base + k
                cust = rng.randrange(customers)
                cookie = format((cust * 0x9E3779B97F4A7C15 + 12345) & 0xFFFFFFFFFFFFFFFF, "016x")
                email = f"user{cust}@example.com" if cust % 10 < 7 and rng.random() < 0.6 else ""
                et = types[k]
                amount = f"{rng.uniform(5, 500):.2f}" if et == "purchase" else ""
                secs = (i - 1) * span // rows + rng.randrange(60)
                day, rest = divmod(secs, 86400)
                d = days.get(day)
                if d is None:
                    d = days[day] = (start + datetime.timedelta(days=day)).strftime("%Y-%m-%d")
                hh, rest = divmod(rest, 3600)
                mm, ss = divmod(rest, 60)
                lines.append(f"{i},{cookie},{email},{et},{amount},{d} {hh:02d}:{mm:02d}:{ss:02d}\n")
            f.write("".join(lines))
    os.replace(tmp, path)


def prefix_bytes(path, rows):
    """Byte length of the first `rows` lines of the file."""
    total = 0
    with open(path, "rb") as f:
        for _ in range(rows):
            line = f.readline()
            if not line:
                raise SystemExit(f"{path} has fewer than {rows} rows")
            total += len(line)
    return total


# ---------------------------------------------------------------- memory


def proc_status(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0]) * 1024
    except FileNotFoundError:
        pass
    return out


class RssSampler:
    """Samples VmRSS of a process every 50 ms (VmHWM gives the peak; the
    samples show when it happens)."""

    def __init__(self, pid):
        self.pid, self.peak, self.samples, self.stop = pid, 0, [], threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        t0 = time.perf_counter()
        while not self.stop.is_set():
            rss = proc_status(self.pid).get("VmRSS", 0)
            self.peak = max(self.peak, rss)
            self.samples.append((round(time.perf_counter() - t0, 2), rss))
            self.stop.wait(0.05)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


# ---------------------------------------------------------------- measurements


def connect(args):
    import psycopg
    return psycopg.connect(host="127.0.0.1", port=args.port, user=args.user, dbname=args.dbname, autocommit=True)


def copy_file(conn, path, nbytes, chunk_size):
    """COPY events FROM STDIN in CSV, the first `nbytes` of the file written
    in chunks. Returns (seconds, rows reported by the server)."""
    with conn.cursor() as cur:
        with open(path, "rb") as f:
            t0 = time.perf_counter()
            with cur.copy(f"COPY events ({COLUMNS}) FROM STDIN WITH (FORMAT csv)") as copy:
                left = nbytes
                while left > 0:
                    data = f.read(min(chunk_size, left))
                    if not data:
                        break
                    copy.write(data)
                    left -= len(data)
            elapsed = time.perf_counter() - t0
        return elapsed, cur.rowcount


def recreate(conn):
    conn.execute("DROP TABLE IF EXISTS events")
    conn.execute(DDL)


def pct(sorted_values, q):
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, max(0, round(q * len(sorted_values) + 0.5) - 1))]


def point_queries(conn, table_rows, queries, warmup, seed=7):
    rng = random.Random(seed)
    keys = [rng.randint(1, table_rows) for _ in range(warmup + queries)]
    lat, wrong = [], 0
    with conn.cursor() as cur:
        for n, key in enumerate(keys):
            t0 = time.perf_counter()
            cur.execute(POINT_SQL, (key,), prepare=True)
            rows = cur.fetchall()
            dt = time.perf_counter() - t0
            if len(rows) != 1 or rows[0][0] != key:
                wrong += 1
            if n >= warmup:
                lat.append(dt)
    lat.sort()
    return {
        "queries": queries,
        "warmup": warmup,
        "wrong_results": wrong,
        "p50_ms": pct(lat, 0.50) * 1e3,
        "p90_ms": pct(lat, 0.90) * 1e3,
        "p99_ms": pct(lat, 0.99) * 1e3,
        "p999_ms": pct(lat, 0.999) * 1e3,
        "max_ms": lat[-1] * 1e3,
        "mean_ms": sum(lat) / len(lat) * 1e3,
    }


async def mix_worker(args, wid, start_at, stop_at, out):
    import psycopg
    rng = random.Random(1000 + wid)
    kinds = [k for k, _ in MIX]
    weights = [w for _, w in MIX]
    try:
        conn = await psycopg.AsyncConnection.connect(
            host="127.0.0.1", port=args.port, user=args.user, dbname=args.dbname, autocommit=True)
    except Exception as e:  # noqa: BLE001 - every failure is counted
        out["connect_errors"] += 1
        out["messages"].setdefault(f"connect: {type(e).__name__}: {str(e)[:160]}", 0)
        return
    async with conn:
        while time.time() < start_at:
            await asyncio.sleep(min(0.01, max(0.0, start_at - time.time())))
        cur = conn.cursor()
        while time.time() < stop_at:
            kind = rng.choices(kinds, weights)[0]
            t0 = time.perf_counter()
            try:
                if kind == "point":
                    key = rng.randint(1, args.table_rows)
                    await cur.execute(POINT_SQL, (key,), prepare=True)
                    rows = await cur.fetchall()
                    ok = len(rows) == 1 and rows[0][0] == key
                elif kind == "aggregate":
                    lo = rng.randint(1, max(1, args.table_rows - 1000))
                    await cur.execute(AGG_SQL, (lo, lo + 1000), prepare=True)
                    rows = await cur.fetchall()
                    ok = sum(r[1] for r in rows) == min(1000, args.table_rows - lo + 1)
                else:
                    et = rng.choice(EVENT_TYPES)
                    await cur.execute(COUNT_SQL, (et, rng.uniform(0, 500)), prepare=True)
                    rows = await cur.fetchall()
                    ok = len(rows) == 1
            except Exception as e:  # noqa: BLE001 - every failure is counted
                out["errors"] += 1
                msg = f"{kind}: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
                out["messages"][msg] = out["messages"].get(msg, 0) + 1
                if conn.closed:
                    return
                continue
            dt = time.perf_counter() - t0
            if time.time() <= stop_at:
                out["done"][kind] += 1
                out["lat"][kind].append(dt)
                if not ok:
                    out["wrong"] += 1


def mix_process(args, first, count, start_at, stop_at, queue):
    out = {"done": {k: 0 for k, _ in MIX}, "lat": {k: [] for k, _ in MIX}, "errors": 0,
           "connect_errors": 0, "wrong": 0, "messages": {}}

    async def main():
        await asyncio.gather(*(mix_worker(args, first + i, start_at, stop_at, out) for i in range(count)))

    asyncio.run(main())
    queue.put(out)


def concurrent_mix(args):
    """--clients connections split over --client-procs processes (asyncio
    in each), all starting at once, for --seconds."""
    procs = max(1, min(args.client_procs, args.clients))
    share = [args.clients // procs + (1 if i < args.clients % procs else 0) for i in range(procs)]
    start_at = time.time() + 3.0 + 0.05 * args.clients
    stop_at = start_at + args.seconds
    queue = multiprocessing.Queue()
    children, first = [], 0
    for n in share:
        p = multiprocessing.Process(target=mix_process, args=(args, first, n, start_at, stop_at, queue))
        p.start()
        children.append(p)
        first += n
    parts = [queue.get() for _ in children]
    for p in children:
        p.join()
    done = {k: sum(p["done"][k] for p in parts) for k, _ in MIX}
    lat = {k: sorted(x for p in parts for x in p["lat"][k]) for k, _ in MIX}
    messages = {}
    for p in parts:
        for m, c in p["messages"].items():
            messages[m] = messages.get(m, 0) + c
    total = sum(done.values())
    return {
        "clients": args.clients,
        "client_processes": procs,
        "seconds": args.seconds,
        "mix": dict(MIX),
        "queries": total,
        "qps": total / args.seconds,
        "by_kind": {k: {"queries": done[k], "qps": done[k] / args.seconds,
                        "p50_ms": (pct(lat[k], 0.5) or 0) * 1e3, "p99_ms": (pct(lat[k], 0.99) or 0) * 1e3}
                    for k, _ in MIX},
        "errors": sum(p["errors"] for p in parts),
        "connect_errors": sum(p["connect_errors"] for p in parts),
        "wrong_results": sum(p["wrong"] for p in parts),
        "error_messages": messages,
    }


def copy_measurement(args, conn, rows, result):
    """Time COPY events FROM STDIN of `rows` rows and sample the server's
    memory. Returns (connection, success)."""
    server_pid = args.server_pid or conn.info.backend_pid
    recreate(conn)
    nbytes = prefix_bytes(args.csv, rows)
    result["copy_bytes"] = nbytes
    result["rss_before_copy"] = proc_status(server_pid)
    log(f"{args.system}: COPY {rows:,} rows ({nbytes / 1e6:.0f} MB)")
    error = None
    with RssSampler(server_pid) as sampler:
        try:
            secs, reported = copy_file(conn, args.csv, nbytes, args.chunk_bytes)
        except Exception as e:  # noqa: BLE001 - reported, the run goes on
            error = f"{type(e).__name__}: {e}"
    status = proc_status(server_pid)
    result["rss_after_copy"] = status
    result["copy_peak_rss_sampled"] = sampler.peak
    result["copy_rss_timeline"] = sampler.samples[:: max(1, len(sampler.samples) // 60)]
    if error is None:
        count = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        if count != rows:
            error = f"counted {count} rows after COPY, expected {rows}"
    if error is not None:
        result["copy_failures"].append({"rows": rows, "error": error, "peak_rss": status.get("VmHWM"),
                                        "server_alive": bool(status)})
        log(f"{args.system}: COPY of {rows:,} rows failed: {error}")
        if not status:
            raise SystemExit(f"{args.system}: the server process is gone after the COPY")
        try:
            conn.close()
        finally:
            conn = connect(args)
        return conn, False
    result["copy_s"] = secs
    result["copy_rows_reported"] = reported
    result["copy_rows_per_s"] = rows / secs
    result["copy_mb_per_s"] = nbytes / 1e6 / secs
    log(f"{args.system}: COPY {secs:.2f} s, peak RSS {status.get('VmHWM', 0) / 2**20:.0f} MiB")
    return conn, True


def run(args):
    import psycopg
    result = {"system": args.system, "copy_rows_requested": args.copy_rows, "table_rows": args.table_rows,
              "python": platform.python_version(), "psycopg": psycopg.__version__}
    conn = connect(args)
    result["server_version"] = conn.execute("SELECT version()").fetchone()[0]
    result["memory_pid_kind"] = "server process" if args.server_pid else "backend process of the COPY connection"

    # 1. COPY of --copy-rows rows; if the server refuses or fails, the
    # failure is recorded and half as many rows are tried (not below
    # --table-rows), so the run still measures a size that works.
    result["copy_failures"] = []
    rows = args.copy_rows
    while True:
        conn, ok = copy_measurement(args, conn, rows, result)
        if ok or rows // 2 < args.table_rows:
            break
        rows //= 2
    result["copy_rows"] = rows

    # 2. The 1M-row table for the queries.
    recreate(conn)
    t0 = time.perf_counter()
    copy_file(conn, args.csv, prefix_bytes(args.csv, args.table_rows), args.chunk_bytes)
    for stmt in args.after_load:
        conn.execute(stmt)
    result["table_load_s"] = time.perf_counter() - t0
    result["table_rows_counted"] = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    log(f"{args.system}: {result['table_rows_counted']:,} rows for the queries, loaded in {result['table_load_s']:.2f} s")

    # 3. Point queries from one client.
    result["point"] = point_queries(conn, args.table_rows, args.queries, args.warmup)
    p = result["point"]
    log(f"{args.system}: point query p50 {p['p50_ms']:.3f} ms, p99 {p['p99_ms']:.3f} ms")
    conn.close()

    # 4. Concurrent mix.
    result["concurrent"] = concurrent_mix(args)
    c = result["concurrent"]
    log(f"{args.system}: {args.clients} clients {c['qps']:.0f} queries/s, {c['errors']} errors, {c['connect_errors']} connect errors")
    result["rss_end"] = proc_status(args.server_pid) if args.server_pid else {}
    json.dump(result, sys.stdout, indent=1)
    print()


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "gen":
        path, rows = sys.argv[2], int(sys.argv[3])
        t0 = time.perf_counter()
        generate(path, rows)
        log(f"wrote {rows:,} rows to {path} in {time.perf_counter() - t0:.1f} s")
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["run"])
    ap.add_argument("--system", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--dbname", default="tessera")
    ap.add_argument("--csv", required=True)
    ap.add_argument("--server-pid", type=int, default=0, help="process whose memory is sampled (default: the COPY backend)")
    ap.add_argument("--copy-rows", type=int, default=10_000_000)
    ap.add_argument("--table-rows", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=20_000)
    ap.add_argument("--warmup", type=int, default=1_000)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--client-procs", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--chunk-bytes", type=int, default=1 << 20)
    ap.add_argument("--after-load", action="append", default=[], help="statement run after loading the query table")
    run(ap.parse_args())


if __name__ == "__main__":
    main()
