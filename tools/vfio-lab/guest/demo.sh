#!/bin/sh
# The lab's demo: what a user does with the toolkit on a host with an IOMMU, on a real
# kernel: check the host, find the device, bind it to vfio-pci, inspect it, drive it
# with a userspace driver over VFIO, and give it back.
. /lab/lib.sh

run() {
    echo
    say "\$ $*"
    "$@"
}

say "kernel $(uname -r) ($VFIO_LAB_KERNEL), IOMMU: $VFIO_LAB_IOMMU"
# doctor exits non-zero here: virtio-iommu has no interrupt remapping, and the lab runs
# with allow_unsafe_interrupts (it says so, with the fix for a real host).
run vfiotool doctor
run vfiotool list -d 1234:11e8 || exit 1
run vfiotool bind "$VFIO_LAB_EDU" || { say "binding failed"; exit 1; }
run vfiotool groups || exit 1
run vfiotool info "$VFIO_LAB_EDU" || exit 1
if [ -c /dev/iommu ]; then
    run edu "$VFIO_LAB_EDU" iommufd || exit 1
fi
run edu "$VFIO_LAB_EDU" container || exit 1
run vfiotool restore "$VFIO_LAB_EDU" || exit 1
echo
say "edu is back on its boot driver: $(driver_of "$VFIO_LAB_EDU")"
