"""The ledger: a durable, idempotent store of facility facts on SQLite or PostgreSQL.

Every write is keyed by a natural key and applied in one transaction, so a poll replayed or
interrupted (SIGKILL included) leaves no duplicate and loses nothing that was committed.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from af_metrics.facts import SpawnHistogram, UserSeen
from af_metrics.ledger.schema import (
    INF_LE,
    ledger_properties,
    session_hours,
    sessions,
    source_state,
    spawn_buckets,
    spawns,
    users,
)
from af_metrics.sessions import Decision, OpenRun
from af_metrics.timeutil import day_of, hour_floor, hour_slices

MIGRATIONS = Path(__file__).with_name("migrations")
FAILED_STATUSES = ("failure", "error")  # the hub's spawn histogram statuses of failed spawns
MIGRATION_LOCK = 0x61666D6574726963  # PostgreSQL advisory lock key held while migrating ("afmetric")


class LedgerError(RuntimeError):
    """The ledger cannot be opened or used; the message is one readable line."""


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A whole session, as imported or simulated."""

    user: str
    server: str
    profile: str | None
    started: float
    ended: float | None
    source: str
    last_activity: float | None = None


@dataclass(frozen=True, slots=True)
class SpawnRecord:
    user: str
    server: str
    profile: str | None
    started: float
    outcome: str
    duration: float | None
    source: str


def redact_url(url: str) -> str:
    """The URL with any password replaced, for messages and listings."""
    return re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url)


def engine_for(url: str) -> Engine:
    """An engine for a ledger URL; SQLite gets WAL and a parent directory."""
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001 - DB-API objects
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    if url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise LedgerError("PostgreSQL ledgers need psycopg: pip install 'af-metrics[postgres]'") from None
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
        return sa.create_engine(url, pool_pre_ping=True)
    raise LedgerError(f"unsupported ledger URL {redact_url(url)!r}: use sqlite:///path.db or postgresql://user@host/db")


def _alembic_config(conn: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    return cfg


class Ledger:
    """Facade over the ledger database. ``Ledger.open(url)`` migrates it to the newest schema."""

    def __init__(self, engine: Engine, tz: str = "UTC") -> None:
        self.engine = engine
        self.tz = tz

    @classmethod
    def open(cls, url: str, tz: str = "UTC", migrate: bool = True) -> "Ledger":
        engine = engine_for(url)
        ledger = cls(engine, tz)
        try:
            if migrate:
                ledger.migrate()
            else:
                ledger.check_version()
            ledger.check_timezone(record=migrate)
        except sa.exc.OperationalError as exc:
            raise LedgerError(f"cannot open ledger {engine.url.render_as_string(hide_password=True)}: {exc.orig}") from None
        return ledger

    # -- schema ---------------------------------------------------------------------------

    def migrate(self) -> None:
        """All or nothing, one process at a time: a kill mid-way or two first opens at once must
        not leave a half-made ledger."""
        with self.engine.connect() as conn:
            if self.dialect == "sqlite":
                # pysqlite commits each DDL statement at once: hold one real transaction instead,
                # taking the write lock first so that a concurrent migrator waits for us
                dbapi = conn.connection.driver_connection
                dbapi.isolation_level = None
                try:
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                    command.upgrade(_alembic_config(conn), "head")
                    conn.commit()
                finally:
                    if dbapi.in_transaction:
                        dbapi.rollback()
                    dbapi.isolation_level = ""
            else:
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
                command.upgrade(_alembic_config(conn), "head")
                conn.commit()

    def version(self) -> str | None:
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def check_version(self) -> None:
        head = ScriptDirectory.from_config(_alembic_config(None)).get_current_head()  # type: ignore[arg-type]
        if self.version() != head:
            raise LedgerError(f"ledger schema is at {self.version()}, this af-metrics needs {head}: run 'af-metrics db upgrade'")

    def check_timezone(self, record: bool = True) -> None:
        """Days and hours are cut in the facility's time zone as facts are written, so one ledger
        keeps one zone: the first open records it (unless ``record`` is false), later opens in
        another zone are refused rather than mixing days cut two ways."""
        with self.engine.begin() as conn:
            if record:
                conn.execute(self.insert(ledger_properties).values(name="timezone", value=self.tz).on_conflict_do_nothing())
            kept = conn.execute(sa.select(ledger_properties.c.value).where(ledger_properties.c.name == "timezone")).scalar()
        if kept is not None and kept != self.tz:
            raise LedgerError(
                f"this ledger keeps days in time zone {kept!r}, the configuration says {self.tz!r}: set timezone = {kept!r}"
            )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    def insert(self, table: sa.Table):  # noqa: ANN201 - dialect-specific Insert
        """An INSERT for this ledger's dialect, so writers can add ON CONFLICT clauses."""
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    # -- users ----------------------------------------------------------------------------

    def user_ids(self, conn: Connection, names: Iterable[str], seen_at: float) -> dict[str, int]:
        """Ids for ``names``, creating users first seen now."""
        names = sorted(set(names))
        if not names:
            return {}
        rows = [{"name": n, "first_seen": seen_at, "last_seen": seen_at} for n in names]
        for chunk in chunks(rows, 500):
            conn.execute(self.insert(users).on_conflict_do_nothing(index_elements=["name"]), chunk)
        ids: dict[str, int] = {}
        for chunk in chunks(names, 500):
            ids.update(conn.execute(sa.select(users.c.name, users.c.id).where(users.c.name.in_(chunk))).all())
        return ids

    def record_users(self, seen: Sequence[UserSeen], seen_at: float) -> None:
        """Upsert the hub's user listing: creation time, last activity, last seen."""
        with self.begin() as conn:
            ids = self.user_ids(conn, (u.name for u in seen), seen_at)
            params = [
                {"uid": ids[u.name], "created": u.created, "act": u.last_activity, "seen": seen_at} for u in seen
            ]
            if params:
                conn.execute(
                    users.update()
                    .where(users.c.id == sa.bindparam("uid"))
                    .values(
                        created=sa.func.coalesce(users.c.created, sa.bindparam("created")),
                        last_activity=sa.bindparam("act"),
                        last_seen=sa.bindparam("seen"),
                    ),
                    params,
                )

    # -- the collector's view -------------------------------------------------------------

    def open_runs(self) -> tuple[list[OpenRun], list[OpenRun]]:
        """Open sessions and pending spawn attempts, as ``sessions.decide`` needs them."""
        with self.engine.connect() as conn:
            open_sessions = [
                OpenRun(*row)
                for row in conn.execute(
                    sa.select(users.c.name, sessions.c.server, sessions.c.started, sessions.c.last_activity, sessions.c.last_seen)
                    .join(users, users.c.id == sessions.c.user_id)
                    .where(sessions.c.ended.is_(None))
                )
            ]
            pending = [
                OpenRun(name, server, started, None, started)
                for name, server, started in conn.execute(
                    sa.select(users.c.name, spawns.c.server, spawns.c.started)
                    .join(users, users.c.id == spawns.c.user_id)
                    .where(spawns.c.outcome == "pending")
                )
            ]
        return open_sessions, pending

    def apply(self, decision: Decision, observed_at: float, histogram: SpawnHistogram | None = None, source: str = "hub") -> None:
        """Write one poll's decision (and hub histogram increase) in a single transaction.

        Statements are batched (one executemany per kind), so a poll of thousands of running
        servers costs a handful of round trips.
        """
        with self.begin() as conn:
            ids = self.user_ids(conn, decision.users() | {e.key[0] for e in decision.ended}, observed_at)
            touched = self._upsert_running(conn, ids, decision.seen, source)
            if decision.ended:
                conn.execute(
                    sessions.update()
                    .where(
                        sessions.c.user_id == sa.bindparam("uid"),
                        sessions.c.server == sa.bindparam("srv"),
                        sessions.c.started == sa.bindparam("st"),
                        sessions.c.ended.is_(None),
                    )
                    .values(ended=sa.bindparam("end"), end_reason=sa.bindparam("why")),
                    [{"uid": ids[e.key[0]], "srv": e.key[1], "st": e.key[2], "end": e.ended, "why": e.reason} for e in decision.ended],
                )
                touched += self._session_ids(conn, [(ids[e.key[0]], e.key[1], e.key[2]) for e in decision.ended])
            self._upsert_spawns(conn, ids, decision.spawns, source)
            seen_users = decision.users()
            if seen_users:
                conn.execute(
                    users.update()
                    .where(users.c.id.in_([ids[u] for u in seen_users]))
                    .values(last_seen=sa.case((users.c.last_seen < observed_at, observed_at), else_=users.c.last_seen))
                )
            self._materialise(conn, touched)
            if histogram is not None:
                self._record_histogram(conn, histogram)

    def _session_ids(self, conn: Connection, keys: Sequence[tuple[int, str, float]]) -> list[int]:
        wanted = set(keys)
        uids = sorted({k[0] for k in keys})
        found: list[int] = []
        for chunk in chunks(uids, 500):
            rows = conn.execute(
                sa.select(sessions.c.id, sessions.c.user_id, sessions.c.server, sessions.c.started).where(sessions.c.user_id.in_(chunk))
            )
            found += [sid for sid, uid, srv, st in rows if (uid, srv, st) in wanted]
        return found

    def _upsert_running(self, conn: Connection, ids: dict[str, int], seen: Sequence, source: str) -> list[int]:
        """Open or extend running sessions; returns their ids."""
        if not seen:
            return []
        stmt = self.insert(sessions)
        newer = sa.and_(stmt.excluded.last_seen > sessions.c.last_seen, stmt.excluded.last_seen > sa.func.coalesce(sessions.c.ended, 0.0))
        stmt = stmt.on_conflict_do_update(
            index_elements=["user_id", "server", "started"],
            set_={
                # an observation older than what the ledger knows (a replayed or late poll)
                # neither reopens a closed session nor moves its times back
                "last_activity": sa.case(
                    (sa.or_(sessions.c.last_activity.is_(None), stmt.excluded.last_activity > sessions.c.last_activity),
                     stmt.excluded.last_activity),
                    else_=sessions.c.last_activity,
                ),
                "last_seen": sa.case(
                    (stmt.excluded.last_seen > sessions.c.last_seen, stmt.excluded.last_seen), else_=sessions.c.last_seen
                ),
                "profile": sa.func.coalesce(sessions.c.profile, stmt.excluded.profile),
                "ended": sa.case((newer, None), else_=sessions.c.ended),
                "end_reason": sa.case((newer, None), else_=sessions.c.end_reason),
            },
        ).returning(sessions.c.id)
        params = [
            {
                "user_id": ids[s.user], "server": s.server, "profile": s.profile, "started": s.started,
                "last_activity": s.last_activity, "last_seen": s.seen_at, "source": source,
            }
            for s in seen
        ]
        return [row[0] for chunk in chunks(params, 1000) for row in conn.execute(stmt, chunk)]

    def _upsert_spawns(self, conn: Connection, ids: dict[str, int], seen: Sequence, source: str) -> None:
        """Record spawn attempts; a settled outcome is final, a pending one may still settle."""
        if not seen:
            return
        stmt = self.insert(spawns)
        stmt = stmt.on_conflict_do_update(
            index_elements=["user_id", "server", "started"],
            set_={
                "outcome": stmt.excluded.outcome,
                "finished": stmt.excluded.finished,
                "duration": stmt.excluded.duration,
                "profile": sa.func.coalesce(spawns.c.profile, stmt.excluded.profile),
            },
            where=spawns.c.outcome == "pending",
        )
        params = [
            {
                "user_id": ids[s.user], "server": s.server, "profile": s.profile, "started": s.started,
                "outcome": s.outcome, "finished": s.finished, "duration": s.duration, "source": source,
            }
            for s in seen
        ]
        for chunk in chunks(params, 1000):
            conn.execute(stmt, chunk)

    # -- session hours (the activity index every engagement KPI reads) --------------------

    def _materialise(self, conn: Connection, session_ids: Sequence[int]) -> None:
        """Bring ``session_hours`` up to date for these sessions, from the hour where it stopped.

        Rows are upserted, so extending a running session rewrites only its current hour; rows
        are deleted only when a session ended before what was materialised (closed at its last
        activity, say).
        """
        if not session_ids:
            return
        hours: list[dict] = []
        trims: list[dict] = []
        marks: list[dict] = []
        for chunk in chunks(sorted(set(session_ids)), 500):
            rows = conn.execute(
                sa.select(
                    sessions.c.id, sessions.c.user_id, sessions.c.started, sessions.c.ended,
                    sessions.c.last_seen, sessions.c.hours_until,
                ).where(sessions.c.id.in_(chunk))
            ).all()
            for sid, uid, started, ended, last_seen, hours_until in rows:
                until = ended if ended is not None else max(last_seen, started)
                resume = started if hours_until is None else max(started, hour_floor(min(hours_until, until), self.tz))
                if hours_until is not None and until < hours_until:
                    trims.append({"sid": sid, "from": hour_floor(resume, self.tz)})
                hours.extend(_hour_rows(sid, uid, resume, until, self.tz))
                marks.append({"sid": sid, "until": until})
        if trims:
            conn.execute(
                session_hours.delete().where(
                    session_hours.c.session_id == sa.bindparam("sid"), session_hours.c.hour_start >= sa.bindparam("from")
                ),
                trims,
            )
        if hours:
            stmt = self.insert(session_hours)
            stmt = stmt.on_conflict_do_update(
                index_elements=["session_id", "hour_start"], set_={"seconds": stmt.excluded.seconds}
            )
            for chunk in chunks(hours, 2000):
                conn.execute(stmt, chunk)
        conn.execute(
            sessions.update().where(sessions.c.id == sa.bindparam("sid")).values(hours_until=sa.bindparam("until")), marks
        )

    # -- bulk history (import, simulate) --------------------------------------------------

    def add_history(self, records: Sequence[SessionRecord], spawn_records: Sequence[SpawnRecord] = (), now: float | None = None) -> int:
        """Insert whole sessions that are not in the ledger yet; returns how many were new.

        One transaction: either every record is written or none is.
        """
        now = time.time() if now is None else now
        with self.begin() as conn:
            return self.add_history_in(conn, records, spawn_records, now)

    def add_history_in(self, conn: Connection, records: Sequence[SessionRecord], spawn_records: Sequence[SpawnRecord], now: float) -> int:
        ids = self._history_users(conn, _user_spans(records, spawn_records), now)
        new = 0
        for chunk in chunks(list(records), 1000):
            values = [
                {
                    "user_id": ids[r.user], "server": r.server, "profile": r.profile, "started": r.started,
                    "ended": r.ended, "last_activity": r.last_activity if r.last_activity is not None else r.ended,
                    "last_seen": r.ended if r.ended is not None else now,
                    "end_reason": None if r.ended is None else r.source, "source": r.source,
                    "hours_until": r.ended if r.ended is not None else now,
                }
                for r in chunk
            ]
            inserted = conn.execute(
                self.insert(sessions)
                .on_conflict_do_nothing(index_elements=["user_id", "server", "started"])
                .returning(sessions.c.id, sessions.c.user_id, sessions.c.started, sessions.c.hours_until),
                values,
            ).all()
            hours: list[dict] = []
            for sid, uid, started, until in inserted:
                hours.extend(_hour_rows(sid, uid, started, until, self.tz))
            for hchunk in chunks(hours, 5000):
                conn.execute(session_hours.insert(), hchunk)
            new += len(inserted)
        for chunk in chunks(list(spawn_records), 1000):
            conn.execute(
                self.insert(spawns).on_conflict_do_nothing(index_elements=["user_id", "server", "started"]),
                [
                    {
                        "user_id": ids[s.user], "server": s.server, "profile": s.profile, "started": s.started,
                        "outcome": s.outcome, "duration": s.duration, "source": s.source,
                        "finished": None if s.duration is None else s.started + s.duration,
                    }
                    for s in chunk
                ],
            )
        return new

    def _history_users(self, conn: Connection, spans: dict[str, tuple[float, float]], now: float) -> dict[str, int]:
        """Ids of a history's users; each user's first_seen/last_seen widened to cover its span."""
        rows = [{"name": n, "first_seen": lo, "last_seen": hi} for n, (lo, hi) in sorted(spans.items())]
        for chunk in chunks(rows, 500):
            conn.execute(self.insert(users).on_conflict_do_nothing(index_elements=["name"]), chunk)
        ids = self.user_ids(conn, spans, now)
        lo, hi = sa.bindparam("lo"), sa.bindparam("hi")
        for chunk in chunks([{"uid": ids[r["name"]], "lo": r["first_seen"], "hi": r["last_seen"]} for r in rows], 1000):
            conn.execute(
                users.update()
                .where(users.c.id == sa.bindparam("uid"))
                .values(
                    first_seen=sa.case((users.c.first_seen > lo, lo), else_=users.c.first_seen),
                    last_seen=sa.case((users.c.last_seen < hi, hi), else_=users.c.last_seen),
                ),
                chunk,
            )
        return ids

    # -- hub spawn histogram --------------------------------------------------------------

    def _record_histogram(self, conn: Connection, hist: SpawnHistogram) -> None:
        """Store the increase of the hub's spawn histogram since the last observation.

        Counter resets (hub restart) are handled like Prometheus ``increase``: a count lower
        than before starts again from zero.
        """
        rows = [
            {"observed_at": hist.observed_at, "status": status, "le": min(le, INF_LE), "day": day_of(hist.observed_at, self.tz), "count": delta}
            for (status, le), delta in _increase(self.get_state(conn, "hub_spawn_histogram") or {}, hist).items()
            if delta > 0
        ]
        if rows:
            conn.execute(self.insert(spawn_buckets).on_conflict_do_nothing(), rows)
        self.set_state(conn, "hub_spawn_histogram", {f"{status}|{le}": n for (status, le), n in hist.buckets.items()}, hist.observed_at)

    def failed_spawns_since_last(self, hist: SpawnHistogram) -> tuple[int, float | None]:
        """How many spawns the hub counts as failed since the histogram stored last, and when
        that was (None: never, so nothing is known of what came before)."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(source_state.c.state, source_state.c.updated).where(source_state.c.source == "hub_spawn_histogram")).first()
        if row is None:
            return 0, None
        increase = _increase(json.loads(row.state), hist)
        return round(sum(n for (status, le), n in increase.items() if status in FAILED_STATUSES and le == float("inf"))), row.updated

    def failure_recorded(self, user: str, server: str, at: float) -> bool:
        """Whether a failed spawn of this server that the hub stopped at ``at`` is in the ledger
        (settled by a poll that saw it pending, or found before)."""
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(sa.literal(1)).select_from(spawns.join(users, users.c.id == spawns.c.user_id))
                .where(users.c.name == user, spawns.c.server == server, spawns.c.outcome == "failure",
                       sa.or_(spawns.c.finished == at, spawns.c.started == at))
                .limit(1)
            ).first() is not None

    def add_spawn_buckets(self, conn: Connection, rows: Sequence[dict]) -> None:
        for chunk in chunks(list(rows), 2000):
            conn.execute(self.insert(spawn_buckets).on_conflict_do_nothing(), chunk)

    # -- small key/value state for sources ------------------------------------------------

    def get_state(self, conn: Connection, source: str) -> dict | None:
        raw = conn.execute(sa.select(source_state.c.state).where(source_state.c.source == source)).scalar()
        return None if raw is None else json.loads(raw)

    def set_state(self, conn: Connection, source: str, state: dict, at: float) -> None:
        stmt = self.insert(source_state).values(source=source, state=json.dumps(state), updated=at)
        conn.execute(stmt.on_conflict_do_update(index_elements=["source"], set_={"state": stmt.excluded.state, "updated": stmt.excluded.updated}))


def _increase(prev: dict[str, float], hist: SpawnHistogram) -> dict[tuple[str, float], float]:
    """Per (status, le): the histogram's increase over the stored counts ``prev``."""
    out = {}
    for (status, le), count in hist.buckets.items():
        before = prev.get(f"{status}|{le}")
        delta = count if before is None or count < before else count - before
        out[(status, le)] = 0.0 if before is None and not prev else delta  # first observation ever: history unknown
    return out


def _user_spans(records: Sequence[SessionRecord], spawn_records: Sequence[SpawnRecord]) -> dict[str, tuple[float, float]]:
    """Per user: earliest start and latest end in a history (a running session: its start, so
    that adding the same history again changes nothing)."""
    spans: dict[str, tuple[float, float]] = {}
    times = [(r.user, r.started, r.started if r.ended is None else r.ended) for r in records]
    times += [(s.user, s.started, s.started + (s.duration or 0.0)) for s in spawn_records]
    for user, lo, hi in times:
        old = spans.get(user)
        spans[user] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
    return spans


def _hour_rows(sid: int, uid: int, start: float, end: float, tz: str) -> Iterator[dict]:
    for hour_start, day, how, seconds in hour_slices(start, end, tz):
        yield {"session_id": sid, "hour_start": hour_start, "user_id": uid, "day": day, "how": how, "seconds": seconds}


def chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    """Consecutive slices of at most ``size`` items: statements with bounded parameter lists."""
    for i in range(0, len(items), size):
        yield items[i : i + size]
