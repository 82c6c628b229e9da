"""What every tool shares: stop requests by signal (a first signal asks, a second Ctrl-C insists)."""

import signal

import pytest

from detector import cli


def test_stop_requests_ask_then_a_second_ctrl_c_insists_and_the_handlers_come_back():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    asked = []
    with cli.stop_requests(asked.append) as received:
        signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
        signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)  # a repeated SIGTERM only asks again
        assert asked == received == [signal.SIGTERM, signal.SIGTERM]
        with pytest.raises(KeyboardInterrupt):  # Ctrl-C after a request: stop at once
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
    assert {s: signal.getsignal(s) for s in before} == before
    with cli.stop_requests(asked.append) as received:
        signal.getsignal(signal.SIGINT)(signal.SIGINT, None)  # the first Ctrl-C only asks
        assert received == [signal.SIGINT] and asked[-1] == signal.SIGINT
    assert {s: signal.getsignal(s) for s in before} == before
