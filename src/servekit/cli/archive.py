"""``servekit archive``: pack a model folder's version into an archive, inspect one, or unpack one."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["archive"]


@click.command()
@click.argument("model_dir", required=False, type=click.Path(path_type=Path, file_okay=False))
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
              help="Archive to write [default: NAME-VERSION.zip here].")
@click.option("--version", "version", type=click.IntRange(min=1), help="Version folder to pack [the highest].")
@click.option("--name", help="Model name in the manifest [config.yaml's name, else the folder's name].")
@click.option("--inspect", "inspect_path", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Check an archive (members, manifest, every checksum) and print its manifest.")
@click.option("--extract", "extract_path", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Check an archive and unpack it as its model's folder in the repository --into names.")
@click.option("--into", "repository", type=click.Path(path_type=Path, file_okay=False),
              help="The model repository --extract unpacks into (created if absent).")
def archive(model_dir: Path | None, output: Path | None, version: int | None, name: str | None,
            inspect_path: Path | None, extract_path: Path | None, repository: Path | None) -> None:
    """Pack MODEL_DIR (config, handler, extra files and one version folder) with a manifest of
    sha256 checksums into one file to register over the management API (POST /models?url=FILE);
    or unpack one into a model repository (--extract FILE --into REPOSITORY), as an image build does."""
    from servekit.errors import ServekitError
    from servekit.management.archive import default_archive_name, pack_model, verify_archive

    if sum(given is not None for given in (model_dir, inspect_path, extract_path)) != 1:
        raise click.UsageError("give MODEL_DIR to pack, --inspect FILE, or --extract FILE --into REPOSITORY")
    if (extract_path is None) != (repository is None):
        raise click.UsageError("--extract FILE and --into REPOSITORY go together")
    try:
        if extract_path is not None:
            assert repository is not None
            _extract(extract_path, repository)
            return
        if inspect_path is not None:
            manifest = verify_archive(inspect_path)
            click.echo(f"{inspect_path}: servekit archive, every checksum matches")
            click.echo(f"name: {manifest.name}\nversion: {manifest.version}\nruntime: {manifest.runtime}\n"
                       f"servekit_version: {manifest.servekit_version}\nfiles:")
            for path, digest in sorted(manifest.files.items()):
                click.echo(f"  {path}  sha256:{digest}")
            return
        assert model_dir is not None
        output = output or Path(default_archive_name(model_dir, version, name))
        manifest = pack_model(model_dir, output, version=version, name=name)
    except ServekitError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"wrote {output}: model {manifest.name} version {manifest.version} ({manifest.runtime}, "
               f"{len(manifest.files)} files)")


def _extract(path: Path, repository: Path) -> None:
    """Unpack a checked archive as ``repository/NAME`` (NAME from its manifest; it must not exist yet)."""
    from servekit.errors import Conflict
    from servekit.management.archive import extract_archive, verify_archive

    manifest = verify_archive(path)
    target = repository / manifest.name
    if target.exists():
        raise Conflict(f"{target} exists already: an archive unpacks into a new model folder")
    repository.mkdir(parents=True, exist_ok=True)
    extract_archive(path, target)
    click.echo(f"unpacked {path} into {target}: model {manifest.name} version {manifest.version}")
