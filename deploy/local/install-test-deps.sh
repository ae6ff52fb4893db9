#!/usr/bin/env bash
# Best effort: the tools some tests use beyond the local stack — podman, runc and mmdebstrap
# (the container image is built and run), Chromium (the status page is clicked through).
# Tests whose tools are missing skip with the reason, so this never fails the build.
set -uo pipefail

have() { command -v "$1" >/dev/null 2>&1; }
wanted=()
have podman || wanted+=(podman)
have runc || wanted+=(runc)
have mmdebstrap || wanted+=(mmdebstrap)
have chromium || wanted+=(chromium)
[ ${#wanted[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    if have sudo && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
        echo "note: not installing ${wanted[*]} (needs root); the tests that use them will skip" >&2
        exit 0
    fi
else
    SUDO=
fi
if ! have apt-get; then
    echo "note: no apt-get; the tests that need ${wanted[*]} will skip" >&2
    exit 0
fi
echo "Installing test tools: ${wanted[*]} ..."
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null 2>&1
$SUDO apt-get install -y -qq --no-install-recommends "${wanted[@]}" >/dev/null 2>&1 \
    || echo "note: could not install all of ${wanted[*]}; the tests that need them will skip" >&2
exit 0
