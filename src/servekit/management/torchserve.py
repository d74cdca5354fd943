"""TorchServe archives registered as servekit models (blocking I/O: call from a worker thread).

An archive (``.mar``, ``.tar.gz`` or a ``no-archive`` folder; checked and read by
``servekit.formats.torchserve``) becomes a model folder in this process's area of the model
store (``ModelStore.process_area``: it lasts while the server runs, as a TorchServe
registration does)::

    NAME/config.yaml   the archive's ModelConfig (runtime: torchserve), the registration's values applied
    NAME/1/            the first archive registered under NAME, unpacked (MAR-INF included): the handler's model_dir
    NAME/2/            the next one registered under NAME, and so on

Versions: the first archive registered under a name is version 1, each further one the next
number. The manifest's ``modelVersion`` ("1.0") is that version's label (the runtime's
``version_label``): describe shows it as ``modelVersion``, and requests, describe, set-default
and unregister may name the version by it as well as by its number (the label first). Every
registered version is served (``version_policy: {all: true}``) and the first one is the default
version, as in TorchServe; versions share the config of the first archive.

``--models`` at start: ``model_specs`` reads ``NAME=ARCHIVE``, ``ARCHIVE`` (named by its
manifest) and ``all`` (every archive at the top of the model store: ``archives_in``).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from servekit.errors import InvalidInput
from servekit.formats.torchserve import TorchServeModel, looks_like_mar, read_mar, unpack_mar
from servekit.management.archive import ArchiveLimits
from servekit.management.store import RegistrationOverrides

__all__ = ["ALL", "archives_in", "is_torchserve_archive", "model_specs", "read_archive", "stage_version"]

ALL = "all"


def is_torchserve_archive(archive: Path) -> bool:
    """Whether to register ``archive`` as a TorchServe archive (else it is servekit's own)."""
    return looks_like_mar(archive)


def read_archive(archive: Path, limits: ArchiveLimits) -> TorchServeModel:
    """Check the archive and read its manifest and model_config.yaml, writing nothing."""
    return read_mar(archive, limits)


def stage_version(model: TorchServeModel, archive: Path, staging: Path, number: int, limits: ArchiveLimits,
                  overrides: RegistrationOverrides | None) -> Path:
    """Unpack ``archive`` as version ``number`` of a model folder in ``staging`` (returned); with
    ``overrides`` (None for a model that exists: it keeps its config) also its config.yaml."""
    model_dir = staging / "model"
    model_dir.mkdir(exist_ok=True)
    unpack_mar(archive, model_dir / str(number), limits)
    if overrides is not None:
        config = model.model_config(batch_size=overrides.batch_size, max_batch_delay_ms=overrides.max_batch_delay_ms,
                                    response_timeout_s=overrides.response_timeout_s,
                                    initial_workers=overrides.initial_workers)
        # TorchServe serves every registered version; the first registered is the default.
        document = config.model_dump(mode="json", exclude_defaults=True, exclude={"name"})
        document.update(version_policy={"all": True}, default_version=1)
        (model_dir / "config.yaml").write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return model_dir


def model_specs(values: list[str], store: Path) -> list[tuple[str | None, str]]:
    """``(model name or None: the manifest's, archive)`` for each ``--models`` value (see the
    module docstring); InvalidInput for a value that is not one of those forms."""
    specs: list[tuple[str | None, str]] = []
    for value in values:
        if value == ALL:
            specs.extend((None, name) for name in archives_in(store))
            continue
        name, equals, archive = value.partition("=")
        if not equals:
            name, archive = "", value
        if not archive or (equals and not name):
            raise InvalidInput(f"--models {value!r}: expected NAME=ARCHIVE, ARCHIVE or all")
        specs.append((name or None, archive))
    return specs


def archives_in(store: Path) -> list[str]:
    """The TorchServe archives at the top of ``store`` (files and no-archive folders), by name."""
    if not store.is_dir():
        return []
    return [path.name for path in sorted(store.iterdir())
            if not path.name.startswith(".") and looks_like_mar(path)]
