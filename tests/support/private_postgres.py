"""A disposable PostgreSQL cluster of a test's own (initdb into a temporary directory, its own
port), for tests that stop and start the server: they must not take the shared stack's
cluster down under other tests or a running ``stack.sh run``. ``secure`` secures it as
`stack.sh up --secure` does: TLS, scram-sha-256 only, a login user per component; such a
server comes from Debian's PostgreSQL (``tls=True``), since the stack's own is built without
OpenSSL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import asyncpg

from tests.support.ports import PortTaken, on_free_port, taken


def _server_bin(variable: str) -> Path:
    """A server's tools, as `deploy/local/stack.sh env` names them."""
    try:
        return Path(os.environ[variable])
    except KeyError:
        raise RuntimeError(f"{variable} is not set: eval \"$(deploy/local/stack.sh env)\" "
                           "first (deploy/local/stack.sh test does)") from None


def pg_bin(*, tls: bool = False) -> Path:
    """The stack's PostgreSQL (``CIE_PG_BIN``), or with ``tls`` one built with OpenSSL."""
    return _server_bin("CIE_PG_TLS_BIN" if tls else "CIE_PG_BIN")


def timescaledb_installed(bin_dir: Path) -> bool:
    """Whether TimescaleDB is installed for the server whose tools are in ``bin_dir``."""
    share = subprocess.run([str(bin_dir / "pg_config"), "--sharedir"], capture_output=True,
                           text=True, check=True, timeout=30).stdout.strip()
    return (Path(share) / "extension" / "timescaledb.control").exists()


def _as_postgres(*command: str) -> list[str]:
    # PostgreSQL refuses to run as root
    return ["runuser", "-u", "postgres", "--", *command] if os.getuid() == 0 else list(command)


async def _run(*command: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *_as_postgres(*command), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{command[0]} failed: {out.decode(errors='replace')[-2000:]}")


class PrivatePostgres:
    def __init__(self, *, timescaledb: bool = False, tls: bool = False,
                 bin_dir: Path | None = None) -> None:
        self.timescaledb = timescaledb  # preload the extension (it must be installed)
        self.bin = bin_dir or pg_bin(tls=tls)  # bin_dir: another server's (the upgrade drill)
        # under /var/tmp, not pytest's tmp_path: the 'postgres' user must reach it
        self.root = Path(tempfile.mkdtemp(prefix="cie-pg-", dir="/var/tmp"))
        self.data = self.root / "data"
        self.port = 0

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    async def init(self, *initdb_options: str) -> None:
        if os.getuid() == 0:
            shutil.chown(self.root, "postgres")
        await _run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                   "--auth=trust", "-E", "UTF8", "--locale=C", *initdb_options)
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("listen_addresses = '127.0.0.1'\n"
                       f"unix_socket_directories = '{self.root}'\nfsync = off\n"
                       "synchronous_commit = off\nfull_page_writes = off\n"
                       "max_connections = 100\n")
            if self.timescaledb:
                conf.write("shared_preload_libraries = 'timescaledb'\n"
                           "timescaledb.telemetry_level = off\n")

    async def start(self) -> None:
        """The first start picks a port; a restart (after ``stop``) keeps it."""
        if self.port:
            await self._start_on(self.port)
        else:
            self.port = await on_free_port(self._start_on)

    async def _start_on(self, port: int) -> int:
        log = self.root / "postgres.log"
        log.unlink(missing_ok=True)
        try:
            await _run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(log),
                       "-o", f"-p {port}", "-w", "-t", "60", "start")
        except RuntimeError:
            if log.exists() and taken(log.read_text(errors="replace")):
                raise PortTaken(port) from None
            raise
        return port

    async def secure(self, tls: Path) -> None:
        """Users and the database `cie` (deploy/local/secure.sh), then TLS and passwords only:
        from now on no connection without both reaches the server."""
        from tests.support.private_kafka import secure_sh

        secure_sh("postgres-users", self.url, str(tls))
        secure_sh("postgres-config", str(tls), str(self.data))
        await self.reload()

    async def install_certificate(self, certificate: Path, key: Path) -> None:
        """Serve another certificate from now on (TLS settings take effect on reload)."""
        for source, name in ((certificate, "server.crt"), (key, "server.key")):
            target = self.data / name
            target.write_bytes(source.read_bytes())
        await self.reload()

    async def reload(self) -> None:
        await _run(str(self.bin / "pg_ctl"), "-D", str(self.data), "reload")

    def user_url(self, user: str, tls: Path, *, database: str = "cie",
                 ca: Path | None = None) -> str:
        """A secured server's URL for ``user`` (its secure.sh password), verify-full TLS."""
        password = (tls / "passwords" / user.removeprefix("cie_")).read_text().strip()
        return (f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{database}"
                f"?sslmode=verify-full&sslrootcert={ca or tls / 'ca.crt'}")

    async def stop(self) -> None:
        await _run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    async def destroy(self) -> None:
        with contextlib.suppress(RuntimeError):  # not running
            await self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    async def create_database(self, name: str) -> str:
        """A new empty database; returns its URL."""
        conn = await asyncpg.connect(self.url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    async def migrated(self, name: str = "cie") -> str:
        """Create a database with the schema (this server's path); returns its URL."""
        from consumers.platform import migrations

        url = await self.create_database(name)
        conn = await asyncpg.connect(url)
        try:
            await migrations.migrate(conn, use_timescaledb=self.timescaledb)
        finally:
            await conn.close()
        return url
