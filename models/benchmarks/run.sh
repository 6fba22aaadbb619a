#!/usr/bin/env bash
# Runs the model benchmarks of docs/BENCHMARKS.md in one go and rewrites the
# section between its "models-benchmark" markers from the measured JSON:
#   - speed: chainwatch vs go-iforest (Go) vs scikit-learn (n_jobs=1 and -1)
#   - accuracy: mean ROC AUC over 10 seeds on five mlbench data sets, next to
#     scikit-learn and Table 3 of Liu, Ting & Zhou (2008)
# Installs Debian's python3-sklearn, r-base-core and r-cran-mlbench when absent.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
seeds="${SEEDS:-10}"

need=()
/usr/bin/python3 -c 'import sklearn' 2>/dev/null || need+=(python3-sklearn)
command -v Rscript >/dev/null || need+=(r-base-core)
Rscript -e 'library(mlbench)' >/dev/null 2>&1 || need+=(r-cran-mlbench)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

echo "exporting mlbench data sets" >&2
Rscript "$here/export_mlbench.R" "$work/data" >&2

echo "building iforest-bench" >&2
(cd "$here" && go build -o "$work/iforest-bench" .)

echo "speed: chainwatch and go-iforest" >&2
"$work/iforest-bench" -mode speed > "$work/go-speed.json"
echo "speed: scikit-learn" >&2
/usr/bin/python3 "$here/sklearn_bench.py" --mode speed > "$work/sk-speed.json"
echo "accuracy: chainwatch ($seeds seeds)" >&2
"$work/iforest-bench" -mode accuracy -data "$work/data" -seeds "$seeds" > "$work/go-acc.json"
echo "accuracy: scikit-learn ($seeds seeds)" >&2
/usr/bin/python3 "$here/sklearn_bench.py" --mode accuracy --data "$work/data" --seeds "$seeds" > "$work/sk-acc.json"

mkdir -p "$root/docs/bench"
/usr/bin/python3 "$here/render.py" "$work" "$root/docs/BENCHMARKS.md" "$root/docs/bench/models.json"
echo "docs/BENCHMARKS.md updated" >&2
