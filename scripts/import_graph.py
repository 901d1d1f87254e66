"""The import structure of the fusionlib package: modules, circles, private names, lazy imports.

    python scripts/import_graph.py [CHECKOUT] [--list]

Reads ``CHECKOUT/fusionlib`` (default: this checkout) with :mod:`ast` only (nothing is
imported) and prints

* the top-level layout: flat modules and packages directly under ``fusionlib/``;
* import circles: strongly connected components of the graph of imports between fusionlib
  modules, counting imports at module level, inside functions AND under ``if TYPE_CHECKING:``
  (an import that closes a circle couples the two modules wherever it sits).
  ``from .pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``
  (its ``__init__``); importing ``a.b.c`` from outside package ``a.b`` also runs
  ``a/b/__init__.py``, so it is an edge to ``a.b`` too;
* cross-module underscore imports: a ``_name`` (not ``__dunder__``) imported from another
  module. Private *modules* (``_io``, ``_tf``, ``_imports``) are package-internal: any
  fusionlib module may import their public names (docs/design.md states the rule);
* imports inside functions, per file (``--list``: each one with its line).

``tests/test_design.py`` asserts zero circles and zero underscore imports through
:func:`analyse`.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Import:
    source: str           # importing module, dotted
    target: str           # imported fusionlib module, dotted
    names: tuple          # names taken with ``from ... import``
    line: int
    in_function: bool


@dataclass
class Graph:
    modules: list                                  # dotted names of every fusionlib module
    imports: list = field(default_factory=list)    # Import records (fusionlib targets only)
    function_imports: list = field(default_factory=list)  # (module, line, text), any target

    def edges(self) -> dict:
        out = {m: set() for m in self.modules}
        for imp in self.imports:
            if imp.target == imp.source:
                continue
            out[imp.source].add(imp.target)
            # The packages above the target run first, unless the source is inside them
            # (a submodule importing its sibling does not re-enter its own package).
            parts = imp.target.split(".")
            for n in range(2, len(parts)):
                package = ".".join(parts[:n])
                if package != imp.source and not imp.source.startswith(package + "."):
                    out[imp.source].add(package)
        return out

    def circles(self) -> list[list[str]]:
        """Strongly connected components with more than one module (Tarjan, iterative)."""
        edges = self.edges()
        index, low, on_stack, stack, found = {}, {}, set(), [], []
        counter = 0
        for root in sorted(edges):
            if root in index:
                continue
            work = [(root, iter(sorted(edges[root])))]
            index[root] = low[root] = counter
            counter += 1
            stack.append(root)
            on_stack.add(root)
            while work:
                node, children = work[-1]
                child = next(children, None)
                if child is not None:
                    if child not in index:
                        index[child] = low[child] = counter
                        counter += 1
                        stack.append(child)
                        on_stack.add(child)
                        work.append((child, iter(sorted(edges[child]))))
                    elif child in on_stack:
                        low[node] = min(low[node], index[child])
                    continue
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
        return sorted(found)

    def underscore_imports(self) -> list[Import]:
        return [imp for imp in self.imports if imp.target != imp.source
                and any(_private(n) for n in imp.names)]


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def module_name(path: Path, package_dir: Path) -> str:
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _walk(node, in_function=False):
    """Yield ``(import node, in_function)`` for every import statement under ``node``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, in_function
            continue
        inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                  ast.Lambda))
        yield from _walk(child, inner)


def analyse(checkout: Path = ROOT) -> Graph:
    package_dir = Path(checkout) / "fusionlib"
    files = sorted(package_dir.rglob("*.py"))
    modules = {module_name(p, package_dir): p for p in files}
    graph = Graph(sorted(modules))
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, in_function in _walk(tree):
            if in_function:
                graph.function_imports.append((name, node.lineno, ast.unparse(node)))
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = _known(alias.name, modules)
                    if target:
                        graph.imports.append(Import(name, target, (), node.lineno, in_function))
                continue
            base = _resolve(name, is_package, node.module, node.level)
            if base is None or not (base == "fusionlib" or base.startswith("fusionlib.")):
                continue
            rest = []
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in modules:  # `from . import registry`: an edge to the module itself
                    graph.imports.append(Import(name, sub, (), node.lineno, in_function))
                else:
                    rest.append(alias.name)
            if rest:
                target = _known(base, modules)
                if target:
                    graph.imports.append(Import(name, target, tuple(rest), node.lineno,
                                                in_function))
    return graph


def _resolve(module: str, is_package: bool, target: str | None, level: int) -> str | None:
    if level == 0:
        return target
    parts = module.split(".") if is_package else module.split(".")[:-1]
    if level - 1 > len(parts) - 1:
        return None
    parts = parts[:len(parts) - (level - 1)]
    return ".".join(parts + ([target] if target else []))


def _known(dotted: str, modules: dict) -> str | None:
    """The longest prefix of ``dotted`` that is a fusionlib module."""
    parts = dotted.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def top_level(checkout: Path = ROOT) -> tuple[list[str], list[str]]:
    """``(flat modules, packages)`` directly under ``fusionlib/`` (``__init__`` not counted)."""
    package_dir = Path(checkout) / "fusionlib"
    flat = sorted(p.stem for p in package_dir.glob("*.py") if p.name != "__init__.py")
    packages = sorted(p.name for p in package_dir.iterdir()
                      if p.is_dir() and (p / "__init__.py").exists())
    return flat, packages


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", nargs="?", default=str(ROOT),
                        help="a fusionlib checkout (default: this one)")
    parser.add_argument("--list", action="store_true",
                        help="list every import inside a function")
    args = parser.parse_args(argv)
    checkout = Path(args.checkout)
    if not (checkout / "fusionlib" / "__init__.py").is_file():
        print(f"import_graph: {checkout} has no fusionlib/__init__.py; expected a checkout "
              "of this project", file=sys.stderr)
        return 2
    graph = analyse(checkout)
    flat, packages = top_level(checkout)
    print(f"modules: {len(graph.modules)} in all; top level: {len(flat)} flat modules, "
          f"{len(packages)} packages ({', '.join(p + '/' for p in packages)})")
    circles = graph.circles()
    print(f"import circles: {len(circles)}")
    for component in circles:
        print("  " + " <-> ".join(component))
    private = graph.underscore_imports()
    print(f"cross-module underscore imports: {len(private)}")
    for imp in private:
        names = ", ".join(n for n in imp.names if _private(n))
        print(f"  {imp.source}:{imp.line} takes {names} from {imp.target}")
    per_file: dict = {}
    for module, line, text in graph.function_imports:
        per_file.setdefault(module, []).append((line, text))
    internal = len({(imp.source, imp.line) for imp in graph.imports if imp.in_function})
    print(f"imports inside functions: {len(graph.function_imports)} in {len(per_file)} modules "
          f"({internal} of fusionlib modules)")
    for module, found in sorted(per_file.items()):
        print(f"  {module}: {len(found)}")
        if args.list:
            for line, text in found:
                print(f"    {line}: {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
