"""Cron's own log lines (Debian/Ubuntu cron, cronie, anacron, run-parts) turned into compact events.

Reading and pairing are two steps. A `Segment` reads one contiguous piece of one file (possibly in a forked
worker) and keeps each cron line that matters as one event in a few typed arrays (time, kind, pid, two
integers, host, content identity); nothing is paired here. `pairing.py` then drops the lines several files
hold (syslog + cron.log, messages + cron, a journal export beside them) and pairs the whole time-ordered
history in one pass, so rotation, gzip and worker cuts cannot change which start an end belongs to.
"""

from __future__ import annotations

import calendar
import re
import time
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

MONTHS = {m.encode(): i for i, m in enumerate(calendar.month_abbr) if m}
_NOT_CRON = (-1e18, 0)  # (stamp, host) of a "CRON[" inside another word: below 0 whatever its seconds
_SECONDS = {b"%02d" % i: i for i in range(61)}  # a classic stamp's seconds, without int() per line

# Tag and pid of a cron-related syslog line; the stamp before it is read separately (two shapes).
_TAG = (
    rb"(?P<tag>(?:/USR/SBIN/)?CROND?|crond?|anacron|run-parts(?:\((?P<dir>[^)]*)\))?)"
    rb"\[(?P<pid>\d+)\]: (?P<msg>[^\r\n]*)"
)
_CLASSIC = re.compile(rb"([A-Z][a-z]{2}) ([ \d]\d) (\d\d):(\d\d):(\d\d)(?:\.\d+)? (?P<host>\S+) " + _TAG)
_RFC = re.compile(
    rb"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d(?:\.\d+)?)(Z|[+-]\d\d:?\d\d)? (?P<host>\S+) " + _TAG
)
# Anywhere in the line (exports with a prefix, localised stamps): used only when the fast shapes fail.
_TAG_ANYWHERE = re.compile(rb"(?:^|\s)" + _TAG)
_CLASSIC_ANYWHERE = re.compile(rb"(?:^|\s)([A-Z][a-z]{2}) ([ \d]?\d) (\d\d):(\d\d):(\d\d)(?:\.\d+)? ")
# Debian-only blocks: find cron's lines at C speed by their tag, then read the stamp before it.
# Groups: 1 pid, 2 user, 3 event, 4 job pid of `([pid] command)`, 5 the rest, 6 a cut line; 7 a cronie
# `CROND[` tag (the block then takes the general path: one regex with the prefix "CRON" finds both).
_DEBIAN = re.compile(
    rb"CRON(?:\[(\d+)\]: (?:\(([^()\s]*)\) ([A-Za-z][A-Za-z ]*?) \((?:\[(\d+)\] )?([^\n]*)\)[ \t\r]*$"
    rb"|(\([^\n]*))|(D)\[)",
    re.M,
)
# Any of these means the block has cronie, anacron, run-parts or Debian daemon lines: the general per-line
# path. `cron[` also covers anacron[; `CROND[` is found by _DEBIAN. One regex (literal prefix "r") scans
# the block once for the three: 0.8 GB/s, where `in` takes as long for each.
_OTHER_TAGS = re.compile(rb"ron\[|rond\[|run-parts")
_PREFIX_CLASSIC = re.compile(
    rb"([A-Z][a-z]{2}) ([ \d]\d) (\d\d):(\d\d):(\d\d)(?:\.\d+)? \S+ (?:/USR/SBIN/)?$"
)
# cronie's log_it appends ": strerror" after the closing parenthesis (`EXEC FAILED (...): No such file`)
_USER_EVENT = re.compile(rb"\(([^()\s]*)\) ([A-Za-z][A-Za-z ]*?) \((.*)\)(?:: [^()]*)?\s*$")
_JOBPID = re.compile(rb"\[(\d+)\] ")
_GRANDCHILD = re.compile(rb"grandchild #(\d+) (?:failed with exit status (\d+)|terminated by signal (\d+))")
_MAILED = re.compile(rb"mailed \d+ bytes? of output;? but got status 0x([0-9a-fA-F]+)")
_RUNPARTS = re.compile(rb"(?:\((?P<dir>[^)]*)\) )?(?P<what>starting|finished) (?P<script>\S+)")
_ANACRON = re.compile(rb"Job `(?P<id>[^']*)' (?P<what>started|terminated)(?P<rest>.*)")
_EXIT = re.compile(rb"exit status:? (\d+)")
_SIGNAL = re.compile(rb"signal (\d+)")

# Event kinds (the `kind` column) and note flags (the `a` column of E_NOTE).
E_CMD, E_CMD_FIFO, E_END, E_CMDEND, E_FAIL, E_NOTE = 1, 2, 3, 4, 5, 6
E_START, E_STOP, E_INFO = 7, 8, 9
E_RP_START, E_RP_END, E_AN_START, E_AN_END = 10, 11, 12, 13
N_NOMTA, N_MAIL, N_OUT, N_CRONIE = 0, 1, 2, 4


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
    untrusted: int = 0  # journal cron lines whose trusted sender (_UID) was not root: not read (journal.py)
    dialects: set[str] = field(default_factory=set)


def _has_other_tags(block: bytes, end: int) -> bool:
    """Any cronie, anacron, run-parts or Debian daemon line (`CROND[`: see _DEBIAN)? One scan, not four."""
    return _OTHER_TAGS.search(block, 0, end) is not None


def _host_of(prefix: bytes) -> bytes:
    """The host field: the word before the tag (`web-01 ` or `web-01 /USR/SBIN/`)."""
    p = prefix.rstrip()
    if p.endswith(b"/USR/SBIN"):
        p = p[:-9].rstrip()
    return p.rpartition(b" ")[2]


_BIG = 1 << 31  # pids are below 2^22 on Linux; the columns are 32-bit
_MASK = (1 << 31) - 1
_LAST = 1 << 38  # seconds: the year 10680


class Events:
    """Columns of events: 29 bytes per cron line kept (a run logged with its end: two lines)."""

    __slots__ = ("a", "b", "host", "ident", "kind", "pid", "t")

    def __init__(self) -> None:
        self.t = array("d")
        self.kind = array("b")
        self.pid = array("i")
        self.a = array("i")  # job pid, note flags, anacron exit code
        self.b = array("i")  # table id: (user, command), status, run-parts script...
        self.host = array("i")  # table id of (b"h", host)
        self.ident = array("i")  # hash of (host, pid, message), 31 bits: the content identity of the line

    def __len__(self) -> int:
        return len(self.t)

    def sliced(self, start: int, stop: int) -> Events:
        out = Events()
        for name in self.__slots__:
            setattr(out, name, getattr(self, name)[start:stop])
        return out

    def taken(self, indices: Sequence[int]) -> Events:
        out = Events()
        for name in self.__slots__:
            col = getattr(self, name)
            setattr(out, name, array(col.typecode, map(col.__getitem__, indices)))
        return out


class Segment:
    """Read state for one contiguous piece of log; see the module docstring."""

    def __init__(self, opts: Options, year: int = 1970) -> None:
        self.opts = opts
        self.c = Counters()
        self.ev = Events()
        self.table: list[tuple] = [()]
        self.names: dict[tuple, int] = {(): 0}
        self._hosts: dict[bytes, int] = {}
        # year inference for classic stamps
        self.year = year
        self.start_year = year
        self.first_month = 0
        self.last_month = 0
        self._stamp_cache: dict[bytes, float] = {}
        self._where_cache: dict[bytes, tuple[float, int]] = {}  # see _where
        self._rfc_cache: dict[bytes, float] = {}
        self._last_t = 0.0
        self.ordered = True  # stamps never went back: pairing order is file order (no sort)

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
                self._where_cache.clear()
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
                on(t, m["tag"], int(m["pid"]), m["msg"], m["dir"], m["host"])
                continue
            self._slow_line(line)
        c.lines += n

    def feed_block(self, block: bytes, end: int | None = None) -> None:
        """Whole lines, block[:end]; Debian-only text takes a fast path that never looks at other daemons'
        lines."""
        if end is None:
            end = len(block)
        found = None if _has_other_tags(block, end) else list(_DEBIAN.finditer(block, 0, end))
        if found is None or any(m.lastindex == 7 for m in found):
            lines = block[:end].split(b"\n")
            if lines and not lines[-1]:
                lines.pop()
            self.feed_lines(lines)
            return
        c = self.c
        c.lines += block.count(b"\n", 0, end) + (0 if block[end - 1 : end] == b"\n" else 1)
        c.cron_lines += block.count(b"CRON[", 0, end)  # minus the few "CRON[" inside other words, below
        rfind = block.rfind
        where = self._where_cache
        secs = _SECONDS.get
        names = self.names
        ev = self.ev
        t_add, k_add, p_add, a_add = ev.t.append, ev.kind.append, ev.pid.append, ev.a.append
        b_add, h_add = ev.b.append, ev.host.append
        added = 0
        kinds = 0  # bit 1: a CMD line, bit 2: an END line (dialects, set once per block)
        last = self._last_t
        for m in found:
            pid_b, user, what, jp, rest, _cut, _d = m.groups()
            s = m.start()
            if user is None:  # a cut line: "(user) CMD (comm" and no more
                if block[s - 1] in b" /":
                    c.malformed += 1
                continue
            prefix = block[rfind(b"\n", 0, s) + 1 : s]
            # (stamp, host id) per distinct text before the tag; classic stamps per minute, so most lines
            # are one dict hit and no date arithmetic
            if prefix[12:13] == b":" and prefix[15:16] == b" ":
                hit = where.get(prefix[:12] + prefix[15:])
                sec = secs(prefix[13:15])
                if hit is None or sec is None:
                    hit = self._where(prefix)
                    if hit is None:
                        continue
                    t = hit[0]
                else:
                    t = hit[0] + sec
            else:
                hit = where.get(prefix)
                if hit is None:
                    hit = self._where(prefix)
                    if hit is None:
                        continue
                t = hit[0]
            if t < 0:
                c.cron_lines -= 1  # "CRON[" inside another word
                continue
            if len(pid_b) > 9 or (jp is not None and len(jp) > 9):  # no kernel gives such a pid
                c.malformed += 1
                continue
            if what == b"CMD" or what == b"END":
                k = (user, rest)
                key = names.get(k)
                if key is None:
                    key = self._id(k)
                if what == b"CMD":
                    kinds |= 1
                    k_add(E_CMD)
                else:
                    kinds |= 2
                    k_add(E_END)
                pid = int(pid_b)
                t_add(t)
                p_add(pid)
                a_add(pid if jp is None else int(jp))
                b_add(key)
                h_add(hit[1])
                added += 1
                if t < last:
                    self.ordered = False
                last = t
            else:
                if added:  # the identity column of the fast events (0: taken from the columns at merge)
                    ev.ident.frombytes(bytes(4 * added))
                    added = 0
                self._last_t = last
                payload = block[m.start(4) - 1 if jp is not None else m.start(5) : m.end(5)]
                msg = block[m.end(1) + 3 : m.end(5) + 1]
                self._event(t, b"CRON", int(pid_b), user, what, payload, self.table[hit[1]][1], msg)
                last = self._last_t
        if added:
            ev.ident.frombytes(bytes(4 * added))
        self._last_t = last
        if kinds & 1:
            c.dialects.add("debian")
        if kinds & 2:
            c.dialects.add("debian-L")

    def _where(self, prefix: bytes) -> tuple[float, int] | None:
        """(stamp, host id) of a Debian line from the text before its tag, cached per minute (classic
        stamps: the stamp minus its seconds) or per distinct prefix. Stamp -1: the tag was part of another
        word, not cron's. None: unreadable stamp (counted)."""
        cache = self._where_cache
        if len(cache) > 4096:
            cache.clear()
        classic = prefix[12:13] == b":" and prefix[15:16] == b" "
        if prefix[-1:] not in (b" ", b"/"):
            cache[prefix[:12] + prefix[15:] if classic else prefix] = _NOT_CRON
            return _NOT_CRON
        t, per_minute = self._prefix_time(prefix)
        if t is None:
            return None
        tail = prefix[16:] if classic else prefix
        hid = self._host(_host_of(tail))
        if per_minute:
            cache[prefix[:12] + prefix[15:]] = (t - int(prefix[13:15]), hid)
        elif not classic:
            cache[prefix] = (t, hid)
        return (t, hid)

    def _prefix_time(self, prefix: bytes) -> tuple[float | None, bool]:
        """The stamp of a Debian line from the text before its tag, and whether it is a classic stamp whose
        minute can stand for the others (the caller caches)."""
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
            return None, False
        return t, m is not None and prefix[15:16] == b" "

    def _slow_line(self, line: bytes) -> None:
        m = _RFC.match(line)
        if m is not None:
            try:
                t = self.rfc(m[1], m[2], m[3], m[4], m[5], m[6], m[7])
            except ValueError:
                self.c.malformed += 1
                return
            self.on_message(t, m["tag"], int(m["pid"]), m["msg"], m["dir"], m["host"])
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
        host = line[: m.start("tag")].rstrip().rpartition(b" ")[2].partition(b"/")[0]
        self.on_message(t, m["tag"], int(m["pid"]), m["msg"], m["dir"], host)

    # -- messages --------------------------------------------------------------------------------------
    def _id(self, value: tuple) -> int:
        """A small int for a recurring value (host, user + command, status); the table travels with the
        segment and is renumbered when segments are joined."""
        i = self.names.get(value)
        if i is None:
            i = self.names[value] = len(self.table)
            self.table.append(value)
        return i

    def _host(self, host: bytes) -> int:
        """The host as rsyslog writes it (the short name): the journal's _HOSTNAME may be the full one."""
        i = self._hosts.get(host)
        if i is None:
            short = host if host[:1].isdigit() or b":" in host else host.split(b".", 1)[0]
            i = self._hosts[host] = self._id((b"h", short))
        return i

    def _emit(self, t: float, kind: int, pid: int, a: int, b: int, host: int, ident: int) -> None:
        # a pid no kernel gives, a stamp before 1970 or after 9999: a damaged line, not a crash
        if not (0 <= pid < _BIG and -_BIG < a < _BIG and 0 <= t < _LAST):
            self.c.malformed += 1
            return
        if t < self._last_t:
            self.ordered = False
        self._last_t = t
        ev = self.ev
        ev.t.append(t)
        ev.kind.append(kind)
        ev.pid.append(pid)
        ev.a.append(a)
        ev.b.append(b)
        ev.host.append(host)
        ev.ident.append(ident)

    def on_message(self, t: float, tag: bytes, pid: int, msg: bytes, rdir: bytes | None, host: bytes) -> None:
        c = self.c
        c.cron_lines += 1
        if tag[0] == 0x72:  # b"r": run-parts
            self._run_parts(t, pid, msg, rdir, host)
            return
        if tag[0] == 0x61:  # b"a": anacron
            self._anacron(t, pid, msg, host)
            return
        if msg[:1] != b"(":
            return  # pam_unix session lines, daemon chatter: never runs, never the window (every path)
        m = _USER_EVENT.match(msg)
        if m is None:
            c.malformed += 1  # truncated: no closing parenthesis
            return
        self._event(t, tag, pid, m[1], m[2], m[3], host, msg)

    def _event(
        self,
        t: float,
        tag: bytes,
        pid: int,
        user: bytes,
        event: bytes,
        payload: bytes,
        host: bytes,
        msg: bytes,
    ) -> None:
        """One `(user) EVENT (payload)` line as a compact event; nothing is paired here (see pairing.py)."""
        c = self.c
        hid = self._host(host)
        # Identity for duplicate detection: 0 where the columns already say everything the line says
        # (CMD, END, CMDEND, grandchild; merge() hashes the columns then), else a hash of the message.
        ident = 0
        cronie = tag[-1] == 0x44 or tag[-1] == 0x64  # CROND / crond
        if event == b"CMD":
            jm = _JOBPID.match(payload)
            c.dialects.add("cronie" if cronie else "debian")
            if jm is not None:  # Debian -L 8: CRON[child]: CMD ([job] command)
                key = self._id((user, payload[jm.end() :]))
                self._emit(t, E_CMD, pid, int(jm[1]), key, hid, ident)
            else:
                self._emit(
                    t, E_CMD_FIFO if cronie else E_CMD, pid, pid, self._id((user, payload)), hid, ident
                )
        elif event == b"END":
            c.dialects.add("debian-L")
            jm = _JOBPID.match(payload)
            if jm is not None:
                self._emit(t, E_END, pid, int(jm[1]), self._id((user, payload[jm.end() :])), hid, ident)
            else:
                self._emit(t, E_END, pid, pid, self._id((user, payload)), hid, ident)
        elif event == b"CMDEND":
            self._emit(t, E_CMDEND, pid, 0, self._id((user, payload)), hid, ident)
        else:
            self._other(t, pid, user, event, payload, hid, msg, cronie)

    def _other(
        self,
        t: float,
        pid: int,
        user: bytes,
        event: bytes,
        payload: bytes,
        hid: int,
        msg: bytes,
        cronie: bool,
    ) -> None:
        """Failure, note and daemon lines."""
        if user == b"CRON" and event == b"error":
            g = _GRANDCHILD.search(payload)
            if g is not None:
                st = (b"s", None if g[2] is None else int(g[2]), None if g[3] is None else int(g[3]))
                self._emit(t, E_FAIL, pid, int(g[1]), self._id(st), hid, 0)
                return
        ident = hash((hid, pid, msg.rstrip())) & _MASK or 1
        flag = N_CRONIE if cronie else 0
        if user == b"CRON":
            low = event.lower()
            if low == b"info" and payload.startswith(b"No MTA"):
                self._emit(t, E_NOTE, pid, N_NOMTA | flag, self._id((b"u", user)), hid, ident)
            elif low == b"startup" or (low == b"info" and payload.startswith(b"pidfile fd")):
                self._emit(t, E_START, pid, 0, 0, hid, ident)
            elif low == b"info" and payload.startswith(b"Shutting down"):
                self._emit(t, E_STOP, pid, 0, 0, hid, ident)
            else:
                self._emit(t, E_INFO, pid, 0, 0, hid, ident)
        elif event == b"MAIL" and _MAILED.search(payload) is not None:
            self._emit(t, E_NOTE, pid, N_MAIL | flag, self._id((b"u", user)), hid, ident)
        elif event == b"CMDOUT":
            self._emit(t, E_NOTE, pid, N_OUT | N_CRONIE, self._id((b"u", user)), hid, ident)
        else:  # RELOAD, PAM ERROR, LIST...: the daemon was there
            self._emit(t, E_INFO, pid, 0, 0, hid, ident)

    def _run_parts(self, t: float, pid: int, msg: bytes, rdir: bytes | None, host: bytes) -> None:
        m = _RUNPARTS.match(msg)
        folder = rdir or (m["dir"] if m is not None else None)
        if m is None or folder is None:
            return  # other run-parts chatter
        self.c.dialects.add("run-parts")
        hid = self._host(host)
        key = self._id((b"r", folder, m["script"]))
        kind = E_RP_START if m["what"] == b"starting" else E_RP_END
        self._emit(t, kind, pid, 0, key, hid, hash((hid, pid, msg.rstrip())) & _MASK or 1)

    def _anacron(self, t: float, pid: int, msg: bytes, host: bytes) -> None:
        m = _ANACRON.search(msg)
        if m is None:
            return
        self.c.dialects.add("anacron")
        hid = self._host(host)
        key = self._id((b"a", m["id"]))
        ident = hash((hid, pid, msg.rstrip())) & _MASK or 1
        if m["what"] == b"started":
            self._emit(t, E_AN_START, pid, 0, key, hid, ident)
            return
        rest = m["rest"]
        e, s = _EXIT.search(rest), _SIGNAL.search(rest)
        code = -1 if s is None and e is None else (1000 + int(s[1]) if s is not None else int(e[1]))
        self._emit(t, E_AN_END, pid, code, key, hid, ident)


ProgressFn = Callable[[int], None]
