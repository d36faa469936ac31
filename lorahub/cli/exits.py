"""The one place where errors become messages and exit codes.

Scripts branch on exit codes, so they are a documented table (docs/reference/exit-codes.md), keyed by error
class; the most specific class wins.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from typing import NoReturn

import click

from lorahub import errors

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70

EXIT_CODES: tuple[tuple[type[errors.LorahubError], int], ...] = (
    (errors.PathNotFoundError, 3),
    (errors.NotAFileError, 3),
    (errors.FileReadError, 3),
    (errors.NotAFolderError, 3),
    (errors.UnsafePickleError, 5),
    (errors.InvalidFileError, 4),
    (errors.MissingExtraError, 6),
    (errors.VerificationFailedError, 7),
    (errors.OmsBundleError, 7),
    (errors.PartialFailureError, 8),
    (errors.LicenseForbiddenError, 9),
    (errors.LicenseUncertainError, 10),
    (errors.FamilyMismatchError, 11),
    (errors.AdapterNotFoundError, 3),
    (errors.ArtifactNotFoundError, 3),
    (errors.KeyNotFoundError, 3),
    (errors.LorahubError, EXIT_ERROR),
)


def exit_code_for(error: errors.LorahubError) -> int:
    for cls, code in EXIT_CODES:
        if isinstance(error, cls):
            return code
    return EXIT_ERROR


def debug_enabled() -> bool:
    return os.environ.get("LORAHUB_DEBUG", "") not in ("", "0", "false", "no")


def settle_batch(failures: int, tracebacks: dict[str, str], *, message: str, hint: str) -> None:
    """After a batch whose failed items were listed: their tracebacks under ``LORAHUB_DEBUG``, then the
    ``partial-failure`` exit when any failed (the others are done)."""
    if debug_enabled():
        for item, text in tracebacks.items():
            sys.stderr.write(f"{item}:\n{text}")
    if failures:
        raise errors.PartialFailureError(message, hint=hint)


def report(error: errors.LorahubError) -> NoReturn:
    if debug_enabled():
        traceback.print_exc()
    print(f"error[{error.code}]: {error.message}", file=sys.stderr)
    if error.hint:
        print(f"hint: {error.hint}", file=sys.stderr)
    raise SystemExit(exit_code_for(error))


def run(entry: Callable[[], object]) -> NoReturn:
    """Run click in non-standalone mode; lorahub errors become messages, anything unexpected a bug report."""
    try:
        result = entry()
    except errors.LorahubError as error:
        report(error)
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except click.Abort:
        print("aborted", file=sys.stderr)
        raise SystemExit(EXIT_ERROR) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as exc:
        if debug_enabled():
            traceback.print_exc()
        print(f"error[internal]: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        print(
            "hint: this is a bug in lorahub; run again with LORAHUB_DEBUG=1 and report the traceback", file=sys.stderr
        )
        raise SystemExit(EXIT_INTERNAL) from None
    raise SystemExit(result if isinstance(result, int) else EXIT_OK)
