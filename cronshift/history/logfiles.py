"""Find cron's logs under a root and read them, oldest first, into per-job evidence.

Big plain files are cut into byte ranges at line boundaries and read by forked workers into compact events;
the pieces are then merged, de-duplicated and paired in one time-ordered pass (pairing.py), so the result
does not depend on how the history was split into files or pieces. That pass runs as the history is read:
what is older than the first line of every file or piece still to read is paired and let go (see _read).
Memory: blocks of 1 MiB, 29 bytes per cron line of the file being read (its first piece is paired as soon
as it is read; the workers' pieces are held whole) and of the last SLACK before it, and per-job aggregates.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import os
import pickle
import re
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from itertools import pairwise
from pathlib import Path

from cronshift.history.events import History, SourceInfo
from cronshift.history.journal import feed_journal
from cronshift.history.match import Matcher
from cronshift.history.pairing import Pairer, Stream, cut, merge, merge_into
from cronshift.history.syslog import _CLASSIC_ANYWHERE, MONTHS, Events, Options, Segment
from cronshift.model import CronJob, RunRecord

BLOCK = 1 << 20  # a block is copied twice on its way in: small keeps the peak low
PARALLEL_MIN = 8 << 20  # smaller files are not worth a fork
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


def _parse_file(
    path: Path,
    opts: Options,
    ref: datetime,
    workers: int,
    progress,
    early: Callable[[Segment, float], None] | None = None,
) -> tuple[list[Segment], bool]:
    """The file as consecutive segments, with the years of classic stamps settled, and whether it had to be
    read again in one pass for that. `early` gets the first piece as soon as this process has read it (the
    workers still reading theirs) with the first stamp of the next piece, so pairing can start."""
    journal = _is_journal(path)
    size = path.stat().st_size
    plain = not journal and not _is_gzip(path)
    n = workers if plain and size >= PARALLEL_MIN else 1
    # this process also pairs its piece while the workers read theirs (see _read): a smaller piece for it,
    # so that both are done at about the same time (pairing costs about a quarter of reading)
    first = size * 4 // (5 * n - 1)
    bounds = [0, *(first + (size - first) * i // max(n - 1, 1) for i in range(n - 1)), size]
    years = [_start_year(_first_month(path, b), ref) for b in bounds[:-1]]
    segs: list[Segment] = []
    if n > 1:
        kids = [_fork_parse((path, opts, years[i], bounds[i], bounds[i + 1], journal)) for i in range(1, n)]
        mine = _parse_range(path, opts, years[0], bounds[0], bounds[1], journal, progress)
        if early is not None:
            early(mine, _head_second(path, opts, years[1], bounds[1]))
        segs = [mine]
        for i, (pid, fd) in enumerate(kids, start=1):
            seg = _collect(pid, fd)
            if seg is None:  # a worker failed: parse its range here
                seg = _parse_range(path, opts, years[i], bounds[i], bounds[i + 1], journal, None)
            if progress is not None:
                progress(bounds[i + 1] - bounds[i])
            segs.append(seg)
    else:
        segs = [_parse_range(path, opts, years[0], 0, None, journal, progress)]
    # Year check: walk the pieces; the last classic stamp must fall in the reference year (or the one before).
    year = segs[0].start_year
    last_month = 0
    for seg in segs:
        if seg.first_month and last_month and last_month - seg.first_month >= 6:
            year += 1
        year += seg.year - seg.start_year
        last_month = seg.last_month or last_month
    if last_month:
        want = ref.year if last_month <= ref.month else ref.year - 1
        shift = want - year
        expected = segs[0].start_year + shift
        chain_ok = shift == 0 and all(
            s.start_year == p.year + (1 if p.last_month - s.first_month >= 6 else 0)
            for p, s in pairwise(segs)
            if s.first_month and p.last_month
        )
        if not chain_ok:  # spans more than a year, or a piece guessed wrong: one sequential pass
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
    """The stamp of the first cron line in the 64 KiB from `start` (a line start, or the next one), -inf
    when there is none: no line after it is expected much before it (see _read)."""
    try:
        journal = _is_journal(path)
        with _opener(path) as f:
            f.seek(start)
            head = f.read(1 << 16)
        seg = Segment(opts, year)
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


def _read(
    paths: Iterable[Path],
    jobs: Sequence[CronJob],
    opts: Options,
    now: datetime,
    progress: Callable[[int], None] | None,
    failures_logged: bool | None,
    workers: int | None,
    stream: bool = True,
) -> tuple[Pairer | None, History]:
    """Read every file, join, de-duplicate and pair. The history is paired as it is read, oldest first:
    after each file (and after this process's first piece of a big file, while the workers still read
    theirs), what happened more than SLACK before the first line of every file or piece still to read is
    joined and paired, so memory holds about one rotation's worth of events, not the whole history, and
    pairing overlaps the workers' reading. A file or piece with a line older than what was already paired
    (SLACK was not enough, a file out of order, a year guessed again) makes the whole read start again
    without streaming, so the result never depends on it."""
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

    for n, path in enumerate(paths):
        started: list[Segment] = []

        def early(mine: Segment, next_head: float, n: int = n, started: list = started) -> None:
            """The file's first piece is read, the workers still read theirs: pair what is safely before."""
            started.append(mine)
            pieces.append((n, mine))
            flush(min([next_head - SLACK, *heads[n + 1 :]]))

        try:
            ref_ts = min(path.stat().st_mtime, now.timestamp())
            ref = datetime.fromtimestamp(ref_ts, opts.tz or now.tzinfo)
            journal = _is_journal(path)
            segs, again = _parse_file(path, opts, ref, nworkers, bump, early if state is not None else None)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            if started:  # pairing began on a file that then failed: read everything again
                return _read(paths, jobs, opts, now, progress, failures_logged, workers, stream=False)
            history.sources.append(SourceInfo(str(path), f"unreadable: {exc}", 0, 0, 0))
            if state is not None:
                state.spans.pop(n, None)
            continue
        if started and again:  # read again for its years after pairing began on it: start over in one pass
            return _read(paths, jobs, opts, now, progress, failures_logged, workers, stream=False)
        dialects: set[str] = set()
        for seg in segs:
            dialects |= seg.c.dialects
            history.lines_read += seg.c.lines
            history.cron_lines += seg.c.cron_lines
            history.malformed += seg.c.malformed
            history.unreadable_stamps += seg.c.unreadable
            history.untrusted += seg.c.untrusted
        history.sources.append(
            SourceInfo(
                str(path),
                _dialect(dialects, journal),
                sum(s.c.lines for s in segs),
                sum(s.c.cron_lines for s in segs),
                sum(s.c.malformed for s in segs),
                untrusted=sum(s.c.untrusted for s in segs),
            )
        )
        rest = segs[1:] if started else segs
        if state is None:
            pieces.extend((n, seg) for seg in rest)
            continue
        seconds = [(min(s.ev.t), max(s.ev.t)) for s in segs if len(s.ev)]
        if any(len(s.ev) and min(s.ev.t) < fed_to for s in rest):  # older than what was paired
            return _read(paths, jobs, opts, now, progress, failures_logged, workers, stream=False)
        if seconds:
            state.spans[n] = [int(min(a for a, _ in seconds)), int(max(b for _, b in seconds))]
        else:
            state.spans.pop(n, None)
        if started:
            segs[0].ev = Events()  # its events are in `pieces` (cut) or paired
        pieces.extend((n, seg) for seg in rest)
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
