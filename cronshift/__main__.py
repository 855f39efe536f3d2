"""Entry point. `record` is dispatched before anything heavy is imported: it runs on every cron run."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["record"]:
        from cronshift.record import main as record_main  # deferred: nothing else loads on a cron run

        sys.exit(record_main(args[1:]))
    from cronshift.cli.app import run  # deferred: `record` must not pay for the CLI (typer, rich, ...)

    run(args)


if __name__ == "__main__":
    main()
