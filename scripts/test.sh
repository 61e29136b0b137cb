#!/usr/bin/env bash
# Runs the whole test suite (unit and slow integration tests) in the project's .venv.
# pytest exits 5 when it collects no tests: that is a failure of the suite, not a pass.
set -uo pipefail
cd "$(dirname "$0")/.."
export FACERIG_FACE_MODEL="${FACERIG_FACE_MODEL:-$(cd .. && pwd)/shared/facemodel/ict_facekit_light.npz}"
export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000
.venv/bin/python -m pytest "$@"
rc=$?
if [ $rc -eq 5 ]; then
    echo "scripts/test.sh: pytest collected no tests" >&2
    exit 1
fi
exit $rc
