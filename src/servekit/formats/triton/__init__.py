"""Triton model repositories: config.pbtxt, and the python backend with its triton_python_backend_utils layer."""
