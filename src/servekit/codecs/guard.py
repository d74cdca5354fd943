"""The codecs' promise that bad input is always the client's error, never the server's.

Every decode entry point is wrapped with ``decoder(what)``: a ServekitError it raises passes as
it is (the codecs raise InvalidInput naming the field for every problem they know), and any
other exception, a case nobody foresaw, becomes an InvalidInput saying which part of the request
could not be decoded. So a malformed request gets 400 / INVALID_ARGUMENT, never a 500. The
exception itself is logged at debug level for whoever investigates.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from servekit.errors import InvalidInput, ServekitError

__all__ = ["decoder"]

log = logging.getLogger("servekit.codecs")

Params = ParamSpec("Params")
Result = TypeVar("Result")


def decoder(what: str) -> Callable[[Callable[Params, Result]], Callable[Params, Result]]:
    """Wrap a decode function so that any failure is an InvalidInput about ``what``."""

    def wrap(function: Callable[Params, Result]) -> Callable[Params, Result]:
        @functools.wraps(function)
        def guarded(*args: Params.args, **kwargs: Params.kwargs) -> Result:
            try:
                return function(*args, **kwargs)
            except ServekitError:
                raise
            except (Exception, RecursionError) as exc:
                log.debug("could not decode %s", what, exc_info=exc)
                raise InvalidInput(f"{what} could not be decoded ({type(exc).__name__}: "
                                   f"{(str(exc).splitlines() or [''])[0][:200]})") from None

        return guarded

    return wrap
