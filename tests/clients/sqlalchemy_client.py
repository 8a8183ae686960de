"""SQLAlchemy table reflection against a running tessera server."""
import os

import sqlalchemy as sa

PORT = int(os.environ["TESSERA_PORT"])
engine = sa.create_engine(f"postgresql+psycopg://tessera@127.0.0.1:{PORT}/tessera")
with engine.connect() as conn:
    conn.execute(sa.text("CREATE TABLE accounts (id BIGINT NOT NULL, owner TEXT, balance DOUBLE PRECISION)"))
    conn.execute(sa.text("INSERT INTO accounts VALUES (1, 'anna', 10.5)"))
    conn.commit()
inspector = sa.inspect(engine)
assert "accounts" in inspector.get_table_names(), inspector.get_table_names()
columns = {c["name"]: c for c in inspector.get_columns("accounts")}
assert set(columns) == {"id", "owner", "balance"}, columns
assert not columns["id"]["nullable"]
assert inspector.get_pk_constraint("accounts")["constrained_columns"] == []
# Full Table(autoload_with=...) also asks for pg_class.reloptions, which the
# catalog does not have yet; build the table from the reflected columns.
table = sa.Table("accounts", sa.MetaData(), *[sa.Column(c["name"], c["type"], nullable=c["nullable"]) for c in columns.values()])
with engine.connect() as conn:
    assert conn.execute(sa.select(table.c.owner).where(table.c.id == 1)).scalar() == "anna"
print("sqlalchemy ok")
