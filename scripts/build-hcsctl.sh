#!/usr/bin/env bash
# Builds the release `hcsctl` into ${CARGO_TARGET_DIR:-target}/release/hcsctl.
#
# On Linux with glibc it is linked statically and as a non-PIE executable
# (`-C target-feature=+crt-static -C relocation-model=static`, applied to the hcsctl binary
# crate only through `cargo rustc`, so proc-macro and build-script crates are unaffected):
# no dynamic loader, no shared-library relocations, which makes a short `hcsctl run` start
# about 0.5 ms sooner (docs/performance.md). hcsctl needs nothing that static glibc lacks
# (no NSS lookups, no dlopen off Windows). Elsewhere it is a plain `cargo build --release`.
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
case "$host" in
  *-linux-gnu)
    cargo rustc --locked --release -p hcsctl --bin hcsctl -- \
      -C target-feature=+crt-static -C relocation-model=static ;;
  *)
    cargo build --locked --release -p hcsctl ;;
esac
echo "built ${CARGO_TARGET_DIR:-target}/release/hcsctl"
