#!/usr/bin/env bash
# Installs the system packages runtime-agent needs on Debian/Ubuntu:
# a Python with venv for the agent, the interpreters functions run on, and a
# C/C++ toolchain for functions with native code.
# Safe to run again; does nothing when everything is present.
set -euo pipefail

need=()
command -v python3 >/dev/null || need+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
[ -x /usr/bin/python3 ] || need+=(python3)
# Native code in functions (fnctl package, native/): a C/C++ toolchain, make,
# and the headers cffi extensions compile against.
command -v g++ >/dev/null || need+=(g++)
command -v make >/dev/null || need+=(make)
python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.isfile(sysconfig.get_path("include") + "/Python.h"))' \
    2>/dev/null || need+=(python3-dev)
# The java17 runtime: a JDK (javac builds the bootstrap at install time,
# tests compile their functions with it).
command -v javac >/dev/null || need+=(openjdk-17-jdk-headless)
for extra in "$@"; do
    dpkg -s "$extra" >/dev/null 2>&1 || need+=("$extra")
done
if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${need[*]} (run: sudo apt-get install ${need[*]})" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}"
