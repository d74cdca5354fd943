"""``servekit archive``: pack a model folder's version into an archive, or inspect one."""

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
def archive(model_dir: Path | None, output: Path | None, version: int | None, name: str | None,
            inspect_path: Path | None) -> None:
    """Pack MODEL_DIR (config, handler, extra files and one version folder) with a manifest of
    sha256 checksums into one file to register over the management API (POST /models?url=FILE)."""
    from servekit.errors import ServekitError
    from servekit.management.archive import default_archive_name, pack_model, verify_archive

    if (model_dir is None) == (inspect_path is None):
        raise click.UsageError("give MODEL_DIR to pack, or --inspect FILE")
    try:
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
