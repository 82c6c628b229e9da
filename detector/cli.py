"""What every tool shares: logging set-up, stop requests by signal, and turning user errors into one line and
a non-zero exit."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Iterator

from detector.errors import UserError


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(message)s")


@contextlib.contextmanager
def stop_requests(on_stop: Callable[[int], None]) -> Iterator[list[int]]:
    """Ctrl-C (SIGINT) and SIGTERM as requests to stop at the next safe point: each signal received calls
    ``on_stop(signum)``; a second Ctrl-C raises KeyboardInterrupt at once. Yields the signals received so far.
    The previous handlers come back on exit. Signal handlers can only be installed from the main thread."""
    received: list[int] = []

    def handler(signum: int, _frame: object) -> None:
        if received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        received.append(signum)
        on_stop(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


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
