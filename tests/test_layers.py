"""The package's layering, as import-linter checks it (the contracts are in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "synthmix"


def test_import_contracts_hold():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint_imports)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_no_module_is_over_400_lines():
    long = {
        str(p.relative_to(REPO)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 400
    }
    assert not long, f"split these modules where their jobs part: {long}"


def test_a_layer_violation_is_reported(tmp_path):
    # The check can fail: with core/files.py declared above stages/train.py, the train stage's import of files breaks it.
    config = tmp_path / "importlinter.toml"
    config.write_text(
        '[tool.importlinter]\nroot_package = "synthmix"\n\n[[tool.importlinter.contracts]]\n'
        'name = "inverted"\ntype = "layers"\nlayers = ["synthmix.core.files", "synthmix.stages.train"]\n'
    )
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--config", str(config)], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode != 0 and "synthmix.stages.train -> synthmix.core.files" in result.stdout
