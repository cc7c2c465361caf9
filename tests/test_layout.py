"""The package's walls: which folder may import which, no import cycles, no oversized modules,
attribute names known only to ``ingest/``, a mapper that does no I/O, and README's map true.

The pipeline reads top to bottom: ``ingest/`` receives, maps and prices spans and hands records
to ``store/``; ``query/`` reads the store; ``serve/`` and ``cli/`` are front-ends over ``query/``;
``net/`` is the HTTP and gRPC plumbing that receivers and readers share. Imports inside functions
count as much as those at the top of a module: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import re
from itertools import pairwise
from pathlib import Path

import pytest

import user_metrics
from user_metrics.ingest import conventions

PACKAGE = Path(user_metrics.__file__).parent
FOLDERS = ("ingest", "store", "query", "serve", "net", "cli")
# Top-level modules everything may import: what is shared, not what wires.
SHARED = {
    "errors",
    "stats",
    "coverage_counts",
    "settings",
    "settings_input",
    "settings_specs",
    "__init__",
    "v1",
}
# What each part must never import. The top-level wiring (app, client, __main__) may import any
# folder; nothing below it imports the wiring.
FORBIDDEN: dict[str, set[str]] = {
    "store": {"ingest", "query", "serve", "cli", "net", "app", "node", "client"},
    "ingest": {"query", "serve", "cli", "app", "node", "client"},
    "query": {"ingest", "serve", "cli", "net", "app", "node", "client"},
    "net": {"ingest", "store", "query", "serve", "cli", "app", "node", "client"},
    "serve": {"ingest", "store", "cli", "app", "node", "client"},
    "cli": {"store", "ingest", "net"},
    "errors": {*FOLDERS, "app", "node", "client", "stats", "settings", "settings_input"},
    "stats": {*FOLDERS, "app", "node", "client", "settings"},
    "coverage_counts": {*FOLDERS, "app", "node", "client", "settings"},
    "settings": {*FOLDERS, "app", "node", "client"},
    "settings_input": {*FOLDERS, "app", "node", "client", "settings", "stats"},
    "settings_specs": {*FOLDERS, "app", "node", "client", "settings", "settings_input", "stats"},
}
MAX_LINES = 400
# The demo plays an instrumented application: it writes attribute names as a library would.
WRITES_SPANS = {"cli/demo_spans.py"}


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (generated stubs in v1/ left out)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "v1":
            continue
        parts = [*rel.parts[:-1]] + ([] if rel.stem == "__init__" else [rel.stem])
        found[".".join(["user_metrics", *parts])] = path
    return found


def imports_of(path: Path, name: str) -> set[str]:
    """The package modules a module imports, anywhere in it (absolute and relative imports)."""
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            out.add(base)
            out |= {f"{base}.{alias.name}" for alias in node.names}  # `from pkg import module`
    known = modules()
    return {m for m in out if m in known}


def part(module: str) -> str:
    """The folder (or top-level module) a module belongs to: ``user_metrics.query.cells`` -> query."""
    return module.split(".")[1] if module.count(".") else "__init__"


def graph() -> dict[str, set[str]]:
    return {name: imports_of(path, name) - {name} for name, path in modules().items()}


class TestWalls:
    @pytest.mark.parametrize("owner", sorted(FORBIDDEN))
    def test_no_part_imports_what_sits_above_it(self, owner: str) -> None:
        """store/ knows no reader, ingest/ and query/ no front-end, serve/ reads only through query/."""
        wrong = sorted(
            f"{name} imports {target}"
            for name, targets in graph().items()
            if part(name) == owner
            for target in targets
            if part(target) in FORBIDDEN[owner]
        )
        assert not wrong, "\n".join(wrong)

    def test_the_rules_see_every_part(self) -> None:
        """Each folder and top-level module is either ruled or shared wiring, so a new one is noticed."""
        parts = {part(name) for name in modules()}
        assert parts <= {*FORBIDDEN, *SHARED, "app", "node", "client", "__main__"}, parts
        assert set(FOLDERS) <= parts

    def test_a_forbidden_import_is_caught(self, tmp_path: Path) -> None:
        """The import reader sees lazy, relative and `from pkg import module` imports (the test can fail)."""
        source = tmp_path / "writer.py"
        source.write_text(
            "def f():\n    from user_metrics.serve import http_api\n"
            "from ..query import cells\nimport user_metrics.cli.main\n"
        )
        found = imports_of(source, "user_metrics.store.writer")
        assert {"user_metrics.serve.http_api", "user_metrics.query.cells", "user_metrics.cli.main"} <= found


def top_level_imports(path: Path) -> set[str]:
    """The first name of every absolute import in a module (``duckdb``, ``grpc``, ``user_metrics``)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module.split(".")[0])
    return out


# The mapper is pure: span in, record out. It may read the wire types, nothing that does I/O.
PURE = (
    "ingest/conventions.py",
    "ingest/operator_keys.py",
    "ingest/attributes.py",
    "ingest/inheritance.py",
    "ingest/dialects.py",
    "ingest/mapping.py",
    "ingest/record_bounds.py",
    "ingest/call_values.py",
    "ingest/framework_spans.py",
    "ingest/coverage_scan.py",
    "ingest/plain_spans.py",
)
DOES_IO = {"duckdb", "pyarrow", "grpc", "socket", "ssl", "http", "urllib", "threading", "subprocess", "os"}
RECEIVERS = ("ingest/otlp_grpc.py", "ingest/otlp_http.py")


class TestPurity:
    @pytest.mark.parametrize("rel", PURE)
    def test_the_mapper_does_no_io(self, rel: str) -> None:
        """The conventions table and the mapper import no database, network, thread or OS module."""
        assert not top_level_imports(PACKAGE / rel) & DOES_IO

    @pytest.mark.parametrize("rel", RECEIVERS)
    def test_receivers_know_nothing_of_duckdb(self, rel: str) -> None:
        """The OTLP receivers decode and answer; the ingestor and the store do the rest."""
        path = PACKAGE / rel
        assert not top_level_imports(path) & {"duckdb", "pyarrow"}
        assert not {m for m in imports_of(path, "user_metrics.ingest." + path.stem) if part(m) == "store"}


class TestCycles:
    def test_no_module_imports_itself_through_others(self) -> None:
        """No import cycle, lazy imports included (cli/main.py and the demo once imported each other)."""
        edges = graph()
        cycles = []
        state: dict[str, int] = {}  # 1: on the current path, 2: done
        stack: list[str] = []

        def visit(node: str) -> None:
            state[node] = 1
            stack.append(node)
            for nxt in sorted(edges[node]):
                if state.get(nxt) == 1:
                    cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
                elif nxt not in state:
                    visit(nxt)
            stack.pop()
            state[node] = 2

        for node in sorted(edges):
            if node not in state:
                visit(node)
        # A package's __init__ that hands on a name from its own module is no cycle.
        cycles = [c for c in cycles if not _through_own_init(c)]
        assert not cycles, "\n".join(cycles)


def _through_own_init(cycle: str) -> bool:
    names = cycle.split(" -> ")
    return any(a == b.rpartition(".")[0] or b == a.rpartition(".")[0] for a, b in pairwise(names))


class TestSize:
    def test_no_module_is_much_over_400_lines(self) -> None:
        """Modules stay small enough to read in one sitting (5 % slack before this fails)."""
        big = {
            str(path.relative_to(PACKAGE)): n
            for path in modules().values()
            if (n := len(path.read_text().splitlines())) > MAX_LINES * 1.05
        }
        assert not big, big


def attribute_names() -> tuple[set[str], tuple[str, ...]]:
    """Every attribute key the conventions table reads, and the prefixes properties come from."""
    keys = {source.key for sources in conventions.FIELDS.values() for source in sources}
    keys |= {conventions.SERVICE_NAME_KEY, *conventions.ENVIRONMENT_KEYS}
    return keys, tuple(conventions.PROPERTY_PREFIXES)


def code_strings(path: Path) -> list[str]:
    """The string literals of a module that are not docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


class TestAttributeNames:
    def test_only_ingest_knows_attribute_names(self) -> None:
        """No module outside ingest/ (the demo's span writers aside) names a span attribute it reads."""
        keys, prefixes = attribute_names()
        found = []
        for path in modules().values():
            rel = path.relative_to(PACKAGE).as_posix()
            if rel.startswith("ingest/") or rel in WRITES_SPANS:
                continue
            found += [f"{rel}: {s!r}" for s in code_strings(path) if s in keys or s.startswith(prefixes)]
        assert not found, "\n".join(found)

    def test_the_names_are_the_conventions_table(self) -> None:
        """The check reads the real table (user.id, gen_ai.* and the property prefixes), so it can fail."""
        keys, prefixes = attribute_names()
        assert {"user.id", "gen_ai.usage.input_tokens", "session.id", "service.name"} <= keys
        assert "traceloop.association.properties." in prefixes
        assert set(WRITES_SPANS) & {p.relative_to(PACKAGE).as_posix() for p in modules().values()}, (
            "the exemption names no module that exists"
        )


class TestReadmeMap:
    def test_the_map_in_readme_names_every_module_and_only_those(self) -> None:
        """README's "How it works" tree lists each module of the package once, by folder."""
        readme = (PACKAGE.parents[1] / "README.md").read_text()
        section = readme.split("## How it works", 1)[1]
        tree = section.split("```", 2)[1]
        drawn: dict[str, set[str]] = {}
        folder = ""
        for line in tree.splitlines()[2:]:  # after the fence's language line and the package's name
            top = re.match(r"^[├└]── (\S+)", line)
            if top:  # a top-level module, or a folder whose modules follow (or stand on its line)
                folder = top.group(1).rstrip("/") if top.group(1).endswith("/") else ""
            names = set(re.findall(r"\b([a-z_0-9]+)\.py\b", line))
            if names:
                drawn.setdefault(folder, set()).update(names)
        actual: dict[str, set[str]] = {}
        for path in modules().values():
            rel = path.relative_to(PACKAGE)
            if rel.stem in ("__init__", "__main__"):
                continue
            actual.setdefault(rel.parts[0] if len(rel.parts) > 1 else "", set()).add(rel.stem)
        assert drawn == actual
