"""One CLI voice: help that names values (not Python types), --json errors as JSON, the version line.

Typer prints each option's Python annotation as its type (`<bool>`, `<list[pathlib.Path]>`, `<str>`). People
read those as noise, so help shows what to type instead: nothing for a flag, the choices for an enum, a
metavar in capitals for the rest (the option's own metavar when it sets one).
"""

from __future__ import annotations

import contextvars
from pathlib import Path
from typing import Any, get_args, get_origin

from typer.core import TyperArgument

__all__ = ["JSON_ERRORS", "friendly_help", "wants_json"]

# Whether this invocation asked for --json: errors then go to stdout as JSON too (see output.fail).
JSON_ERRORS: contextvars.ContextVar[bool] = contextvars.ContextVar("cronshift_json_errors", default=False)

_NAMES = {str: "TEXT", int: "N", float: "NUMBER", Path: "PATH"}
_BY_OPTION = {  # what a value of these options is, in the words the help text uses
    "--root": "DIR",
    "--out": "DIR",
    "--project": "DIR",
    "--store": "PATH",
    "--redis": "URL",
    "--broker": "URL",
    "--state-redis": "URL",
    "--now": "ISO-TIME",
    "--since": "WHEN",
    "--until": "WHEN",
    "--html": "FILE",
    "--log": "FILE",
    "--timeout": "SECONDS",
    "--grace": "SECONDS",
    "--ignore": "REGEX",
    "--package": "NAME",
    "--reason": "TEXT",
}


def wants_json(argv: list[str]) -> bool:
    """`--json` among the options (not after `--`, where the words belong to a job's command)."""
    words = argv[: argv.index("--")] if "--" in argv else argv
    return "--json" in words


def _label(param: Any) -> str | None:
    desc = getattr(param, "type_descriptor", None)
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return None
    if desc is not None and desc.is_choice:
        return "|".join(str(getattr(c, "value", c)) for c in desc.choices or ())
    if isinstance(param, TyperArgument):
        return None  # the argument's own name (JOB..., CMD...) already says it
    longest = max(param.opts, key=len) if param.opts else ""
    if param.metavar:
        label = param.metavar
    elif longest in _BY_OPTION:
        label = _BY_OPTION[longest]
    else:
        ann: Any = getattr(desc, "annotation", str) if desc is not None else str
        if get_origin(ann) is list:
            ann = get_args(ann)[0]
        label = _NAMES.get(ann, "VALUE")
    return label


def _relabel(param: Any) -> Any:
    if hasattr(param, "display_type_rich"):

        def show(ctx: Any, _p: Any = param) -> str | None:
            label = _label(_p)
            return None if label is None else f"<{label}>"

        param.display_type_rich = show
    return param


def friendly_help(command: Any) -> Any:
    """Replace each parameter's type display in `command` (and its subcommands) with a readable label."""
    for param in command.params:
        _relabel(param)
    make_help = command.get_help_option

    def help_option(ctx: Any) -> Any:  # -h/--help is made per call, outside `params`
        opt = make_help(ctx)
        return None if opt is None else _relabel(opt)

    command.get_help_option = help_option
    for sub in getattr(command, "commands", {}).values():
        friendly_help(sub)
    return command
