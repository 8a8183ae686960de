"""Segments over the wire with psycopg 3: the headline segment defined and
queried, and SUBSCRIBE TO SEGMENT read live as a COPY stream while another
connection changes the data."""
import os
import queue
import threading

import psycopg

PORT = int(os.environ["TESSERA_PORT"])
DSN = dict(host="127.0.0.1", port=PORT, user="tessera", dbname="tessera")

conn = psycopg.connect(**DSN, autocommit=True)
for sql in [
    "CREATE IDENTIFIER email (normalize = 'email')",
    "CREATE TABLE orders (email TEXT, amount DOUBLE PRECISION, ordered_at TIMESTAMP) "
    "WITH (identifiers = 'email AS email', time_column = 'ordered_at')",
    "CREATE TRAIT ltv AS sum(amount) FROM orders",
    "CREATE TRAIT last_order AS max(ordered_at) FROM orders",
]:
    conn.execute(sql)
conn.execute("INSERT INTO orders VALUES (%s, %s, now())", ("anna@example.com", 600.0))
conn.execute(
    "CREATE SEGMENT high_value AS SELECT profile_id FROM profiles "
    "WHERE ltv > 500 AND last_order >= now() - INTERVAL '90 days'"
)
anna = conn.execute("SELECT profile_of('email', 'ANNA@example.com')").fetchone()[0]
assert conn.execute(
    "SELECT profile_id FROM profiles WHERE in_segment(profile_id, 'high_value')"
).fetchall() == [(anna,)]

# A bad segment: a clear error, nothing created.
try:
    conn.execute("CREATE SEGMENT bad AS SELECT email FROM orders")
    raise AssertionError("no error")
except psycopg.Error as e:
    assert "profile_id" in str(e), e
names = [r[0] for r in conn.execute("SHOW SEGMENTS").fetchall()]
assert names == ["high_value"], names

changes: "queue.Queue[tuple]" = queue.Queue()


def subscribe() -> None:
    sub = psycopg.connect(**DSN, autocommit=True)
    with sub.cursor() as cur:
        with cur.copy("SUBSCRIBE TO SEGMENT high_value") as copy:
            for row in copy.rows():
                changes.put(row)


threading.Thread(target=subscribe, daemon=True).start()


def next_change() -> tuple:
    return changes.get(timeout=30)


segment, pid, change, at, cause = next_change()
assert (segment, int(pid), change, cause) == ("high_value", anna, "entered", "definition"), (segment, pid, change, cause)
assert at.startswith("20"), at

conn.execute("INSERT INTO orders VALUES (%s, %s, now())", ("ben@example.com", 700.0))
ben = conn.execute("SELECT profile_of('email', 'ben@example.com')").fetchone()[0]
segment, pid, change, at, cause = next_change()
assert (int(pid), change, cause) == (ben, "entered", "data"), (pid, change, cause)

conn.execute("DELETE FROM orders WHERE email = 'anna@example.com'")
segment, pid, change, at, cause = next_change()
assert (int(pid), change, cause) == (anna, "exited", "data"), (pid, change, cause)

logged = conn.execute(
    "SELECT change, cause, count(*) FROM segment_changes GROUP BY change, cause ORDER BY 1, 2"
).fetchall()
assert logged == [("entered", "data", 1), ("entered", "definition", 1), ("exited", "data", 1)], logged
# The server keeps serving others while the subscription streams.
assert conn.execute("SELECT count(*) FROM profiles WHERE in_segment(profile_id, 'high_value')").fetchone() == (1,)
print("segments ok", flush=True)
# The subscriber thread is still reading; leave without waiting for it
# (the server sees the connection go away).
os._exit(0)
