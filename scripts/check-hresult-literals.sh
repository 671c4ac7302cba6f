#!/usr/bin/env bash
# check-hresult-literals.sh - the HRESULT vocabulary has one home: crates/hcs/src/hresult.rs.
#
# Fails when a raw HCS HRESULT literal of the 0x?037xxxx family (V1 0xC037xxxx, V2 0x8037xxxx,
# in any spelling: 0xC0370106, 0xC037_0106, 0x80370117_u32) appears in CODE outside hresult.rs.
# Not checked, by design:
#   * comments (`//`, `///`, `//!`): documentation may quote a wire value;
#   * test code: files under a crate's tests/ or benches/ directory, the fuzz-target bodies of
#     crates/hcs-fuzz (they generate raw wire values on purpose), and everything after a
#     line that starts with `#[cfg(test)]` (the inline test module, by convention at the end of
#     a file), because tests about wire values assert wire values.
# Everything else names its codes through hcs::HResult, hcs::hresult::CodePair or
# hcs::hresult::sets.
set -euo pipefail
cd "$(dirname "$0")/.."
pattern='0[xX][0-9a-fA-F]?037[0-9a-fA-F_]{4,}'
found=0
while IFS= read -r -d '' f; do
  case "$f" in
    crates/hcs/src/hresult.rs|crates/*/tests/*|crates/*/benches/*) continue ;;
    # The fuzz-target bodies are test code that builds raw wire values on purpose.
    crates/hcs-fuzz/*) continue ;;
  esac
  # awk (mawk has no {m,n} intervals) strips comments and stops at the test module; grep -E
  # does the matching.
  hits=$(awk '
    /^#\[cfg\(test\)\]/ { exit }
    { line = $0; sub(/\/\/.*$/, "", line); printf "%s:%d: %s\n", FILENAME, FNR, line }' "$f" |
    grep -E "^[^:]+:[0-9]+: .*$pattern" || true)
  if [ -n "$hits" ]; then
    printf '%s\n' "$hits"
    found=1
  fi
done < <(find crates -name '*.rs' -path '*/src/*' -print0 | sort -z)
if [ "$found" = 1 ]; then
  echo "raw HRESULT literals outside crates/hcs/src/hresult.rs: name them (HResult::*, CodePair::*, sets::*)" >&2
  exit 1
fi
echo "hresult literals: none outside hresult.rs"
