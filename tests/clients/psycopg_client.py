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

print("psycopg ok")
