"""All errors changecat raises on purpose; anything else is a bug."""

from __future__ import annotations


class ChangecatError(Exception):
    """Base class: a problem the user can act on (bad input, missing data, a failing service)."""


class ConfigError(ChangecatError):
    """The regions config (or a CLI option) is invalid; the message names the input and what is valid."""


class SourceError(ChangecatError):
    """A source cannot be opened or read (missing root, unreadable index, failing service)."""


class YearNotAvailableError(SourceError):
    """A requested year is not in the source; the message lists the available ones."""


class NoDataError(SourceError):
    """A region has no data at all in the source for a year (or no valid pixel in the result)."""


class AuthenticationError(SourceError):
    """Credentials for a source are missing or invalid; the message says how to authenticate."""


class PermissionDeniedError(SourceError):
    """A service accepted the credentials but denied the account a permission on a resource (HTTP 403);
    the message names the permission, the resource and the role to grant."""


class RequestTooLargeError(SourceError):
    """A single request exceeded a service limit even at the minimum tile size."""


class OutputError(ChangecatError):
    """A product or catalog file could not be written or is invalid."""


class SchemaUnavailableError(ChangecatError):
    """A schema needed to validate a catalog cannot be fetched; the message says how to validate offline."""


class ValidationError(ChangecatError):
    """A catalog failed validation; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"{len(problems)} validation problem(s):\n" + "\n".join(problems))
        self.problems = problems


class CatalogLockedError(OutputError):
    """Another changecat process has held the catalog's write lock for too long."""


class ForeignCatalogError(OutputError):
    """The output folder holds a catalog changecat did not write (taken over only with ``--adopt``)."""


class PublishError(ChangecatError):
    """A catalog cannot be published (bad destination or base URL, the store refused a request)."""


class SearchError(ChangecatError):
    """A catalog cannot be searched (no catalog there, no stac-geoparquet file, unreadable file)."""
