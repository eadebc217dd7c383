"""The environment of a `cie` process a test starts.

A child inherits the test runner's environment (PATH, the venv, HOME), but never its project
settings: CI and `stack.sh test` export DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS for the
fixtures, and a child that also got a test's DATABASE_URL_FILE would see both and refuse to
start. So each child gets exactly the settings its test names.
"""

from __future__ import annotations

import os

SETTING_PREFIXES = ("CIE_", "DATABASE_", "KAFKA_", "AWS_", "DISCORD_")
# what a `cie` process needs to reach S3 (the stack's: deploy/local/stack.sh env)
S3_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION")


def cie_environment(settings: dict[str, str]) -> dict[str, str]:
    inherited = {key: value for key, value in os.environ.items()
                 if not key.startswith(SETTING_PREFIXES)}
    return {**inherited, **settings}
