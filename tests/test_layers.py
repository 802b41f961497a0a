"""The package's layers, read from every module's imports (with ast, lazy imports inside functions too).

    app/        the Gradio app's parts        may import anything in tiny_dit
    inside/     a run recorded, its views     the DiT, data, inside
    training/   caches, loop, commands        the DiT, data, training
    data/       the clips                     the DiT, data
    the DiT     tiny_dit/*.py                 only the DiT; sample.py (a command) also data

So the DiT imports nothing from the app or the views, data nothing from training, and training and
the views do not import each other. app.py, at the repository root, is on top of all of them.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tiny_dit"
SUBPACKAGES = ("app", "data", "inside", "training")
ALLOWED = {
    "dit": {"dit"},
    "sample": {"dit", "data"},
    "data": {"dit", "data"},
    "training": {"dit", "data", "training"},
    "inside": {"dit", "data", "inside"},
    "app": {"dit", "sample", "data", "training", "inside", "app"},
}
MAX_TOP_MODULES = 14  # tiny_dit/*.py, __init__.py included: the DiT, what a learner opens first


def layer(module: str) -> str:
    """The layer of a module of tiny_dit, by its dotted name."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in SUBPACKAGES:
        return parts[1]
    return "sample" if module == "tiny_dit.sample" else "dit"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """The tiny_dit modules (and the root `app`) that `source`, the text of `module`, imports anywhere in it.
    `from tiny_dit.x import y` counts as tiny_dit.x.y where that is a module, else tiny_dit.x."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package
                package = module.split(".")[:len(module.split(".")) - node.level + is_package]
                base = ".".join(package + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names
                         if is_module(f"{base}.{alias.name}"))
    return {name for name in found if name == "app" or name == "tiny_dit" or name.startswith("tiny_dit.")}


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def violations(sources: dict[str, tuple[str, bool]]) -> list[str]:
    """'a imports b (layer x may not import layer y)' for every forbidden import among `sources`:
    {module name: (its source, whether it is a package's __init__)}."""
    found = []
    for module, (source, is_package) in sorted(sources.items()):
        for imported in sorted(imported_modules(source, module, is_package)):
            if imported == "app":
                found.append(f"{module} imports app.py, the top of everything")
            elif layer(imported) not in ALLOWED[layer(module)]:
                found.append(f"{module} imports {imported} ({layer(module)} may not import {layer(imported)})")
    return found


def package_sources() -> dict[str, tuple[str, bool]]:
    return {module_name(path): (path.read_text(), path.name == "__init__.py") for path in PACKAGE.rglob("*.py")}


def test_no_module_imports_a_layer_above_its_own():
    sources = package_sources()
    assert len(sources) > 40  # the whole package was read
    assert violations(sources) == []


def test_the_checker_catches_a_forbidden_import():
    """A deliberately bad import, in each form, is caught: a check that cannot fail checks nothing."""
    bad = {
        "tiny_dit.model": ("def f():\n    from tiny_dit.inside.views import drawing\n", False),  # lazy, a module
        "tiny_dit.data.shapes": ("import tiny_dit.training.loop\n", False),
        "tiny_dit.training.train": ("from tiny_dit.inside import teaching\n", False),
        "tiny_dit.inside.recorder": ("from tiny_dit.training.loop import JsonlLog\n", False),
        "tiny_dit.flow": ("from tiny_dit import app\n", False),
        "tiny_dit.inside": ("from .. import training\n", True),  # relative, from a package's __init__
        "tiny_dit.video": ("import app\n", False),
    }
    found = violations(bad)
    for module in bad:
        assert any(line.startswith(module + " imports") for line in found), (module, found)
    assert violations({"tiny_dit.app.layout": ("from tiny_dit.inside import views\nimport tiny_dit.model\n", False),
                       "tiny_dit.sample": ("from tiny_dit.data.shapes import FPS\n", False)}) == []


def test_the_lazy_exports_are_the_dits():
    """tiny_dit.TinyDiTPipeline and friends, and the modules a saved pipeline's model_index.json names."""
    import tiny_dit

    assert {layer(module) for module in tiny_dit._EXPORTS.values()} == {"dit"}
    for name in ("tiny_dit.model", "tiny_dit.text_encoder", "tiny_dit.pipeline"):
        assert is_module(name), name


@pytest.mark.parametrize("subpackage", SUBPACKAGES)
def test_each_subpackage_says_what_it_holds_and_may_import(subpackage):
    doc = ast.get_docstring(ast.parse((PACKAGE / subpackage / "__init__.py").read_text()))
    assert doc and "Layer:" in doc
    for path in (PACKAGE / subpackage).glob("*.py"):
        if path.name != "__init__.py":
            assert path.stem in doc, f"{subpackage}/__init__.py does not list {path.name}"


def test_the_top_of_the_package_is_the_dit():
    top = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_MODULES, top


def test_pyproject_lists_every_subpackage():
    """setuptools installs only the packages pyproject.toml names: a new subpackage must be added there."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    found = [module_name(path) for path in PACKAGE.rglob("__init__.py")]
    assert sorted(listed) == sorted(found)
