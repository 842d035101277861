"""dvc.yaml's code deps cannot go stale: every synthmix module a stage's command imports is a dep.

The imports are read statically (every `import` anywhere in a module, function-level ones included,
since the CLI imports its stage modules lazily), starting from the CLI function that the stage's
`cmd` runs, and followed transitively through the package.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "synthmix"


def module_file(name: str) -> Path | None:
    """synthmix.a.b -> src/synthmix/a/b.py or src/synthmix/a/b/__init__.py (None outside synthmix)."""
    parts = name.split(".")
    if parts[0] != "synthmix":
        return None
    base = PACKAGE.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(nodes: list[ast.AST], current: str) -> set[str]:
    """The synthmix modules that import statements among `nodes` (and below them) name."""
    found: set[str] = set()
    package = (
        current
        if module_file(current) and module_file(current).name == "__init__.py"
        else current.rpartition(".")[0]
    )
    for node in (n for top in nodes for n in ast.walk(top)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "synthmix"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            if base.split(".")[0] != "synthmix":
                continue
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names if module_file(f"{base}.{a.name}")}
    # a module's parent packages run their __init__ first
    with_parents = set(found)
    for name in found:
        parts = name.split(".")
        with_parents |= {".".join(parts[:i]) for i in range(1, len(parts))}
    return {m for m in with_parents if module_file(m)}


def closure(start: set[str]) -> set[Path]:
    seen: set[str] = set()
    todo = list(start)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        tree = ast.parse(module_file(name).read_text())
        todo += imported_modules([tree], name) - seen
    return {module_file(m) for m in seen}


def command_modules(command: str) -> set[str]:
    """Modules the CLI imports to run `synthmix <command>`: its own top level and the command's body."""
    tree = ast.parse((PACKAGE / "cli.py").read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            if isinstance(decorator, ast.Call) and getattr(decorator.func, "attr", "") == "command":
                named = decorator.args[0].value if decorator.args else node.name.replace("_", "-")
                if named == command:
                    return imported_modules([*top, node], "synthmix.cli")
    raise AssertionError(f"no CLI command '{command}' in cli.py")


def missing_code_deps(dvc_yaml: Path) -> dict[str, list[str]]:
    """{stage: [module paths its command imports that its deps do not cover]}; empty when all is well."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    missing: dict[str, list[str]] = {}
    for name, stage in stages.items():
        words = stage["cmd"].split()
        assert words[0] == "synthmix", f"stage {name}: cmd should be one synthmix command"
        deps = [Path(next(iter(d)) if isinstance(d, dict) else d) for d in stage.get("deps", [])]
        # cli.py itself runs the command, but only the command's own imports are followed
        needed = sorted(
            p.relative_to(REPO) for p in {PACKAGE / "cli.py", *closure(command_modules(words[1]))}
        )
        uncovered = [str(p) for p in needed if not any(p == d or d in p.parents for d in deps)]
        if uncovered:
            missing[name] = uncovered
    return missing


def test_every_stage_lists_the_code_it_imports():
    missing = missing_code_deps(REPO / "dvc.yaml")
    assert not missing, f"dvc.yaml stages miss code deps (add them): {missing}"


def test_deleting_a_code_dep_is_caught(tmp_path: Path):
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())
    train_deps = stages["stages"]["train"]["deps"]
    removed = "src/synthmix/train/fit.py"
    assert removed in train_deps
    train_deps.remove(removed)
    copy = tmp_path / "dvc.yaml"
    copy.write_text(yaml.safe_dump(stages))
    assert missing_code_deps(copy) == {"train": [removed]}


def test_a_lazy_import_inside_a_function_counts(tmp_path: Path):
    # The stage modules are imported inside CLI functions: the reader must see those imports.
    assert "synthmix.stages.train" in command_modules("train")
    assert PACKAGE / "config" / "hparams.py" in closure({"synthmix.stages.train"})


def _dvc_deleted_deps(repo: Path) -> dict[str, list[str]]:
    """Per stage, the deps `dvc status` itself reports deleted (missing from the repository)."""
    out = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), "status", "--json"],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    deleted: dict[str, list[str]] = {}
    for stage, changes in json.loads(out.stdout or "{}").items():
        for change in changes:
            if isinstance(change, dict):
                deps = change.get("changed deps", {})
                deleted[stage] = deleted.get(stage, []) + [p for p, s in deps.items() if s == "deleted"]
    return deleted


@pytest.mark.slow
def test_dvc_itself_reads_the_deps(tmp_path: Path):
    """`dvc status` on a copy of dvc.yaml and the code reports no code dep of any stage as deleted, and
    does report one once its file is gone (so DVC, not this test, is what reads the paths)."""
    if shutil.which("dvc") is None and not (Path(sys.executable).parent / "dvc").exists():
        pytest.skip("dvc is not installed")
    copy = tmp_path / "repo"
    copy.mkdir()
    shutil.copy(REPO / "dvc.yaml", copy / "dvc.yaml")
    shutil.copytree(REPO / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([str(Path(sys.executable).parent / "dvc"), "init", "-q", "--no-scm"], cwd=copy, check=True)
    missing = {s: [p for p in deps if p.startswith("src/")] for s, deps in _dvc_deleted_deps(copy).items()}
    assert not {s: deps for s, deps in missing.items() if deps}, (
        f"dvc finds these code deps missing: {missing}"
    )

    removed = "src/synthmix/train/fit.py"
    naming_it = {
        s
        for s, stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items()
        if removed in stage["deps"]
    }
    assert naming_it == {"quality", "train"}  # tune depends on the whole train/ folder instead
    (copy / removed).unlink()
    missing = _dvc_deleted_deps(copy)
    assert {s for s, deps in missing.items() if removed in deps} == naming_it
