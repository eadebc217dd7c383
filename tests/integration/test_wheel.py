"""The package as a user installs it: the wheel built from this checkout, installed into a
fresh virtualenv outside it, runs `cie migrate`, `cie contracts` and a short `cie consume`
against the stack. Nothing of the checkout is importable there, so this fails if the package
leaves behind a file it needs at run time (its SQL travels inside it, importlib.resources)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from consumers.contracts.bars import Bar
from consumers.platform import migrations
from tests.support.cie import cie_environment
from tests.support.clock import T0
from tests.support.harness import Ingest, ingest_environment
from tests.support.stack import REPO, Stack


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv, outside the checkout, with only the built wheel installed."""
    root = tmp_path_factory.mktemp("wheel")
    assert not root.resolve().is_relative_to(REPO)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--wheel-dir", str(root / "dist"), str(REPO)],
                   check=True, capture_output=True, timeout=600)
    [wheel] = (root / "dist").glob("cie_consumers-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=120)
    subprocess.run([str(root / "venv" / "bin" / "pip"), "install", "--quiet", str(wheel)],
                   check=True, capture_output=True, timeout=900)
    return root


def outside(root: Path, settings: dict[str, str]) -> dict[str, str]:
    """The environment for the installed `cie`: the settings, no path into the checkout."""
    environment = cie_environment(settings)
    environment.pop("PYTHONPATH", None)
    environment["PATH"] = f"{root / 'venv' / 'bin'}{os.pathsep}{environment.get('PATH', '')}"
    return environment


async def run(root: Path, settings: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(root / "venv" / "bin" / "cie"), *args, cwd=root, env=outside(root, settings),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    return proc.returncode or 0, out.decode(errors="replace")


async def test_the_installed_package_migrates_a_new_database(
        installed: Path, stack: Stack, empty_db: str) -> None:
    code, out = await run(installed, {"DATABASE_URL": empty_db}, "migrate")
    assert code == 0, out
    conn = await asyncpg.connect(empty_db)
    try:
        recorded = {r["filename"] for r in await conn.fetch(
            "SELECT filename FROM schema_migrations")}
    finally:
        await conn.close()
    assert recorded == {m.filename for m in migrations.load_migrations()}


async def test_the_installed_package_exports_its_contracts(installed: Path) -> None:
    code, out = await run(installed, {}, "contracts")
    assert code == 0, out
    schemas = json.loads(out)
    assert {"fills", "predictions", "bars"} <= {name.split(".")[-1] for name in schemas}


async def test_the_installed_package_consumes_a_bar(
        installed: Path, stack: Stack, plain_db: str) -> None:
    environment = ingest_environment(stack.kafka, plain_db)
    ingest = Ingest(environment)
    await ingest.open()
    proc = await asyncio.create_subprocess_exec(
        str(installed / "venv" / "bin" / "cie"), "consume", cwd=installed,
        env=outside(installed, environment), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    try:
        await ingest.send([Bar(symbol="WHL", timestamp=T0, open=Decimal("10.5"),
                               high=Decimal("11.25"), low=Decimal("10.125"),
                               close=Decimal("11"), volume=7)])
        await ingest.drained("bars", 1, timeout=60)
        conn = await asyncpg.connect(plain_db)
        try:
            row = await conn.fetchrow(
                "SELECT high, low, volume FROM market_conditions WHERE symbol = 'WHL'")
        finally:
            await conn.close()
        assert (row["high"], row["low"], row["volume"]) == (Decimal("11.25"),
                                                            Decimal("10.125"), 7)
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0, out.decode(errors="replace")[-3000:]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await ingest.close()
