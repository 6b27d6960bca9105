"""flowlib.env: every FLOWLAB_* variable declared once, parsed one way, and all of them documented."""

from __future__ import annotations

import ast
import re

import pytest

from flowlib import env
from flowlib.env import REPO_ROOT


def test_each_kind_parses_and_a_bad_value_names_its_variable(monkeypatch):
    monkeypatch.setenv("FLOWLAB_MAX_STEPS", " 200 ")
    monkeypatch.setenv("FLOWLAB_DB_TIMEOUT_S", "2.5")
    monkeypatch.setenv("FLOWLAB_CLASSROOM", "Yes")
    monkeypatch.setenv("FLOWLAB_RUNS_DIR", "~/somewhere")
    assert env.read("FLOWLAB_MAX_STEPS") == 200
    assert env.read("FLOWLAB_DB_TIMEOUT_S") == 2.5
    assert env.flag("FLOWLAB_CLASSROOM") is True and env.read("FLOWLAB_CLASSROOM") is True
    assert env.runs_root().name == "somewhere" and "~" not in str(env.runs_root())
    for name, bad in (("FLOWLAB_MAX_STEPS", "0"), ("FLOWLAB_MAX_STEPS", "ten"), ("FLOWLAB_DB_TIMEOUT_S", "-1"),
                      ("FLOWLAB_DB_TIMEOUT_S", "nan"), ("FLOWLAB_VIEW_THREADS", "1.5")):
        monkeypatch.setenv(name, bad)
        with pytest.raises(ValueError, match=name):
            env.read(name)


def test_unset_means_the_default_and_classroom_mode_its_own(monkeypatch):
    for name in env.VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert env.read("FLOWLAB_MAX_STEPS") is None and env.read("FLOWLAB_MAX_UPLOAD_MB") == 50
    assert env.runs_root() == REPO_ROOT / "checkpoints" / "runs"
    assert env.cache_root() == REPO_ROOT / ".cache" / "datasets"
    monkeypatch.setenv("FLOWLAB_CLASSROOM", "1")
    assert env.read("FLOWLAB_MAX_STEPS") == 5000 and env.read("FLOWLAB_MAX_UPLOAD_MB") == 20
    assert env.read("FLOWLAB_MAX_STEPS", classroom=False) is None
    monkeypatch.setenv("FLOWLAB_MAX_STEPS", "7")
    assert env.read("FLOWLAB_MAX_STEPS") == 7              # set explicitly: the classroom default yields


def test_an_unknown_name_is_a_programming_error():
    with pytest.raises(KeyError, match="not a Flow Lab variable"):
        env.read("FLOWLAB_NO_SUCH_THING")


def test_every_variable_the_code_names_is_declared_and_the_readme_lists_exactly_them():
    named = set()
    for folder in ("flowlib", "pages"):
        for path in (REPO_ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    named |= set(re.findall(r"\bFLOWLAB_[A-Z0-9_]*[A-Z0-9]\b", node.value))
    assert named <= set(env.VARIABLES), named - set(env.VARIABLES)
    readme = (REPO_ROOT / "README.md").read_text()
    table = readme[readme.index("## Settings (environment variables)"):]
    table = table[:table.index("\n## ")]
    rows = set(re.findall(r"^\| `(FLOWLAB_[A-Z0-9_]+)` \|", table, flags=re.M))
    assert rows == set(env.VARIABLES)


def _flowlab_names_read_from_the_environment(source: str) -> list[str]:
    """FLOWLAB_* names passed to os.environ.get / os.getenv / os.environ[...], directly or
    through a module constant."""
    tree = ast.parse(source)
    constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                 and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
                 for t in n.targets if isinstance(t, ast.Name)}

    def value(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        return constants.get(node.id) if isinstance(node, ast.Name) else None

    found = []
    for node in ast.walk(tree):
        key = None
        if isinstance(node, ast.Call) and node.args and ast.unparse(node.func) in (
                "os.environ.get", "os.getenv", "environ.get", "getenv"):
            key = value(node.args[0])
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value) in ("os.environ", "environ"):
            key = value(node.slice)
        if key and key.startswith("FLOWLAB_"):
            found.append(key)
    return found


def test_nothing_else_reads_the_environment_for_a_flowlab_variable():
    """One parser: a FLOWLAB_ variable is read from the environment only in flowlib/env.py."""
    assert _flowlab_names_read_from_the_environment(
        'import os\nNAME = "FLOWLAB_X"\nos.environ.get(NAME)\nos.environ["FLOWLAB_Y"]') == ["FLOWLAB_X", "FLOWLAB_Y"]
    offenders = []
    for folder in ("flowlib", "pages", "benchmarks"):
        for path in (REPO_ROOT / folder).rglob("*.py"):
            if path != REPO_ROOT / "flowlib" / "env.py":
                offenders += [f"{path.relative_to(REPO_ROOT)}: {n}"
                              for n in _flowlab_names_read_from_the_environment(path.read_text())]
    assert not offenders, offenders
