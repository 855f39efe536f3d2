"""The whole history, once: drop lines several files hold, then pair every end with its start in one pass.

Segments (one per file, or per worker's piece of a big file) hold events in file order. `merge` concatenates
them with one table of names, orders them by second (file order inside a second), and when two or more
sources were read keeps each line once: a line's content identity is (host, pid, message) and its stamp to
within a second, and a line repeated inside one source (cronie's identical CMDOUT lines) is kept as often as
the source that holds it most often. A history of several files is joined in consecutive parts of seconds
(`Stream`, `merge_into`: the same order and the same copies dropped as one join of everything). `Pairer`
then walks that one time-ordered stream, part after part:

- exact links first: Debian's job pid (`CMD ([pid] ...)`, `END ([pid] ...)`, `grandchild #pid`), and the
  pid of the cron child that wrote a note (`No MTA`, `MAIL`, `CMDOUT`) and, for cronie, the `CMDEND` after it;
- then first-in-first-out by host, user and command (cronie's `CMDEND`, run-parts, anacron), marked
  `inferred` on the run with the number of runs that were open;
- a note with no exact link goes to the user the line names when that user ran exactly one job, and
  otherwise is counted unattributed, never guessed;
- the daemon's own start/stop lines (and the first and last cron line) say when cron was observed running,
  so that expected runs are counted only there; whether failures were logged (so that a plain Debian `END`
  means exit 0) is decided per daemon run.
"""

from __future__ import annotations

import copy
from array import array
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

from cronshift.history.events import CMD_ONLY, END, STATUS, History, JobEvidence, UnmatchedEvidence
from cronshift.history.match import Matcher
from cronshift.history.syslog import (
    E_AN_END,
    E_AN_START,
    E_CMD,
    E_CMD_FIFO,
    E_CMDEND,
    E_END,
    E_FAIL,
    E_NOTE,
    E_RP_END,
    E_RP_START,
    E_START,
    E_STOP,
    N_CRONIE,
    N_MAIL,
    N_NOMTA,
    Events,
    Options,
    Segment,
)
from cronshift.model import RunRecord

_STRETCH = 1 << 14  # events sorted at a time by _order
MAX_OPEN = 20000  # open runs kept by pid; older ones are given up (their end is never logged)
MAX_FIFO = 2000  # open runs kept per (host, user, command) for FIFO pairing
NOTE_AFTER_END = 60.0  # a child's note may follow its run's end by this much and still be linked


@dataclass(slots=True)
class Merged:
    """All events, in pairing order, with one table; per-source counts for the history line."""

    ev: Events
    order: Sequence[int]
    table: list[tuple]
    duplicates: list[int] = field(default_factory=list)  # per source: lines dropped as already read


class Stream:
    """What joining the history in parts (oldest first) carries from one part to the next: one table of
    names (so the pairer's ids hold), the identities of the last second's lines (a copy may be in the next
    part), the seconds each source covers (files not read yet: from their first line on), and the counts."""

    def __init__(self, nsources: int, dedup: bool = True) -> None:
        self.dedup = dedup  # several sources: drop copies
        self.table: list[tuple] = [()]
        self.names: dict[tuple, int] = {(): 0}
        self.recent: dict[int, list[list]] = {}
        self.horizon: deque[tuple[int, int]] = deque()
        self.spans: dict[int, list[int]] = {}
        self.duplicates = [0] * nsources


def cut(seg: Segment, second: int) -> tuple[Segment, Segment]:
    """The piece's events before `second`, and the rest (each in file order)."""
    ev, t = seg.ev, seg.ev.t
    a, b = copy.copy(seg), copy.copy(seg)
    if not len(t) or min(t) >= second:  # nothing before: no copy
        a.ev = Events()
        return a, b
    if max(t) < second:
        b.ev = Events()
        return a, b
    k = bisect_left(t, second)  # exact if ordered; else where the stamps are, give or take a few lines
    n = len(t)
    if seg.ordered or (0 < k < n and max(t[:k]) < second <= min(t[k:])):  # a clean cut: two slices
        before, after = ev.sliced(0, k), ev.sliced(k, n)
    else:
        order = _order(array("q", map(int, t)))
        k = bisect_left(order, second, key=t.__getitem__)
        before = ev.taken(sorted(order[:k]))
        after = ev.taken(sorted(order[k:]))
    a.ev, b.ev = before, after
    return a, b


def merge_into(state: Stream, segments: Sequence[tuple[int, Segment]]) -> Merged:
    """One part of a streamed history (see `Stream`): joined, ordered and de-duplicated like `merge`."""
    if len(state.table) == 1 and segments:  # the first part: the first piece's table is the table
        state.table, state.names = segments[0][1].table, segments[0][1].names
    table, names = state.table, state.names
    in_order = not state.dedup and _in_order([seg for _, seg in segments])
    ev = Events()
    src = array("i")
    if len(segments) == 1 and segments[0][1].table is table and not state.dedup:  # nothing to join
        ev, segments[0][1].ev = segments[0][1].ev, ev
        segments = ()
    for s, seg in segments:
        e = seg.ev
        ev.t.extend(e.t)
        ev.kind.extend(e.kind)
        ev.pid.extend(e.pid)
        ev.a.extend(e.a)
        if seg.table is table:
            ev.b.extend(e.b)
            ev.host.extend(e.host)
        else:
            remap = _remap(seg.table, names, table)
            ev.b.extend(array("i", map(remap.__getitem__, e.b)))
            ev.host.extend(array("i", map(remap.__getitem__, e.host)))
        ev.ident.extend(e.ident)
        if state.dedup:
            src.extend(array("i", [s]) * len(e))
        seg.ev = Events()
    if in_order:
        return Merged(ev, range(len(ev)), table, state.duplicates)
    sec = array("q", map(int, ev.t))
    order = _order(sec)
    if state.dedup:
        order = _dedup(order, sec, ev, src, state.duplicates, state.spans, state)
    return Merged(ev, order, table, state.duplicates)


def merge(segments: Sequence[tuple[int, Segment]], nsources: int) -> Merged:
    """Join segments (tagged with their source index, in reading order) into one ordered stream."""
    if len(segments) == 1:  # nothing to renumber or copy
        seg = segments[0][1]
        order = range(len(seg.ev)) if seg.ordered else _order(array("q", map(int, seg.ev.t)))
        return Merged(seg.ev, order, seg.table, [0] * nsources)
    one_source = len({s for s, _ in segments}) == 1
    # the first piece is the base: its arrays grow in place, its table numbers stay
    base = segments[0][1]
    table: list[tuple] = base.table
    names: dict[tuple, int] = dict(base.names)
    ev = base.ev
    # for de-duplication only: the source of each event, and the seconds each source covers
    src = array("i") if one_source else array("i", [segments[0][0]]) * len(ev)
    spans: dict[int, list[int]] = {}  # source -> [first, last second]

    def widen(source: int, t: array) -> None:
        if len(t) and not one_source:
            lo, hi = int(min(t)), int(max(t))
            r = spans.setdefault(source, [lo, hi])
            r[0], r[1] = min(r[0], lo), max(r[1], hi)

    widen(segments[0][0], ev.t)
    in_order = _in_order([seg for _, seg in segments])
    for s, seg in segments[1:]:
        remap = _remap(seg.table, names, table)
        e = seg.ev
        widen(s, e.t)
        ev.t.extend(e.t)
        ev.kind.extend(e.kind)
        ev.pid.extend(e.pid)
        ev.a.extend(e.a)
        same = len(seg.table) == len(table) and remap == array("i", range(len(remap)))
        ev.b.extend(e.b if same else array("i", map(remap.__getitem__, e.b)))
        ev.host.extend(e.host if same else array("i", map(remap.__getitem__, e.host)))
        ev.ident.extend(e.ident)
        if not one_source:
            src.extend(array("i", [s]) * len(e))
        seg.ev = Events()  # free the piece now that the whole holds it
    dup = [0] * nsources
    if one_source and in_order:  # pieces of one file whose stamps never went back: file order
        return Merged(ev, range(len(ev)), table, dup)
    sec = array("q", map(int, ev.t))
    order = _order(sec)
    if not one_source:
        order = _dedup(order, sec, ev, src, dup, spans)
    return Merged(ev, order, table, dup)


def _remap(seg_table: list[tuple], names: dict[tuple, int], table: list[tuple]) -> array:
    """Index i of a segment's name table -> index in the shared `table`, adding names it lacks."""
    remap = array("i", [0]) * len(seg_table)
    for i, value in enumerate(seg_table):
        j = names.get(value)
        if j is None:
            j = names[value] = len(table)
            table.append(value)
        remap[i] = j
    return remap


def _in_order(segments: Sequence[Segment]) -> bool:
    """Whether the pieces, joined, are already in pairing order: no stamp goes back, inside a piece
    (its own flag) or from one piece to the next (by second)."""
    prev = -1
    for seg in segments:
        t = seg.ev.t
        if not seg.ordered:
            return False
        if len(t):
            if int(t[0]) < prev:
                return False
            prev = int(t[-1])
    return True


def _order(sec: array) -> Sequence[int]:
    """Events by second, file order inside a second: a range when they already are, else a compact array
    of indices built a stretch at a time (one sort of the whole needs lists of every index and key, 70
    bytes per event at the peak). Each stretch is sorted on its own and joined to what is done: only the
    events on either side of the seam whose seconds interleave are sorted again, together, earlier ones
    first, which is the order one stable sort of the whole gives. When the seam reaches back further
    than a stretch (sources that cover the same hours), one sort of the whole is cheaper."""
    n = len(sec)
    if all(a <= b for a, b in pairwise(sec)):
        return range(n)
    key = sec.__getitem__
    out = array("i")
    for start in range(0, n, _STRETCH):
        part = sorted(range(start, min(start + _STRETCH, n)), key=key)
        if out and sec[out[-1]] > sec[part[0]]:  # the seam interleaves
            i = bisect_right(out, sec[part[0]], key=key)  # out[:i] comes before every event of part
            if len(out) - i > _STRETCH:  # whole files interleave (syslog + cron.log): one sort merges them
                return array("i", sorted(range(n), key=key))
            j = bisect_left(part, sec[out[-1]], key=key)  # part[j:] comes after every event of out
            seam = sorted([*out[i:], *part[:j]], key=key)
            del out[i:]
            out.extend(seam)
            part = part[j:]
        out.extend(part)
    return out


def _shared_spans(spans: dict[int, list[int]]) -> list[tuple[int, int]]:
    """Seconds (widened by one) that two or more sources cover: outside them no line can have a copy."""
    ranges = list(spans.values())
    both = sorted(
        (max(a[0], b[0]) - 1, min(a[1], b[1]) + 1)
        for i, a in enumerate(ranges)
        for b in ranges[i + 1 :]
        if max(a[0], b[0]) - 1 <= min(a[1], b[1]) + 1
    )
    out: list[tuple[int, int]] = []
    for lo, hi in both:
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _dedup(
    order: Sequence[int],
    sec: array,
    ev: Events,
    src: array,
    dup: list[int],
    spans: dict[int, list[int]],
    state: Stream | None = None,
) -> array:
    """Keep each line once: a line is a copy of a line another source holds with the same identity up to
    one second earlier (rsyslog stamps on receipt, the journal on sending: the second can differ). Each
    kept line absorbs at most one copy per other source, so a line repeated inside one source (identical
    CMDOUT lines) survives as often as the source holding it most often has it."""
    out = array("i")
    # identity -> [[second, source, sources it absorbed a copy from]]; (second, identity) in arrival
    # order, to forget old ones. A streamed history carries both from part to part.
    recent: dict[int, list[list]] = {} if state is None else state.recent
    horizon: deque[tuple[int, int]] = deque() if state is None else state.horizon
    ident = ev.ident
    shared = _shared_spans(spans)  # only there can a line have a copy (rotated files: the seams)
    j = 0
    for k in order:
        s = sec[k]
        while j < len(shared) and s > shared[j][1]:
            j += 1
        if j == len(shared) or s < shared[j][0]:
            out.append(k)
            continue
        idn, sr = ident[k], src[k]
        if not idn:  # CMD, END, CMDEND, grandchild: the columns say all the line says
            idn = hash((ev.host[k], ev.pid[k], ev.kind[k], ev.a[k], ev.b[k]))
        while horizon and horizon[0][0] < s - 1:
            _old_s, old_id = horizon.popleft()
            lst = recent.get(old_id)
            if lst is not None:
                lst[:] = [x for x in lst if x[0] >= s - 1]
                if not lst:
                    del recent[old_id]
        lst = recent.get(idn)
        if lst is not None:
            for entry in lst:
                if entry[1] != sr and sr not in entry[2]:
                    entry[2].add(sr)
                    dup[sr] += 1
                    break
            else:
                lst.append([s, sr, set()])
                horizon.append((s, idn))
                out.append(k)
            continue
        recent[idn] = [[s, sr, set()]]
        horizon.append((s, idn))
        out.append(k)
    return out


# a run: [start, hit, jobpid, host, status, signal, epoch, end, pairing, candidates, debian, child key,
#         JobEvidence or None, RunRecord or None, clean cell]; the clean cell is the [count, last end] of the
#         plain Debian ENDs of its job in its daemon run (None: not a Debian run, or not counted)
_START, _HIT, _PID, _HOST, _STATUS, _SIG, _EPOCH, _END, _PAIRING, _CAND = range(10)
_DEB, _CHILD, _EV, _REC, _CELL = range(10, 15)
_KEY = 32  # maps keyed by (host, pid) or (host, name id) use one int: host << 32 | value (both below 2^31)


class Pairer:
    """One pass over the merged stream into per-job evidence; see the module docstring. `feed` takes the
    stream in consecutive parts (all state carries over), `finish` closes it; `run` does both."""

    def __init__(self, matcher: Matcher, opts: Options, failures_logged: bool | None) -> None:
        self.matcher = matcher
        self.opts = opts
        self.forced = failures_logged
        self.agg: dict[str, JobEvidence] = {}
        self.unmatched: dict[tuple[str, str], UnmatchedEvidence] = {}
        self.ambiguous: dict[tuple[str, str], tuple[str, ...]] = {}
        self.ambiguous_runs = 0
        self.orphans = 0
        self.lost = [0, 0, 0]  # notes not attributed: No MTA, MAIL, CMDOUT
        self.runs: dict[str, deque[RunRecord]] = {}
        # Debian runs with a plain END, per (job, daemon run): [count, last end]; and their records
        self.clean: dict[tuple[str | None, int], list[float]] = {}
        self.clean_records: list[tuple[RunRecord, int]] = []
        self.failing_epochs: set[int] = set()
        self.windows: list[tuple[float, float]] = []
        self.first: float | None = None
        self.last: float | None = None
        # the pass's state, kept between parts of the stream
        self._names: dict[int, list] = {}  # name id -> [hit, JobEvidence or None, hosts seen, epoch, cell]
        self._by_pid: dict[int, list] = {}
        self._child: dict[int, list] = {}
        self._fifo: dict[int, deque] = {}
        self._pending: dict[int, list[tuple[float, int, int]]] = {}
        self._user_jobs: dict[tuple[int, bytes], set] = {}
        self._daemon: dict[int, list] = {}  # host -> [daemon pid, window start, last line, epoch]
        self._epochs = 0
        self._child_cap = 4 * MAX_FIFO
        self._table: list[tuple] = [()]

    # -- matching ----------------------------------------------------------------------------------------
    def _hit(self, value: tuple) -> tuple:
        """('j', job id, user, cmd) | ('a', candidates, user, cmd) | ('u', (user, cmd), user, cmd)."""
        if value[0] == b"r":
            folder, script = value[1].decode("utf-8", "replace"), value[2].decode("utf-8", "replace")
            found = self.matcher.match_script(folder, script)
            u, cmd = "root", f"{folder.rstrip('/')}/{script}"
        elif value[0] == b"a":
            ident = value[1].decode("utf-8", "replace")
            found = self.matcher.match_anacron(ident)
            u, cmd = "root", f"anacron job {ident}"
        else:
            u = value[0].decode("utf-8", "replace")
            cmd = value[1].decode("utf-8", "replace")
            found = self.matcher.match(u, cmd)
        if isinstance(found, str):
            return ("j", found, u, cmd)
        if found:
            self.ambiguous[(u, cmd)] = found
            return ("a", found, u, cmd)
        return ("u", (u, cmd), u, cmd)

    def _name(self, b: int) -> list:
        entry = self._names[b] = [self._hit(self._table[b]), None, set(), -1, None]
        return entry

    # -- the pass ----------------------------------------------------------------------------------------
    def run(self, m: Merged) -> None:
        self.feed(m)
        self.finish()

    def feed(self, m: Merged) -> None:
        """The next part of the time-ordered stream; `m.table` extends the table of earlier parts (merge
        and `Feed` keep one table), so names keep their ids."""
        ev, table = m.ev, m.table
        self._table = table
        if not len(m.order):
            return
        T, K, P, A, B, H = ev.t, ev.kind, ev.pid, ev.a, ev.b, ev.host
        names = self._names
        by_pid, child, fifo, pending = self._by_pid, self._child, self._fifo, self._pending
        user_jobs = self._user_jobs
        daemon = self._daemon
        o = self.opts
        since, until = o.since, o.until
        windowed = since is not None or until is not None
        keep = o.keep_runs
        clean_cells = self.clean
        finish = self._finish
        record = self._record

        def start(t: float, b: int, h: int, jobpid: int, debian: bool) -> list:
            entry = names.get(b)
            if entry is None:
                entry = self._name(b)
            hit = entry[0]
            if h not in entry[2]:
                entry[2].add(h)
                value = table[b]
                if value[0] not in (b"r", b"a"):
                    user_jobs.setdefault((h, value[0]), set()).add(hit[1])
            epoch = d[3]  # type: ignore[index]
            if windowed and not ((since is None or t >= since) and (until is None or t < until)):
                return [t, None, jobpid, h, None, None, epoch, None, "", 0, debian, None, None, None, None]
            je = entry[1]
            if je is None:
                je = self._count_start(hit, t)
                if hit[0] == "j":
                    entry[1] = je
            else:
                je.runs += 1
                je.starts.append(t)
            cell = None
            if je is not None and debian:
                if entry[3] != epoch:
                    entry[3] = epoch
                    entry[4] = clean_cells.setdefault((hit[1], epoch), [0.0, float("-inf")])
                cell = entry[4]
            return [t, hit, jobpid, h, None, None, epoch, None, "", 0, debian, None, je, None, cell]

        d: list | None = None
        last_h = -1
        lo, hi = self.first, self.last
        for i in m.order:
            t = T[i]
            k = K[i]
            h = H[i]
            if h != last_h:
                d = daemon.get(h)  # type: ignore[assignment]
                last_h = h
            if d is None:
                d = daemon[h] = [-1, t, t, self._epochs]
                self._epochs += 1
            if k == E_START:
                if P[i] != d[0]:
                    if d[0] != -1 or d[2] > d[1]:
                        self.windows.append((d[1], d[2]))
                    d[0], d[1], d[2], d[3] = P[i], t, t, self._epochs
                    self._epochs += 1
                continue
            if d[0] == -2:  # lines after a stop line with no start line: cron was back
                d[0], d[1], d[3] = -1, t, self._epochs
                self._epochs += 1
            d[2] = t
            if k == E_END:  # the most frequent line with E_CMD: inline
                run = by_pid.pop(h << _KEY | A[i], None)
                if run is None:
                    self.orphans += 1
                    continue
                run[_END], run[_PAIRING], run[_CAND] = t, "exact", 1
                je = run[_EV]
                if je is not None:
                    je.ended += 1
                    st = run[_START]
                    je.durations.append(t - st if t > st else 0.0)
                    je.ended_starts.append(st)
                    if run[_STATUS] is None and run[_SIG] is None:
                        je.evidence.add(END)
                        cell = run[_CELL]
                        if cell is not None:
                            cell[0] += 1
                            if t > cell[1]:
                                cell[1] = t
                if keep:
                    self._kept(run)
            elif k in (E_CMD, E_CMD_FIFO):
                jobpid = A[i]
                b = B[i]
                entry = names.get(b)
                if (
                    entry is not None
                    and not windowed
                    and k == E_CMD
                    and entry[1] is not None
                    and h in entry[2]
                    and entry[3] == d[3]
                ):  # a job already seen on this host in this daemon run: the common case, inline
                    je = entry[1]
                    je.runs += 1
                    je.starts.append(t)
                    run = [
                        t,
                        entry[0],
                        jobpid,
                        h,
                        None,
                        None,
                        d[3],
                        None,
                        "",
                        0,
                        True,
                        None,
                        je,
                        None,
                        entry[4],
                    ]
                else:
                    run = start(t, b, h, jobpid, k == E_CMD)
                if k == E_CMD:  # Debian: its END, failure and notes link by pid
                    key = h << _KEY | jobpid
                    old = by_pid.get(key)
                    if old is not None:  # pid reused: the earlier run's end was never logged
                        record(old)
                    by_pid[key] = run
                    if P[i] != jobpid:
                        child[h << _KEY | P[i]] = run
                        if len(child) > self._child_cap:
                            self._prune_children(t)
                    if len(by_pid) > MAX_OPEN:
                        for key in list(by_pid)[: MAX_OPEN // 4]:
                            record(by_pid.pop(key))
                else:  # cronie: its CMDEND pairs by user and command
                    fk = h << _KEY | b
                    q = fifo.get(fk)
                    if q is None:
                        q = fifo[fk] = deque()
                    q.append(run)
                    if len(q) > MAX_FIFO:
                        record(q.popleft())
            elif k == E_CMDEND:
                fk = h << _KEY | B[i]
                ck = h << _KEY | P[i]
                q = fifo.get(fk)
                notes = pending.pop(ck, ())
                if not q:
                    self.orphans += 1
                    for _nt, what, user in notes:
                        self._note_by_user(user_jobs, h, table[user][1], what)
                    continue
                n = len(q)
                run = q.popleft()
                if not q:
                    del fifo[fk]
                finish(run, t, "inferred", n)
                child[ck] = run
                if len(child) > self._child_cap:
                    self._prune_children(t)
                for _nt, what, _user in notes:
                    self._note(run, what)
            elif k == E_FAIL:
                self.failing_epochs.add(d[3])
                run = by_pid.get(h << _KEY | A[i])
                if run is None:
                    self.orphans += 1
                    continue
                child[h << _KEY | P[i]] = run
                st = table[B[i]]
                self._status(run, t, st[1], st[2])
            elif k == E_NOTE:
                what = A[i]
                ck = h << _KEY | P[i]
                run = child.get(ck)
                # a link holds while the run is open (Debian) or just after its end; cronie's child is
                # only known from its CMDEND, so a note before that waits for it
                if run is not None and (
                    (run[_END] is None and not what & N_CRONIE)
                    or (run[_END] is not None and t - run[_END] <= NOTE_AFTER_END)
                ):
                    self._note(run, what & 3)
                    continue
                if what & N_CRONIE:  # its CMDEND, from the same child, is still to come
                    pending.setdefault(ck, []).append((t, what & 3, B[i]))
                else:
                    self._note_by_user(user_jobs, h, table[B[i]][1], what & 3)
            elif k == E_STOP:
                self.windows.append((d[1], t))
                d[0] = -2
            elif k in (E_RP_START, E_AN_START):
                run = start(t, B[i], h, 0, False)
                fk = h << _KEY | B[i]
                q = fifo.get(fk)
                if q is None:
                    q = fifo[fk] = deque()
                q.append(run)
                if len(q) > MAX_FIFO:
                    record(q.popleft())
            elif k in (E_RP_END, E_AN_END):
                fk = h << _KEY | B[i]
                q = fifo.get(fk)
                if not q:
                    self.orphans += 1
                    continue
                n = len(q)
                run = q.popleft()
                if not q:
                    del fifo[fk]
                code = A[i]
                if k == E_AN_END and code >= 1000:
                    self._status(run, t, None, code - 1000)
                elif k == E_AN_END and code > 0:
                    self._status(run, t, code, None)
                finish(run, t, "inferred", n)
        if len(T):
            a, z = min(T), max(T)
            self.first = a if lo is None else min(lo, a)
            self.last = z if hi is None else max(hi, z)

    def _prune_children(self, t: float) -> None:
        """Forget child links of runs that ended more than NOTE_AFTER_END ago (amortised: the map is
        rebuilt only when it doubled), so a long log does not keep every run alive."""
        child = self._child
        for key in [k for k, r in child.items() if r[_END] is not None and t - r[_END] > NOTE_AFTER_END]:
            del child[key]
        self._child_cap = max(4 * MAX_FIFO, 2 * len(child))

    def finish(self) -> None:
        """The end of the stream: close the daemon windows, settle notes and runs still waiting."""
        for d in self._daemon.values():
            if d[0] != -2:
                self.windows.append((d[1], d[2]))
        table = self._table
        for notes in self._pending.values():
            for _t, what, user in notes:
                self._note_by_user(self._user_jobs, 0, table[user][1], what, any_host=True)
        for run in self._by_pid.values():
            if run[_END] is None:
                self._record(run)
        for q in self._fifo.values():
            for run in q:
                self._record(run)
        self._settle_clean()
        for ev in self.agg.values():
            if len(ev.starts):
                ev.first_seen, ev.last_seen = min(ev.starts), max(ev.starts)
        self._names, self._by_pid, self._child, self._fifo, self._pending = {}, {}, {}, {}, {}

    # -- runs ------------------------------------------------------------------------------------------
    def _count_start(self, hit: tuple, t: float) -> JobEvidence | None:
        kind = hit[0]
        if kind == "j":
            ev = self.agg.get(hit[1])
            if ev is None:
                ev = self.agg[hit[1]] = JobEvidence()
                ev.evidence.add(CMD_ONLY)
            ev.runs += 1
            ev.starts.append(t)  # first_seen and last_seen: from the starts, at the end
            return ev
        if kind == "u":
            u = self.unmatched.get(hit[1])
            if u is None:
                u = self.unmatched[hit[1]] = UnmatchedEvidence(hit[2], hit[3])
            u.count += 1
            u.first_seen = t if u.first_seen is None else min(u.first_seen, t)
            u.last_seen = t if u.last_seen is None else max(u.last_seen, t)
        else:
            self.ambiguous_runs += 1
        return None

    def _job(self, run: list) -> JobEvidence | None:
        return run[_EV]

    def _finish(self, run: list, t: float, pairing: str, candidates: int) -> None:
        run[_END], run[_PAIRING], run[_CAND] = t, pairing, candidates
        ev = run[_EV]
        clean = run[_STATUS] is None and run[_SIG] is None
        if ev is not None:
            ev.ended += 1
            ev.durations.append(t - run[_START] if t > run[_START] else 0.0)
            ev.ended_starts.append(run[_START])
            if pairing == "inferred":
                ev.inferred_pairings += 1
                if candidates > 1:
                    ev.guessed_pairings += 1
            if clean:
                ev.evidence.add(END)
                cell = run[_CELL]
                if cell is not None:
                    cell[0] += 1
                    if t > cell[1]:
                        cell[1] = t
        if self.opts.keep_runs:
            self._kept(run)

    def _kept(self, run: list) -> None:
        """An ended run, for `show`: its record, and whether a plain END may later mean exit 0."""
        self._record(run)
        if run[_STATUS] is None and run[_SIG] is None and run[_DEB] and run[_REC] is not None:
            self.clean_records.append((run[_REC], run[_EPOCH]))
            if len(self.clean_records) > 4 * self.opts.keep_runs:
                kept = {id(r) for d in self.runs.values() for r in d}
                self.clean_records = [x for x in self.clean_records if id(x[0]) in kept]

    def _status(self, run: list, t: float, status: int | None, sig: int | None) -> None:
        """A failure line: counted at once, since without END logging the run is never closed."""
        run[_STATUS], run[_SIG] = status, sig
        ev = self._job(run)
        if ev is None:
            return
        ev.evidence.add(STATUS)
        ev.status_known += 1
        ev.failed += 1
        ev.last_failure = t if ev.last_failure is None else max(ev.last_failure, t)
        if sig is not None:
            ev.signals[sig] = ev.signals.get(sig, 0) + 1
        elif status is not None:
            ev.exit_statuses[status] = ev.exit_statuses.get(status, 0) + 1

    def _note(self, run: list, what: int) -> None:
        ev = self._job(run)
        if ev is None:
            return
        if what == N_NOMTA:
            ev.output_discarded += 1
        elif what == N_MAIL:
            ev.mail_failures += 1
        else:
            ev.output_lines += 1

    def _note_by_user(self, user_jobs: dict, h: int, user: bytes, what: int, any_host: bool = False) -> None:
        """No exact link: the user the line names, when that user ran exactly one job; else unattributed."""
        if any_host:
            jobs: set = set()
            for (_h, u), s in user_jobs.items():
                if u == user:
                    jobs |= s
        else:
            jobs = user_jobs.get((h, user), set())
        if user != b"CRON" and len(jobs) == 1:
            (target,) = jobs
            ev = self.agg.get(target) if isinstance(target, str) else None
            if ev is not None:
                if what == N_NOMTA:
                    ev.output_discarded += 1
                elif what == N_MAIL:
                    ev.mail_failures += 1
                else:
                    ev.output_lines += 1
                return
        self.lost[what] += 1

    def _settle_clean(self) -> None:
        """Plain Debian ENDs are successes in daemon runs whose failures were being logged."""

        def ok(epoch: int) -> bool:
            return self.forced if self.forced is not None else epoch in self.failing_epochs

        for (job, epoch), (n, last) in self.clean.items():
            if not n or not ok(epoch):
                continue
            ev = self.agg[job]  # type: ignore[index]
            ev.status_known += int(n)
            ev.evidence.add(STATUS)
            ev.last_success = last if ev.last_success is None else max(ev.last_success, last)
        for rec, epoch in self.clean_records:
            if ok(epoch):
                object.__setattr__(rec, "exit_status", 0)
        self.clean = {}
        self.clean_records = []

    def _record(self, run: list) -> None:
        o = self.opts
        hit = run[_HIT]
        if not o.keep_runs or hit is None:
            return
        job_id = hit[1] if hit[0] == "j" else None
        if o.only_job is not None and job_id != o.only_job:
            return
        extra: dict[str, str] = {}
        if run[_PAIRING]:
            extra["pairing"] = run[_PAIRING]
            if run[_PAIRING] == "inferred":
                extra["open_runs"] = str(run[_CAND])
                if run[_CAND] > 1:
                    extra["guessed"] = "1"
        if hit[0] == "a":
            extra["candidates"] = ",".join(hit[1])
        rec = RunRecord(
            job_id=job_id,
            source="syslog",
            start=run[_START],
            end=run[_END],
            exit_status=run[_STATUS],
            signal=run[_SIG],
            user=hit[2],
            pid=run[_PID] or None,
            command=hit[3],
            extra=extra,
        )
        run[_REC] = rec
        q = self.runs.get(job_id or "")
        if q is None:
            q = self.runs[job_id or ""] = deque(maxlen=o.keep_runs)
        q.append(rec)

    def to_history(self, history: History) -> None:
        for ev in self.agg.values():
            if len(ev.starts) > 1:
                ev.starts = array("d", sorted(ev.starts))
        history.per_job.update(self.agg)
        history.unmatched.update(self.unmatched)
        history.ambiguous.update(self.ambiguous)
        history.ambiguous_runs += self.ambiguous_runs
        history.orphan_ends += self.orphans
        history.unattributed_discarded += self.lost[N_NOMTA]
        history.unattributed_mail_failures += self.lost[N_MAIL]
        history.unattributed_output += self.lost[2]
        history.daemon_windows = _union(self.windows)
        if self.first is not None and self.last is not None:
            history.window = (self.first, self.last)


def _union(windows: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(windows):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out
