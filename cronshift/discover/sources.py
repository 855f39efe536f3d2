"""Where cron reads its jobs under a filesystem root, and the system facts that change their meaning.

Every path is joined under `root`; nothing outside it is read, so a copied server tree can be scanned safely.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from cronshift.discover.schedule import Dialect
from cronshift.model import Format

RUN_PARTS_DIRS = ("cron.hourly", "cron.daily", "cron.weekly", "cron.monthly", "cron.yearly")
# Debian cron (and Debian's run-parts without --lsbsysinit) only reads names made of these characters.
DEBIAN_NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
# cronie and RHEL's run-parts skip backup and package-manager leftovers instead.
_CRONIE_SKIP_RE = re.compile(
    r"(^\.|~$|,$|\.rpm(save|orig|new)$|\.swp$|\.cfsaved$|\.dpkg-(old|new|dist|bak)$)"
)


@dataclass(frozen=True, slots=True)
class Source:
    path: str  # relative to root, '/'-separated
    format: Format
    owner: str | None = None  # user spools: the user the file belongs to (its name)
    run_parts_dir: str | None = None  # run-parts scripts: 'cron.daily' etc.


@dataclass(frozen=True, slots=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str
    shell: str


@dataclass(frozen=True, slots=True)
class System:
    """What the scanned machine looks like, read from files under the root."""

    dialect: Dialect
    users: dict[str, PasswdEntry] | None  # None: no etc/passwd under the root, so users cannot be checked
    timezone: str | None
    anacron_installed: bool


def under(root: Path, rel: str) -> Path:
    return root / rel.lstrip("/")


def detect_dialect(root: Path) -> Dialect:
    """cronie on Red Hat-like systems (os-release, or RHEL's spool layout), Debian/Vixie cron otherwise."""
    try:
        text = (root / "etc/os-release").read_text(errors="replace")
    except OSError:
        text = ""
    ids = " ".join(re.findall(r"^(?:ID|ID_LIKE)=\"?([^\"\n]*)", text, re.M)).lower()
    if any(x in ids for x in ("rhel", "fedora", "centos", "rocky", "alma", "amzn", "suse", "arch", "gentoo")):
        return Dialect.CRONIE
    if any(x in ids for x in ("debian", "ubuntu")):
        return Dialect.DEBIAN
    if (root / "etc/redhat-release").exists() or (root / "usr/sbin/crond").exists():
        return Dialect.CRONIE
    spool = root / "var/spool/cron"
    if not (spool / "crontabs").is_dir() and spool.is_dir() and any(p.is_file() for p in spool.iterdir()):
        return Dialect.CRONIE
    return Dialect.DEBIAN


def read_passwd(root: Path) -> dict[str, PasswdEntry] | None:
    try:
        data = (root / "etc/passwd").read_text(errors="surrogateescape")
    except OSError:
        return None
    users: dict[str, PasswdEntry] = {}
    for line in data.splitlines():
        parts = line.split(":")
        if len(parts) >= 7 and parts[2].isdigit() and parts[3].isdigit():
            users[parts[0]] = PasswdEntry(parts[0], int(parts[2]), int(parts[3]), parts[5], parts[6])
    return users


def system_timezone(root: Path) -> str | None:
    try:
        tz = (root / "etc/timezone").read_text().strip()
        if tz:
            return tz
    except OSError:
        pass
    try:
        target = os.readlink(root / "etc/localtime")
    except OSError:
        return None
    if "zoneinfo/" in target:
        return target.split("zoneinfo/", 1)[1]
    return None


def read_system(root: Path, dialect: Dialect | None = None) -> System:
    return System(
        dialect=dialect or detect_dialect(root),
        users=read_passwd(root),
        timezone=system_timezone(root),
        anacron_installed=(root / "usr/sbin/anacron").exists(),
    )


def name_ignored(name: str, dialect: Dialect) -> str | None:
    """Why cron (for cron.d) or run-parts ignores a file with this name, or None."""
    if dialect is Dialect.DEBIAN:
        if not DEBIAN_NAME_RE.fullmatch(name):
            return (
                f"name '{name}' has characters other than letters, digits, '_' and '-': Debian cron skips it"
            )
        return None
    if _CRONIE_SKIP_RE.search(name):
        return f"name '{name}' is a backup or hidden file, which cronie skips"
    return None


class _Name(str):
    """A directory entry's name; `.name` keeps call sites readable. scandir, not pathlib: a stat per file
    doubled the time to list a 10,000-file cron.d."""

    @property
    def name(self) -> str:
        return str(self)


def _files(d: Path) -> list[_Name]:
    try:
        with os.scandir(d) as it:
            return sorted(_Name(e.name) for e in it if not e.is_dir())
    except OSError:
        return []


def find_sources(root: Path) -> list[Source]:
    """Every file cron, anacron or run-parts may read, in a stable order."""
    found: list[Source] = []
    if (root / "etc/crontab").exists():
        found.append(Source("etc/crontab", Format.SYSTEM))
    for p in _files(root / "etc/cron.d"):
        if p.name == ".placeholder":  # shipped by Debian's cron package so the folder is owned; not a crontab
            continue
        found.append(Source(f"etc/cron.d/{p.name}", Format.SYSTEM))
    for p in _files(root / "var/spool/cron/crontabs"):  # Debian
        found.append(Source(f"var/spool/cron/crontabs/{p.name}", Format.USER, owner=p.name))
    for p in _files(root / "var/spool/cron"):  # RHEL keeps spools one level up
        if not p.name.startswith("."):
            found.append(Source(f"var/spool/cron/{p.name}", Format.USER, owner=p.name))
    if (root / "etc/anacrontab").exists():
        found.append(Source("etc/anacrontab", Format.ANACRONTAB))
    for d in RUN_PARTS_DIRS:
        for p in _files(root / "etc" / d):
            if p.name == ".placeholder":  # Debian ships one in every folder so the package owns it
                continue
            found.append(Source(f"etc/{d}/{p.name}", Format.RUN_PARTS, run_parts_dir=d))
    return found


def file_mode(path: Path) -> int | None:
    try:
        return os.stat(path).st_mode
    except OSError:
        return None


def writable_by_others(mode: int) -> bool:
    return bool(mode & (stat.S_IWGRP | stat.S_IWOTH))
