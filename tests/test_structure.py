"""Structure: no import cycle among module-level imports; the default TOML equals the built-in defaults."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("structure_facts", ROOT / "experiments" / "structure_facts.py")
sf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sf)


@pytest.fixture(scope="module")
def graph():
    return sf.import_graph(ROOT)


@pytest.mark.parametrize("package", sorted(sf.PACKAGES))
def test_no_module_level_import_cycle(graph, package):
    assert graph[package], f"no modules found for {package} under {sf.PACKAGES[package]}"
    edges = {m: e["module"] for mods in graph.values() for m, e in mods.items()}
    in_package = [c for c in sf.cycles(edges) if any(m in graph[package] for m in c)]
    assert in_package == [], f"module-level import cycles: {in_package}"


def test_cycle_finder_and_resolution(tmp_path):
    """A module-level circle, a function-level one and a relative import in a subpackage are all found."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from pkg import a\n",  # a package re-exporting a submodule is not a cycle
        "a.py": "import os\nfrom pkg.sub import b\n",
        "sub/__init__.py": "",
        "sub/b.py": "from ..a import x\n\ndef f():\n    from pkg import c\n",
        "c.py": "class K:\n    def m(self):\n        import pkg.sub.b\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    g = sf.import_graph(tmp_path, {"pkg": "pkg"})["pkg"]
    assert g["pkg.a"] == {"module": ["pkg.sub.b"], "function": []}
    assert g["pkg.sub.b"] == {"module": ["pkg.a"], "function": ["pkg.c"]}
    assert g["pkg.c"] == {"module": [], "function": ["pkg.sub.b"]}
    assert sf.import_cycles({"pkg": g}) == {"module_level": [["pkg.a", "pkg.sub.b"]],
                                            "with_function_level": [["pkg.a", "pkg.c", "pkg.sub.b"]]}
    sizes = sf.sizes(tmp_path, "pkg", "pkg")
    assert sizes["functions"][0] == dict(name="pkg.c:K.m", path="pkg/c.py", line=2, lines=2)


def test_default_toml_equals_builtin_defaults():
    pytest.importorskip("jax")
    from e5jax.config import load_config

    run_builtin, cfgs_builtin = load_config(None)
    run_toml, cfgs_toml = load_config(ROOT / "experiments" / "e5_default.toml")
    diffs = [f"[run] {k}: built-in {v!r}, TOML {getattr(run_toml, k)!r}"
             for k, v in vars(run_builtin).items() if getattr(run_toml, k) != v]
    diffs += [f"method {m}: built-in only" for m in cfgs_builtin if m not in cfgs_toml]
    diffs += [f"method {m}: TOML only" for m in cfgs_toml if m not in cfgs_builtin]
    diffs += [f"[{m}] {k}: built-in {v!r}, TOML {getattr(cfgs_toml[m], k)!r}"
              for m in cfgs_builtin if m in cfgs_toml
              for k, v in vars(cfgs_builtin[m]).items() if getattr(cfgs_toml[m], k) != v]
    assert diffs == [], "\n".join(diffs)
    assert (run_toml, cfgs_toml) == (run_builtin, cfgs_builtin)


def test_sweep_toml_spaces_are_the_declared_search_ranges():
    """experiments/e5_sweep.toml spells out the search ranges declared on the config fields (``common.traced``), so
    the committed sweep and a spec without ``[space.<method>]`` search the same ranges."""
    from e5jax.sweep.spec import default_space, load_spec

    spec = load_spec(ROOT / "experiments" / "e5_sweep.toml")
    for m in spec.methods:
        assert spec.space[m] == default_space(m), m
    assert list(spec.space["supervised"]) == ["lr", "label_tol"]  # key order decides the draws
