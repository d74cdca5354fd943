#!/bin/sh
# Bake models into the image (deploy/Dockerfile's MODELS build argument), run in the builder stage
# with servekit installed; also runs outside Docker (the tests do):
#
#   deploy/docker/bake-models.sh SOURCE REPOSITORY
#
# SOURCE holds what the MODELS build argument named, copied by the Dockerfile: a model repository's
# folders, or servekit archives (*.zip, made by `servekit archive`), or both. Each archive is checked
# and unpacked into REPOSITORY as its model's folder; everything else is copied as it is (a TorchServe
# .mar too: serve it with SERVEKIT_MODELS=all). Nothing in SOURCE (the image's default) leaves
# REPOSITORY empty.
set -eu
source_dir=$1
repository=$2
mkdir -p "$repository"
for entry in "$source_dir"/* "$source_dir"/.[!.]*; do
    [ -e "$entry" ] || continue  # an unmatched pattern stays as it is
    case "$entry" in
        */.keep) ;;  # the placeholder of deploy/docker/no-models
        *.zip) servekit archive --extract "$entry" --into "$repository" ;;
        *) cp -R "$entry" "$repository/" ;;
    esac
done
