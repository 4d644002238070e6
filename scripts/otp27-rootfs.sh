#!/bin/sh
# Builds a Debian trixie root filesystem with Erlang/OTP 27 (erlang-base)
# in DIR, without touching the host's packages. Idempotent: does nothing
# when DIR/usr/bin/erl already exists. Needs root and debootstrap.
#
#   scripts/otp27-rootfs.sh DIR [MIRROR]
#   chroot DIR erl -noshell -eval 'io:format("~s~n", [erlang:system_info(otp_release)]), halt().'
#
# The chroot shares the host's network, so its nodes reach the host's on
# loopback. Takes about two minutes and 255 MB.
set -eu

dir="${1:?usage: $0 DIR [MIRROR]}"
mirror="${2:-}"

if [ -x "$dir/usr/bin/erl" ]; then
    echo "otp27-rootfs: $dir already has erl"
    exit 0
fi

mkdir -p "$dir"
# A half-finished debootstrap leaves debootstrap/ behind; start over.
if [ -d "$dir/debootstrap" ]; then
    rm -rf "$dir"
    mkdir -p "$dir"
fi

if [ -n "$mirror" ]; then
    debootstrap --variant=minbase --include=erlang-base trixie "$dir" "$mirror"
else
    debootstrap --variant=minbase --include=erlang-base trixie "$dir"
fi

test -x "$dir/usr/bin/erl"
echo "otp27-rootfs: ready in $dir"
