#!/usr/bin/env bash
# How many files of `src/` name a feature in code (ARCHITECTURE.md, "A feature in few
# places"; BENCHMARKS.md part 32f): each file's part before `#[cfg(test)]`, `//` lines left
# out, files holding only tests (`tests.rs`) too. Prints the count, then each file with its
# number of matching lines.
#
#   benches/feature_files.sh TREE REGEX [EXCLUDE_REGEX]
#   benches/feature_files.sh . remediat 'src/remediation/|store/remediations.rs'
set -euo pipefail
tree=${1:?tree}
regex=${2:?regex}
exclude=${3:-^$}
cd "$tree"
found=$(find src -name '*.rs' ! -name tests.rs | sort | while read -r f; do
    n=$(awk '/^#\[cfg\(test\)\]/{exit} {print}' "$f" | grep -v '^\s*//' | grep -Eci "$regex" || true)
    [ "$n" -gt 0 ] && echo "$n $f"
done | grep -Ev "$exclude" || true)
echo "$(printf '%s' "$found" | grep -c . || true) files"
printf '%s\n' "$found"
