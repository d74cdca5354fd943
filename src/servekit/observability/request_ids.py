"""Request ids: the one id a request is known by in its response, the access log, error bodies,
log lines and its trace.

The id is the client's ``x-request-id`` (HTTP header or gRPC metadata) when it sent a usable one,
else the Open Inference Protocol body's ``id``, else one made here. A transport ``bind``s what
the client sent when a request arrives (one context variable set: each HTTP request and gRPC call
runs in its own asyncio task, so the value is the request's own) and ``reset``s it when the
answer is out; whoever first needs the id calls ``ensure``, which settles it for the rest of the
request.

Why a made id is ``<12 hex digits>-<counter>``: the prefix is random per process (workers and
restarts do not collide), the counter makes each id unique within the process, and the whole
costs a ``next`` and an f-string, some 25 times less than ``str(uuid.uuid4())`` (which asks the OS
for randomness and formats 128 bits), and that on every request that comes without an id.

A client's value that is not usable (empty, over 128 characters, not printable ASCII) is
replaced, not refused: a tracing header must never fail an inference request.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from contextvars import ContextVar, Token

__all__ = ["HEADER", "MAX_LENGTH", "accepted", "bind", "current", "ensure", "new_request_id", "recorded", "reset"]

HEADER = "x-request-id"
MAX_LENGTH = 128

_UNBOUND = ""  # no transport bound a request here (an in-process caller): nothing to settle
_current: ContextVar[str | None] = ContextVar("servekit_request_id", default=_UNBOUND)


def _fresh_prefix() -> str:
    return os.urandom(6).hex()


_prefix = _fresh_prefix()
_counter = itertools.count(1)


def _after_fork() -> None:
    global _prefix, _counter
    _prefix, _counter = _fresh_prefix(), itertools.count(1)


os.register_at_fork(after_in_child=_after_fork)


def new_request_id() -> str:
    """A fresh id, unique within this process and (by its random prefix) across processes."""
    return f"{_prefix}-{next(_counter)}"


def accepted(value: str | None) -> str | None:
    """``value`` when it may serve as a request id (1-128 printable ASCII characters), else None."""
    if value and len(value) <= MAX_LENGTH and value.isascii() and value.isprintable():
        return value
    return None


def bind(incoming: str | None) -> Token[str | None]:
    """Start a request whose client sent ``incoming`` (None: nothing; unusable values are dropped);
    pass the token to ``reset`` once it is answered."""
    return _current.set(accepted(incoming))


def reset(token: Token[str | None]) -> None:
    _current.reset(token)


def current() -> str | None:
    """The request's id when it is settled or the client sent one, else None."""
    return _current.get() or None


def ensure(fallback: str | None = None, make: Callable[[], str] = new_request_id) -> str:
    """The request's id, settling it now if need be: the client's, else ``fallback`` (the OIP body's
    ``id``) when usable, else ``make()``. Outside a bound request (an in-process caller) nothing is
    settled: each call without a usable ``fallback`` gets a fresh id."""
    request_id = _current.get()
    if request_id:
        return request_id
    chosen = accepted(fallback) or make()
    if request_id is None:
        _current.set(chosen)
    return chosen


def recorded(fallback: str | None) -> str | None:
    """The id to record a request under: ``ensure(fallback)`` inside a bound request (so that the
    answer, sent later, carries the same one); outside, ``fallback`` as it is."""
    if _current.get() == _UNBOUND:
        return fallback
    return ensure(fallback)
