"""psycopg 3 against a running tessera server: simple and extended
protocol, text and binary results, parameters, COPY FROM STDIN, errors,
transaction blocks."""
import datetime
import os

import psycopg

PORT = int(os.environ["TESSERA_PORT"])
DSN = dict(host="127.0.0.1", port=PORT, user="tessera", dbname="tessera")

with psycopg.connect(**DSN, autocommit=True) as conn:
    conn.execute("CREATE TABLE people (id BIGINT NOT NULL, name TEXT, score DOUBLE PRECISION, born DATE)")
    conn.execute("INSERT INTO people VALUES (%s, %s, %s, %s)", (1, "anna", 1.5, datetime.date(1990, 1, 2)))
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO people VALUES (%s, %s, %s, %s)", [(i, f"p{i}", i * 0.5, None) for i in range(2, 12)])
    assert conn.execute("SELECT id, name FROM people WHERE id = %s", (1,)).fetchall() == [(1, "anna")]
    with conn.cursor(binary=True) as cur:
        cur.execute("SELECT id, name, score, born FROM people WHERE id = %s", (1,))
        row = cur.fetchone()
        assert row == (1, "anna", 1.5, datetime.date(1990, 1, 2)), row
    # Server-side prepared statement used many times.
    for i in range(2, 8):
        got = conn.execute("SELECT name FROM people WHERE id = %s", (i,), prepare=True).fetchone()
        assert got == (f"p{i}",), got
    with conn.cursor() as cur:
        with cur.copy("COPY people (id, name) FROM STDIN") as copy:
            for i in range(100, 110):
                copy.write_row((i, f"c{i}"))
    assert conn.execute("SELECT count(*) FROM people").fetchone()[0] == 21
    try:
        conn.execute("SELECT * FROM missing")
        raise AssertionError("no error")
    except psycopg.errors.UndefinedTable:
        pass
    try:
        conn.execute("INSERT INTO people VALUES (NULL, 'x', NULL, NULL)")
        raise AssertionError("no error")
    except psycopg.errors.NotNullViolation:
        pass
    assert conn.execute("SELECT count(*) FROM people").fetchone()[0] == 21
    version = conn.execute("SELECT version()").fetchone()[0]
    assert version.startswith("PostgreSQL "), version

# Default (non-autocommit) mode: psycopg wraps statements in BEGIN/COMMIT.
with psycopg.connect(**DSN) as conn:
    conn.execute("INSERT INTO people VALUES (200, 'tx', NULL, NULL)")
    conn.commit()
    assert conn.execute("SELECT name FROM people WHERE id = 200").fetchone() == ("tx",)
    conn.rollback()

# Identity resolution over the wire: read-your-writes of profile ids.
with psycopg.connect(**DSN, autocommit=True) as conn:
    conn.execute("CREATE IDENTIFIER email (normalize = 'email')")
    conn.execute("CREATE IDENTIFIER phone (normalize = 'phone', region = 'US')")
    conn.execute("CREATE TABLE crm (name TEXT, email TEXT, phone TEXT) WITH (identifiers = 'email AS email, phone AS phone')")
    conn.execute("CREATE TABLE orders (phone TEXT, amount DOUBLE PRECISION) WITH (identifiers = 'phone AS phone')")
    conn.execute("INSERT INTO crm VALUES (%s, %s, %s)", ("Anna", " Anna@Example.com", "(650) 253-0000"))
    conn.execute("INSERT INTO orders VALUES (%s, %s)", ("+1 650 253 0000", 20.0))
    rows = conn.execute("SELECT o.amount, c.name FROM orders o JOIN crm c ON o.profile_id = c.profile_id").fetchall()
    assert rows == [(20.0, "Anna")], rows
    with conn.cursor(binary=True) as cur:
        # Table functions take constants; with bound parameters use the
        # scalar profile_of().
        cur.execute("SELECT profile_id, identifiers FROM profiles WHERE profile_id = profile_of(%s, %s)", ("email", "ANNA@example.com "))
        pid, n = cur.fetchone()
        assert n == 2, n
    # The next statement sees a new link at once.
    conn.execute("INSERT INTO crm VALUES (%s, %s, %s)", ("Anna", "anna@work.example", "650.253.0000"))
    assert conn.execute("SELECT email_count FROM profiles WHERE profile_id = %s", (pid,)).fetchone() == (2,)
    got = conn.execute("SELECT profile_id FROM profile_lookup('phone', '650-253-0000')").fetchone()
    assert got == (pid,), got
    names = [r[0] for r in conn.execute("SHOW IDENTIFIERS").fetchall()]
    assert names == ["email", "phone"], names
    status = conn.execute("RESOLVE IDENTITIES").fetchone()[2]
    assert status == "graph agrees with the tables", status
    try:
        conn.execute("CREATE TABLE bad (x TEXT) WITH (identifiers = 'x AS fax')")
        raise AssertionError("no error")
    except psycopg.errors.Error as e:
        assert "unknown identifier type 'fax'" in str(e), e

# A query that would run for minutes: stopped by the statement timeout,
# then by a cancel request from another thread; each time the connection
# stays usable and the error says why, with PostgreSQL's SQLSTATE 57014.
import threading
import time

ENDLESS = "SELECT sum(value % 7) FROM generate_series(1, 100000000000)"


def expect_stopped(conn, words, cancel_after=None, *args, **kwargs):
    """Run a never-ending query; it must stop with 57014 and `words` in
    its message well before it could finish, the connection usable."""
    timer = threading.Timer(cancel_after, conn.cancel) if cancel_after else None
    if timer:
        timer.start()
    started = time.monotonic()
    try:
        conn.execute(*args, **kwargs)
        raise AssertionError("the endless query finished")
    except psycopg.errors.QueryCanceled as e:
        assert words in str(e), e
    finally:
        if timer:
            timer.cancel()
    assert time.monotonic() - started < 30, f"not stopped ({words})"
    assert conn.execute("SELECT 1").fetchone() == (1,)


with psycopg.connect(**DSN, autocommit=True) as conn:
    conn.execute("SET statement_timeout = '500ms'")
    expect_stopped(conn, "statement timeout", None, ENDLESS)
    conn.execute("SET statement_timeout = 0")
    expect_stopped(conn, "user request", 1.0, ENDLESS)
    # Over the extended protocol too (a prepared statement).
    expect_stopped(conn, "user request", 1.0, ENDLESS.replace("%", "%%") + " WHERE value > %s", (0,), prepare=True)
    # COPY (query) TO STDOUT stops too.
    conn.execute("SET statement_timeout = '500ms'")
    started = time.monotonic()
    try:
        with conn.cursor().copy("COPY (" + ENDLESS + ") TO STDOUT") as copy:
            for _ in copy:
                pass
        raise AssertionError("the endless COPY finished")
    except psycopg.errors.QueryCanceled as e:
        assert "statement timeout" in str(e), e
    assert time.monotonic() - started < 30, "the timeout did not stop the COPY"
    conn.execute("SET statement_timeout = 0")
    assert conn.execute("SELECT 1").fetchone() == (1,)
    # A write is not stopped half-way: it completes and says so.
    conn.execute("CREATE TABLE cancel_probe (x BIGINT)")
    timer = threading.Timer(0.05, conn.cancel)
    timer.start()
    conn.execute("INSERT INTO cancel_probe SELECT value FROM generate_series(1, 3000000)")
    timer.cancel()
    assert conn.execute("SELECT count(*) FROM cancel_probe").fetchone() == (3000000,)

print("psycopg ok")
