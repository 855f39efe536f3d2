"""The job SPEC: the contract between `cronshift generate` (which writes it into generated code as JSON) and
the runtime (which runs it), defined once here so both sides read the same fields.

Generated projects outlive the cronshift that wrote them, so a SPEC carries the version of its shape; the
runtime refuses one it does not know instead of guessing. A SPEC without `version` was written before the
field existed and has the version 1 shape (the fields were the same), so it still runs.

`generate.common.job_spec` builds it from a job and its plan; the shadow cron side builds its own from the
crontab line (`shadow.execute.cron_spec`), on purpose, as the reference the generated one is compared to.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

__all__ = ["SPEC_VERSION", "JobSpec", "SpecVersionError", "check_spec"]

SPEC_VERSION = 1
KNOWN_VERSIONS = frozenset({1})


class JobSpec(TypedDict):
    """One job as cron has it, plus the policies generate chose (the part the cron side leaves out)."""

    version: int
    id: str
    user: str
    shell: str
    env: list[list[str]]  # [name, value] pairs in crontab order
    command: str  # what the shell runs (up to the first unescaped %)
    stdin: str | None  # the % text, with % turned into newlines
    source: str  # 'path:line' it was read from
    dialect: NotRequired[str]  # which cron's environment to build ("debian", "cronie")
    policy: NotRequired[dict[str, Any]]  # see cronshift.runtime.policy
    overlap: NotRequired[str]
    time_limit: NotRequired[float | None]
    kill_grace: NotRequired[float | None]
    split_output: NotRequired[bool]


class SpecVersionError(ValueError):
    """A SPEC written for a shape this runtime does not know (a newer cronshift generated it)."""


def check_spec(spec: Any) -> None:
    """Raise SpecVersionError unless this runtime knows how to run `spec` (see the module docstring)."""
    if not isinstance(spec, dict):
        raise SpecVersionError(f"a job SPEC is a dict, not {type(spec).__name__}")
    version = spec.get("version", 1)
    if version not in KNOWN_VERSIONS:
        known = ", ".join(str(v) for v in sorted(KNOWN_VERSIONS))
        raise SpecVersionError(
            f"job {spec.get('id')!r}: SPEC version {version!r} is unknown to this cronshift runtime "
            f"(it runs version {known}); install the cronshift that generated the project on the workers"
        )
