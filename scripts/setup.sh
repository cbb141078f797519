#!/usr/bin/env bash
# Installs the system packages wzp builds against, once. Idempotent: does
# nothing when they are already there. Needs root (or sudo) on Debian/Ubuntu.
set -euo pipefail

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
dpkg -s libasound2-dev >/dev/null 2>&1 || need+=(libasound2-dev)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
# The direct-path tests break a path with a firewall rule and put the
# parties behind NATs in network namespaces.
dpkg -s iptables >/dev/null 2>&1 || need+=(iptables)
dpkg -s iproute2 >/dev/null 2>&1 || need+=(iproute2)

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install a Rust toolchain (1.85 or newer) first" >&2
  exit 1
fi
