#!/usr/bin/env bash
# scripts/lib/deps.sh — installs the Debian 12 packages paynotify needs to build,
# test and run locally, skipping what is already installed. A fast no-op when
# everything is there (one dpkg-query, no apt-get update).
#
# Usage: scripts/lib/deps.sh            (run directly), or
#        source scripts/lib/deps.sh && deps_install
set -euo pipefail

DEPS_PACKAGES=(
    build-essential cmake pkg-config
    librabbitmq-dev libhiredis-dev libmariadb-dev libcurl4-openssl-dev
    libjson-c-dev libuv1-dev libssl-dev libhttp-parser-dev
    rabbitmq-server redis-server mariadb-server mariadb-client
    python3 python3-aiosmtpd python3-cryptography clang-format
    clang libclang-rt-14-dev
    curl amqp-tools
    iptables
)

# Prints the packages of DEPS_PACKAGES that are not fully installed.
deps_missing() {
    local installed
    installed=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${DEPS_PACKAGES[@]}" \
        2>/dev/null | awk '$2 == "installed" { print $1 }' || true)
    local p
    for p in "${DEPS_PACKAGES[@]}"; do
        if ! grep -qxF "$p" <<<"$installed"; then
            echo "$p"
        fi
    done
}

deps_install() {
    local missing
    missing=$(deps_missing)
    if [ -z "$missing" ]; then
        return 0
    fi
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    echo "deps: installing: $(echo $missing)" >&2
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            echo "deps: missing packages and not root (no sudo): $missing" >&2
            return 1
        fi
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q
    # Debian's package scripts try to start the services; there is no systemd
    # here, and the project starts its own private servers, so keep
    # invoke-rc.d from starting them (policy-rc.d exit 101 = "not allowed").
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod 755 "$policy"
        created_policy=1
    fi
    local rc=0
    # shellcheck disable=SC2086
    "${sudo[@]}" apt-get install -y -q $missing || rc=$?
    if [ "$created_policy" = 1 ]; then
        "${sudo[@]}" rm -f "$policy"
    fi
    if [ "$rc" -ne 0 ]; then
        echo "deps: apt-get install failed (exit $rc)" >&2
        return "$rc"
    fi
    missing=$(deps_missing)
    if [ -n "$missing" ]; then
        # shellcheck disable=SC2086
        echo "deps: still missing after install: $(echo $missing)" >&2
        return 1
    fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    deps_install
fi
