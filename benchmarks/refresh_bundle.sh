#!/usr/bin/env bash
# Make a trained pipeline the bundled model, and redraw everything that shows it.
#
#     benchmarks/refresh_bundle.sh runs/long-decay/pipeline v0.6             # all of it
#     SKIP_BENCHMARKS=1 benchmarks/refresh_bundle.sh runs/long/pipeline v0.6  # the bundle, its evaluation, GIF, images
#     EVALUATION=runs/long-eval.json benchmarks/refresh_bundle.sh ...        # reuse a full evaluation of that folder
#
# 1. assets/tiny-dit-shapes/ becomes a copy of the pipeline folder (weights, CLIP, autoencoder, scheduler and the
#    run's record: training_log.jsonl and training_samples/, which the app's "How it learned" view shows),
#    stamped with VERSION (vMAJOR.MINOR; a third number for the same weights with a changed config) and today's
#    date: training_args.json's bundle_version and bundle_date, and the front matter of the model card
#    (README.md: the pipeline folder's own, else the previous bundle's, whose text then still describes that
#    one: rewrite it, and add the version to docs/recipe-study.md's table of versions);
# 2. its evaluation.json: the project's full evaluation (every combination of each split, two seeds), the
#    pipeline's defaults;
# 3. the README's samples GIF (the four prompts of docs/recipe-study.md's caption);
# 4. docs/sora-tasks.md's image of one example per task (assets/sora-tasks.png);
# 5. the screenshots of the app (assets/screenshots/, by the browser test);
# 6. the solvers benchmark (assets/solvers.png; the table is benchmarks/results/solvers.md) and the Sora tasks
#    benchmark (benchmarks/results/sora_tasks.json and sora_sizes.json).
# The tables in the docs are written by hand from what steps 2 and 6 print: they say which bundle they measured.
# Run it on idle cores: the benchmarks time the pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
esac
[ $# -eq 2 ] || { echo "usage: benchmarks/refresh_bundle.sh PIPELINE_FOLDER VERSION (--help explains)" >&2; exit 2; }
model=$1
version=$2
python=${PYTHON:-.venv/bin/python}
bundle=assets/tiny-dit-shapes
[[ $version =~ ^v[0-9]+\.[0-9]+(\.[0-9]+)?$ ]] || { echo "$version: not a version such as v0.6 or v0.6.1" >&2; exit 2; }
[ -f "$model/model_index.json" ] || { echo "$model: no model_index.json (not a pipeline folder)" >&2; exit 2; }
if grep -q "\"bundle_version\": \"$version\"" "$bundle/training_args.json" 2>/dev/null; then
    echo "$bundle is $version already: a new bundle takes a new version" >&2; exit 2
fi
mkdir -p benchmarks/results
card=$(mktemp) && trap 'rm -f "$card"' EXIT
cp "$([ -f "$model/README.md" ] && echo "$model" || echo "$bundle")/README.md" "$card"

echo "1. $model -> $bundle ($version)"
rm -rf "$bundle" && mkdir -p "$bundle" && cp -r "$model"/. "$bundle"/ && cp "$card" "$bundle/README.md"
$python - "$bundle" "$version" <<'STAMP'
import datetime, json, re, sys
from pathlib import Path

bundle, version = Path(sys.argv[1]), sys.argv[2]
date = datetime.date.today().isoformat()
args = bundle / "training_args.json"
record = json.loads(args.read_text()) if args.exists() else {}
args.write_text(json.dumps({**record, "bundle_version": version, "bundle_date": date}, indent=2))
card = bundle / "README.md"
text = re.sub(r"(?m)^version: .*$", f"version: {version}", card.read_text(), count=1)
text = re.sub(r"(?m)^date: .*$", f"date: {date}", text, count=1)
card.write_text(re.sub(r"(?m)^# tiny-dit-shapes v\S+$", f"# tiny-dit-shapes {version}", text, count=1))
print(f"{bundle}: {version} of {date}; rewrite {card} for it (training, evaluation, known faults)")
STAMP

echo "2. evaluation"
if [ -n "${EVALUATION:-}" ]; then  # the full evaluation already run on the same weights and settings: reuse it
    $python - "$EVALUATION" "$bundle" <<'REUSE'
import json, sys
from pathlib import Path

results = json.loads(Path(sys.argv[1]).read_text())
if results.get("prompt_set") != "full":
    sys.exit(f"{sys.argv[1]} is not the full evaluation (prompt_set {results.get('prompt_set')!r})")
results["evaluated_as"], results["model"] = results["model"], sys.argv[2]
(Path(sys.argv[2]) / "evaluation.json").write_text(json.dumps(results, indent=2))
REUSE
else
    $python -m tiny_dit.training.evaluate --model "$bundle" --json "$bundle/evaluation.json"
fi

echo "3. samples GIF"
$python -m tiny_dit.sample --model "$bundle" --num-videos 4 --seed 0 \
    --prompt "a red circle moving left on a black background" \
    --prompt "a yellow star growing on a white background" \
    --prompt "a green triangle moving right on a gray background" \
    --prompt "a purple circle moving down on a black background" \
    --out "$(mktemp -d)" --gif assets/samples.gif

echo "4. one example per Sora task"
$python benchmarks/sora_examples.py

echo "5. screenshots"
TINY_DIT_SCREENSHOTS=1 $python -m pytest -q -p no:cacheprovider tests/test_browser.py

[ -n "${SKIP_BENCHMARKS:-}" ] && exit 0
echo "6. benchmarks"
$python benchmarks/solvers.py --model "$bundle" --solvers euler,heun,dpm++,unipc --steps 6,10,20 --shifts 3 \
    --num-prompts 24 --repeats 1 --out benchmarks/results/solvers
cp benchmarks/results/solvers.png assets/solvers.png
$python benchmarks/sora_tasks.py --mode tasks --json benchmarks/results/sora_tasks.json
$python benchmarks/sora_tasks.py --mode sizes --num-inputs 24 --json benchmarks/results/sora_sizes.json
