"""The runtime API: what code `cronshift generate` writes imports, and nothing else (no CLI, history, record).

Generated projects import only the names below, from `cronshift.runtime`, and each project states the API
version it was written for (`RUNTIME_API` in its app.py or jobs.py, passed to `require_api`), as a Django
migration names its dependencies: a worker whose runtime cannot serve that version stops at import with
what to install, instead of failing later on a missing name or a changed signature. Bump
RUNTIME_API_VERSION when a name here changes meaning; add to SUPPORTED_API_VERSIONS the versions still served.

The names are loaded on first use (PEP 562), so importing one runtime module (the CLI reads
`cronshift.runtime.spec`, say) does not load Celery and Redis with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "RUNTIME_API_VERSION",
    "SUPPORTED_API_VERSIONS",
    "RuntimeAPIError",
    "consumer_main",
    "cronsim_schedule",
    "enable_redbeat",
    "enqueue",
    "notify_call",
    "require_api",
    "run_cron_task",
    "run_sources",
    "scheduler_main",
    "stamp_from_beat_entries",
]

RUNTIME_API_VERSION = 1
SUPPORTED_API_VERSIONS = frozenset({1})

_EXPORTS = {
    "cronsim_schedule": "cronshift.runtime.schedules",
    "enable_redbeat": "cronshift.runtime.schedules",
    "stamp_from_beat_entries": "cronshift.runtime.schedules",
    "run_cron_task": "cronshift.runtime.tasks",
    "notify_call": "cronshift.runtime.eventsources",
    "run_sources": "cronshift.runtime.eventsources",
    "consumer_main": "cronshift.runtime.streams",
    "scheduler_main": "cronshift.runtime.streams",
    "enqueue": "cronshift.runtime.streams",
}

if TYPE_CHECKING:
    from cronshift.runtime.eventsources import notify_call, run_sources
    from cronshift.runtime.schedules import cronsim_schedule, enable_redbeat, stamp_from_beat_entries
    from cronshift.runtime.streams import consumer_main, enqueue, scheduler_main
    from cronshift.runtime.tasks import run_cron_task


class RuntimeAPIError(ImportError):
    """The generated project needs a runtime API version this installed runtime does not serve."""


def require_api(version: int) -> int:
    """Called at import by generated code with the API version it was written for; returns it."""
    if version not in SUPPORTED_API_VERSIONS:
        served = ", ".join(str(v) for v in sorted(SUPPORTED_API_VERSIONS))
        newer = version > RUNTIME_API_VERSION if isinstance(version, int) else False
        raise RuntimeAPIError(
            f"this project was generated for cronshift runtime API {version!r}; the installed runtime serves "
            f"{served}: "
            + (
                "upgrade cronshift-runtime (or cronshift) on this worker"
                if newer
                else "re-run `cronshift generate` with the installed cronshift"
            )
        )
    return version


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
