"""What every tool shares: logging set-up and turning user errors into one line and a non-zero exit."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from detector.errors import UserError


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(message)s")


def run(main: Callable[[], int | None]) -> None:
    """Call ``main``; a UserError, a missing file or Ctrl-C ends the process with a message, no traceback."""
    try:
        code = main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except FileNotFoundError as exc:
        print(f"error: {exc.filename or exc}: no such file", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
