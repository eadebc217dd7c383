"""The package's exceptions: one root, so callers can catch "ours" without catching bugs."""


class CieError(Exception):
    """Root of every error this package raises on purpose."""


class SettingsError(CieError):
    """The environment does not describe a usable configuration (names the variable)."""


class MigrationError(CieError):
    """The schema cannot be migrated safely (edited migration, unknown directive, ...)."""
