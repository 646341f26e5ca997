"""The user's errors: one base class, and the one place where a command turns them into an ``error:`` line.

A bad input file, a missing asset or package, an occupied output folder or a diverged run is
something the user can fix; a traceback would only hide the one line that says how. Every such
error class subclasses :class:`LatentAvatarError` (each keeps its older built-in base too, so
code catching ``ValueError`` or ``FileNotFoundError`` still works). Each console command catches
the base class once, at its entry point (:func:`cli_command`; the ``ns-*`` commands of nerfstudio
through :func:`install_excepthook`), prints ``error: <message>`` on one line and exits with status 1.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable, Tuple, Type, TypeVar

F = TypeVar("F", bound=Callable)


class LatentAvatarError(Exception):
    """A problem with the user's input or set-up, printed as one line naming the file."""


class OutputExistsError(LatentAvatarError, FileExistsError):
    """An output folder or file is already there and ``--overwrite`` was not given."""


class ConfigError(LatentAvatarError, ValueError):
    """An option's value, or a combination of options, that the model cannot be built with."""


def error_line(err: BaseException) -> str:
    """``error: <message>`` on one line (the lines of a longer message are joined with ``; ``)."""
    text = ""
    for line in (line.strip() for line in str(err).splitlines()):
        if line:
            text += (" " if text.endswith(":") else "; ") + line if text else line
    return f"error: {text or type(err).__name__}"


def cli_command(*also: Type[BaseException]) -> Callable[[F], F]:
    """Decorate a console command's entry function: a :class:`LatentAvatarError` (or one of ``also``)
    ends the command with its one ``error:`` line on stderr and exit status 1 (``SystemExit``)."""
    caught: Tuple[Type[BaseException], ...] = (LatentAvatarError, *also)

    def decorate(main: F) -> F:
        @functools.wraps(main)
        def run(*args, **kwargs):
            try:
                return main(*args, **kwargs)
            except caught as err:
                raise SystemExit(error_line(err)) from None

        return run  # type: ignore[return-value]

    return decorate


def install_excepthook() -> None:
    """For commands whose entry point is not ours (``ns-train``, ``ns-viewer``, ``ns-eval``): an uncaught
    :class:`LatentAvatarError` prints its ``error:`` line instead of a traceback; Python still exits with 1."""
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        if issubclass(exc_type, LatentAvatarError):
            print(error_line(exc), file=sys.stderr)
        else:
            previous(exc_type, exc, tb)

    sys.excepthook = hook
