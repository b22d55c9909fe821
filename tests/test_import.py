"""``af-metrics import sessions``: a CSV backfill that is checked whole, written once, never twice."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from af_metrics.cli import cli
from af_metrics.ledger.schema import session_hours, sessions, spawns, users
from af_metrics.ledger.store import Ledger

TZ = "Europe/Zurich"
HEADER = "user,server,profile,start,end"
VALID = [
    "alice,,cms-image,2025-01-05T09:00:00+01:00,2025-01-05T10:30:00+01:00",
    "alice,gpu,,2025-01-05T23:30:00+01:00,2025-01-06T00:45:00+01:00",  # named server, across midnight
    "bob,,root,2025-01-06T08:15:00Z,2025-01-06T08:45:00Z",
    "carol,,,2025-01-07T10:00:00+01:00,",  # still running
]


def write_csv(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_import(url: str, path: Path):  # noqa: ANN201 - click's Result
    return CliRunner().invoke(cli, ["import", "sessions", str(path), "--ledger", url], env={"AF_METRICS_TIMEZONE": TZ})


def dump(url: str) -> dict[str, list[dict]]:
    """Every row the import may touch, in a stable order."""
    ledger = Ledger.open(url, tz=TZ)
    try:
        with ledger.engine.connect() as conn:
            return {
                table.name: [row._asdict() for row in conn.execute(sa.select(table).order_by(*table.primary_key.columns))]
                for table in (users, sessions, session_hours, spawns)
            }
    finally:
        ledger.engine.dispose()


def day(text: str) -> int:
    return dt.date.fromisoformat(text).toordinal()


def test_import_writes_sessions_and_hours_once(ledger_url: str, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "sessions.csv", HEADER, *VALID)
    first = run_import(ledger_url, path)
    assert first.exit_code == 0, first.output
    assert first.stdout.strip() == f"{path}: 4 sessions, 4 new, 0 already present"

    rows = dump(ledger_url)
    names = {u["id"]: u["name"] for u in rows["users"]}
    assert sorted((names[s["user_id"]], s["server"], s["profile"], s["ended"] is None, s["source"]) for s in rows["sessions"]) == [
        ("alice", "", "cms-image", False, "import"),
        ("alice", "gpu", None, False, "import"),
        ("bob", "", "root", False, "import"),
        ("carol", "", None, True, "import"),
    ]
    seconds: dict[tuple[str, int], float] = {}
    for h in rows["session_hours"]:
        key = (names[h["user_id"]], h["day"])
        seconds[key] = seconds.get(key, 0.0) + h["seconds"]
    assert seconds.pop(("alice", day("2025-01-05"))) == 5400 + 1800
    assert seconds.pop(("alice", day("2025-01-06"))) == 2700
    assert seconds.pop(("bob", day("2025-01-06"))) == 1800
    # the running session counts from its start up to the import, on every day since
    assert seconds.pop(("carol", day("2025-01-07"))) == 14 * 3600
    assert {user for user, _ in seconds} == {"carol"}
    first_seen = {u["name"]: u["first_seen"] for u in rows["users"]}
    assert first_seen["alice"] == dt.datetime.fromisoformat("2025-01-05T09:00:00+01:00").timestamp()
    assert first_seen["bob"] == dt.datetime.fromisoformat("2025-01-06T08:15:00+00:00").timestamp()

    second = run_import(ledger_url, path)
    assert second.exit_code == 0, second.output
    assert second.stdout.strip() == f"{path}: 4 sessions, 0 new, 4 already present"
    assert dump(ledger_url) == rows


LONG = "x" * 256
BAD_ROWS = {
    "bad timestamp": ("dave,,,yesterday,2025-01-05T10:00:00+01:00", "start 'yesterday' is not an ISO 8601 timestamp"),
    "missing start": ("dave,,,,2025-01-05T10:00:00+01:00", "start is empty"),
    "no offset": (
        "dave,,,2025-01-05T09:00:00,2025-01-05T10:00:00+01:00",
        "start 2025-01-05T09:00:00 has no UTC offset (write e.g. 2025-01-05T09:00:00+00:00)",
    ),
    "end before start": (
        "dave,,,2025-01-05T09:00:00+01:00,2025-01-05T08:59:59+01:00",
        "end 2025-01-05T08:59:59+01:00 is before start 2025-01-05T09:00:00+01:00",
    ),
    "empty user": (",,,2025-01-05T09:00:00+01:00,2025-01-05T10:00:00+01:00", "user is empty"),
    "too few columns": ("dave,,2025-01-05T09:00:00+01:00,2025-01-05T10:00:00+01:00", f"expected 5 columns ({HEADER}), found 4"),
    "too many columns": ("dave,,,2025-01-05T09:00:00+01:00,,x", f"expected 5 columns ({HEADER}), found 6"),
    "over-long user": (f"{LONG},,,2025-01-05T09:00:00+01:00,", "user is longer than 255 characters"),
    "over-long profile": (f"dave,,{LONG},2025-01-05T09:00:00+01:00,", "profile is longer than 255 characters"),
    "in the future": ("dave,,,2025-01-05T09:00:00+01:00,2999-01-01T00:00:00Z", "end 2999-01-01T00:00:00Z is in the future"),
    "before 2000": ("dave,,,1999-12-31T23:00:00Z,2025-01-05T10:00:00+01:00", "start 1999-12-31T23:00:00Z is before 2000-01-01"),
    "same key twice": (VALID[1].replace("23:30:00+01:00,2025-01-06T00:45", "23:30:00+01:00,2025-01-06T00:50"), "same user, server and start as line 3"),
    "unterminated quote": ('dave,,"cms,2025-01-05T09:00:00+01:00,', "unexpected end of data"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_malformed_row_is_one_line_with_its_number_and_nothing_is_written(case: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert run_import(url, write_csv(tmp_path / "before.csv", HEADER, "erin,,,2025-01-02T10:00:00Z,2025-01-02T11:00:00Z")).exit_code == 0
    before = dump(url)
    bad, message = BAD_ROWS[case]
    path = write_csv(tmp_path / "sessions.csv", HEADER, *VALID[:3], bad, *VALID[3:])
    result = run_import(url, path)
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert [line for line in result.stderr.splitlines() if line.startswith("Error")] == [f"Error: {path}:5: {message}"]
    assert dump(url) == before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (f"user,server,profile,start\n{VALID[0]}\n".encode(), f"1: header must be {HEADER}, found 'user,server,profile,start'"),
        (b"", f"1: empty file: expected the header {HEADER}"),
        (f"{HEADER}\n{VALID[0]}\nb\xe9a,,,2025-01-05T09:00:00+01:00,\n".encode("latin-1"), "3: not UTF-8 text"),
        (f"{HEADER}\n{VALID[0]}\n\n{VALID[2]},".encode(), "4: expected 5 columns"),  # blank lines count
    ],
    ids=["wrong header", "empty file", "not utf-8", "line numbers count blank lines"],
)
def test_malformed_file_names_its_line(content: bytes, message: str, ledger_url: str, tmp_path: Path) -> None:
    path = tmp_path / "sessions.csv"
    path.write_bytes(content)
    result = run_import(ledger_url, path)
    assert result.exit_code != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and errors[0].startswith(f"Error: {path}:{message}"), result.output
    assert all(not rows for rows in dump(ledger_url).values())


def test_excel_bom_and_crlf_are_read(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    path = tmp_path / "excel.csv"
    path.write_bytes(("\ufeff" + "\r\n".join([HEADER, *VALID[:2]]) + "\r\n").encode("utf-8"))
    result = run_import(url, path)
    assert result.exit_code == 0, result.output
    assert [(r["server"], r["profile"]) for r in dump(url)["sessions"]] == [("", "cms-image"), ("gpu", None)]
