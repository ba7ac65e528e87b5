"""Layering and single definitions, checked on the source (AST, no imports of the modules)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from crdiff_search import names

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("crdiff_search", "analysis", "objectives", "search_spaces", "benchmarks")
COMMANDS = REPO / "crdiff_search" / "commands"
MAX_COMMAND_LINES = 190  # argument parsing and printing only; compare.py has the most flags


def _modules(packages=PACKAGES):
    for package in packages:
        yield from sorted((REPO / package).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_nothing_below_the_cli_imports_a_command():
    offenders = []
    for path in _modules():
        if path.is_relative_to(COMMANDS) or path == REPO / "crdiff_search" / "cli.py":
            continue
        bad = sorted(
            m
            for m in _imports(path)
            if m == "crdiff_search.commands" or m.startswith("crdiff_search.commands.")
        )
        if bad:
            offenders.append(f"{path.relative_to(REPO)}: {', '.join(bad)}")
    assert not offenders, "library modules import the CLI:\n" + "\n".join(offenders)


MAPPED = ("objectives", "analysis", "search_spaces")  # installed as crdiff_search.<name>


def test_no_top_level_imports_of_the_mapped_folders():
    """The folders install as ``crdiff_search.objectives`` etc.; importing them by their bare
    folder name would load a second copy (two registries) where it works at all."""
    offenders = []
    for path in _modules((*PACKAGES, "tests")):
        bad = sorted(m for m in _imports(path) if m.split(".", 1)[0] in MAPPED)
        if bad:
            offenders.append(f"{path.relative_to(REPO)}: {', '.join(bad)}")
    assert not offenders, "bare imports of mapped folders:\n" + "\n".join(offenders)


def test_the_packages_install_under_one_name():
    import importlib.util
    import tomllib

    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert all(p.split(".", 1)[0] == "crdiff_search" for p in setup["packages"])
    for name in MAPPED:
        assert setup["package-dir"][f"crdiff_search.{name}"] == name
        spec = importlib.util.find_spec(f"crdiff_search.{name}")
        assert spec is not None and Path(spec.origin).parent == REPO / name
    # every folder with an __init__.py is shipped
    shipped = set(setup["packages"])
    for init in (REPO / "crdiff_search").rglob("__init__.py"):
        assert ".".join(init.parent.relative_to(REPO).parts) in shipped, init


def test_commands_are_thin():
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in COMMANDS.glob("*.py")}
    fat = {name: n for name, n in sizes.items() if n > MAX_COMMAND_LINES}
    assert not fat, f"commands hold library code (over {MAX_COMMAND_LINES} lines): {fat}"


@pytest.mark.parametrize("name", ["DTYPES", "GRANULARITIES", "KINDS", "DENOISER_CLASSES"])
def test_shared_vocabularies_are_defined_once(name):
    value = getattr(names, name)
    copies = []
    for path in _modules():
        if path == REPO / "crdiff_search" / "names.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Tuple | ast.List | ast.Set):
                try:
                    literal = ast.literal_eval(node)
                except ValueError:
                    continue
                if tuple(literal) == value:
                    copies.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not copies, f"{name} is spelled out again: {copies}"


def test_one_resolution_parser():
    defs = [
        f"{p.relative_to(REPO)}"
        for p in _modules()
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef) and node.name == "parse_resolution"
    ]
    assert defs == ["crdiff_search/resolution.py"]


def test_error_kinds_map_to_their_exit_codes(tmp_path, capsys):
    import json

    from crdiff_search.cli import main
    from crdiff_search.errors import CrdiffError, IntegrityError, ModelSourceError, UsageError
    from crdiff_search.recipe import Recipe, RecipeError, RecipeIntegrityError

    assert [c.exit_code for c in (CrdiffError, UsageError, IntegrityError, ModelSourceError)] == [
        1,
        2,
        3,
        4,
    ]
    # a tampered recipe is an integrity failure (3), still a RecipeError for callers
    recipe = Recipe(model="testbed", width=24, height=24, ratios={"down": 0.5})
    path = recipe.save(tmp_path / "r.json")
    data = json.loads(path.read_text())
    data["ratios"]["down"] = 0.9
    path.write_text(json.dumps(data))
    args = ["generate", "--model", "testbed", "--resolution", "24x24", "--prompt", "x"]
    assert main([*args, "--recipe", str(path), "--out", str(tmp_path / "o")]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checksum mismatch" in err[0]
    assert issubclass(RecipeIntegrityError, RecipeError)
    # a model that cannot be loaded (4), a bad value (2)
    missing = str(tmp_path / "no-such-model")
    assert main(["generate", "--model", missing, "--resolution", "24x24", "--prompt", "x",
                 "--recipe", "none", "--out", str(tmp_path / "o")]) == 4  # fmt: skip
    assert "cannot load model" in capsys.readouterr().err
    assert main([*args, "--recipe", "none", "--steps", "0"]) == 2


def test_public_api_resolves_and_never_shadows_a_submodule():
    """Every name dir(crdiff_search) lists loads, and none is also a submodule's name (after
    ``import crdiff_search.<name>`` the module would replace the function, or the reverse)."""
    import pkgutil

    import crdiff_search

    submodules = {m.name for m in pkgutil.iter_modules(crdiff_search.__path__)}
    public = [n for n in dir(crdiff_search) if n != "__version__"]
    assert not set(public) & submodules
    for name in public:
        assert getattr(crdiff_search, name) is not None
    import crdiff_search.rerank as rerank_module

    assert callable(rerank_module.rerank) and crdiff_search.rerank_study is rerank_module.rerank
