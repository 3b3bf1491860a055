#!/usr/bin/env bash
# Builds the wpod that runner images hold (`wpod kube build --wpod ...`): statically linked
# (glibc's static-pie: no shared library, no loader, nothing else in the image it needs),
# release, without the author tools (`wpod new`'s bindings generators, which a runner never
# runs). Offline once the crates are fetched (pass --offline). Prints the binary's path.
#
#   wpod kube build logtail.wasm --tag REGISTRY/NAME:TAG --wpod "$(runner/build.sh)"
#
# Its own target directory (target/runner): the flags differ from the workspace's build.
set -euo pipefail
# A relative CARGO_TARGET_DIR is the caller's, before the cd below.
target=${CARGO_TARGET_DIR:-}
[ -z "$target" ] || [ "${target#/}" != "$target" ] || target=$PWD/$target
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
case "$host" in
  *-linux-gnu) ;;
  *) echo "runner/build.sh: builds on a *-linux-gnu host (this is $host)" >&2; exit 1 ;;
esac
dir=${target:-$PWD/target}/runner
# What an outer cargo set for the crate it runs (a test calling this script has
# CARGO_MANIFEST_DIR, ...; build scripts such as ring's re-run when it changes, and everything
# above them is compiled again) and a lint run's wrapper (.ci/test's clippy-driver) are not
# this build's.
while IFS= read -r var; do
  case "$var" in
    CARGO_HOME | RUSTUP_HOME | RUSTUP_TOOLCHAIN) ;;
    CARGO_* | RUST* | CLIPPY_ARGS | OUT_DIR) unset "$var" ;;
  esac
done < <(compgen -e)
# --target keeps the flags off build scripts and proc macros, which run on this host.
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --quiet \
  --target "$host" --no-default-features -p wpod --bin wpod --target-dir "$dir" "$@" >&2
bin="$dir/$host/release/wpod"
# Static, or it is not what a runner image should hold.
linked=$(ldd "$bin" 2>&1 || true)
case "$linked" in
  *'statically linked'* | *'not a dynamic executable'*) ;;
  *) echo "runner/build.sh: $bin is not statically linked: $linked" >&2; exit 1 ;;
esac
echo "$bin"
