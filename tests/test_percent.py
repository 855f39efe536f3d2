"""cron's `%` rule, as Debian's do_command.c applies it: what the shell runs and what reaches stdin."""

from __future__ import annotations

import pytest

from cronshift.discover.scan import split_percent


@pytest.mark.parametrize(
    ("command", "shell", "stdin"),
    [
        ("plain --flag", "plain --flag", None),
        (r"date +\%Y-\%m-\%d", "date +%Y-%m-%d", None),
        ("mail -s hi ops%line one%line two", "mail -s hi ops", "line one\nline two\n"),
        ("cat%ends with newline%", "cat", "ends with newline\n"),
        (r"a%b\%c", "a", "b%c\n"),
        (r"echo a\\b", r"echo a\b", None),  # Debian drops the backslash of \\ too
        ("echo a\\\\%rest", "echo a\\", "rest\n"),  # \\ is one backslash, so the % is unescaped
        (r"echo \x", r"echo \x", None),  # other escapes are the shell's business
        ("x%a\\\\b", "x", "a\\\\b\n"),  # in stdin only \% is special
        ("x%", "x", ""),
    ],
)
def test_split_percent(command: str, shell: str, stdin: str | None) -> None:
    assert split_percent(command) == (shell, stdin)
