"""asyncpg (binary extended protocol, type introspection by oid) against a
running tessera server."""
import asyncio
import os

import asyncpg

PORT = int(os.environ["TESSERA_PORT"])


async def main():
    conn = await asyncpg.connect(host="127.0.0.1", port=PORT, user="tessera", database="tessera")
    await conn.execute("CREATE TABLE ev (id BIGINT NOT NULL, kind TEXT, amount DOUBLE PRECISION)")
    await conn.executemany("INSERT INTO ev VALUES ($1, $2, $3)", [(i, "k", float(i)) for i in range(50)])
    rows = await conn.fetch("SELECT id, kind, amount FROM ev WHERE id < $1 ORDER BY id", 3)
    assert [tuple(r) for r in rows] == [(0, "k", 0.0), (1, "k", 1.0), (2, "k", 2.0)], rows
    assert await conn.fetchval("SELECT count(*) FROM ev") == 50
    stmt = await conn.prepare("SELECT sum(amount) FROM ev WHERE id >= $1")
    for lo in (10, 20, 30):
        assert await stmt.fetchval(lo) == float(sum(range(lo, 50)))
    try:
        await conn.fetch("SELECT nope FROM ev")
        raise AssertionError("no error")
    except asyncpg.exceptions.UndefinedColumnError:
        pass
    await conn.close()


asyncio.run(main())
print("asyncpg ok")
