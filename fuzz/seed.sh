#!/usr/bin/env bash
# Seeds the fuzz corpus with Istio's files and our examples.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out="$here/corpus/load_validate"
mkdir -p "$out"
i=0
for f in $(find "$here/../../shared/istio-corpus" "$here/../examples" "$here/../tests/data" -name '*.yaml' 2>/dev/null); do
  cp "$f" "$out/seed-$i.yaml"
  i=$((i + 1))
done
echo "seeded $i files into $out"
