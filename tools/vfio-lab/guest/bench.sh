#!/bin/sh
# The benchmarks on the real kernel: vfio-core, the raw-C baseline and vfio-ioctls side by
# side, on edu (vfio-core and C) and edu2 (vfio-ioctls, which needs a group of its own).
# --smoke: a quick run that only checks everything works.
. /lab/lib.sh

[ "$1" = --smoke ] && export VFIO_BENCH_SMOKE=1
vfiotool bind "$VFIO_LAB_EDU" >/dev/null || exit 1
vfiotool bind "$VFIO_LAB_EDU2" >/dev/null || { vfiotool restore "$VFIO_LAB_EDU"; exit 1; }
VFIO_BENCH_DEVICE="$VFIO_LAB_EDU" VFIO_BENCH_PEER="$VFIO_LAB_EDU2" \
    VFIO_BENCH_INTERFACE="${VFIO_BENCH_INTERFACE:-container}" VFIO_BENCH_MOCK=0 \
    CARGO_TARGET_DIR=/tmp hot_paths --bench
rc=$?
vfiotool restore "$VFIO_LAB_EDU" >/dev/null
vfiotool restore "$VFIO_LAB_EDU2" >/dev/null
exit $rc
