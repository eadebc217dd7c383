"""The database platform's versions, as deploy/platform.env states them (the one place)."""

from __future__ import annotations

from functools import cache

from tests.support.stack import REPO

PLATFORM_ENV = REPO / "deploy" / "platform.env"


@cache
def platform() -> dict[str, str]:
    """``KEY=VALUE`` lines of deploy/platform.env (comments and blank lines skipped)."""
    versions = {}
    for line in PLATFORM_ENV.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            versions[key] = value
    return versions
