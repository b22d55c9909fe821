"""HTCondor jobs as accounting facts: condor_history / condor_q output, history files, a schedd.

Every ad is parsed and evaluated by the bindings' ClassAd library (``classad2``, shipped in the
``htcondor`` wheel). This module only frames text into single ads by the separators of the
formats (a blank line between ``-long`` ads, a ``***`` banner after each ad of a schedd history
file, a top-level ``{ ... }`` object per ``-json`` ad), so a history of any size streams in
bounded memory, block by block.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

JOB_ATTRIBUTES = (
    "GlobalJobId", "Owner", "AccountingGroup", "AcctGroup", "RequestCpus", "RequestMemory", "RequestGpus",
    "RemoteWallClockTime", "RemoteUserCpu", "RemoteSysCpu", "MemoryUsage", "ResidentSetSize", "ImageSize",
    "JobStartDate", "JobCurrentStartDate", "CompletionDate", "EnteredCurrentStatus", "JobStatus", "ExitCode",
    "ServerTime",
)  # ResidentSetSize and ImageSize: MemoryUsage and RequestMemory are usually expressions over them
IDLE, RUNNING, REMOVED, COMPLETED, HELD, TRANSFERRING_OUTPUT, SUSPENDED = 1, 2, 3, 4, 5, 6, 7
STATUS_NAMES = {1: "idle", 2: "running", 3: "removed", 4: "completed", 5: "held", 6: "transferring_output", 7: "suspended"}
QUEUE_CONSTRAINT = "JobStatus == 2 || JobStatus == 6 || JobStatus == 7 || RemoteWallClockTime > 0"
HISTORY_OVERLAP = 3600.0  # re-read this much history before the last record seen (idempotent)

_BLOCK = 1 << 20
_OLD_SEPARATOR = re.compile(r"\n(?:[ \t]*\n|\*\*\*[^\n]*\n)+")  # blank lines and history banners
_JSON_END = re.compile(r"^\}[ \t]*\r?$", re.M)  # a top-level ad closes at column 0
_ASSIGNMENT = re.compile(r"^[ \t]*[A-Za-z_][\w.]*[ \t]*=", re.M)
_JSON_KEY = re.compile(r'^([ \t]*)"(?:[^"\\\n]|\\.)*"[ \t]*:', re.M)  # captures the indentation


class HistoryError(ValueError):
    """Job records that cannot be read; the message is one line."""


def classad_module() -> Any:
    """The bindings' ClassAd module, or a one-line error naming the extra to install."""
    try:
        import classad2
    except ImportError:
        raise HistoryError("reading HTCondor records needs the bindings: pip install 'af-metrics[htcondor]'") from None
    return classad2


@dataclass(frozen=True, slots=True)
class BatchJob:
    """One HTCondor job's usage as of ``observed_at`` (settled when ``final``)."""

    global_job_id: str
    owner: str | None
    accounting_group: str | None
    group: str  # the accounting group without its user part ('' when the job has none)
    status: int
    exit_code: int | None
    final: bool  # the job has left the queue: its figures will not change
    request_cpus: float
    request_memory: float | None  # MiB
    request_gpus: float
    started: float | None  # JobStartDate: first start
    ended: float | None  # completion or removal; hold time; the observation time while running
    wall: float  # RemoteWallClockTime, plus the current run while running
    cpu: float  # RemoteUserCpu + RemoteSysCpu
    memory_usage: float | None  # MiB, peak
    attributes: Mapping[str, str | None] = field(default_factory=dict)  # what attribution rules read (None: absent)


# -- framing ---------------------------------------------------------------------------------


def ad_texts(stream: IO[str]) -> Iterator[tuple[int, str, bool]]:
    """(first line number, text, is_json) of each ad in condor_history/condor_q output or a history file."""
    buf = ""
    line = 1
    is_json: bool | None = None
    while True:
        block = stream.read(_BLOCK)
        eof = not block
        buf += block
        if is_json is None:
            head = buf.lstrip()
            if not head and not eof:
                continue
            is_json = head[:1] in ("[", "{")
        pos = 0
        for m in (_JSON_END if is_json else _OLD_SEPARATOR).finditer(buf):
            piece = buf[pos : m.start()]
            yield from _piece(piece, line, is_json)
            line += buf.count("\n", pos, m.end())
            pos = m.end()
        buf = buf[pos:]
        if eof:
            yield from _piece(buf, line, is_json, last=True)
            return


def _piece(piece: str, line: int, is_json: bool, last: bool = False) -> Iterator[tuple[int, str, bool]]:
    if is_json:
        start = piece.find("{")
        if start < 0:
            if piece.strip(" \t\r\n[],"):
                raise HistoryError(f"line {line}: unexpected text outside a JSON ad")
            return
        if piece[:start].strip(" \t\r\n[],"):
            raise HistoryError(f"line {line}: unexpected text before a JSON ad")
        line += piece.count("\n", 0, start)
        if last:
            raise HistoryError(f"line {line}: JSON ad not closed")
        yield line, piece[start:] + "}", True
    else:
        text = piece.strip("\n")
        if text.strip():
            yield line + len(piece) - len(piece.lstrip("\n")), text + "\n", False


OnBad = Callable[[HistoryError], None]  # told of an unreadable ad: raises it, or lets it be skipped


def refuse(error: HistoryError) -> None:
    """What an unreadable ad does by default: it stops the read."""
    raise error


def read_ads(stream: IO[str]) -> Iterator[Any]:
    """Each ad of ``stream`` as a ``classad2.ClassAd``; a text that is not one raises HistoryError."""
    for _, ad in located_ads(stream):
        yield ad


def located_ads(stream: IO[str], on_bad: OnBad = refuse) -> Iterator[tuple[int, Any]]:
    """(first line, ad) of each ad of ``stream``; an unreadable ad goes to ``on_bad`` (by default
    raised), and is skipped if that returns (the framing around ads is never skipped)."""
    classad2 = classad_module()
    parsers = {True: classad2.ParserType.JSON, False: classad2.ParserType.Old}
    for line, text, is_json in ad_texts(stream):
        try:
            ad = classad2.parseNext(text, parsers[is_json])
        except (classad2.ClassAdException, ValueError):  # the library raises both
            ad = None
        if ad is None or len(ad) == 0:
            error = HistoryError(f"line {line}: not a ClassAd ({text.splitlines()[0][:60]!r})")
        elif len(ad) < _attributes_in(text, is_json):  # both parsers stop quietly at a bad attribute
            error = HistoryError(f"line {line}: ClassAd with an unreadable attribute (after {len(ad)} attributes)")
        else:
            yield line, ad
            continue
        on_bad(error)


def _attributes_in(text: str, is_json: bool) -> int:
    """How many top-level attributes the text of one ad holds, by its lines."""
    if not is_json:
        return len(_ASSIGNMENT.findall(text))
    indents = [len(m) for m in _JSON_KEY.findall(text)]
    return indents.count(min(indents)) if indents else 0


def write_ads(ads: Iterable[Any], stream: IO[str], fmt: str) -> None:
    """Write ads as condor_history prints them: ``long`` (-long), ``json`` (-json) or ``file`` (history file).

    The format the tests' fixtures and the benchmark are made in, so that reading them goes
    through exactly what reads real output.
    """
    if fmt == "json":
        stream.write("[\n")
        for n, ad in enumerate(ads):
            stream.write(("" if n == 0 else ",\n") + ad.printJson() + "\n")
        stream.write("]\n")
        return
    for ad in ads:
        text = ad.printOld()
        if fmt == "file":
            stream.write(f"{text}*** ProcId = {ad.get('ProcId', 0)} ClusterId = {ad.get('ClusterId', 0)} Owner = \"{ad.get('Owner', '')}\" CompletionDate = {ad.get('CompletionDate', 0)}\n")
        elif fmt == "long":
            stream.write(text + "\n")
        else:
            raise ValueError(f"unknown format {fmt!r}")


# -- ads to facts ----------------------------------------------------------------------------


def _value(ad: Any, name: str) -> Any:
    """The evaluated attribute, or None when absent, undefined or an error."""
    value = ad.get(name)  # a literal comes back as its value, an expression as an ExprTree
    if value is not None and type(value) not in _LITERALS:
        value = ad.eval(name)
    return value if type(value) in _LITERALS else None  # not classad2.Value (undefined, error), an IntEnum


_LITERALS = (str, int, float, bool)


def _number(ad: Any, name: str, default: float | None = None) -> float | None:
    value = _value(ad, name)
    if type(value) not in (int, float):
        return default
    return float(value)


def group_of(ad_group: str | None, accounting_group: str | None) -> str:
    """The accounting group without its user part: AcctGroup, else AccountingGroup up to its last dot."""
    if ad_group:
        return ad_group
    if accounting_group:
        return accounting_group.rpartition(".")[0]
    return ""


def job_from_ad(ad: Any, *, final: bool, observed_at: float, attributes: Sequence[str] = ()) -> BatchJob:
    """The accounting fact of one job ad (history: ``final``; queue: counted up to ``observed_at``)."""
    gid = _value(ad, "GlobalJobId")
    if not isinstance(gid, str) or not gid:
        raise HistoryError("job ad without GlobalJobId")
    status = int(_number(ad, "JobStatus", 0) or 0)
    wall = max(0.0, _number(ad, "RemoteWallClockTime", 0.0) or 0.0)
    started = _number(ad, "JobStartDate") or None
    entered = _number(ad, "EnteredCurrentStatus") or None
    if final:
        ended = _number(ad, "CompletionDate") or entered
    elif status in (RUNNING, TRANSFERRING_OUTPUT, SUSPENDED):
        now = _number(ad, "ServerTime") or observed_at
        current = _number(ad, "JobCurrentStartDate") or started
        if current is not None:
            wall += max(0.0, now - current)  # RemoteWallClockTime only grows when a run ends
        ended = now
    else:  # idle again or held after running: counted up to when it stopped
        ended = entered
    cpu = (_number(ad, "RemoteUserCpu", 0.0) or 0.0) + (_number(ad, "RemoteSysCpu", 0.0) or 0.0)
    owner = _value(ad, "Owner")
    acct = _value(ad, "AccountingGroup")
    acct_group = _value(ad, "AcctGroup")
    exit_code = _number(ad, "ExitCode")
    values: dict[str, str | None] = {}
    for name in attributes:  # absent ones too: re-attribution must know they were asked for
        v = _value(ad, name)
        values[name] = v if v is None or isinstance(v, str) else str(v)
    return BatchJob(
        global_job_id=gid,
        owner=owner if isinstance(owner, str) else None,
        accounting_group=acct if isinstance(acct, str) else None,
        group=group_of(acct_group if isinstance(acct_group, str) else None, acct if isinstance(acct, str) else None),
        status=status,
        exit_code=None if exit_code is None else int(exit_code),
        final=final,
        request_cpus=max(0.0, _number(ad, "RequestCpus", 1.0) or 0.0),
        request_memory=_number(ad, "RequestMemory"),
        request_gpus=max(0.0, _number(ad, "RequestGpus", 0.0) or 0.0),
        started=started,
        ended=ended,
        wall=wall,
        cpu=max(0.0, cpu),
        memory_usage=_number(ad, "MemoryUsage"),
        attributes=values,
    )


def jobs_from_stream(stream: IO[str], *, final: bool, observed_at: float, attributes: Sequence[str] = (),
                     on_bad: OnBad = refuse) -> Iterator[BatchJob]:
    for line, ad in located_ads(stream, on_bad):
        try:
            job = job_from_ad(ad, final=final, observed_at=observed_at, attributes=attributes)
        except HistoryError as exc:
            on_bad(HistoryError(f"line {line}: {exc}"))
            continue
        yield job


# -- a live schedd ---------------------------------------------------------------------------


@dataclass
class Schedd:
    """A schedd read through the htcondor bindings: finished jobs from its history, running from its queue."""

    name: str = ""
    pool: str = ""

    def _schedd(self) -> Any:
        try:
            import htcondor2
        except ImportError:
            raise HistoryError("reading a schedd needs the bindings: pip install 'af-metrics[htcondor]'") from None
        try:
            collector = htcondor2.Collector(self.pool) if self.pool else htcondor2.Collector()
            location = collector.locate(htcondor2.DaemonType.Schedd, self.name) if self.name else collector.locate(htcondor2.DaemonType.Schedd)
            return htcondor2.Schedd(location)
        except Exception as exc:  # the bindings raise HTCondorException, ValueError, RuntimeError...
            raise HistoryError(f"cannot locate schedd {self.name or '(local)'}: {_one_line(exc)}") from None

    def history(self, since: float | None, attributes: Sequence[str]) -> list[Any]:
        """Job ads that entered the history after ``since`` (less an overlap), newest first."""
        schedd = self._schedd()
        stop = None if since is None else f"EnteredCurrentStatus < {int(since - HISTORY_OVERLAP)}"
        try:
            return list(schedd.history(None, list(dict.fromkeys((*JOB_ATTRIBUTES, *attributes))), -1, stop))
        except Exception as exc:
            raise HistoryError(f"schedd history query failed: {_one_line(exc)}") from None

    def queue(self, attributes: Sequence[str]) -> list[Any]:
        """Ads of jobs running now, or that ran and wait again (held, idle)."""
        schedd = self._schedd()
        try:
            return list(schedd.query(QUEUE_CONSTRAINT, list(dict.fromkeys((*JOB_ATTRIBUTES, *attributes)))))
        except Exception as exc:
            raise HistoryError(f"schedd queue query failed: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__
