#!/usr/bin/env bash
# check-design-ids.sh - every design id cited in a code comment must resolve to a heading in
# docs/design.md, so that a fresh clone can look up what "C7", "I3" or "§3.6" means.
#
# Usage: scripts/check-design-ids.sh            check; exit 1 listing every unresolved citation
#        scripts/check-design-ids.sh --list     also print every cited id with where it is cited
#
# What is a citation (the decisions, kept here so they can be argued with):
#
# * Only comments are scanned: whole-line comments (`//`, `///`, `//!`) and the trailing `//`
#   part of a code line (a `//` inside a string literal is not a comment). String literals and
#   code are ignored. The workspace has no `/* */` comments; they are not scanned.
# * Rule ids are the namespaces of the design: C (contract rules), I (improvements over
#   hcsshim), Q (hcsshim quirks) and F (failure modes): an upper-case letter C, I, Q or F followed
#   by 1-3 digits, as a whole token. A token is NOT an id when it touches a letter, digit, `_` or
#   `-` on either side: that excludes hex digits (`0xC0370103`), MAC addresses
#   (`00-15-5D-52-C0-00`), identifiers (`BF16`, `I2C`) and ranges written with a hyphen. Ranges
#   written with an en dash (`I1–I4`) cite both ends. Other letters (for example a `D7` from a
#   duplicates report) are not design ids and are never checked.
# * Section references are `§` followed by a dotted number (`§3.6`, `§4`). A reference belongs to
#   the last document named before it in the same comment block (consecutive comment lines):
#     - `windows-ffi.md`       -> key `FFI §N.M`  (design.md heading: `### FFI §N.M ...`)
#     - `hcs-failure-modes.md` -> key `FM §N.M`   (design.md heading: `### FM §N.M ...`)
#     - `hcs-behavior.md`, `design.md`, or no document -> key `§N.M` (heading: `### §N.M ...`,
#       numbered like hcs-behavior.md, whose numbering design.md mirrors)
#     - any other `*.md` file  -> key `<file> §N.M`, which never resolves: cite design.md instead.
#   A reference written `FFI §N.M` or `FM §N.M` (the way comments cite design.md's appendices:
#   "design FFI §3.6") is that key whatever document was named before.
#   This matters because the three specs reuse numbers: `windows-ffi.md §3.6` (error encodings)
#   is not `hcs-behavior.md §3.6` (pending operations).
#
# What is a heading: a line of docs/design.md starting with `#`, outside ``` fences. Its tokens
# (split on spaces, dashes, slashes, commas, parentheses, colons and backticks) that look like
# ids define them; a `§N.M` token defines `FFI §N.M` / `FM §N.M` when the token before it is
# `FFI` / `FM`, else `§N.M`. Heading format used by design.md: `#### I3 — Stale completions are
# dropped` and `### §3.6 Pending operations and their completion` (the id first).
set -euo pipefail
export LC_ALL=C # byte-wise matching: `§` is the two bytes \302\247 in UTF-8

cd "$(dirname "${BASH_SOURCE[0]}")/.."
design=docs/design.md
list=0
case "${1:-}" in
  --list) list=1 ;;
  "") ;;
  *) echo "usage: $0 [--list]" >&2; exit 2 ;;
esac
[ -f "$design" ] || { echo "check-design-ids: $design is missing" >&2; exit 1; }
[ -d crates ] || { echo "check-design-ids: no crates/ directory" >&2; exit 1; }

# --- 1. citations: "<key>\t<file>:<line>" -------------------------------------------------------
# shellcheck disable=SC2016 # the awk program is single-quoted on purpose
extract='
function idchar(c) { return c ~ /[A-Za-z0-9_-]/ }
# The comment part of a line, or "" (a // inside a "..." literal does not start a comment).
function comment_of(line,   i, c, n, inq) {
  n = length(line); inq = 0
  for (i = 1; i < n; i++) {
    c = substr(line, i, 1)
    if (inq && c == "\\") { i++; continue }
    if (c == "\"") { inq = !inq; continue }
    if (!inq && c == "/" && substr(line, i + 1, 1) == "/") return substr(line, i)
  }
  return ""
}
function docqual(name) {
  sub(/.*\//, "", name)
  if (name == "windows-ffi.md") return "FFI "
  if (name == "hcs-failure-modes.md") return "FM "
  if (name == "hcs-behavior.md" || name == "design.md") return ""
  return name " "
}
function scan(text, where,   tok, before, after) {
  while (match(text, /(FFI|FM) \302\247[0-9]+(\.[0-9]+)*|[A-Za-z0-9_.\/-]*\.md|\302\247[0-9]+(\.[0-9]+)*|[CIQF][0-9]+/)) {
    tok = substr(text, RSTART, RLENGTH)
    before = RSTART > 1 ? substr(text, RSTART - 1, 1) : ""
    after = substr(text, RSTART + RLENGTH, 1)
    text = substr(text, RSTART + RLENGTH)
    if (tok ~ /^(FFI|FM) /) { print tok "\t" where; continue }   # "design FFI §3.6": explicit
    if (tok ~ /\.md$/) { qual = docqual(tok); continue }
    if (tok ~ /^\302\247/) { print qual tok "\t" where; continue }
    # a rule id: whole token, 1-3 digits
    if (idchar(before) || idchar(after) || length(tok) > 4) continue
    print tok "\t" where
  }
}
FNR == 1 { qual = "" }
{
  if ($0 ~ /^[ \t]*\/\//) {            # whole-line comment: continues the current block
    scan($0, FILENAME ":" FNR)
  } else {
    qual = ""                          # a code line ends the comment block
    c = comment_of($0)
    if (c != "") { scan(c, FILENAME ":" FNR); qual = "" }
  }
}
'
cited=$(find crates -name '*.rs' -not -path '*/target/*' -print | sort | while IFS= read -r f; do
  awk "$extract" "$f"
done)

# --- 2. headings of docs/design.md: one key per line ---------------------------------------------
# shellcheck disable=SC2016
headings='
/^```/ { fence = !fence; next }
fence || !/^#/ { next }
{
  h = $0
  sub(/^#+[ \t]*/, "", h)
  gsub(/\342\200\224|\342\200\223|[`(),:;\/*]|[ \t]-+[ \t]/, " ", h)   # em/en dash and punctuation
  n = split(h, t, /[ \t]+/)
  for (i = 1; i <= n; i++) {
    x = t[i]; sub(/\.$/, "", x)
    if (x ~ /^[CIQF][0-9]+$/) print x
    else if (x ~ /^\302\247[0-9]+(\.[0-9]+)*$/) {
      p = i > 1 ? t[i - 1] : ""
      if (p == "FFI" || p == "FM") print p " " x; else print x
    }
  }
}
'
defined=$(awk "$headings" "$design" | sort -u)

# --- 3. compare ----------------------------------------------------------------------------------
keys=$(printf '%s\n' "$cited" | awk -F '\t' 'NF == 2 { print $1 }' | sort -u)
n=$(printf '%s\n' "$keys" | grep -c . || true)
if [ "$list" = 1 ]; then
  printf '%s\n' "$cited" | awk -F '\t' 'NF == 2 { w[$1] = w[$1] " " $2 } END { for (k in w) print k ":" w[k] }' | sort -V
fi
missing=$(comm -23 <(printf '%s\n' "$keys" | grep . || true) <(printf '%s\n' "$defined" | grep . || true))
if [ -n "$missing" ]; then
  echo "design ids: $(printf '%s\n' "$missing" | grep -c .) of $n cited ids have no heading in $design:" >&2
  while IFS= read -r k; do
    locs=$(printf '%s\n' "$cited" | awk -F '\t' -v k="$k" '$1 == k { printf "%s%s", (c++ ? ", " : ""), $2 }')
    printf '  %s  cited at %s\n' "$k" "$locs" >&2
  done <<<"$missing"
  echo "Add a heading whose text starts with the id (e.g. '#### I3 — ...', '### §3.6 ...', '### FFI §3.6 ...')," >&2
  echo "or change the comment to cite an id that docs/design.md defines." >&2
  exit 1
fi
echo "design ids: $n cited, all resolve"
