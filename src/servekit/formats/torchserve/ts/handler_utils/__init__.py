"""Handler helpers (``ts.handler_utils``); only ``timer`` is provided."""
