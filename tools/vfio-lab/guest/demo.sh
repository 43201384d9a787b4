#!/bin/sh
# The lab's demo: bind edu to vfio-pci and show what the kernel and the toolkit see.
. /lab/lib.sh

say "kernel $(uname -r) ($VFIO_LAB_KERNEL), IOMMU: $VFIO_LAB_IOMMU"
echo
say "PCI devices (sysfs):"
for d in /sys/bus/pci/devices/*; do
    b=$(basename "$d")
    printf '  %s %s:%s class %s driver %-10s group %s\n' "$b" \
        "$(sed 's/^0x//' "$d/vendor")" "$(sed 's/^0x//' "$d/device")" \
        "$(sed 's/^0x//' "$d/class")" "$(driver_of "$b")" "$(group_of "$b")"
done
echo
say "binding edu $VFIO_LAB_EDU to vfio-pci"
bind_vfio "$VFIO_LAB_EDU" || { say "binding failed"; exit 1; }
say "edu driver: $(driver_of "$VFIO_LAB_EDU"), group $(group_of "$VFIO_LAB_EDU")"
say "/dev/vfio: $(ls /dev/vfio | tr '\n' ' ')"
[ -d /dev/vfio/devices ] && say "/dev/vfio/devices: $(ls /dev/vfio/devices | tr '\n' ' ')"
[ -c /dev/iommu ] && say "/dev/iommu present (iommufd)"
echo
if command -v vfiotool >/dev/null; then
    say "vfiotool list:"
    vfiotool list || exit 1
fi
for x in /bin/edu-*; do
    [ -x "$x" ] && { say "running $x"; "$x" || exit 1; }
done
unbind_restore "$VFIO_LAB_EDU"
say "edu restored: driver $(driver_of "$VFIO_LAB_EDU")"
