"""The packages' import graph has no cycle: each module of train/ and data/ can be read and changed alone."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path, known: set[str]) -> set[str]:
    """Every project module `path` imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n in known}
    return found


def _graph(package: str) -> dict[str, set[str]]:
    files = {_module_name(p): p for p in (ROOT / package).rglob("*.py")}
    known = set(files)
    return {name: _imports(path, known) - {name} for name, path in files.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path of module names, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = 1, stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node], _ = 2, stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


@pytest.mark.parametrize("package", ["train", "data"])
def test_no_import_cycle(package):
    graph = _graph(package)
    # A package's __init__ importing its own submodules is how a package is assembled, not a cycle.
    graph = {m: {d for d in deps if not (m.count(".") == 0 or d == package)} for m, deps in graph.items()}
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


# ---------------------------------------------------------------- lazy package attributes (zoo.lazy)

HEAVY = ("jax", "jaxlib", "flax", "grain", "orbax", "optax", "tensorflow")


def _fresh(code: str) -> str:
    """stdout of `code` run by a new interpreter in the repository root (nothing imported before it)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_extraction_and_its_workers_import_no_jax():
    """What a spawned extraction worker imports (its main module, the task's, dlib's) loads no JAX, grain or flax."""
    out = _fresh(
        "import sys\n"
        "import data.faces.__main__, data.faces.extract, data.faces.dlib_models, data.faces.align, data.faces.masks\n"
        "import data.provenance, data.media, zoo.errors, zoo.files\n"
        f"print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))\n")
    assert out.split() == [], f"imported: {out}"


def test_the_registry_lists_every_model_however_it_is_reached():
    """`zoo.registry` reached directly (no `import zoo` doing it first) still finds the built-in models."""
    names = {path.stem for path in (ROOT / "zoo").glob("*.py")}
    registered = {}  # model name -> the file that registers it, read from the source
    for stem in names:
        for node in ast.walk(ast.parse((ROOT / "zoo" / f"{stem}.py").read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "register"
                    and node.args and isinstance(node.args[0], ast.Constant)):
                registered[node.args[0].value] = stem
    assert {"swap_df", "vae_mlp", "dcgan_g"} <= set(registered)
    out = _fresh("from zoo.registry import list_models, model_fields\n"
                 "print(' '.join(list_models()))\nprint(' '.join(model_fields('swap_df')))")
    listed, fields = out.splitlines()
    assert listed.split() == sorted(registered)
    assert "resolution" in fields.split()


@pytest.mark.parametrize("package", ["zoo", "data"])
def test_public_names_resolve_lazily_to_their_definitions(package):
    """Each name of `__all__` is the object its module defines, loaded on first use; dir() lists them all."""
    import importlib

    module = importlib.import_module(package)
    tree = ast.parse((ROOT / package / "__init__.py").read_text())
    guarded = [node for node in ast.walk(tree) if isinstance(node, ast.If)]  # the TYPE_CHECKING block
    imported = {a.name: node.module for block in guarded for node in ast.walk(block)
                if isinstance(node, ast.ImportFrom) for a in node.names}
    assert sorted(imported) == sorted(module.__all__), "__all__ and the TYPE_CHECKING imports differ"
    for name, source in imported.items():
        value = getattr(module, name)
        assert value is getattr(importlib.import_module(source), name), name
    assert set(module.__all__) <= set(dir(module))
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        getattr(module, "not_a_name")


def test_submodules_and_names_load_on_first_use():
    """`import zoo` / `import data` import nothing heavy; a public name or submodule then loads what it needs."""
    out = _fresh(
        "import sys\nimport zoo, data\n"
        f"heavy = lambda: sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "print(len(heavy()))\n"
        "print(zoo.xla_cpu.__name__, zoo.swap.__name__, data.augment.__name__)\n"
        "print(len(zoo.list_models('swap_*')), data.get_source('digits').info.name)\n"
        "print('jax' in heavy())\n")
    lines = out.splitlines()
    assert lines[0] == "0"
    assert lines[1] == "zoo.xla_cpu zoo.swap data.augment"
    assert int(lines[2].split()[0]) >= 4 and lines[2].split()[1] == "digits" and lines[3] == "True"
