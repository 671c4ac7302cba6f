#!/usr/bin/env bash
# test-windows.sh - type-check and RUN the Windows-relevant crates of this workspace for
# x86_64-pc-windows-gnu on a Debian bookworm x86_64 machine, with Wine as the test runner.
#
# The recipe (shared/spec/windows-ffi.md §7): Debian's rustc-web/cargo-web (a matched pair) plus
# rust-web-src build std for the target with `-Zbuild-std`; MinGW-w64 links; Wine 8 runs the test
# executables; a small bcryptprimitives.dll shim makes Rust executables start under Wine 8.0.
# The rustup toolchain in ~/.cargo is NOT used for this build (it has no Windows std): this script
# calls /usr/bin/cargo with RUSTC=/usr/bin/rustc explicitly, so ~/.cargo/bin staying first on PATH
# does not matter.
#
# Usage: scripts/test-windows.sh [cargo package args...] [-- test-binary args...]
#   default packages: the Windows-relevant crates (hcs, hcs-ffi, the two FFI drivers and, when
#   present, the fake DLL crates).
#   e.g.  scripts/test-windows.sh
#         scripts/test-windows.sh -p hcs-vmcompute -- --nocapture
#
# Environment knobs (all optional):
#   WINCROSS_HOME          wine prefix + shim location  (default ${XDG_CACHE_HOME:-$HOME/.cache}/wincross)
#   WINCROSS_TARGET_DIR    cargo target dir              (default <repo>/target/wincross)
#   WINCROSS_SKIP_INSTALL  =1: never call apt-get (fail if something is missing)
#   WINCROSS_CLIPPY        =1: also run clippy for the target (installs rust-web-clippy)
#   WINCROSS_NO_TEST       =1: install + cargo check only
# Exit status: non-zero if installing, checking, building or any test fails.
set -euo pipefail

log() { printf '[test-windows %4ss] %s\n' "$SECONDS" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ -f "$REPO/Cargo.toml" ] || die "$REPO has no Cargo.toml"

CARGO_ARGS=() TEST_ARGS=()
while [ $# -gt 0 ]; do
  if [ "$1" = "--" ]; then shift; TEST_ARGS=("$@"); break; fi
  CARGO_ARGS+=("$1"); shift
done
if [ ${#CARGO_ARGS[@]} -eq 0 ]; then
  for c in hcs hcs-ffi hcs-vmcompute hcs-computecore fake-hcs-common fake-vmcompute fake-computecore; do
    [ -f "$REPO/crates/$c/Cargo.toml" ] && CARGO_ARGS+=(-p "$c")
  done
fi

TARGET=x86_64-pc-windows-gnu
WINCROSS_HOME=${WINCROSS_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/wincross}
mkdir -p "$WINCROSS_HOME"

# ---------------------------------------------------------------- 1. Debian packages
PKGS=(gcc-mingw-w64-x86-64 wine wine64 rustc-web cargo-web rust-web-src)
[ "${WINCROSS_CLIPPY:-0}" = 1 ] && PKGS+=(rust-web-clippy)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "${WINCROSS_SKIP_INSTALL:-0}" = 1 ] && die "missing packages: ${missing[*]}"
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q >&2
  # rustc-web/cargo-web conflict with Debian's `rustc`/`cargo` packages (apt removes those);
  # rustup's toolchains under ~/.cargo and ~/.rustup are untouched.
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
  log "packages installed"
fi

DEB_RUSTC=/usr/bin/rustc DEB_RUSTDOC=/usr/bin/rustdoc DEB_CARGO=/usr/bin/cargo
"$DEB_RUSTC" --version >/dev/null || die "$DEB_RUSTC does not run"
STD_SRC="$("$DEB_RUSTC" --print sysroot)/lib/rustlib/src/rust/library"
[ -f "$STD_SRC/Cargo.lock" ] || die "std sources not found at $STD_SRC (package rust-web-src)"
[ "$("$DEB_RUSTC" -vV | sed -n 's/^release: //p')" = "$(dpkg-query -W -f='${Version}' rust-web-src | sed 's/+.*//')" ] \
  || die "rustc-web and rust-web-src are different releases"
command -v x86_64-w64-mingw32-gcc >/dev/null || die "x86_64-w64-mingw32-gcc missing"
command -v wine >/dev/null || die "wine missing"
log "using $("$DEB_RUSTC" --version), $("$DEB_CARGO" --version), $(wine --version 2>/dev/null)"

# ---------------------------------------------------------------- 2. Wine prefix (one-time)
export WINEPREFIX="$WINCROSS_HOME/wineprefix"
export WINEDEBUG=-all                       # no fixme chatter, no "wine32 is missing" hint
export WINEDLLOVERRIDES="mscoree=;mshtml="  # never try to install Mono/Gecko
unset DISPLAY WAYLAND_DISPLAY               # console only: no X server needed
if [ ! -f "$WINEPREFIX/system.reg" ]; then
  log "creating wine prefix $WINEPREFIX"
  wine wineboot --init </dev/null >"$WINCROSS_HOME/wineboot.log" 2>&1 \
    || { cat "$WINCROSS_HOME/wineboot.log" >&2; die "wineboot failed"; }
  wineserver -w
  log "wine prefix ready"
fi

# ---------------------------------------------------------------- 3. bcryptprimitives.dll shim
# Rust std >= 1.78 imports ProcessPrng from bcryptprimitives.dll, which Wine 8.0 lacks: every Rust
# .exe would exit with status 53 and print nothing. Install a tiny stand-in built with MinGW.
SYS32="$WINEPREFIX/drive_c/windows/system32"
if [ ! -e /usr/lib/x86_64-linux-gnu/wine/x86_64-windows/bcryptprimitives.dll ] && [ ! -s "$SYS32/bcryptprimitives.dll" ]; then
  log "building the bcryptprimitives.dll shim"
  cat >"$WINCROSS_HOME/bcryptprimitives.c" <<'EOF'
#include <windows.h>
BOOLEAN WINAPI SystemFunction036(PVOID buf, ULONG len); /* RtlGenRandom, advapi32 */
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len) {
        ULONG n = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!SystemFunction036(data, n)) return FALSE;
        data += n; len -= n;
    }
    return TRUE;
}
EOF
  x86_64-w64-mingw32-gcc -O2 -shared -s -o "$WINCROSS_HOME/bcryptprimitives.dll" \
    "$WINCROSS_HOME/bcryptprimitives.c" -ladvapi32
  cp "$WINCROSS_HOME/bcryptprimitives.dll" "$SYS32/bcryptprimitives.dll"
fi
log "setup done"

# ---------------------------------------------------------------- 4. cargo environment
# Keep every variable constant between runs: cargo fingerprints them, and a change rebuilds std.
export RUSTC="$DEB_RUSTC" RUSTDOC="$DEB_RUSTDOC"
export RUSTC_BOOTSTRAP=1   # lets the stable Debian toolchain accept -Zbuild-std (kept inside this script)
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=wine
# A separate target dir: host build scripts/proc-macros built by Debian's rustc must not mix with
# the rustup-built native artifacts.
export CARGO_TARGET_DIR="${WINCROSS_TARGET_DIR:-$REPO/target/wincross}"
unset RUSTC_WORKSPACE_WRAPPER RUSTC_WRAPPER
BUILD_STD=(-Zbuild-std=std,panic_abort --target "$TARGET")
cd "$REPO"

# ---------------------------------------------------------------- 5. check / clippy / test
log "cargo check ${CARGO_ARGS[*]} (the first run builds std for $TARGET, ~45 s)"
"$DEB_CARGO" check "${BUILD_STD[@]}" "${CARGO_ARGS[@]}" --all-targets

if [ "${WINCROSS_CLIPPY:-0}" = 1 ]; then
  log "clippy"
  RUSTC_WORKSPACE_WRAPPER=/usr/bin/clippy-driver \
    "$DEB_CARGO" check "${BUILD_STD[@]}" "${CARGO_ARGS[@]}" --all-targets
fi

if [ "${WINCROSS_NO_TEST:-0}" = 1 ]; then log "done (no tests)"; exit 0; fi

# Build every test binary before any wine process starts: a cold build can take longer than a
# wineserver's persistence delay, and a wineserver that exits on its own while the next test binary
# connects makes that binary fail with "wine client error:0: recvmsg: Connection reset by peer"
# (seen in CI). So: build first, then one detached wineserver that persists until we kill it
# (`-p` without a delay), so no test binary ever races a shutting-down server.
log "cargo test --no-run ${CARGO_ARGS[*]}"
"$DEB_CARGO" test "${BUILD_STD[@]}" "${CARGO_ARGS[@]}" --no-run
# Detached so it cannot hold our stdout/stderr pipes open.
wineserver -p </dev/null >/dev/null 2>&1 || true
wine cmd /c exit </dev/null >/dev/null 2>&1 || true
# `|| true`: under `set -e` a failing `wineserver -k` (server already gone) would otherwise make the
# trap exit 1 and replace the test run's status.
trap 'rc=$?; wineserver -k >/dev/null 2>&1 || true; wineserver -w >/dev/null 2>&1 || true; exit $rc' EXIT

log "cargo test ${CARGO_ARGS[*]} (runner: wine)"
"$DEB_CARGO" test "${BUILD_STD[@]}" "${CARGO_ARGS[@]}" -- "${TEST_ARGS[@]}"
log "all done"
