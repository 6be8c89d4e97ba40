#!/usr/bin/env bash
# Regenerates the README's "See inside" pictures (docs/see-inside-*.png) from a real short run:
# two 400-step trainings of the tiny config on the bundled tiny Shakespeare (an LSTM and a vanilla
# RNN, about a minute together on 2 cores), then plot, diagnose and activations on them. The last
# picture is the HTML page rendered by headless Chromium (Debian: apt-get install chromium).
# Needs: pip install -e '.[plot]'.   Usage: bash docs/see-inside.sh [RUNS_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-runs/see-inside}
for cell in lstm rnn; do
  charrnn train corpora/tinyshakespeare.txt --config tiny --model "$cell" --max-steps 400 --eval-every 25 \
    --sample-every 0 --seed 1 --out "$runs/$cell" --force --plain > /dev/null
done
charrnn plot "$runs/lstm" "$runs/rnn" -o docs/see-inside-plot.png
charrnn diagnose "$runs/lstm" -o docs/see-inside-diagnose.png
# the file's last 24 lines: the test split, text the model never trained on
tail -n 24 corpora/tinyshakespeare.txt > "$runs/unseen.txt"
charrnn activations "$runs/lstm" "$runs/unseen.txt" --top 2 -o "$runs/activations.html"
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$(mktemp -d)" --hide-scrollbars \
  --screenshot="$PWD/docs/see-inside-activations.png" --window-size=1000,1500 "file://$(realpath "$runs/activations.html")" \
  2> /dev/null
echo "wrote docs/see-inside-plot.png docs/see-inside-diagnose.png docs/see-inside-activations.png"
