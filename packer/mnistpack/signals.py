"""Ctrl-C (SIGINT) and SIGTERM, handled so that work stops where it can stop cleanly.

Python raises KeyboardInterrupt for Ctrl-C at whatever bytecode the main thread runs next:
inside JAX that exception can be swallowed (training goes on) or end in a crash, and
between two renames it would leave half an output set. So:

- `raise_on_sigterm` makes SIGTERM raise `Terminated` the way Ctrl-C raises
  KeyboardInterrupt, so every `finally` runs (the CLI installs it);
- `deferred` notes the signals instead, for the code inside it to stop at a point of its
  choosing (`pending`, `check`); whatever is still pending is delivered when it ends.

Python runs signal handlers in the main thread only, so elsewhere both do nothing.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Final

from mnistpack.errors import Terminated

HANDLED: Final = (signal.SIGINT, signal.SIGTERM)


def _terminate(_signum: int, _frame: FrameType | None) -> None:
    raise Terminated


def raise_on_sigterm() -> None:
    """From now on SIGTERM raises Terminated in the main thread."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)


@dataclass
class Deferred:
    """The signals that came while deferred, in order (each kind once)."""

    received: list[int] = field(default_factory=list)
    escalate: bool = False  # a second Ctrl-C raises at once, for a user who will not wait

    @property
    def pending(self) -> bool:
        return bool(self.received)

    def check(self) -> None:
        """Raise what the first pending signal stands for, if one came."""
        if self.received:
            signum = self.received[0]
            self.received.clear()
            raise KeyboardInterrupt if signum == signal.SIGINT else Terminated

    def _note(self, signum: int, _frame: FrameType | None) -> None:
        if signum in self.received:
            if self.escalate:
                self.received.remove(signum)
                raise KeyboardInterrupt if signum == signal.SIGINT else Terminated
            return
        self.received.append(signum)


@contextlib.contextmanager
def deferred(*, escalate: bool = False) -> Iterator[Deferred]:
    """Note Ctrl-C and SIGTERM instead of acting on them; deliver what is still pending at
    the end, to the handlers that were there before."""
    state = Deferred(escalate=escalate)
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    previous: dict[int, Callable[[int, FrameType | None], object] | int | None] = {
        signum: signal.signal(signum, state._note) for signum in HANDLED
    }
    try:
        yield state
    finally:
        for signum, handler in previous.items():
            # None: a handler set outside Python, which cannot be put back: the default
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        pending = list(state.received)
        state.received.clear()
        for signum in pending:
            signal.raise_signal(signum)
