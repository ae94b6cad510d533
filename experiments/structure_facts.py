"""Structure facts of the project's packages, read from the source with ``ast`` (nothing is imported).

For each package (``e5jax`` under src/, ``profiling_bridge``): its modules (found by walking the directory, so
subpackages count), the intra-project import edges (to any module of either package), listed separately for
module-level imports (run when the module is imported: top level, class bodies, ``if``/``try`` blocks) and
function-level imports (run when the function is called); the import cycles (strongly connected components of
more than one module) among module-level imports, and separately those that appear once function-level imports
are added; the largest files (lines) and functions (lines from ``def`` to the last line, methods and nested
functions included, named ``module:Class.method``).

An edge goes to the module named in the import: ``import a.b`` and ``from a import b`` (``b`` a submodule) give
``a.b``; ``from a.b import name`` gives ``a.b``. The parent packages that Python initialises on the way are not
edges (a package ``__init__`` that re-exports its submodules is not a cycle).

    python experiments/structure_facts.py [--out PATH]   # default: artifacts/structure_facts.json
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"e5jax": "src/e5jax", "profiling_bridge": "profiling_bridge"}  # package name -> directory (from ROOT)
TOP = 5


def discover(root: Path, package: str, directory: str) -> dict[str, Path]:
    """Module name -> file of every ``.py`` file under ``directory`` (``__init__.py`` names its package)."""
    base = root / directory
    out = {}
    for path in sorted(base.rglob("*.py")):
        rel = path.relative_to(base).with_suffix("")
        if "__pycache__" in rel.parts:
            continue
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out[".".join((package, *parts))] = path
    return out


def _resolve(name: str, known) -> str | None:
    """The longest prefix of dotted ``name`` that is a known module, or None (outside the project)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in known:
            return candidate
    return None


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known) -> list[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            anchor = module.split(".") if is_package else module.split(".")[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, *([base] if base else [])])
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    out = []
    for name in names:
        target = _resolve(name, known)
        if target is not None and target != module and target not in out:
            out.append(target)
    return out


def imports(path: Path, module: str, known) -> dict[str, list[str]]:
    """``{"module": [...], "function": [...]}``: the known modules ``path`` imports at module level / in functions."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found = {"module": [], "function": []}

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                kind = "function" if in_function else "module"
                found[kind] += [t for t in _targets(child, module, is_package, known) if t not in found[kind]]
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    found["function"] = [t for t in found["function"] if t not in found["module"]]
    return found


def import_graph(root: Path = ROOT, packages: dict[str, str] = PACKAGES) -> dict[str, dict[str, dict[str, list[str]]]]:
    """``{package: {module: {"module": [targets], "function": [targets]}}}`` over all packages' modules."""
    files = {pkg: discover(root, pkg, d) for pkg, d in packages.items()}
    known = {m for mods in files.values() for m in mods}
    return {pkg: {m: imports(p, m, known) for m, p in mods.items()} for pkg, mods in files.items()}


def cycles(edges: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan, iterative), each sorted, sorted."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(edges.get(start, ())))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, it = work[-1]
            child = next(it, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges.get(child, ()))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return sorted(out)


def import_cycles(graph) -> dict[str, list[list[str]]]:
    """Cycles among module-level imports, and among module- plus function-level imports, over all packages."""
    module = {m: e["module"] for mods in graph.values() for m, e in mods.items()}
    both = {m: e["module"] + e["function"] for mods in graph.values() for m, e in mods.items()}
    return {"module_level": cycles(module), "with_function_level": cycles(both)}


def sizes(root: Path, package: str, directory: str) -> dict[str, list[dict]]:
    """Every file by lines and every function by lines (``def`` to its last line), largest first."""
    files, functions = [], []
    for module, path in discover(root, package, directory).items():
        text = path.read_text()
        files.append(dict(module=module, path=str(path.relative_to(root)), lines=len(text.splitlines())))

        def visit(node, prefix):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    name = prefix + child.name
                    functions.append(dict(name=f"{module}:{name}", path=str(path.relative_to(root)),
                                          line=child.lineno, lines=child.end_lineno - child.lineno + 1))
                    visit(child, name + ".")
                elif isinstance(child, ast.ClassDef):
                    visit(child, prefix + child.name + ".")
                else:
                    visit(child, prefix)

        visit(ast.parse(text, filename=str(path)), "")
    order = lambda d: (-d["lines"], d.get("name", d.get("module")))  # noqa: E731
    return {"files": sorted(files, key=order), "functions": sorted(functions, key=order)}


def facts(root: Path = ROOT, packages: dict[str, str] = PACKAGES, top: int = TOP) -> dict:
    graph = import_graph(root, packages)
    out = {"packages": {}, "cycles": import_cycles(graph)}
    for pkg, directory in packages.items():
        s = sizes(root, pkg, directory)
        out["packages"][pkg] = dict(
            directory=directory,
            modules=sorted(graph[pkg]),
            module_level_imports={m: e["module"] for m, e in sorted(graph[pkg].items())},
            function_level_imports={m: e["function"] for m, e in sorted(graph[pkg].items()) if e["function"]},
            largest_file=s["files"][0], top_files=s["files"][:top],
            largest_function=s["functions"][0], top_functions=s["functions"][:top],
        )
    return out


def summary(f: dict) -> str:
    lines = []
    for pkg, p in f["packages"].items():
        n_mod = sum(len(v) for v in p["module_level_imports"].values())
        n_fun = sum(len(v) for v in p["function_level_imports"].values())
        lines.append(f"{pkg}: {len(p['modules'])} modules, {n_mod} module-level and {n_fun} function-level "
                     "intra-project import edges")
        lines.append("  largest files:     " + ", ".join(f"{x['path']} ({x['lines']})" for x in p["top_files"]))
        lines.append("  largest functions: " + ", ".join(f"{x['name']} ({x['lines']})" for x in p["top_functions"]))
        for m, t in p["function_level_imports"].items():
            lines.append(f"  function-level: {m} -> {', '.join(t)}")
    for kind, label in (("module_level", "module-level imports"),
                        ("with_function_level", "with function-level imports")):
        found = f["cycles"][kind]
        lines.append(f"import cycles ({label}): " + ("; ".join(" <-> ".join(c) for c in found) if found else "none"))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "artifacts/structure_facts.json", help="JSON output")
    args = p.parse_args(argv)
    f = facts()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(f, indent=1) + "\n")
    print(summary(f))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
