#!/usr/bin/env bash
# Prepare .gpu/ for bench/gpu_check.sh on a lent GPU machine (the `device` tool), here, before the call:
#
#   bash bench/gpu_prepare.sh        then: device run, carry [".gpu"], command `bash bench/gpu_check.sh $OUT`
#
# - .gpu/shared/reference/videos: the shared clips (../shared does not travel);
# - .gpu/cv2.tar.xz: OpenCV with its contrib modules for that machine's Python 3.12 (its image has a plain OpenCV 5
#   without AKAZE, the default camera keypoints; the wheel, 73 MB, is over the 64 MiB a call carries, so its files
#   travel xz-compressed, ~48 MB; gpu_check.sh unpacks them onto PYTHONPATH). Takes ~3 minutes (xz -9 on 2 cores).
# .gpu/ is ignored by git (.git/info/exclude). Needs pip with an index that has the wheel (this workplace's).
set -euo pipefail
cd "$(dirname "$0")/.."
OPENCV=${OPENCV:-opencv-contrib-python-headless==5.1.0.95}
PY=${PYTHON:-.venv/bin/python}
touch .git/info/exclude
grep -qx '/.gpu/' .git/info/exclude || echo /.gpu/ >> .git/info/exclude
mkdir -p .gpu/shared/reference
cp -r ../shared/reference/videos .gpu/shared/reference/
if [ ! -s .gpu/cv2.tar.xz ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$work" "$OPENCV"
  (cd "$work" && mkdir x && cd x && unzip -q ../*.whl && tar cf - cv2 ./*.libs | xz -9e -T0 > "$OLDPWD/cv2.tar.xz")
  mv "$work/cv2.tar.xz" .gpu/cv2.tar.xz
fi
du -sh .gpu
echo "carry [\".gpu\"] (with the tracked files: at most 64 MiB a call)"
