"""Map what cron logged (user, command text) back to the scanned job that ran it.

Cron does not log the crontab line; it logs the command after its own `%` processing, through `mkprint`
(Debian cron 3.0pl1 and cronie, checked in their do_command.c / misc.c): the text stops at the first
unescaped `%`, `\\%` becomes `%` (Debian also turns `\\\\` into `\\`), control characters become `^X`,
DEL `^?` and bytes >= 0x80 a backslash and three octal digits. We compute that form for every job, for both
dialects, so the lookup is one dict access per distinct logged command.
"""

from __future__ import annotations

from collections.abc import Sequence

from cronshift.discover.scan import split_percent
from cronshift.model import CronJob, Format

Match = str | tuple[str, ...] | None  # one job id, several candidates (ambiguous), or no job


def cut_at_percent(command: str, *, debian: bool) -> str:
    """The command as cron hands it to the shell: up to the first unescaped `%`, escapes removed."""
    return split_percent(command, debian=debian)[0]


def mkprint(text: str) -> str:
    """cron's mkprint(): how the command appears between the parentheses of a CMD line."""
    out: list[str] = []
    for b in text.encode("utf-8", "surrogateescape"):
        if b < 0x20:
            out.append("^" + chr(b + 0x40))
        elif b < 0x7F:
            out.append(chr(b))
        elif b == 0x7F:
            out.append("^?")
        else:
            out.append(f"\\{b:03o}")
    return "".join(out)


def logged_forms(job: CronJob) -> set[str]:
    """Every text a CMD line may show for this job (Debian and cronie differ on `\\\\`)."""
    forms = {mkprint(cut_at_percent(job.command, debian=d)).strip() for d in (True, False)}
    if job.shell_command:
        forms.add(mkprint(job.shell_command).strip())
    return forms


def _norm_dir(path: str) -> str:
    return path.strip().strip("/")


class Matcher:
    """Index of scanned jobs by how cron logs them; lookups are cached per distinct logged text."""

    def __init__(self, jobs: Sequence[CronJob]) -> None:
        self.by_command: dict[tuple[str, str], list[str]] = {}
        self.by_script: dict[tuple[str, str], list[str]] = {}
        self.by_anacron: dict[str, list[str]] = {}
        # Jobs that can run are indexed first; a disabled or broken twin only matches when nothing else does.
        for job in sorted(jobs, key=lambda j: not (j.runs and not j.disabled)):
            live = job.runs and not job.disabled
            if job.format == Format.RUN_PARTS:
                folder, _, name = job.source.path.rpartition("/")
                self._add(self.by_script, (_norm_dir(folder), name), job.id, live)
            elif job.format == Format.ANACRONTAB and job.job_id:
                self._add(self.by_anacron, job.job_id, job.id, live)
            if job.format != Format.RUN_PARTS:
                for form in logged_forms(job):
                    self._add(self.by_command, (job.user, form), job.id, live)
        self._live = {j.id for j in jobs if j.runs and not j.disabled}
        self._cache: dict[tuple[str, str], Match] = {}

    @staticmethod
    def _add(index: dict, key: object, job_id: str, live: bool) -> None:
        ids = index.setdefault(key, [])
        if job_id not in ids:
            ids.append(job_id)

    def _pick(self, ids: list[str] | None) -> Match:
        if not ids:
            return None
        live = [i for i in ids if i in self._live]
        chosen = live or ids
        return chosen[0] if len(chosen) == 1 else tuple(chosen)

    def match(self, user: str, command: str) -> Match:
        key = (user, command)
        hit = self._cache.get(key, 0)
        if hit == 0:
            hit = self._pick(self.by_command.get((user, command.strip())))
            self._cache[key] = hit
        return hit  # type: ignore[return-value]

    def match_script(self, folder: str, script: str) -> Match:
        return self._pick(self.by_script.get((_norm_dir(folder), script)))

    def match_anacron(self, ident: str) -> Match:
        return self._pick(self.by_anacron.get(ident))
