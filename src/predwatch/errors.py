"""The predwatch error tree. Each error carries the HTTP status the server answers with.

```
PredwatchError (500)
├── ConfigError (422)        a bad PredictionsConfig / Settings field (lists every bad field)
├── DataError (422)          a malformed dataset line or record (names file and line)
├── PayloadError (400)       a bad API request body (names the field)
│   └── PayloadTooLarge (413)
├── AuthError (401)          missing, unknown or revoked token / key
├── Forbidden (403)          a valid token used for something it does not cover (another run)
├── NotFound (404)           unknown run / set / prediction, or one owned by someone else
├── Conflict (409)           e.g. a set name that already exists
├── SchemaOutdated (500)     the database needs `predwatch db upgrade`
├── DeliveryError (503)      a sink could not deliver (rows stay in the spool)
└── StorageUnavailable (503) the database is down, restarting or locked: retry later
MissingDependency (ImportError)   an optional extra is not installed; names the extra
```
"""

from __future__ import annotations

from typing import Any


class PredwatchError(Exception):
    """Base of every predwatch error."""

    status_code: int = 500
    code: str = "error"

    def __init__(self, message: str, *, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def to_dict(self) -> dict[str, Any]:
        """The JSON body the API answers with."""
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.detail is not None:
            body["detail"] = self.detail
        return body


class ConfigError(PredwatchError):
    """One or more configuration fields are invalid; ``detail`` lists ``{field, reason}``."""

    status_code = 422
    code = "config_error"


class DataError(PredwatchError):
    """A dataset file or record cannot be read; the message names file and line."""

    status_code = 422
    code = "data_error"


class PayloadError(PredwatchError):
    """An API request body is invalid; ``detail`` names the field."""

    status_code = 400
    code = "bad_request"


class PayloadTooLarge(PayloadError):
    status_code = 413
    code = "payload_too_large"


class AuthError(PredwatchError):
    status_code = 401
    code = "unauthorized"


class Forbidden(PredwatchError):
    """A valid credential used beyond its scope, e.g. a run token writing to another run."""

    status_code = 403
    code = "forbidden"


class NotFound(PredwatchError):
    status_code = 404
    code = "not_found"


class Conflict(PredwatchError):
    status_code = 409
    code = "conflict"


class SchemaOutdated(PredwatchError):
    """The database schema is older than this predwatch; the message gives the upgrade command."""

    status_code = 500
    code = "schema_outdated"


class DeliveryError(PredwatchError):
    status_code = 503
    code = "delivery_error"


class StorageUnavailable(PredwatchError):
    """The database cannot be reached (down, restarting, locked past the busy timeout): a
    transient state to retry; the server answers 503 with ``Retry-After``."""

    status_code = 503
    code = "database_unavailable"


class MissingDependency(ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package} is not installed; install it with: pip install 'predwatch[{extra}]'"
        )
        self.package = package
        self.extra = extra
