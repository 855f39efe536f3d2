"""One direction of dependencies: each layer of cronshift imports only the layers below it.

A reader trusts the folder layout to show the flow (DESIGN.md, "Shape of the code"); an upward import or a
package cycle breaks that trust silently, so this test reads every import in the package (module-level,
function-level and TYPE_CHECKING ones alike: a deferred import is still a dependency) and fails on any edge
the contracts below do not allow. Written over the AST rather than with import-linter so it needs no extra
dependency and can say, per edge, where it is.

There is no allow-list: the upward imports this test found when it was written (discover -> retire,
ledger -> record, shadow -> retire) were removed, so any new one fails.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "cronshift"

# Bottom first. A module may import its own unit and any unit earlier in this list, never a later one.
# Since the order is total, no cycle between units can exist once no upward edge does.
LAYERS: list[str] = [
    "cronshift",  # the package root: __version__ only
    "model",  # the nouns and enums every stage shares
    "ledger",  # the store every stage writes: backends, spool, schema, drain
    "discover",  # sources -> jobs
    "history",  # cron's own logs, pairing, evidence
    "rank",  # metrics and the explained score
    "advice",  # what to do next about a ranked job (reads rank)
    "runtime",  # what generated code imports at run time
    "generate",  # plans and generated projects
    "shadow",  # shadow sessions, comparison, verdicts
    "replay",  # a dead letter sent again through a generated project (reads it with shadow's loader)
    "edit",  # the only crontab writer, and retire / wrap on top of it
    "board",  # where each job stands on the migration path (reads every stage's records)
    "report",  # the HTML report (reads the board)
    "record",  # the wrapper cron runs; reads only the ledger
    "cli",  # Typer commands
    "__main__",  # entry point
]

# Units that may import only these others (besides themselves), stricter than their place in LAYERS.
ONLY: dict[str, set[str]] = {
    # Generated projects import the runtime on workers that have no CLI, history or record installed.
    "runtime": {"cronshift", "model", "ledger"},
    # record runs on every cron run: it must stay small and fast to import.
    "record": {"cronshift", "model", "ledger"},
    # The bottom layer: everything writes it, it depends on nothing but the nouns.
    "ledger": {"cronshift", "model"},
}


# Modules that share a layer but must not import each other: siblings built on a common module.
INDEPENDENT: list[tuple[str, str]] = [
    # wrap is not a kind of retire: its refusal, diff and id check come from the crontab writer
    ("cronshift.edit.retire", "cronshift.edit.wrap"),
    # the two targets share generate.common, not each other
    ("cronshift.generate.celery", "cronshift.generate.streams"),
    ("cronshift.generate.celery", "cronshift.generate.triggers"),
    # one module per command; what two commands share lives in cli.common / cli.evidence / cli.output
    ("cronshift.cli.scan", "cronshift.cli.show"),
]


def modules_under(package: Path) -> dict[str, Path]:
    found = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = modules_under(PACKAGE)


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "cronshift"


def imports_of(module: str, modules: dict[str, Path]) -> dict[str, int]:
    """The cronshift modules `module` imports, each with the first line that does."""
    path = modules[module]
    found: dict[str, int] = {}
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                # `from cronshift.ledger import spool` imports a module; `from x import name`, x itself.
                child = f"{source}.{alias.name}"
                targets.append(child if child in modules else source)
        for target in targets:
            while target and target not in modules:  # `import cronshift.a.b` names a module; trim attrs
                target = target.rpartition(".")[0]
            if target.startswith("cronshift") and target != module:
                found.setdefault(target, node.lineno)
    return found


def violations(modules: dict[str, Path] = MODULES) -> dict[tuple[str, str], str]:
    order = {unit: i for i, unit in enumerate(LAYERS)}
    found: dict[tuple[str, str], str] = {}
    for module in sorted(modules):
        unit = unit_of(module)
        assert unit in order, f"{module}: unit {unit!r} has no place in LAYERS"
        for target, line in imports_of(module, modules).items():
            other = unit_of(target)
            where = f"{module.replace('.', '/')}.py:{line}"
            if any({module, target} == set(pair) for pair in INDEPENDENT):
                found[(module, target)] = f"{where}: {module} and {target} must not import each other"
            if other == unit:
                continue
            if order[other] > order[unit]:
                found[(module, target)] = f"{where}: {unit} imports {other}, which sits above it"
            elif unit in ONLY and other not in ONLY[unit]:
                found[(module, target)] = f"{where}: {unit} may import only {sorted(ONLY[unit])}, not {other}"
    return found


def test_every_import_points_down() -> None:
    new = violations()
    assert not new, "imports against the layering:\n" + "\n".join(sorted(new.values()))


def test_the_checker_sees_upward_imports_and_cycles(tmp_path: Path) -> None:
    """The test itself can fail: in a scratch tree, an upward edge (hence a cycle) is reported."""
    package = tmp_path / "cronshift"
    for name, text in {
        "__init__.py": "",
        "discover/__init__.py": "",
        "discover/scan.py": "def f():\n    from cronshift.cli import output  # deferred, still an edge\n",
        "cli/__init__.py": "",
        "cli/output.py": "from cronshift.discover.scan import f\n",
        "runtime/__init__.py": "from cronshift import history\n",
        "history/__init__.py": "",
        "edit/__init__.py": "",
        "edit/retire.py": "",
        "edit/wrap.py": "from cronshift.edit.retire import *  # noqa: F403\n",
    }.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    found = violations(modules_under(package))
    assert set(found) == {
        ("cronshift.discover.scan", "cronshift.cli.output"),
        ("cronshift.runtime", "cronshift.history"),
        ("cronshift.edit.wrap", "cronshift.edit.retire"),
    }
    assert (
        "discover/scan.py:2: discover imports cli"
        in found[("cronshift.discover.scan", "cronshift.cli.output")]
    )
