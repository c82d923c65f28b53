#!/usr/bin/env bash
# The pictures in docs/images, each made by the command its page shows, on the inputs in samples/ and the
# bundled models: `bash scripts/docs_pictures.sh` after `make dev` (the viewer's needs Debian's chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
pixio=${PIXIO:-.venv/bin/pixio}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
images=docs/images

"$pixio" depth samples/room/frame-000900.color.jpg -o "$out/depth" --vis --side-by-side -q
cp "$out"/depth/*_vis.png "$images/depth-room.png"
"$pixio" segment samples/street/camvid_0016E5_07959.jpg -o "$out/segment" --overlay -q
cp "$out"/segment/*overlay*.png "$images/segment-street.png"
"$pixio" recon3d samples/room -o "$out/room" --preview "$images/recon3d-room.png" --cameras json -q
PIXIO_VIEW_NO_NOTICES=1 "$pixio" view "$out/room" --port 8765 --no-browser > "$out/view.log" 2>&1 &
viewer=$!
for _ in $(seq 60); do grep -q "viewing" "$out/view.log" && break; sleep 1; done
url=$(grep -o "http://[^ ]*" "$out/view.log" | head -1)  # the next free port when 8765 is taken
chromium --headless=new --no-sandbox --use-angle=swiftshader --enable-unsafe-swiftshader --hide-scrollbars \
  --window-size=1024,768 --virtual-time-budget=15000 --run-all-compositor-stages-before-draw \
  --screenshot="$PWD/$images/view-room.png" "$url" > /dev/null 2>&1
kill "$viewer"
"$pixio" recon3d samples/walk.mp4 -o "$out/walk" --fps 5 --cameras colmap --mesh \
  --preview "$images/tutorial-walk-preview.png" -q
PIXIO_VIEW_NO_NOTICES=1 "$pixio" view "$out/walk" --port 8766 --no-browser > "$out/view-walk.log" 2>&1 &
viewer=$!
for _ in $(seq 60); do grep -q "viewing" "$out/view-walk.log" && break; sleep 1; done
url=$(grep -o "http://[^ ]*" "$out/view-walk.log" | head -1)
chromium --headless=new --no-sandbox --use-angle=swiftshader --enable-unsafe-swiftshader --hide-scrollbars \
  --window-size=1024,768 --virtual-time-budget=15000 --run-all-compositor-stages-before-draw \
  --screenshot="$PWD/$images/tutorial-walk-view.png" "$url" > /dev/null 2>&1
kill "$viewer"
"$pixio" extract samples/photos/beagle.jpg --pca "$images/extract-pca-beagle.png" -q
"$pixio" curate samples -o "$out/curate" --report "$images/curate-report.png" -q
ls -l "$images"
