#!/usr/bin/env bash
# A base image for the Dockerfile's BASE argument, made from Debian's own packages with
# debootstrap, for hosts that can reach a Debian mirror but no image registry.
# It carries what the Dockerfile needs of a base: python3 (Debian bookworm: 3.11, the
# version the tests run on) with venv and ensurepip, and the CA certificates.
#
#   docker/debian-base.sh [TAG]        (default tag: consent-proxy-base:bookworm; needs root)
#   docker build --build-arg BASE=consent-proxy-base:bookworm ...
set -euo pipefail

tag="${1:-consent-proxy-base:bookworm}"
suite="${DEBIAN_SUITE:-bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT

debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$suite" "$root" "$mirror" >&2
# What an image does not need: the package lists and archives, documentation.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
    "$root"/var/cache/apt/archives/*.deb "$root"/usr/share/doc/* "$root"/usr/share/man/*

tar --numeric-owner -C "$root" -c . \
    | docker import --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' - "$tag"
