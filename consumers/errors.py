"""Every exception this package raises on purpose, under one root, so callers can catch "ours"
without catching bugs. What each kind means for a running consumer (retry, dead letter,
stop) is decided in consumers/platform/faults.py."""


class CieError(Exception):
    """Root of every error this package raises on purpose."""


# -- configuration and schema: the process cannot start ------------------------------------

class SettingsError(CieError):
    """The environment does not describe a usable configuration (names the variable)."""


class MigrationError(CieError):
    """The schema cannot be migrated safely (edited migration, unknown directive, ...)."""


# -- infrastructure: retried, or the process stops -----------------------------------------

class TransientError(CieError):
    """Worth retrying: the infrastructure failed, nothing about the data is wrong."""


class FatalError(CieError):
    """Not the data's fault and not going away by itself: stop and tell a human."""


class RegistryUnavailable(TransientError):
    """The schema registry did not answer, or answered with a server error."""


class RegistryRefused(CieError):
    """The schema registry refused a request (an incompatible schema version; says why)."""


class SchemaBehind(FatalError):
    """The database lacks migrations this version of the code needs (run `cie migrate`)."""


class PositionMoved(CieError):
    """Another member moved a partition's position in the database since this one read it
    (consumers/ingest/positions.py): the write is rolled back and tried again at once, with
    the positions read afresh."""


class DrainTimeout(CieError):
    """The buffered batches could not be written and committed within the drain deadline."""


class ReplayPositionMissing(CieError):
    """A replay found no position of its own: never replayed, or the position expired."""


class RollupError(CieError):
    """The rollup could not run (replica too far behind, repeated serialization failures)."""


# -- one message's fault: it becomes a dead letter -----------------------------------------

class MessageError(CieError):
    """A message that cannot be stored as it is: refused with this reason, never retried."""


class LedgerError(MessageError):
    """The fills cannot belong to one trade (flip, fill after close, mismatched trade fields)."""


class FreeFormTooLarge(MessageError):
    """A free-form JSON field (a feature vector, a payload) longer, larger or deeper than the
    limits allow (consumers/contracts/free_form.py)."""


class UnknownSchema(MessageError):
    """A message framed by a registry serializer whose schema id the registry does not know,
    or knows under another subject than the topic's, or of a kind not read here."""


class NotJsonValue(MessageError):
    """A MessagePack value with no JSON form (binary data, an extension type) where the
    contract keeps JSON or a column."""


class ImplausibleTime(MessageError):
    """An event time the consumer's clock says cannot be true (too far ahead, or an order
    submitted after its fill by more than the clock skew two hosts may have)."""
