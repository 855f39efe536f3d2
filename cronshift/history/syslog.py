"""Cron's own log lines (Debian/Ubuntu cron, cronie, anacron, run-parts) turned into per-job evidence.

The parser works on bytes and keeps a small state per contiguous piece of log (a `Segment`): the runs that
started and have not ended yet, keyed the way each daemon links its lines. Debian cron links by the job's pid
(`CMD ([pid] ...)`, `grandchild #pid`, `CRON[pid]: END`), never by order, because jobs started in the same
second interleave. cronie's `CMDEND` has no pid link, so it pairs with the oldest open run of the same user
and command, and says so (`guessed`) when two runs of it overlapped. Segments can be parsed in separate
processes and joined: the end lines a segment could not pair are replayed against the previous one.
"""

from __future__ import annotations

import calendar
import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from cronshift.history.events import CMD_ONLY, END, STATUS, History, JobEvidence, UnmatchedEvidence
from cronshift.history.match import Matcher
from cronshift.model import RunRecord

MONTHS = {m.encode(): i for i, m in enumerate(calendar.month_abbr) if m}

# Tag and pid of a cron-related syslog line; the stamp before it is read separately (two shapes).
_TAG = (
    rb"(?P<tag>(?:/USR/SBIN/)?CROND?|crond?|anacron|run-parts(?:\((?P<dir>[^)]*)\))?)"
    rb"\[(?P<pid>\d+)\]: (?P<msg>[^\r\n]*)"
)
_CLASSIC = re.compile(rb"([A-Z][a-z]{2}) ([ \d]\d) (\d\d):(\d\d):(\d\d)(?:\.\d+)? \S+ " + _TAG)
_RFC = re.compile(rb"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d(?:\.\d+)?)(Z|[+-]\d\d:?\d\d)? \S+ " + _TAG)
# Anywhere in the line (exports with a prefix, localised stamps): used only when the fast shapes fail.
_TAG_ANYWHERE = re.compile(rb"(?:^|\s)" + _TAG)
_CLASSIC_ANYWHERE = re.compile(rb"(?:^|\s)([A-Z][a-z]{2}) ([ \d]?\d) (\d\d):(\d\d):(\d\d)(?:\.\d+)? ")
# Debian-only blocks: find cron's lines at C speed by their tag, then read the stamp before it.
_DEBIAN = re.compile(
    rb"CRON\[(\d+)\]: (?:\(([^()\s]*)\) ([A-Za-z][A-Za-z ]*?) \(([^\n]*)\)[ \t\r]*$|(\([^\n]*))", re.M
)
# Any of these means the block has cronie, anacron or run-parts lines: the general per-line path.
_OTHER_TAGS = (b"cron[", b"rond[", b"ROND[", b"run-parts")  # cron[ also covers anacron[
_PREFIX_CLASSIC = re.compile(
    rb"([A-Z][a-z]{2}) ([ \d]\d) (\d\d):(\d\d):(\d\d)(?:\.\d+)? \S+ (?:/USR/SBIN/)?$"
)
_USER_EVENT = re.compile(rb"\(([^()\s]*)\) ([A-Za-z][A-Za-z ]*?) \((.*)\)\s*$")
_JOBPID = re.compile(rb"\[(\d+)\] ")
_GRANDCHILD = re.compile(rb"grandchild #(\d+) (?:failed with exit status (\d+)|terminated by signal (\d+))")
_MAILED = re.compile(rb"mailed \d+ bytes? of output;? but got status 0x([0-9a-fA-F]+)")
_RUNPARTS = re.compile(rb"(?:\((?P<dir>[^)]*)\) )?(?P<what>starting|finished) (?P<script>\S+)")
_ANACRON = re.compile(rb"Job `(?P<id>[^']*)' (?P<what>started|terminated)(?P<rest>.*)")
_EXIT = re.compile(rb"exit status:? (\d+)")
_SIGNAL = re.compile(rb"signal (\d+)")

CHILD_WINDOW = 8  # a cron child's pid is at most this far below its job's pid when we must guess the link
MAX_OPEN = 20000  # open runs kept per segment; older ones are given up (their end is never logged)
MAX_ORPHANS = 5000  # unpaired end lines kept for the join with the previous segment


@dataclass(slots=True)
class Options:
    since: float | None = None
    until: float | None = None
    tz: tzinfo | None = None  # zone of classic stamps; None: this machine's local zone
    keep_runs: int = 0  # >0: also keep the last N RunRecords per job (for `cronshift show`)
    only_job: str | None = None  # with keep_runs: keep runs of this job only


@dataclass(slots=True)
class Counters:
    lines: int = 0
    cron_lines: int = 0
    malformed: int = 0
    unreadable: int = 0
    orphans: int = 0
    discarded_lost: int = 0
    mail_lost: int = 0
    ambiguous_runs: int = 0
    first: float | None = None
    last: float | None = None
    failures_logged: bool = False
    dialects: set[str] = field(default_factory=set)


class Segment:
    """Parse state for one contiguous piece of log; see the module docstring."""

    def __init__(self, matcher: Matcher, opts: Options, year: int = 1970) -> None:
        self.matcher = matcher
        self.opts = opts
        self.agg: dict[str, JobEvidence] = {}
        self.unmatched: dict[tuple[str, str], UnmatchedEvidence] = {}
        self.ambiguous: dict[tuple[str, str], tuple[str, ...]] = {}
        self.c = Counters()
        # open runs: [start, key, user, command, job pid, host, status, signal, child pid, plain end = ok]
        self.by_pid: dict[int, list] = {}
        self.child: dict[int, int] = {}  # Debian child pid -> job pid
        self.fifo: dict[tuple, deque] = {}  # cronie / run-parts / anacron: (kind, ...) -> open runs
        self.orphans: list[tuple] = []
        self.clean_ends: dict[str, list[float]] = {}  # job -> [count, last end] ended with no error line
        self.runs: dict[str, deque[RunRecord]] = {}
        self.pending_clean: list[RunRecord] = []
        self._match_cache: dict[tuple[bytes, bytes], tuple] = {}
        # year inference for classic stamps
        self.year = year
        self.start_year = year
        self.first_month = 0
        self.last_month = 0
        self._stamp_cache: dict[bytes, float] = {}
        self._prefix_cache: dict[bytes, float] = {}
        self._rfc_cache: dict[bytes, float] = {}

    # -- time ------------------------------------------------------------------------------------------
    def _minute(self, mon: int, day: int, hh: int, mm: int) -> float:
        tz = self.opts.tz
        if tz is None:
            return time.mktime((self.year, mon, day, hh, mm, 0, 0, 0, -1))
        return datetime(self.year, mon, day, hh, mm, tzinfo=tz).timestamp()

    def classic(self, mon_b: bytes, day_b: bytes, hh: bytes, mm: bytes, ss: bytes) -> float | None:
        mon = MONTHS.get(mon_b)
        if mon is None:
            return None
        if mon != self.last_month:
            if not self.first_month:
                self.first_month = mon
            elif mon < self.last_month and self.last_month - mon >= 6:  # December -> January
                self.year += 1
                self._stamp_cache.clear()
                self._prefix_cache.clear()
            self.last_month = mon
        key = mon_b + day_b + hh + mm
        base = self._stamp_cache.get(key)
        if base is None:
            try:
                base = self._minute(mon, int(day_b), int(hh), int(mm))
            except (ValueError, OverflowError):
                return None
            self._stamp_cache[key] = base
        return base + int(ss)

    def rfc(self, y: bytes, mo: bytes, d: bytes, hh: bytes, mm: bytes, ss: bytes, off: bytes | None) -> float:
        key = y + mo + d + hh + mm + (off or b"")
        base = self._rfc_cache.get(key)
        if base is None:
            text = f"{y.decode()}-{mo.decode()}-{d.decode()}T{hh.decode()}:{mm.decode()}:00"
            dt = datetime.fromisoformat(text)
            if off:
                o = off.decode().replace("Z", "+00:00")
                dt = datetime.fromisoformat(text + (o if ":" in o or o == "+00:00" else o[:3] + ":" + o[3:]))
            elif self.opts.tz is not None:
                dt = dt.replace(tzinfo=self.opts.tz)
            base = dt.timestamp()
            self._rfc_cache[key] = base
        return base + float(ss)

    # -- lines -----------------------------------------------------------------------------------------
    def feed_lines(self, lines: Iterable[bytes]) -> None:
        """Syslog text lines (bytes, without or with their newline)."""
        classic_match = _CLASSIC.match
        on = self.on_message
        classic = self.classic
        c = self.c
        n = 0
        for line in lines:
            n += 1
            if b"CRON" not in line and b"cron" not in line:
                continue
            m = classic_match(line)
            if m is not None:
                t = classic(m[1], m[2], m[3], m[4], m[5])
                if t is None:
                    c.malformed += 1
                    continue
                on(t, m["tag"], int(m["pid"]), m["msg"], m["dir"], b"")
                continue
            self._slow_line(line)
        c.lines += n

    def feed_block(self, block: bytes) -> None:
        """Whole lines; Debian-only text takes a fast path that never looks at other daemons' lines."""
        if any(tag in block for tag in _OTHER_TAGS):
            lines = block.split(b"\n")
            if lines and not lines[-1]:
                lines.pop()
            self.feed_lines(lines)
            return
        c = self.c
        c.lines += block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
        c.cron_lines += block.count(b"CRON[")  # minus the few "CRON[" inside other words, below
        rfind = block.rfind
        cache = self._prefix_cache
        event = self._event
        first, last = c.first, c.last
        for m in _DEBIAN.finditer(block):
            user = m[2]
            s = m.start()
            if user is None:  # a cut line: "(user) CMD (comm" and no more
                if block[s - 1] in b" /":
                    c.malformed += 1
                continue
            prefix = block[rfind(b"\n", 0, s) + 1 : s]
            if prefix[15:16] == b" " and prefix[12:13] == b":":  # classic stamp: cache per minute
                base = cache.get(prefix[:12] + prefix[15:])
                t = None if base is None else base + int(prefix[13:15])
            else:
                t = cache.get(prefix)
            if t is None:
                t = self._prefix_time(prefix)
                if t is None:
                    continue
            if t < 0:
                c.cron_lines -= 1  # "CRON[" inside another word
                continue
            if first is None or t < first:
                first = t
            if last is None or t > last:
                last = t
            event(t, b"CRON", int(m[1]), user, m[3], m[4], b"")
        c.first, c.last = first, last

    def _prefix_time(self, prefix: bytes) -> float | None:
        """The stamp of a Debian line from the text before its tag; cached per distinct prefix (second).
        -1: the tag was part of another word, not cron's."""
        if prefix[-1:] not in (b" ", b"/"):
            self._prefix_cache[prefix] = -1.0
            return -1.0
        m = _PREFIX_CLASSIC.match(prefix)
        if m is not None:
            t = self.classic(m[1], m[2], m[3], m[4], m[5])
        else:
            line = prefix + b"CRON[0]: x"
            r = _RFC.match(line)
            if r is not None:
                try:
                    t = self.rfc(r[1], r[2], r[3], r[4], r[5], r[6], r[7])
                except ValueError:
                    t = None
            else:
                s = _CLASSIC_ANYWHERE.search(prefix)
                t = None if s is None else self.classic(s[1], s[2].strip().rjust(2), s[3], s[4], s[5])
        if t is None:
            self.c.malformed += 1
            self.c.unreadable += 1
            return None
        cache = self._prefix_cache
        if len(cache) > 4096:
            cache.clear()
        if m is not None and prefix[15:16] == b" ":
            cache[prefix[:12] + prefix[15:]] = t - int(m[5])
        else:
            cache[prefix] = t
        return t

    def _slow_line(self, line: bytes) -> None:
        m = _RFC.match(line)
        if m is not None:
            try:
                t = self.rfc(m[1], m[2], m[3], m[4], m[5], m[6], m[7])
            except ValueError:
                self.c.malformed += 1
                return
            self.on_message(t, m["tag"], int(m["pid"]), m["msg"], m["dir"], b"")
            return
        m = _TAG_ANYWHERE.search(line)
        if m is None:
            return  # not a cron line at all (another daemon mentioning cron)
        s = _CLASSIC_ANYWHERE.search(line, 0, m.start("tag"))
        t = None if s is None else self.classic(s[1], s[2].strip().rjust(2), s[3], s[4], s[5])
        if t is None:
            self.c.cron_lines += 1
            self.c.unreadable += 1
            self.c.malformed += 1
            return
        self.on_message(t, m["tag"], int(m["pid"]), m["msg"], m["dir"], b"")

    # -- messages --------------------------------------------------------------------------------------
    def on_message(self, t: float, tag: bytes, pid: int, msg: bytes, rdir: bytes | None, host: bytes) -> None:
        c = self.c
        c.cron_lines += 1
        if c.first is None or t < c.first:
            c.first = t
        if c.last is None or t > c.last:
            c.last = t
        if tag[0] == 0x72:  # b"r": run-parts
            self._run_parts(t, pid, msg, rdir)
            return
        if tag[0] == 0x61:  # b"a": anacron
            self._anacron(t, msg)
            return
        if msg[:1] != b"(":
            return  # pam_unix session lines, daemon chatter
        m = _USER_EVENT.match(msg)
        if m is None:
            c.malformed += 1  # truncated: no closing parenthesis
            return
        self._event(t, tag, pid, m[1], m[2], m[3], host)

    def _event(
        self, t: float, tag: bytes, pid: int, user: bytes, event: bytes, payload: bytes, host: bytes
    ) -> None:
        c = self.c
        if event == b"CMD":
            jm = _JOBPID.match(payload)
            if jm is not None:  # Debian -L 8: CRON[child]: CMD ([job] command)
                jobpid = int(jm[1])
                self.child[pid] = jobpid
                self._start(t, user, payload[jm.end() :], jobpid, host, pid, tag)
            else:
                self._start(t, user, payload, pid, host, 0, tag)
        elif event == b"END":
            jm = _JOBPID.match(payload)
            self._end_pid(t, int(jm[1]) if jm is not None else pid)
        elif event == b"CMDEND":
            self._end_fifo(t, (b"c", user, payload), pid, (t, b"CMDEND", pid, user, payload))
        elif user == b"CRON" and event == b"error":
            g = _GRANDCHILD.search(payload)
            if g is not None:
                c.failures_logged = True
                jobpid = int(g[1])
                self.child[pid] = jobpid
                status = None if g[2] is None else int(g[2])
                sig = None if g[3] is None else int(g[3])
                run = self.by_pid.get(jobpid)
                if run is None:
                    self._orphan((t, b"error", pid, jobpid, status, sig))
                else:
                    run[8] = pid
                    self._status(run, t, status, sig)
        elif user == b"CRON" and event == b"info" and payload.startswith(b"No MTA"):
            self._child_note(t, pid, 0, b"nomta")
        elif event == b"MAIL" and _MAILED.search(payload) is not None:
            self._child_note(t, pid, 1, b"mail")
        elif event == b"CMDOUT":
            self._child_note(t, pid, 2, b"out")

    def _orphan(self, event: tuple) -> None:
        if len(self.orphans) < MAX_ORPHANS:
            self.orphans.append(event)
        else:
            self.c.orphans += 1

    def _key(self, user: bytes, command: bytes) -> tuple:
        """(kind, value): ('j', job id) | ('a', candidates) | ('u', (user, command))."""
        k = (user, command)
        hit = self._match_cache.get(k)
        if hit is None:
            u = user.decode("utf-8", "replace")
            cmd = command.decode("utf-8", "replace")
            found = self.matcher.match(u, cmd)
            if isinstance(found, str):
                hit = ("j", found, u, cmd)
            elif found:
                hit = ("a", found, u, cmd)
                self.ambiguous[(u, cmd)] = found
            else:
                hit = ("u", (u, cmd), u, cmd)
            self._match_cache[k] = hit
        return hit

    def _start(
        self, t: float, user: bytes, command: bytes, jobpid: int, host: bytes, child: int, tag: bytes
    ) -> None:
        o = self.opts
        self.c.dialects.add("cronie" if tag in (b"CROND", b"crond") else "debian")
        key = self._key(user, command)
        if (o.since is not None and t < o.since) or (o.until is not None and t >= o.until):
            key = None
        else:
            self._count_start(key, t)
        cronie = tag[-1] == 0x44 or tag[-1] == 0x64  # CROND / crond
        run = [t, key, user, command, jobpid, host, None, None, child, not cronie]
        if cronie:  # cronie's CMDEND pairs by command text
            q = self.fifo.get((b"c", user, command))
            if q is None:
                q = self.fifo[(b"c", user, command)] = deque()
            q.append(run)
        by_pid = self.by_pid
        old = by_pid.get(jobpid)
        if old is not None:  # pid reused: the earlier run's end was never logged
            self._record(old, None)
        by_pid[jobpid] = run
        if len(by_pid) > MAX_OPEN:
            self._evict()

    def _count_start(self, key: tuple, t: float) -> None:
        kind = key[0]
        if kind == "j":
            ev = self.agg.get(key[1])
            if ev is None:
                ev = self.agg[key[1]] = JobEvidence()
            ev.runs += 1
            ev.starts.append(t)
            if ev.first_seen is None or t < ev.first_seen:
                ev.first_seen = t
            if ev.last_seen is None or t > ev.last_seen:
                ev.last_seen = t
            if not ev.evidence:
                ev.evidence.add(CMD_ONLY)
        elif kind == "u":
            u = self.unmatched.get(key[1])
            if u is None:
                u = self.unmatched[key[1]] = UnmatchedEvidence(key[2], key[3])
            u.count += 1
            u.first_seen = t if u.first_seen is None else min(u.first_seen, t)
            u.last_seen = t if u.last_seen is None else max(u.last_seen, t)
        else:
            self.c.ambiguous_runs += 1

    def _evict(self) -> None:
        """Give up on the oldest open runs: logs without end lines (the default) would otherwise grow this."""
        by_pid = self.by_pid
        gone = set()
        for pid in list(by_pid)[: MAX_OPEN // 4]:
            run = by_pid.pop(pid)
            gone.add(id(run))
            self._record(run, None)
        for k in [k for k in self.fifo if k[0] == b"c"]:
            q = deque(r for r in self.fifo[k] if id(r) not in gone)
            if q:
                self.fifo[k] = q
            else:
                del self.fifo[k]
        self.child = {c: j for c, j in self.child.items() if j in by_pid}

    def _end_pid(self, t: float, jobpid: int) -> None:
        run = self.by_pid.pop(jobpid, None)
        if run is None:
            self._orphan((t, b"END", jobpid))
            return
        self.c.dialects.add("debian-L")
        self._finish(run, t, False)

    def _end_fifo(self, t: float, fkey: tuple, pid: int, orphan: tuple) -> None:
        q = self.fifo.get(fkey)
        if not q:
            self._orphan(orphan)
            return
        guessed = len(q) > 1
        run = q[0]
        if guessed:  # prefer the run whose pid is just above the ending child's
            for r in q:
                if 0 < r[4] - pid <= CHILD_WINDOW:
                    run, guessed = r, False
                    break
        q.remove(run)
        if not q:
            del self.fifo[fkey]
        if self.by_pid.get(run[4]) is run:
            del self.by_pid[run[4]]
        self._finish(run, t, guessed)

    def _finish(self, run: list, t: float, guessed: bool) -> None:
        if run[8] > 0:
            self.child.pop(run[8], None)
        key = run[1]
        if key is not None and key[0] == "j":
            ev = self.agg[key[1]]
            ev.ended += 1
            ev.durations.append(max(0.0, t - run[0]))
            if guessed:
                ev.guessed_pairings += 1
            if run[6] is None and run[7] is None:
                ev.evidence.add(END)
                if run[9]:  # Debian END: a success if failures were being logged
                    ce = self.clean_ends.get(key[1])
                    if ce is None:
                        self.clean_ends[key[1]] = [1.0, t]
                    else:
                        ce[0] += 1
                        ce[1] = max(ce[1], t)
        self._record(run, t, guessed)

    def _status(self, run: list, t: float, status: int | None, sig: int | None) -> None:
        """A failure line: counted at once, since without END logging the run is never closed."""
        run[6], run[7] = status, sig
        key = run[1]
        if key is None or key[0] != "j":
            return
        ev = self.agg[key[1]]
        ev.evidence.add(STATUS)
        ev.status_known += 1
        ev.failed += 1
        ev.last_failure = t if ev.last_failure is None else max(ev.last_failure, t)
        if sig is not None:
            ev.signals[sig] = ev.signals.get(sig, 0) + 1
        elif status is not None:
            ev.exit_statuses[status] = ev.exit_statuses.get(status, 0) + 1

    def _record(self, run: list, end: float | None, guessed: bool = False) -> None:
        o = self.opts
        if not o.keep_runs or run[1] is None:
            return
        key = run[1]
        job_id = key[1] if key[0] == "j" else None
        if o.only_job is not None and job_id != o.only_job:
            return
        extra = {"guessed": "1"} if guessed else {}
        if key[0] == "a":
            extra["candidates"] = ",".join(key[1])
        rec = RunRecord(
            job_id=job_id,
            source="syslog",
            start=run[0],
            end=end,
            exit_status=run[6],
            signal=run[7],
            host=run[5].decode("utf-8", "replace") if isinstance(run[5], bytes) else str(run[5]),
            user=key[2],
            pid=run[4] or None,
            command=key[3],
            extra=extra,
        )
        if end is not None and run[6] is None and run[7] is None and run[9]:
            self.pending_clean.append(rec)
        q = self.runs.get(job_id or "")
        if q is None:
            q = self.runs[job_id or ""] = deque(maxlen=o.keep_runs)
        q.append(rec)
        if len(self.pending_clean) > 4 * o.keep_runs:
            kept = {id(r) for d in self.runs.values() for r in d}
            self.pending_clean = [r for r in self.pending_clean if id(r) in kept]

    def _child_note(self, t: float, childpid: int, what: int, name: bytes) -> None:
        """Lines a cron child writes about its job (No MTA, MAIL, CMDOUT): find the job it belongs to."""
        jobpid = self.child.get(childpid)
        run = None if jobpid is None else self.by_pid.get(jobpid)
        guessed = False
        if run is None:
            for d in range(1, CHILD_WINDOW + 1):
                r = self.by_pid.get(childpid + d)
                if r is not None and (r[8] == 0 or r[8] == childpid):
                    run, guessed = r, d > 1
                    break
        if run is None:
            self._orphan((t, b"note", childpid, what, name))
            return
        key = run[1]
        if key is None or key[0] != "j":
            return
        ev = self.agg[key[1]]
        if what == 0:
            ev.output_discarded += 1
        elif what == 1:
            ev.mail_failures += 1
        else:
            ev.output_lines += 1
        if guessed and what != 2:
            ev.guessed_pairings += 1

    def _run_parts(self, t: float, pid: int, msg: bytes, rdir: bytes | None) -> None:
        m = _RUNPARTS.match(msg)
        folder = rdir or (m["dir"] if m is not None else None)
        if m is None or folder is None:
            return  # other run-parts chatter
        self.c.dialects.add("run-parts")
        script = m["script"]
        fkey = (b"r", folder, script)
        if m["what"] == b"starting":
            self._start_named(t, fkey, pid, ("script", folder, script))
        else:
            self._end_fifo(t, fkey, 0, (t, b"fifo", fkey))

    def _anacron(self, t: float, msg: bytes) -> None:
        m = _ANACRON.search(msg)
        if m is None:
            return
        self.c.dialects.add("anacron")
        fkey = (b"a", m["id"])
        if m["what"] == b"started":
            self._start_named(t, fkey, 0, ("anacron", m["id"]))
            return
        q = self.fifo.get(fkey)
        if q:
            rest = m["rest"]
            e, s = _EXIT.search(rest), _SIGNAL.search(rest)
            if s is not None:
                self._status(q[0], t, None, int(s[1]))
            elif e is not None and int(e[1]) != 0:
                self._status(q[0], t, int(e[1]), None)
        self._end_fifo(t, fkey, 0, (t, b"fifo", fkey))

    def _start_named(self, t: float, fkey: tuple, pid: int, what: tuple) -> None:
        """A run-parts script or anacron job: matched by folder and name or by anacron identifier."""
        hit = self._match_cache.get(fkey)
        if hit is None:
            if what[0] == "script":
                folder, script = what[1].decode("utf-8", "replace"), what[2].decode("utf-8", "replace")
                found = self.matcher.match_script(folder, script)
                u, cmd = "root", f"{folder.rstrip('/')}/{script}"
            else:
                ident = what[1].decode("utf-8", "replace")
                found = self.matcher.match_anacron(ident)
                u, cmd = "root", f"anacron job {ident}"
            if isinstance(found, str):
                hit = ("j", found, u, cmd)
            elif found:
                hit = ("a", found, u, cmd)
                self.ambiguous[(u, cmd)] = found
            else:
                hit = ("u", (u, cmd), u, cmd)
            self._match_cache[fkey] = hit
        o = self.opts
        key: tuple | None = hit
        if (o.since is not None and t < o.since) or (o.until is not None and t >= o.until):
            key = None
        else:
            self._count_start(hit, t)
        run = [t, key, b"", b"", pid, b"", None, None, -1, False]
        q = self.fifo.get(fkey)
        if q is None:
            q = self.fifo[fkey] = deque()
        q.append(run)
        if len(q) > MAX_OPEN:
            self._record(q.popleft(), None)

    # -- joining segments ------------------------------------------------------------------------------
    def replay(self, orphans: list[tuple]) -> None:
        """End lines another (later) segment could not pair: pair them with this segment's open runs."""
        for ev in orphans:
            t, kind = ev[0], ev[1]
            if kind == b"END":
                self._end_pid(t, ev[2])
            elif kind == b"CMDEND":
                self._end_fifo(t, (b"c", ev[3], ev[4]), ev[2], ev)
            elif kind == b"fifo":
                self._end_fifo(t, ev[2], 0, ev)
            elif kind == b"error":
                run = self.by_pid.get(ev[3])
                self.child[ev[2]] = ev[3]
                if run is None:
                    self._orphan(ev)
                else:
                    run[8] = ev[2]
                    self._status(run, t, ev[4], ev[5])
            elif kind == b"note":
                self._child_note(t, ev[2], ev[3], ev[4])

    def absorb(self, later: Segment) -> None:
        """Continue this segment with a later one (whose orphans were already replayed here)."""
        for job, ev in later.agg.items():
            mine = self.agg.get(job)
            if mine is None:
                self.agg[job] = ev
            else:
                mine.merge(ev)
        for k, u in later.unmatched.items():
            mine_u = self.unmatched.get(k)
            if mine_u is None:
                self.unmatched[k] = u
            else:
                mine_u.count += u.count
                mine_u.first_seen = min(x for x in (mine_u.first_seen, u.first_seen) if x is not None)
                mine_u.last_seen = max(x for x in (mine_u.last_seen, u.last_seen) if x is not None)
        self.ambiguous.update(later.ambiguous)
        for job, ce in later.clean_ends.items():
            mine_ce = self.clean_ends.get(job)
            if mine_ce is None:
                self.clean_ends[job] = ce
            else:
                mine_ce[0] += ce[0]
                mine_ce[1] = max(mine_ce[1], ce[1])
        a, b = self.c, later.c
        a.lines += b.lines
        a.cron_lines += b.cron_lines
        a.malformed += b.malformed
        a.unreadable += b.unreadable
        a.orphans += b.orphans
        a.discarded_lost += b.discarded_lost
        a.mail_lost += b.mail_lost
        a.ambiguous_runs += b.ambiguous_runs
        a.failures_logged |= b.failures_logged
        a.dialects |= b.dialects
        a.first = b.first if a.first is None else (a.first if b.first is None else min(a.first, b.first))
        a.last = b.last if a.last is None else (a.last if b.last is None else max(a.last, b.last))
        self.by_pid.update(later.by_pid)
        self.child.update(later.child)
        for k, q in later.fifo.items():
            mine_q = self.fifo.get(k)
            if mine_q is None:
                self.fifo[k] = q
            else:
                mine_q.extend(q)
        for job, runs in later.runs.items():
            mine_r = self.runs.get(job)
            if mine_r is None:
                self.runs[job] = runs
            else:
                mine_r.extend(runs)
        self.pending_clean.extend(later.pending_clean)
        self.year, self.last_month = later.year, later.last_month
        self._match_cache.update(later._match_cache)

    def settle_orphans(self) -> None:
        """At the start of all input: end lines with no start are just counted."""
        for ev in self.orphans:
            if ev[1] == b"note":
                if ev[3] == 0:
                    self.c.discarded_lost += 1
                elif ev[3] == 1:
                    self.c.mail_lost += 1
            else:
                self.c.orphans += 1
        self.orphans = []

    def close(self, failures_logged: bool | None) -> None:
        """End of all input: open runs stay open (end unknown); Debian plain ENDs become successes when
        the logs showed that failures were being logged (`-L` with bit 4)."""
        for run in self.by_pid.values():
            self._record(run, None)
        for k, q in self.fifo.items():
            if k[0] != b"c":  # cronie runs are in by_pid too
                for run in q:
                    self._record(run, None)
        self.by_pid.clear()
        self.fifo.clear()
        ok = self.c.failures_logged if failures_logged is None else failures_logged
        if not ok:
            return
        for job, (n, last) in self.clean_ends.items():
            ev = self.agg[job]
            ev.status_known += int(n)
            ev.evidence.add(STATUS)
            ev.last_success = last if ev.last_success is None else max(ev.last_success, last)
        self.clean_ends.clear()
        for rec in self.pending_clean:
            object.__setattr__(rec, "exit_status", 0)
        self.pending_clean.clear()

    def to_history(self, history: History) -> None:
        for ev in self.agg.values():
            if len(ev.starts) > 1:
                ev.starts = type(ev.starts)("d", sorted(ev.starts))
        history.per_job.update(self.agg)
        history.unmatched.update(self.unmatched)
        history.ambiguous.update(self.ambiguous)
        c = self.c
        history.ambiguous_runs += c.ambiguous_runs
        history.lines_read += c.lines
        history.cron_lines += c.cron_lines
        history.malformed += c.malformed
        history.unreadable_stamps += c.unreadable
        history.orphan_ends += c.orphans
        history.unattributed_discarded += c.discarded_lost
        history.unattributed_mail_failures += c.mail_lost
        if c.first is not None and c.last is not None:
            history.window = (c.first, c.last)


ProgressFn = Callable[[int], None]
