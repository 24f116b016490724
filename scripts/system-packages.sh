#!/usr/bin/env bash
# Debian packages the tests use: Fashion-MNIST's IDX files; Chromium to open the HTML report
# and, with its driver, the draw-a-digit page; fonts to typeset digits that are not from MNIST.
# Installs them when run as root (or with password-less sudo); otherwise says
# what to install, and the tests that need them are skipped with that reason.
set -euo pipefail
packages=(dataset-fashion-mnist chromium
          chromium-driver                         # the draw-a-digit page's browser test (Selenium)
          fonts-dejavu-core fonts-dejavu-extra fonts-liberation2 fonts-freefont-ttf fonts-comic-neue
          fonts-humor-sans)                       # digits typeset for the image tests
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "note: no apt-get here; install ${missing[*]} yourself or the tests that need them are skipped" >&2
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then sudo=(); elif sudo -n true 2>/dev/null; then sudo=(sudo -n); else
  echo "note: run 'sudo apt-get install ${missing[*]}' for the tests that need them" >&2
  exit 0
fi
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
