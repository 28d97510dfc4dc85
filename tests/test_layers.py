"""The import graph of openmlff: no cycle, and no arrow from a lower layer up (docs/architecture.md "Layers").

The graph is read from the source with ast, so it holds every `import` and `from ... import` of an
openmlff module, those inside functions and under `if TYPE_CHECKING:` included (a lazy import is still an
arrow, and a cycle that only type hints close is still a knot for a reader). Left out: the implicit import
of a package's __init__ when one of its modules is imported (else every package that re-exports its
modules would be a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import openmlff

PACKAGE_DIR = Path(openmlff.__file__).parent

#: (importing packages, packages they must not import, why)
FORBIDDEN = [
    (("openmlff.models", "openmlff.data", "openmlff.structures", "openmlff.reference"),
     ("openmlff.training", "openmlff.md", "openmlff.metrics", "openmlff.analysis", "openmlff.campaign",
      "openmlff.report", "openmlff.cli", "openmlff.model_file.writer"),
     "the lower layers import nothing above them"),
    (("openmlff.potentials",),
     ("openmlff.training", "openmlff.md", "openmlff.metrics", "openmlff.analysis", "openmlff.campaign",
      "openmlff.report", "openmlff.model_file.writer", "openmlff.improve"),
     "potentials/ sit under md/ and metrics/, which use them; they read models through openmlff.model_file.reader"),
    (("openmlff.md", "openmlff.metrics"), ("openmlff.training", "openmlff.model_file.writer"),
     "md/ and metrics/ read models through openmlff.model_file.reader, never training code"),
    (("openmlff.model_file.reader", "openmlff.core.resume"),
     ("openmlff.models", "openmlff.training", "openmlff.model_file.writer"),
     "reading a model file or checking a resume loads no model classes and no training code"),
    (("openmlff.training", "openmlff.md", "openmlff.metrics", "openmlff.analysis", "openmlff.report",
      "openmlff.model_file.writer", "openmlff.campaign"), ("openmlff.improve",),
     "improve/ sits above training/, metrics/ and the model file's writer; only the CLI and protocols use it"),
    (("openmlff.core",),
     ("openmlff.analysis", "openmlff.campaign", "openmlff.cli", "openmlff.data", "openmlff.improve",
      "openmlff.integrations", "openmlff.md", "openmlff.metrics", "openmlff.model_file", "openmlff.models",
      "openmlff.potentials", "openmlff.reference", "openmlff.report", "openmlff.stability", "openmlff.structures",
      "openmlff.training"),
     "core/ is the infrastructure under every layer: it imports nothing else of openmlff"),
    (("openmlff.stability",),
     ("openmlff.analysis", "openmlff.campaign", "openmlff.cli", "openmlff.md", "openmlff.report",
      "openmlff.training", "openmlff.improve"),
     "stability/ is statistics on run outcomes and metric values: plain data in, plain data out"),
    (("openmlff",), ("openmlff.cli",), "the CLI sits on top: nothing imports it"),
]
#: Modules exempt from a rule above: `python -m openmlff` runs the CLI.
EXEMPT = {("openmlff.__main__", "openmlff.cli")}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _import_nodes(tree: ast.AST):
    """Every Import/ImportFrom node, at any depth (TYPE_CHECKING blocks included)."""
    return (node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom)))


def import_graph() -> dict[str, set[str]]:
    """module -> the openmlff modules it imports (a `from package import name` names the module when it is one)."""
    paths = {module_name(p): p for p in PACKAGE_DIR.rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
                continue
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                targets.add(submodule if submodule in paths else source)
        graph[name] = {t for t in targets if t in paths and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "openmlff.training.checkpoint" in graph["openmlff.model_file.writer"]  # inside export_checkpoint
    assert "openmlff.model_file.reader" in graph["openmlff.potentials.exported"]
    assert "openmlff.data.dataset" in graph["openmlff.reference.labelling"]


def test_no_import_cycle_among_openmlff_modules():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_module_imports_a_layer_above_it():
    broken = []
    for module, targets in sorted(import_graph().items()):
        for importers, forbidden, why in FORBIDDEN:
            if not any(_within(module, p) for p in importers):
                continue
            broken += [f"{module} imports {t} ({why})" for t in sorted(targets)  # a package's own modules may
                       if any(_within(t, f) and not _within(module, f) for f in forbidden)  # import each other
                       and (module, t) not in EXEMPT]
    assert not broken, "\n".join(broken)


def test_the_command_line_lists_its_commands_without_torch_or_openmm():
    """`openmlff --help` and `openmlff simulate --help` import neither torch nor OpenMM (start in well under 0.5 s);
    reading a campaign's status and its runs' files without them is tested in test_campaign.py."""
    import subprocess
    import sys

    code = ("import contextlib, io, sys\n"
            "from openmlff.cli import main\n"
            "for argv in (['--help'], ['simulate', '--help']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
            "        main(argv)\n"
            "    assert 'usage: openmlff' in out.getvalue()\n"
            "print(sorted(m for m in ('torch', 'openmm') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
