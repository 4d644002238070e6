#!/bin/sh
# Builds a Debian trixie root filesystem with Erlang/OTP 27 (erlang-base,
# erlang-ssl for inet_tls_dist, erlang-mnesia) in DIR, without touching the
# host's packages. Idempotent: does nothing when DIR already has erl, ssl and
# mnesia; a root filesystem from an older version of this script (erl only)
# is rebuilt. Needs root and debootstrap.
#
#   scripts/otp27-rootfs.sh DIR [MIRROR]
#   chroot DIR erl -noshell -eval 'io:format("~s~n", [erlang:system_info(otp_release)]), halt().'
#
# The chroot shares the host's network, so its nodes reach the host's on
# loopback. Takes a few minutes and about 300 MB.
set -eu

dir="${1:?usage: $0 DIR [MIRROR]}"
mirror="${2:-}"

packages=erlang-base,erlang-ssl,erlang-mnesia

complete() {
    [ -x "$1/usr/bin/erl" ] &&
        ls -d "$1"/usr/lib/erlang/lib/ssl-* >/dev/null 2>&1 &&
        ls -d "$1"/usr/lib/erlang/lib/mnesia-* >/dev/null 2>&1
}

if complete "$dir"; then
    echo "otp27-rootfs: $dir already has erl, ssl and mnesia"
    exit 0
fi

# A half-finished debootstrap leaves debootstrap/ behind, and an older
# root filesystem lacks ssl or mnesia: start over in both cases.
if [ -e "$dir" ]; then
    if grep -q " $(cd "$dir" && pwd)/" /proc/mounts; then
        echo "otp27-rootfs: something is mounted under $dir; unmount it first" >&2
        exit 1
    fi
    rm -rf "$dir"
fi
mkdir -p "$dir"

if [ -n "$mirror" ]; then
    debootstrap --variant=minbase --include=$packages trixie "$dir" "$mirror"
else
    debootstrap --variant=minbase --include=$packages trixie "$dir"
fi

complete "$dir"
echo "otp27-rootfs: ready in $dir"
