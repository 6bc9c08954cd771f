"""The collector's `rejected` table keeps only the newest KEEP_REJECTED_ROWS messages (issue 10: bad payloads are
kept aside without growing without bound), in SQLite and PostgreSQL; the counts stay exact."""

from __future__ import annotations

import pytest

from slm import fleet_db
from slm.collect import Collector
from slm.fleet_db import open_db

from tests.services import Postgres


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield str(tmp_path / "fleet.sqlite")
        return
    with Postgres() as pg:
        yield pg.url


def test_rejected_table_keeps_the_newest_rows_only(db_url, monkeypatch):
    monkeypatch.setattr(fleet_db, "KEEP_REJECTED_ROWS", 50)
    collector = Collector(open_db(db_url))
    for batch in range(6):
        for i in range(20):
            collector.handle("slm/square/dev1/minute", b"not json %d" % (batch * 20 + i), "2026-07-15T12:00:00.000Z")
        collector.commit()
    assert sum(collector.counts.rejected.values()) == 120
    rows = collector.db.query("SELECT payload FROM rejected ORDER BY id")
    collector.db.close()
    assert [r[0] for r in rows] == ["not json %d" % n for n in range(70, 120)]
