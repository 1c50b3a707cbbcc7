"""Errors that the CLI turns into one-line messages and exit codes."""


class ClmError(Exception):
    """Base class for errors shown to users as one line."""

    exit_code = 1


class ConfigError(ClmError):
    """Misconfiguration: raised before anything is written."""

    exit_code = 2


class SegmentRulesError(ConfigError):
    """The segment rules file is invalid (gap, shadowed rule, unknown stage...)."""


class LakeError(ClmError):
    """A lake operation was refused (schema mismatch, missing table...)."""


class ValidationFailed(ClmError):
    """A critical data-quality expectation failed; nothing was published."""

    exit_code = 3
