"""Errors that effdl reports to the user as one clear message (no traceback) and a non-zero exit.

Every error raised because of the user's input or environment derives from :class:`EffdlError`; the
CLI prints ``error: <message>`` (and ``hint: <hint>`` when there is one) and exits with ``exit_code``.
Anything else escaping is a bug in effdl and keeps its traceback.
"""

from __future__ import annotations


class EffdlError(Exception):
    """Base class of the errors effdl explains to the user."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\nhint: {self.hint}"


class InputError(EffdlError):
    """A path, file, argument or tensor given by the user is wrong."""

    exit_code = 2


class CheckpointError(InputError):
    """A checkpoint cannot be read, is corrupt, or does not match the architecture."""


class RecipeError(InputError):
    """A recipe does not validate; the message names the field path."""


class UnknownNameError(InputError):
    """A stage, backend, task, model or device profile name that is not registered."""

    def __init__(self, kind: str, name: str, known: list[str] | tuple[str, ...]) -> None:
        super().__init__(f"unknown {kind} {name!r}; known: {', '.join(sorted(known)) or '(none)'}")
        self.kind, self.name, self.known = kind, name, list(known)


class BackendUnavailableError(EffdlError):
    """An optional backend is not installed or cannot run on this host."""

    exit_code = 3


class VerificationError(EffdlError):
    """A compiled variant disagrees with the FP32 reference beyond the recipe's tolerance."""

    exit_code = 4
