"""MLServer model folders: model-settings.json mapped onto servekit's sklearn and onnx runtimes."""

from servekit.formats.mlserver.repository import SETTINGS_FILE, read_mlserver_config

__all__ = ["SETTINGS_FILE", "read_mlserver_config"]
