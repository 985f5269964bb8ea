#!/usr/bin/env bash
# Copy the README's pictures from a finished `splatsim demo` run into docs/images/.
#   bash scripts/readme_figures.sh [RUN_DIR]      (default: runs/demo)
# Every picture is one the run itself wrote; nothing here draws or edits an image.
set -euo pipefail
run="${1:-runs/demo}"
dst="docs/images"
[ -f "$run/.stages/eval.json" ] || { echo "readme_figures: $run has no finished eval stage; run 'make demo' first" >&2; exit 2; }
mkdir -p "$dst"
scene_id="$(basename "$(cd "$run" && pwd)")"
cp "$run/capture/contact_sheet.png"                 "$dst/capture_contact_sheet.png"
cp "$run/scene/heldout.png"                         "$dst/recon_heldout.png"
cp "$run/grasps.png"                                "$dst/grasps.png"
cp "$run/demos/pictures/${scene_id}_trajectories.png" "$dst/trajectories.png"
cp "$run/demos/pictures/${scene_id}_episode.png"    "$dst/handeye_episode.png"
cp "$run/policy/training_curve.png"                 "$dst/training_curve.png"
cp "$run/eval/table.md"                             "$dst/demo_eval_table.md"
echo "copied the pictures of $run into $dst/"
