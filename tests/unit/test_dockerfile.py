"""The Dockerfile cannot be built here (no Docker engine): it is parsed and held to what makes
the image a user's install: the final stage installs the built wheel, carries no source tree
and no PYTHONPATH, and runs the console script the wheel declares."""

from __future__ import annotations

import json
import tomllib

from tests.support.stack import REPO


def stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's stages, each a list of (instruction, arguments), comments dropped and
    continuation lines joined."""
    text = (REPO / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    found: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM":
            found.append([])
        found[-1].append((instruction.upper(), arguments.strip()))
    return found


def test_the_image_installs_the_wheel_and_nothing_else_of_the_source() -> None:
    build, final = stages()
    assert any(i == "RUN" and "pip wheel" in a and a.endswith(" .") for i, a in build)
    copied = [a.split()[0] for i, a in build if i == "COPY"]
    assert all((REPO / source).exists() for source in copied), copied
    assert {"schema", "consumers", "pyproject.toml"} <= set(copied)  # the wheel's SQL too
    assert any(i == "RUN" and "pip install" in a and "/wheels/*.whl" in a for i, a in final)
    assert [a for i, a in final if i == "COPY"] == ["--from=build /wheels /wheels"]
    assert not any(i == "ENV" and "PYTHONPATH" in a for i, a in final)
    assert not any(i == "WORKDIR" for i, a in final)


def test_the_image_runs_the_console_script_the_wheel_declares() -> None:
    *_, final = stages()
    [entrypoint] = [json.loads(a) for i, a in final if i == "ENTRYPOINT"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == ["cie"] and "cie" in scripts
    assert any(i == "USER" and a != "root" for i, a in final)
