"""Models arriving on disk: what the management API does, without HTTP.

- ``manager``: register, describe, scale, route and unregister models (over the serving registry);
- ``store``: the one folder servekit writes to (unpacked archives, the management token);
- ``archive``: packing, checking and safely unpacking model archives;
- ``sources``: where archives may come from (local paths, allowed URLs).
"""
