"""The wheel users install: every module and shipped config in it, every imported library declared,
and the demo running from the installed wheel rather than from this checkout.

The wheel is built from a copy of the checkout (``pip wheel --no-deps --no-build-isolation``, no
network), so building never writes ``build/`` or ``*.egg-info`` into the working tree.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "arkx"
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")


def build_wheel(workdir: Path, project: Path = ROOT) -> Path:
    """Build the wheel of ``project`` in a copy of it under ``workdir``; returns the wheel's path."""
    copy = workdir / "project"
    copy.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(project / name, copy / name)
    shutil.copytree(project / "src", copy / "src", ignore=SKIP)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(workdir / "dist"), str(copy)], capture_output=True, text=True)
    # without isolation the venv's own setuptools builds it: the test extra asks for setuptools>=70.1
    assert built.returncode == 0, f"pip wheel failed:\n{built.stderr[-3000:]}"
    [wheel] = (workdir / "dist").glob("arkx-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def package_files(package: Path = PACKAGE) -> set[str]:
    """Every file of the source package as the wheel names it (``arkx/...``), caches left out."""
    return {f"arkx/{p.relative_to(package).as_posix()}" for p in package.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def test_wheel_holds_every_module_and_shipped_config(wheel):
    with zipfile.ZipFile(wheel) as archive:
        shipped = {n for n in archive.namelist() if n.startswith("arkx/")}
    expected = package_files()
    assert "arkx/configs/ark6-swinb224.yaml" in expected  # the configs live inside the package
    assert {p.parent.as_posix() for p in map(Path, expected) if p.name == "__init__.py"} >= {
        "arkx", "arkx/data", "arkx/data/adapters", "arkx/synth", "arkx/evaluation", "arkx/models",
        "arkx/training"}
    assert sorted(expected - shipped) == [], "in the source package but not in the wheel"
    assert sorted(shipped - expected) == [], "in the wheel but not in the source package"


def _optional_import_nodes(tree: ast.AST) -> set[int]:
    """ids of import nodes inside ``try: ... except ImportError`` (optional plugins need no declaration)."""
    optional = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(_catches_import_error(h) for h in node.handlers):
            optional |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return optional


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError") for n in names)


def required_imports(package: Path = PACKAGE) -> dict[str, str]:
    """Third-party top-level modules the package imports unconditionally -> one file importing each."""
    found: dict[str, str] = {}
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        optional = _optional_import_nodes(tree)
        for node in ast.walk(tree):
            if id(node) in optional:
                continue
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top != "arkx" and top not in sys.stdlib_module_names:
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_requirements(wheel: Path) -> set[str]:
    """Distribution names the wheel requires at run time (extras such as ``test`` left out)."""
    with zipfile.ZipFile(wheel) as archive:
        [meta] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(archive.read(meta).decode())
    requires = [r for r in metadata.get_all("Requires-Dist") or [] if "extra ==" not in r]
    return {_normalized(re.match(r"[A-Za-z0-9_.\-]+", r).group(0)) for r in requires}


def test_every_imported_library_is_a_declared_dependency(wheel):
    imports = required_imports()
    assert {"torch", "timm", "scipy", "yaml"} <= set(imports)  # the scan sees imports at all
    providers = packages_distributions()
    declared = declared_requirements(wheel)
    undeclared = []
    for module, where in sorted(imports.items()):
        dists = {_normalized(d) for d in providers.get(module, [])}
        if not dists & declared:
            undeclared.append(f"{module} ({where}; distribution {sorted(dists) or 'not installed'})")
    assert undeclared == [], "imported but not in [project] dependencies of pyproject.toml"


def _run_from(target: Path, cwd: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    """Run a command with only the installed wheel (``target``) on the path before the venv's libraries."""
    env = {**os.environ, "PYTHONPATH": str(target), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_demo_runs_from_the_installed_wheel(wheel, tmp_path):
    """Installs the wheel alone (its dependencies come from this venv) into a folder, then runs its
    ``arkx`` console script from a folder with no checkout in sight: a module or config that the wheel
    lacks fails here even though the editable install of the checkout has it."""
    target, cwd = tmp_path / "site", tmp_path / "elsewhere"
    cwd.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, text=True)
    where = _run_from(target, cwd, sys.executable, "-c",
                      "import arkx, arkx.config as c; print(arkx.__file__); print(c.resolve_config_path('ark6-swinb224'))",
                      timeout=120)
    assert where.returncode == 0, where.stderr
    module_file, shipped_config = map(Path, where.stdout.split())
    assert module_file.is_relative_to(target), f"arkx imported from {module_file}, not from the installed wheel"
    assert shipped_config.is_relative_to(target) and shipped_config.is_file()
    demo = _run_from(target, cwd, str(target / "bin" / "arkx"), "demo", "--out", str(tmp_path / "demo"),
                     "--n", "40", "--rounds", "1", "--no-baselines", timeout=600)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-4000:]
    table = demo.stdout
    for dataset in ("mimic_cxr", "chexpert", "nih14", "rsna", "vindr_cxr", "shenzhen"):
        assert re.search(rf"^{dataset}\s+[01]\.\d{{4}}\s", table, re.M), table[-2000:]  # a test AUC per dataset


def test_shipped_configs_load_by_name_from_any_folder(tmp_path, monkeypatch):
    from arkx.config import load_config, shipped_configs

    monkeypatch.chdir(tmp_path)  # no configs/ folder here: the name must resolve to the packaged file
    assert "ark6-swinb224" in shipped_configs()
    for name, path in shipped_configs().items():
        assert path.parent == PACKAGE / "configs"
        for spelling in (name, f"{name}.yaml"):
            assert load_config(spelling).model_dump() == load_config(path).model_dump()


def test_a_file_in_the_folder_wins_over_a_shipped_name_and_unknown_names_list_the_shipped(tmp_path, monkeypatch):
    from arkx.config import ConfigError, resolve_config_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "ark6-swinb224.yaml").write_text("run: {seed: 3}\n")
    assert resolve_config_path("ark6-swinb224.yaml") == Path("ark6-swinb224.yaml")
    with pytest.raises(ConfigError, match=r"config file nope\.yaml not found.*shipped: .*ark6-swinb224"):
        resolve_config_path("nope.yaml")
    assert resolve_config_path("sub/nope.yaml") == Path("sub/nope.yaml")  # a path: the reader reports it
