"""The exceptions tidb-memory raises.

Every error derives from :class:`TiDBMemoryError`; nothing from the driver or SQLAlchemy escapes
unwrapped, and the original exception is always kept as ``__cause__``::

    TiDBMemoryError
    ├── ConfigurationError       (also ValueError)   bad URL, scheme or option; before any I/O
    ├── InvalidInputError        (also ValueError)   bad session id, table, message; before I/O
    │   └── MessageTooLargeError                     a message or batch over the size limit
    ├── SyncCallError            (also RuntimeError) a sync method called where it would deadlock
    └── StorageError                                 the database refused or failed an operation
        ├── ConnectError                             could not connect (refused, timeout, auth, TLS)
        │   └── InsecureTransportError               TLS was required but the session is plaintext
        ├── PoolTimeoutError                         no pooled connection became free in time
        ├── SchemaError                              the table is missing or has a foreign layout
        └── RetriesExhaustedError                    a retryable error persisted past the policy

No message, ``repr`` or ``str`` of these errors contains a password: URLs are always rendered with
the password masked, and driver messages never carry one.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "ConnectError",
    "InsecureTransportError",
    "InvalidInputError",
    "MessageTooLargeError",
    "PoolTimeoutError",
    "RetriesExhaustedError",
    "SchemaError",
    "StorageError",
    "SyncCallError",
    "TiDBMemoryError",
]


class TiDBMemoryError(Exception):
    """Base class of every error raised by tidb-memory."""


class ConfigurationError(TiDBMemoryError, ValueError):
    """The URL, engine or an option is invalid. Raised at construction, before any I/O."""


class InvalidInputError(TiDBMemoryError, ValueError):
    """An argument is invalid (session id, table name, message). Nothing was written."""


class MessageTooLargeError(InvalidInputError):
    """A message, or a whole batch, is larger than the configured or server limit.

    Nothing of the batch was written.
    """


class SyncCallError(TiDBMemoryError, RuntimeError):
    """A synchronous method was called from a thread where blocking would deadlock."""


class StorageError(TiDBMemoryError):
    """A database operation failed.

    Attributes:
        operation: the library operation that failed, e.g. ``"aadd_messages"``.
        table: the table it ran against, or ``None``.
        errno: the server or driver error number, when there is one.
        attempts: how many attempts were made.
    """

    def __init__(
        self,
        message: str,
        *,
        operation: str,
        table: str | None = None,
        errno: int | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.operation = operation
        self.table = table
        self.errno = errno
        self.attempts = attempts


class ConnectError(StorageError):
    """The server could not be reached or refused the connection."""


class InsecureTransportError(ConnectError):
    """TLS was asked for, but the server let the session run in plaintext."""


class PoolTimeoutError(StorageError):
    """Every pooled connection stayed busy for longer than the pool timeout."""


class SchemaError(StorageError):
    """The table is missing, or it has a layout this version cannot use."""


class RetriesExhaustedError(StorageError):
    """A retryable error kept happening until the retry policy gave up.

    ``__cause__`` is the last error; ``attempts`` says how many attempts were made.
    """
