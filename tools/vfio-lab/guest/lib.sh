#!/bin/sh
# Helpers for the lab's guest scripts (sourced). Busybox sh; sysfs only.

PASSED=0
FAILED=0
SKIPPED=0

say() { echo "lab: $*"; }
pass() { PASSED=$((PASSED + 1)); echo "ok   - $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL - $*"; }
skip() { SKIPPED=$((SKIPPED + 1)); echo "skip - $*"; }

# check NAME CMD...: passes when CMD succeeds.
check() {
    name=$1
    shift
    if "$@"; then pass "$name"; else fail "$name (command: $*)"; fi
}

dev() { echo "/sys/bus/pci/devices/$1"; }

# driver_of BDF: the bound driver's name, or "none".
driver_of() {
    if [ -e "$(dev "$1")/driver" ]; then
        basename "$(readlink "$(dev "$1")/driver")"
    else
        echo none
    fi
}

# group_of BDF: the IOMMU group number, or "none".
group_of() {
    if [ -e "$(dev "$1")/iommu_group" ]; then
        basename "$(readlink "$(dev "$1")/iommu_group")"
    else
        echo none
    fi
}

# group_dev BDF: the /dev/vfio node of the device's group (noiommu-N without an IOMMU).
group_dev() {
    g=$(group_of "$1")
    if [ "$VFIO_LAB_IOMMU" = none ]; then echo "/dev/vfio/noiommu-$g"; else echo "/dev/vfio/$g"; fi
}

# bind_vfio BDF: unbind the current driver, bind vfio-pci through driver_override.
bind_vfio() {
    d=$(dev "$1")
    if [ -e "$d/driver" ]; then echo "$1" > "$d/driver/unbind" || return 1; fi
    echo vfio-pci > "$d/driver_override" || return 1
    echo "$1" > /sys/bus/pci/drivers_probe 2>/dev/null
    [ "$(driver_of "$1")" = vfio-pci ]
}

# unbind_restore BDF: leave vfio-pci, clear driver_override, let the kernel pick the driver.
unbind_restore() {
    d=$(dev "$1")
    if [ -e "$d/driver" ]; then echo "$1" > "$d/driver/unbind" || return 1; fi
    echo > "$d/driver_override" || return 1
    echo "$1" > /sys/bus/pci/drivers_probe 2>/dev/null
    return 0
}

# cdev_of BDF: /dev/vfio/devices/vfioN of a device bound to vfio-pci, or nothing.
cdev_of() {
    for n in "$(dev "$1")"/vfio-dev/vfio*; do
        [ -e "$n" ] && echo "/dev/vfio/devices/$(basename "$n")"
    done
}
