"""The README's examples run: its bash blocks in order in a scratch folder, and its python
blocks after them (they read what the bash blocks made)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_readme_names_exactly_two_set_up_commands_and_ci_runs_them():
    markers = re.findall(r"<!-- (setup|test)-command -->\n```sh\n(.+)\n```", README)
    assert [m[0] for m in markers] == ["setup", "test"]
    ci = (ROOT / ".ci/run").read_text()
    assert "readme_command setup-command" in ci and "readme_command test-command" in ci


@pytest.mark.slow
def test_readme_examples_run(tmp_path):
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for script in blocks("bash"):
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr}"
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for code in blocks("python"):
            namespace = {"__name__": "readme"}
            exec(compile(code, "README.md", "exec"), namespace)
    finally:
        os.chdir(cwd)
