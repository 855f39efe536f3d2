"""Find cron's logs under a root and read them, oldest first, into per-job evidence.

Big plain files are cut into byte ranges at line boundaries, pieces of at most PIECE_MAX bytes read a batch
at a time (one by this process, the others by forked workers) into compact events; the pieces are then
merged, de-duplicated and paired in one time-ordered pass (pairing.py), so the result does not depend on
how the history was split into files or pieces. That pass runs as the history is read: what is older than
the first line of every file or piece still to read is paired and let go (see _read).
Memory: blocks of 1 MiB, 29 bytes per cron line of one batch of pieces (`workers` x PIECE_MAX bytes of a
plain file, however big; a gzipped or journal file is one piece, read whole) and of the last SLACK before
it, and the per-job evidence (about 30 bytes a run: its start, and its duration once ended). A read that
has to start again in one pass (see _read) holds the whole history.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import math
import os
import pickle
import re
import signal
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from itertools import pairwise
from pathlib import Path

from cronshift.history.events import History, SourceInfo
from cronshift.history.journal import feed_journal
from cronshift.history.match import Matcher
from cronshift.history.pairing import Pairer, Stream, cut, merge, merge_into
from cronshift.history.syslog import _CLASSIC_ANYWHERE, MONTHS, Options, Segment
from cronshift.model import CronJob, RunRecord

BLOCK = 1 << 20  # a block is copied twice on its way in: small keeps the peak low
PARALLEL_MIN = 8 << 20  # smaller files are not worth a fork
PIECE_MAX = 64 << 20  # bytes of a big plain file a worker reads at a time: bounds what is held (see _read)
_NAME = re.compile(r"^(syslog|cron|messages)(\.log)?(?:[.-](\d+))?(\.gz)?$")
_FAMILY = {"cron": 0, "syslog": 1, "messages": 2}
SLACK = 3600.0  # seconds a file's lines may go back before its first cron line (see _read)


def find_logs(root: Path, extra: Iterable[Path] = ()) -> list[Path]:
    """`var/log/{syslog,cron,messages}*` under the root, each family oldest first, then `--log` extras."""
    found: list[tuple[int, int, int, str, Path]] = []
    logdir = root / "var" / "log"
    if logdir.is_dir():
        for p in logdir.iterdir():
            m = _NAME.match(p.name)
            if m is None or not p.is_file():
                continue
            num = m[3]
            # syslog.3.gz is older than syslog.1, which is older than syslog; cron-20261124 sorts by date.
            age = 0 if num is None else (-int(num) if len(num) < 8 else int(num) - 10**9)
            found.append((_FAMILY[m[1]], 0 if num is None else 1, age, p.name, p))
    found.sort(key=lambda f: (f[0], -f[1], f[2]))
    paths = [f[4] for f in found]
    for p in extra:
        if p not in paths:
            paths.append(p)
    return paths


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _opener(path: Path):
    return gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")


def _is_journal(path: Path) -> bool:
    with _opener(path) as f:
        head = f.read(4096).lstrip()
    return head[:1] == b"{"


def _blocks(
    path: Path, start: int, stop: int | None, progress: Callable[[int], None] | None
) -> Iterator[tuple[bytes, int]]:
    """Blocks of whole lines from [start, stop) (stop None: to the end), as (buffer, end): the lines are
    buffer[:end]. A range owns the lines that begin in it. A plain file is read block by block, stepping
    back to the start of the cut last line, so no block is copied (gzip cannot step back: see _gz_blocks)."""
    if _is_gzip(path):
        yield from _gz_blocks(path, start, stop, progress)
        return
    with open(path, "rb") as f:
        if start:
            f.seek(start - 1)
            if f.read(1) != b"\n":
                f.readline()
        pos = f.tell()
        while True:
            want = BLOCK if stop is None else min(BLOCK, stop - pos)
            block = f.read(want) if want > 0 else b""
            if not block:
                return
            cut = block.rfind(b"\n") + 1
            if len(block) < want or (stop is not None and pos + len(block) >= stop):
                # the end of the file or of the range: its last line ends here (past stop if need be)
                if cut < len(block) and len(block) == want:
                    block += f.readline()
                if progress is not None:
                    progress(len(block))
                yield block, len(block)
                return
            if not cut:  # one line longer than a block
                block += f.readline()
                cut = len(block)
            if progress is not None:
                progress(cut)
            yield block, cut
            pos += cut
            if cut < len(block):
                f.seek(pos)


def _gz_blocks(
    path: Path, start: int, stop: int | None, progress: Callable[[int], None] | None
) -> Iterator[tuple[bytes, int]]:
    with gzip.open(path, "rb") as f:
        if start:
            f.seek(start - 1)
            if f.read(1) != b"\n":
                f.readline()
        pos = f.tell()
        tail = b""
        while True:
            want = BLOCK if stop is None else min(BLOCK, stop - pos)
            block = f.read(want) if want > 0 else b""
            if not block:
                if stop is not None and pos >= stop and tail:
                    tail += f.readline()  # finish the line that began inside the range
                if tail:
                    yield tail, len(tail)
                return
            pos += len(block)
            if progress is not None:
                progress(len(block))
            if tail:
                block = tail + block
            cut = block.rfind(b"\n") + 1
            tail = block[cut:]
            if cut:
                yield block, cut


def _first_month(path: Path, start: int = 0) -> int:
    with _opener(path) as f:
        f.seek(start)
        head = f.read(1 << 16)
    for line in head.split(b"\n")[1 if start else 0 :]:
        m = _CLASSIC_ANYWHERE.search(line)
        if m is not None and m[1] in MONTHS:
            return MONTHS[m[1]]
    return 0


def _start_year(first_month: int, ref: datetime) -> int:
    return ref.year - 1 if first_month > ref.month else ref.year


def _parse_range(
    path: Path,
    opts: Options,
    year: int,
    start: int,
    stop: int | None,
    journal: bool,
    progress,
) -> Segment:
    seg = Segment(opts, year)
    for block, end in _blocks(path, start, stop, progress):
        if journal:
            feed_journal(seg, block[:end].splitlines())
        else:
            seg.feed_block(block, end)
    return seg


def _fork_parse(args: tuple) -> tuple[int, int]:
    """Parse a range in a forked child; returns (pid, read fd) of a pipe carrying the pickled Segment."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            os.close(r)
            seg = _parse_range(*args, progress=None)
            data = pickle.dumps(seg, protocol=pickle.HIGHEST_PROTOCOL)
            with os.fdopen(w, "wb") as out:
                out.write(struct.pack("<Q", len(data)))
                out.write(data)
        except BaseException:
            code = 1
        os._exit(code)
    os.close(w)
    return pid, r


def _collect(pid: int, fd: int) -> Segment | None:
    with os.fdopen(fd, "rb") as f:
        head = f.read(8)
        data = f.read(struct.unpack("<Q", head)[0]) if len(head) == 8 else b""
    os.waitpid(pid, 0)
    if not data:
        return None
    seg: Segment = pickle.loads(data)
    return seg


def _layout(size: int, n: int, piece_max: int) -> list[list[tuple[int, int]]]:
    """Byte ranges [start, stop) of a plain file, in batches of up to `n` consecutive pieces: the first of
    each batch is this process's, the others go to workers. Workers' pieces hold at most `piece_max` bytes,
    so what is held at once does not grow with the file. This process also pairs while the workers read:
    its piece is smaller, so that both finish together. In a file of one batch it pairs only its own piece
    then (pairing costs about a quarter of reading); in a longer one also the workers' previous pieces,
    with the cost of joining them (its share measured best at 0.43 of a worker's piece with two processes:
    0.6 and 0.74 were 4% and 7% slower on a 1.75 GB syslog)."""
    if n <= 1:
        nb = max(1, -(-size // piece_max))
        return [[(size * i // nb, size * (i + 1) // nb)] for i in range(nb)]
    mine = 0.8  # one batch: this process pairs its own piece only
    nb = 1 if size <= piece_max * (n - 1 + mine) else 0
    if not nb:  # several: it also pairs the workers' previous pieces
        mine = max(0.2, (1 - 0.4 * (n - 1)) / 1.4)
        nb = math.ceil(size / (piece_max * (n - 1 + mine)))
    weights = [mine, *[1.0] * (n - 1)] * nb
    total = sum(weights)
    cuts = [0]
    acc = 0.0
    for w in weights[:-1]:
        acc += w
        cuts.append(int(size * acc / total))
    cuts.append(size)
    ranges = list(pairwise(cuts))
    return [ranges[i : i + n] for i in range(0, len(ranges), n)]


class _Years:
    """The year check, piece after piece of one file in order: each piece guessed its year from the reference
    (the file's mtime); the guesses must chain (a December piece followed by a January one: the next year)
    and the last classic stamp must fall in the reference year or the one before."""

    def __init__(self) -> None:
        self.start: int | None = None  # the first piece's guess
        self.year = 0  # the year the last classic stamp read is in, counted from the first guess
        self.last_month = 0
        self.prev: tuple[int, int] | None = None  # the previous piece's (year at its end, last month)
        self.ok = True  # every piece's guess agrees with the one before it

    def add(self, seg: Segment) -> None:
        if self.start is None:
            self.start = self.year = seg.start_year
        if seg.first_month and self.last_month and self.last_month - seg.first_month >= 6:
            self.year += 1
        self.year += seg.year - seg.start_year
        if self.prev is not None and seg.first_month and self.prev[1]:
            want = self.prev[0] + (1 if self.prev[1] - seg.first_month >= 6 else 0)
            self.ok = self.ok and seg.start_year == want
        self.prev = (seg.year, seg.last_month)
        self.last_month = seg.last_month or self.last_month

    def settled(self, ref: datetime) -> tuple[bool, int]:
        """Whether every guess was right, and the first piece's year if not."""
        if not self.last_month:
            return True, self.start or 0
        want = ref.year if self.last_month <= ref.month else ref.year - 1
        shift = want - self.year
        return shift == 0 and self.ok, (self.start or 0) + shift


def _reap(kids: list[tuple[int, int]]) -> None:
    """Stop workers whose pieces are no longer wanted (the read starts again)."""
    for pid, fd in kids:
        os.close(fd)
        with contextlib.suppress(ProcessLookupError):  # it had already exited
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    kids.clear()


def _parse_file(
    path: Path,
    opts: Options,
    ref: datetime,
    workers: int,
    progress,
    feed: Callable[[list[Segment], float], None] | None = None,
) -> tuple[list[Segment], bool]:
    """The file as consecutive segments, with the years of classic stamps settled, and whether it had to be
    read again in one pass for that. A big plain file is read in batches of `workers` pieces of at most
    PIECE_MAX bytes (see _layout). `feed`, when given, gets every piece but the last ones as soon as it is
    read, with the stamp of the first cron line of the next piece to read, so pairing starts and the pieces
    are let go (see _read); only the rest is returned. Once a piece was fed, a year guessed wrong cannot be
    read again here: the answer is then ([], True), and the whole read starts again."""
    journal = _is_journal(path)
    size = path.stat().st_size
    plain = not journal and not _is_gzip(path)
    n = workers if plain and size >= PARALLEL_MIN else 1
    batches = _layout(size, n, PIECE_MAX) if plain else [[(0, size)]]
    last = batches[-1][-1][0]  # the last piece (its start): read to the end, never fed
    years = _Years()
    guessed: dict[int, int] = {}

    def year(start: int) -> int:
        if start not in guessed:
            guessed[start] = _start_year(_first_month(path, start), ref)
        return guessed[start]

    def head(start: int) -> float:
        return _head_second(path, opts, year(start), start)

    def parse(a: int, b: int, report) -> Segment:
        return _parse_range(path, opts, year(a), a, None if a == last else b, journal, report)

    def fork(batch: list[tuple[int, int]]) -> list[tuple[int, int]]:
        return [_fork_parse((path, opts, year(a), a, None if a == last else b, journal)) for a, b in batch]

    segs: list[Segment] = []  # read and not fed
    fed = False
    kids = fork(batches[0][1:])
    try:
        for i, batch in enumerate(batches):
            (a, b), rest = batch[0], batch[1:]
            mine = [parse(a, b, progress)]
            years.add(mine[0])
            if feed is not None and a != last:
                nxt = rest[0] if rest else batches[i + 1][0]
                feed(mine, head(nxt[0]))  # takes the piece out of the list
                fed = True
            segs.extend(mine)
            got: list[Segment] = []
            while kids:
                seg = _collect(*kids.pop(0))
                k = len(got)
                if seg is None:  # a worker failed: parse its range here
                    seg = parse(*rest[k], None)
                if progress is not None:
                    progress((size if rest[k][0] == last else rest[k][1]) - rest[k][0])
                years.add(seg)
                got.append(seg)
            if fed and not years.ok:  # a year guessed wrong, after pairing began on the file
                return [], True
            if i + 1 < len(batches):
                kids = fork(batches[i + 1][1:])  # they read while this process pairs
                if feed is not None and got:
                    feed(got, head(batches[i + 1][0][0]))
                    fed = True
            segs.extend(got)
    finally:
        _reap(kids)
    right, expected = years.settled(ref)
    if not right:  # spans more than a year, or a piece guessed wrong: one sequential pass
        if fed:
            return [], True
        return [_parse_range(path, opts, expected, 0, None, journal, None)], True
    return segs, False


def _dialect(dialects: set[str], journal: bool) -> str:
    d = dialects
    if journal:
        return "journal"
    if "debian" in d and "cronie" in d:
        return "mixed"
    if "cronie" in d:
        return "cronie"
    if "debian-L" in d:
        return "debian-L"
    if "debian" in d:
        return "debian"
    return "none" if not d else "+".join(sorted(d))


def _head_second(path: Path, opts: Options, year: int, start: int = 0) -> float:
    """The stamp of the first cron line in the 64 KiB from `start` (the piece that begins there owns the
    line that begins there, or else the next one: see _blocks), -inf when there is none: no line after it is
    expected much before it (see _read)."""
    try:
        journal = _is_journal(path)
        with _opener(path) as f:
            f.seek(max(start - 1, 0))
            head = f.read(1 << 16)
        seg = Segment(opts, year)
        # from the byte before `start`: up to its first newline is another piece's (nothing if it is one)
        lines = head.split(b"\n")[1 if start else 0 : -1]
        if journal:
            feed_journal(seg, lines)
        else:
            seg.feed_lines(lines)
    except (OSError, EOFError, gzip.BadGzipFile):
        return -math.inf
    return min(seg.ev.t) if len(seg.ev) else -math.inf


def _file_head(path: Path, opts: Options, now: datetime) -> float:
    try:
        ref = datetime.fromtimestamp(min(path.stat().st_mtime, now.timestamp()), opts.tz or now.tzinfo)
        year = _start_year(_first_month(path), ref)
    except (OSError, EOFError, gzip.BadGzipFile):
        return -math.inf
    return _head_second(path, opts, year)


@dataclasses.dataclass(slots=True)
class _Tally:
    """What a file's pieces add up to, as they are read (the pieces themselves are let go)."""

    started: bool = False  # pieces went to pairing before the file was read to its end
    dialects: set[str] = dataclasses.field(default_factory=set)
    lines: int = 0
    cron_lines: int = 0
    malformed: int = 0
    untrusted: int = 0
    lo: float = math.inf  # the seconds its events cover
    hi: float = -math.inf

    def add(self, history: History, segs: Iterable[Segment]) -> None:
        for seg in segs:
            c = seg.c
            self.dialects |= c.dialects
            self.lines += c.lines
            self.cron_lines += c.cron_lines
            self.malformed += c.malformed
            self.untrusted += c.untrusted
            history.lines_read += c.lines
            history.cron_lines += c.cron_lines
            history.malformed += c.malformed
            history.unreadable_stamps += c.unreadable
            history.untrusted += c.untrusted
            if len(seg.ev):
                self.lo, self.hi = min(self.lo, min(seg.ev.t)), max(self.hi, max(seg.ev.t))


class _Restart(Exception):
    """A piece holds a line older than what was already paired: the read starts again in one pass."""


def _read(
    paths: Iterable[Path],
    jobs: Sequence[CronJob],
    opts: Options,
    now: datetime,
    progress: Callable[[int], None] | None,
    failures_logged: bool | None,
    workers: int | None,
    stream: bool = True,
    watch: Callable[[int], None] | None = None,
) -> tuple[Pairer | None, History]:
    """Read every file, join, de-duplicate and pair. The history is paired as it is read, oldest first:
    after each file and each piece of a big one (this process's piece while the workers still read theirs,
    their pieces while the workers read the next batch), what happened more than SLACK before the first line
    of every file or piece still to read is joined and paired, so memory holds about one rotation's worth of
    events, or one batch of pieces of a bigger file, not the whole history, and pairing overlaps the
    workers' reading. A file or piece with a line older than what was already paired (SLACK was not enough,
    a file out of order, a clock set back, a year guessed again) makes the whole read start again without
    streaming, so the result never depends on it. `watch` (for tests) gets the number of events held after
    each piece is taken."""
    paths = [Path(p) for p in paths]
    history = History()
    nworkers = workers or min(os.cpu_count() or 1, 4)
    total = 0

    def bump(n: int) -> None:
        nonlocal total
        total += n
        if progress is not None:
            progress(total)

    state = Stream(len(paths), dedup=len(paths) > 1) if stream else None
    pairer = Pairer(Matcher(jobs), opts, failures_logged)
    heads = [_file_head(p, opts, now) - SLACK for p in paths] if len(paths) > 1 and stream else []
    if state is not None:
        for i, h in enumerate(heads):  # not read yet: from (about) its first line on
            state.spans[i] = [int(h) if h > -math.inf else -(1 << 62), 1 << 62]
    fed_to = -math.inf  # every second before this one was paired
    pieces: list[tuple[int, Segment]] = []

    def flush(upto: float) -> None:
        """Pair what is before `upto` (a second no later line goes back before)."""
        nonlocal fed_to
        if state is None or upto == math.inf or upto <= fed_to:
            return
        second = int(upto)
        done: list[tuple[int, Segment]] = []
        held: list[tuple[int, Segment]] = []
        for s, seg in pieces:
            before, after = cut(seg, second)
            if len(before.ev):
                done.append((s, before))
            if len(after.ev):
                held.append((s, after))
        pieces[:] = held
        if done:
            pairer.feed(merge_into(state, done))
        fed_to = second

    def take(n: int, tally: _Tally, segs: list[Segment]) -> None:
        """Hold a file's pieces for pairing; one with a line older than what was paired: start over."""
        if any(len(s.ev) and min(s.ev.t) < fed_to for s in segs):
            raise _Restart
        tally.add(history, segs)
        pieces.extend((n, seg) for seg in segs)
        segs.clear()  # the caller's list: the pieces are held here alone, and cut and let go by flush
        if watch is not None:
            watch(sum(len(seg.ev) for _, seg in pieces))

    for n, path in enumerate(paths):
        tally = _Tally()

        def early(segs: list[Segment], next_head: float, n: int = n, tally: _Tally = tally) -> None:
            """Pieces of the file were read, the rest still is: pair what is safely before the next one."""
            tally.started = True
            take(n, tally, segs)
            flush(min([next_head - SLACK, *heads[n + 1 :]]))

        try:
            ref_ts = min(path.stat().st_mtime, now.timestamp())
            ref = datetime.fromtimestamp(ref_ts, opts.tz or now.tzinfo)
            journal = _is_journal(path)
            segs, again = _parse_file(path, opts, ref, nworkers, bump, early if state is not None else None)
            if tally.started and again:  # read again for its years after pairing began on it
                raise _Restart
            if state is None:
                tally.add(history, segs)
                pieces.extend((n, seg) for seg in segs)
            else:
                take(n, tally, segs)
        except (_Restart, OSError, EOFError, gzip.BadGzipFile) as exc:
            if isinstance(exc, _Restart) or tally.started:  # pairing began: read everything again in one pass
                return _read(
                    paths, jobs, opts, now, progress, failures_logged, workers, stream=False, watch=watch
                )
            history.sources.append(SourceInfo(str(path), f"unreadable: {exc}", 0, 0, 0))
            if state is not None:
                state.spans.pop(n, None)
            continue
        history.sources.append(
            SourceInfo(
                str(path),
                _dialect(tally.dialects, journal),
                tally.lines,
                tally.cron_lines,
                tally.malformed,
                untrusted=tally.untrusted,
            )
        )
        if state is None:
            continue
        if tally.lo <= tally.hi:
            state.spans[n] = [int(tally.lo), int(tally.hi)]
        else:
            state.spans.pop(n, None)
        flush(min(heads[n + 1 :], default=math.inf))
    if state is not None:
        if pieces:
            pairer.feed(merge_into(state, pieces))
        duplicates = state.duplicates
    elif pieces:
        merged = merge(pieces, len(history.sources))
        duplicates = merged.duplicates
        del pieces
        pairer.feed(merged)
    else:
        return None, history
    if all(s.dialect.startswith("unreadable") for s in history.sources):
        return None, history
    for i, k in enumerate(duplicates):
        if k:
            history.sources[i] = dataclasses.replace(history.sources[i], duplicates=k)
    history.duplicates_dropped = sum(duplicates)
    pairer.finish()
    pairer.to_history(history)
    return pairer, history


def read_history(
    paths: Iterable[Path],
    jobs: Sequence[CronJob],
    since: float | None,
    until: float | None,
    now: datetime,
    progress: Callable[[int], None] | None = None,
    *,
    failures_logged: bool | None = None,
    workers: int | None = None,
) -> History:
    """Per-job evidence from cron's logs, `paths` in chronological order (see `find_logs`).

    `now` bounds the year of undated stamps (with each file's mtime). `progress` gets the bytes read so far.
    `failures_logged`: whether cron logged failed runs (Debian `-L` bit 4), so that a plain END means exit 0;
    None infers it from the logs (any `grandchild #N failed` line).
    """
    opts = Options(since=since, until=until, tz=now.tzinfo)
    return _read(paths, jobs, opts, now, progress, failures_logged, workers)[1]


def iter_runs(
    paths: Iterable[Path],
    jobs: Sequence[CronJob],
    job_id: str | None,
    now: datetime,
    *,
    last: int = 50,
    since: float | None = None,
    until: float | None = None,
    failures_logged: bool | None = None,
) -> Iterator[RunRecord]:
    """The last `last` runs of one job (job_id None: of every command no job matched), oldest first."""
    opts = Options(since=since, until=until, tz=now.tzinfo, keep_runs=last, only_job=job_id)
    pairer, _ = _read(paths, jobs, opts, now, None, failures_logged, None)
    if pairer is None:
        return
    runs = sorted(pairer.runs.get(job_id or "", ()), key=lambda r: r.start)
    yield from runs[-last:]


def runs_by_job(
    paths: Iterable[Path],
    jobs: Sequence[CronJob],
    now: datetime,
    *,
    last: int = 50,
    since: float | None = None,
    until: float | None = None,
) -> dict[str, list[RunRecord]]:
    """The last `last` runs of every job, oldest first, in one pass over the logs (iter_runs reads them
    once per job); `cronshift report` draws them."""
    opts = Options(since=since, until=until, tz=now.tzinfo, keep_runs=last, only_job=None)
    pairer, _ = _read(paths, jobs, opts, now, None, None, None)
    if pairer is None:
        return {}
    return {jid: sorted(runs, key=lambda r: r.start)[-last:] for jid, runs in pairer.runs.items() if jid}
