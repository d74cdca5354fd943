"""Handler metrics (``ts.metrics``): dimensions, metric types and the object behind ``context.metrics``."""
