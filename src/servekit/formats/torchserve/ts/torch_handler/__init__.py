"""Handler base classes (``ts.torch_handler``); only ``base_handler`` is provided."""
