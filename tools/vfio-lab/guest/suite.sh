#!/bin/sh
# The lab's in-VM test suite: sysfs and /dev checks of the lab's devices and of VFIO
# binding, then every executable in /tests. Exit status: the number of failures (capped).
# Addresses, ids and expected drivers come from /etc/vfio-lab.env (VFIO_LAB_*).
. /lab/lib.sh

say "kernel=$VFIO_LAB_KERNEL iommu=$VFIO_LAB_IOMMU container=$VFIO_LAB_CONTAINER $(uname -r) QEMU $VFIO_LAB_QEMU"
case "$VFIO_LAB_KERNEL" in custom*) CUSTOM=1 ;; *) CUSTOM= ;; esac

# --- devices present, with the expected ids and boot drivers --------------------------
for var in $VFIO_LAB_DEVICES; do
    eval "bdf=\$$var id=\$${var}_ID want=\$${var}_DRIVER"
    d=$(dev "$bdf")
    if [ ! -e "$d" ]; then fail "$var $bdf present"; continue; fi
    got="$(sed 's/^0x//' "$d/vendor"):$(sed 's/^0x//' "$d/device")"
    check "$var $bdf is $id" [ "$got" = "$id" ]
    check "$var $bdf bound to ${want:-no driver} at boot" [ "$(driver_of "$bdf")" = "${want:-none}" ]
done

# --- IOMMU groups at boot ----------------------------------------------------------------
# virtio-iommu (ACPI VIOT) attaches a device when a driver probes it: devices without a
# driver (edu, edu2, pci-testdev) get their group only once vfio-pci binds them.
for g in /sys/kernel/iommu_groups/*; do
    [ -d "$g/devices" ] && say "boot group $(basename "$g"): $(ls "$g/devices" | tr '\n' ' ')"
done
if [ "$VFIO_LAB_IOMMU" = virtio-iommu ]; then
    check "an IOMMU is registered (/sys/class/iommu)" [ -n "$(ls /sys/class/iommu 2>/dev/null)" ]
    check "e1000e has an IOMMU group" [ "$(group_of "$VFIO_LAB_E1000E")" != none ]
    check "nvme has an IOMMU group" [ "$(group_of "$VFIO_LAB_NVME")" != none ]
else
    check "no IOMMU is registered" [ -z "$(ls /sys/class/iommu 2>/dev/null)" ]
    check "e1000e has no IOMMU group" [ "$(group_of "$VFIO_LAB_E1000E")" = none ]
    check "vfio no-IOMMU mode is on" [ "$(cat /sys/module/vfio/parameters/enable_unsafe_noiommu_mode 2>/dev/null)" = Y ]
fi

# --- interrupt remapping: virtio-iommu has none, so VFIO must be told to attach anyway --------
p=/sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts
if [ "$VFIO_LAB_CONTAINER" = compat ]; then
    # iommufd's compat container serves /dev/vfio/vfio: type1 is not built at all.
    check "no vfio_iommu_type1 with iommufd's compat container" [ ! -e /sys/module/vfio_iommu_type1 ]
else
    check "vfio_iommu_type1 allow_unsafe_interrupts is Y" [ "$(cat "$p" 2>/dev/null)" = Y ]
fi
if [ -n "$CUSTOM" ]; then
    p=/sys/module/iommufd/parameters/allow_unsafe_interrupts
    check "iommufd allow_unsafe_interrupts is Y" [ "$(cat "$p" 2>/dev/null)" = Y ]
fi

# --- hugepages ---------------------------------------------------------------------------
check "hugetlbfs is mounted" grep -q ' /dev/hugepages hugetlbfs ' /proc/mounts
check "hugepages are reserved" [ "$(cat /proc/sys/vm/nr_hugepages)" -gt 0 ]

# --- the e1000e option ROM is the file QEMU was given ------------------------------------
rom="$(dev "$VFIO_LAB_E1000E")/rom"
if [ -e "$rom" ] && [ -e "$VFIO_LAB_E1000E_ROM" ]; then
    size=$(wc -c < "$VFIO_LAB_E1000E_ROM")
    echo 1 > "$rom"
    head -c "$size" "$rom" > /tmp/e1000e.rom
    echo 0 > "$rom"
    check "e1000e ROM BAR holds $VFIO_LAB_E1000E_ROM ($size bytes)" cmp -s /tmp/e1000e.rom "$VFIO_LAB_E1000E_ROM"
else
    fail "e1000e ROM BAR and $VFIO_LAB_E1000E_ROM exist"
fi

# --- binding edu to vfio-pci -------------------------------------------------------------
check "vfio-pci is available" [ -d /sys/bus/pci/drivers/vfio-pci ]
check "edu binds to vfio-pci" bind_vfio "$VFIO_LAB_EDU"
check "/dev/vfio/vfio exists" [ -c /dev/vfio/vfio ]
g=$(group_of "$VFIO_LAB_EDU")
check "edu has an IOMMU group once bound" [ "$g" != none ]
check "edu is alone in group $g" [ "$(ls "/sys/kernel/iommu_groups/$g/devices" 2>/dev/null | wc -l)" -eq 1 ]
gd=$(group_dev "$VFIO_LAB_EDU")
say "edu group node: $gd"
check "edu's group node $gd exists" [ -c "$gd" ]
cdev=$(cdev_of "$VFIO_LAB_EDU")
if [ -n "$CUSTOM" ]; then
    check "/dev/iommu exists (iommufd)" [ -c /dev/iommu ]
    say "edu device cdev: ${cdev:-none}"
    if [ "$VFIO_LAB_IOMMU" = none ]; then
        # Informational: whether the cdev exists for no-IOMMU devices.
        say "/dev/vfio: $(ls /dev/vfio | tr '\n' ' ') devices: $(ls /dev/vfio/devices 2>/dev/null | tr '\n' ' ')"
        if [ -n "$cdev" ] && [ -c "$cdev" ]; then say "no-IOMMU device has a cdev"; else say "no-IOMMU device has no cdev"; fi
    else
        check "edu has a device cdev /dev/vfio/devices/vfioN" [ -c "${cdev:-/nonexistent}" ]
    fi
else
    # Debian's stock configs (6.12 and the newest) build VFIO without IOMMUFD.
    check "stock kernel: no /dev/iommu" [ ! -e /dev/iommu ]
    # The vfio-dev class device exists either way; the /dev node needs VFIO_DEVICE_CDEV.
    check "stock kernel: no device cdev nodes" [ ! -e /dev/vfio/devices ]
fi
if command -v vfiotool >/dev/null; then
    out=$(vfiotool list 2>&1)
    rc=$?
    echo "$out"
    check "vfiotool list succeeds" [ "$rc" -eq 0 ]
    check "vfiotool list shows edu" sh -c "echo \"\$1\" | grep -q \"\${2#0000:}\"" _ "$out" "$VFIO_LAB_EDU"
else
    skip "vfiotool not in /bin"
fi
check "edu leaves vfio-pci" unbind_restore "$VFIO_LAB_EDU"
check "edu has no driver again" [ "$(driver_of "$VFIO_LAB_EDU")" = none ]
check "edu's driver_override is cleared" [ "$(cat "$(dev "$VFIO_LAB_EDU")/driver_override")" = "(null)" ]

# --- host drivers come back after vfio-pci ----------------------------------------------
for var in VFIO_LAB_E1000E VFIO_LAB_NVME; do
    eval "bdf=\$$var want=\$${var}_DRIVER"
    check "$var $bdf binds to vfio-pci" bind_vfio "$bdf"
    check "$var $bdf group node exists" [ -c "$(group_dev "$bdf")" ]
    unbind_restore "$bdf"
    check "$var $bdf is back on $want" [ "$(driver_of "$bdf")" = "$want" ]
done

# --- the multi-device group: every member on vfio-pci or driverless ------------------------
if [ "$VFIO_LAB_IOMMU" = virtio-iommu ]; then
    check "edu2 binds to vfio-pci" bind_vfio "$VFIO_LAB_EDU2"
    check "pci-testdev binds to vfio-pci" bind_vfio "$VFIO_LAB_TESTDEV"
    mg=$(group_of "$VFIO_LAB_EDU2")
    members=$(ls "/sys/kernel/iommu_groups/$mg/devices" 2>/dev/null | tr '\n' ' ')
    say "multi-device group $mg: $members"
    check "multi-device group has more than one device" [ "$(echo $members | wc -w)" -ge 2 ]
    for b in $VFIO_LAB_MULTI_GROUP; do
        case " $members " in *" $b "*) pass "$b is in group $mg" ;; *) fail "$b is in group $mg" ;; esac
    done
    check "multi-device group node exists" [ -c "$(group_dev "$VFIO_LAB_EDU2")" ]
    if command -v vfiotool >/dev/null; then
        gout=$(vfiotool groups 2>&1)
        echo "$gout"
        check "vfiotool groups: group $mg is ready for VFIO" \
            sh -c 'echo "$1" | grep -q "^group $2: ready for VFIO"' _ "$gout" "$mg"
        for b in $VFIO_LAB_MULTI_GROUP; do
            check "vfiotool groups lists $b in group $mg" \
                sh -c 'echo "$1" | sed -n "/^group $2:/,/^group /p" | grep -q "$3"' _ "$gout" "$mg" "$b"
        done
    fi
    unbind_restore "$VFIO_LAB_EDU2"
    unbind_restore "$VFIO_LAB_TESTDEV"
    check "edu2 driverless again" [ "$(driver_of "$VFIO_LAB_EDU2")" = none ]
fi
for g in /sys/kernel/iommu_groups/*; do
    [ -d "$g/devices" ] && say "final group $(basename "$g"): $(ls "$g/devices" | tr '\n' ' ')"
done

# --- vfiotool on the real kernel: bind, ROM through VFIO, restore ---------------------------
if command -v vfiotool >/dev/null; then
    check "vfiotool bind e1000e" vfiotool bind "$VFIO_LAB_E1000E"
    check "e1000e is on vfio-pci" [ "$(driver_of "$VFIO_LAB_E1000E")" = vfio-pci ]
    if [ "$VFIO_LAB_IOMMU" = virtio-iommu ]; then
        check "vfiotool info e1000e (with VFIO) succeeds" vfiotool info "$VFIO_LAB_E1000E" --json
        check "vfiotool rom dump e1000e through VFIO" \
            vfiotool rom dump "$VFIO_LAB_E1000E" --source vfio -o /tmp/e1000e-vfio.rom
        check "the ROM dumped through VFIO is the file QEMU loaded" \
            cmp -s /tmp/e1000e-vfio.rom "$VFIO_LAB_E1000E_ROM"
        check "vfiotool rom check of the dump says valid" vfiotool rom check /tmp/e1000e-vfio.rom
    fi
    check "vfiotool restore e1000e" vfiotool restore "$VFIO_LAB_E1000E"
    check "e1000e is back on e1000e" [ "$(driver_of "$VFIO_LAB_E1000E")" = e1000e ]
    check "vfiotool bind edu" vfiotool bind "$VFIO_LAB_EDU"
    check "vfiotool unbind edu" vfiotool unbind "$VFIO_LAB_EDU"
    check "edu has no driver after vfiotool unbind" [ "$(driver_of "$VFIO_LAB_EDU")" = none ]
fi

# --- SR-IOV: the igb NIC's VFs (QEMU 8 and later) ------------------------------------------
if [ -n "$VFIO_LAB_IGB" ]; then
    pf=$(dev "$VFIO_LAB_IGB")
    check "igb offers SR-IOV (sriov_totalvfs $(cat "$pf/sriov_totalvfs" 2>/dev/null))" [ "$(cat "$pf/sriov_totalvfs" 2>/dev/null || echo 0)" -gt 0 ]
    if command -v vfiotool >/dev/null; then
        vfiotool sriov "$VFIO_LAB_IGB" 2>&1
        check "vfiotool sriov creates 2 VFs on igb" vfiotool sriov "$VFIO_LAB_IGB" --numvfs 2
        check "igb reports 2 VFs" [ "$(cat "$pf/sriov_numvfs")" -eq 2 ]
        vf=$(basename "$(readlink "$pf/virtfn0")")
        say "first VF: $vf (group $(group_of "$vf"), driver $(driver_of "$vf"))"
        vfiotool sriov "$VFIO_LAB_IGB" 2>&1
        if [ "$VFIO_LAB_IOMMU" = virtio-iommu ]; then
            g0=$(group_of "$vf")
            g1=$(group_of "$(basename "$(readlink "$pf/virtfn1")")")
            check "each VF has its own IOMMU group ($g0, $g1)" [ "$g0" != none ] && [ "$g0" != "$g1" ]
            check "vfiotool bind of the VF" vfiotool bind "$vf"
            check "the VF is on vfio-pci" [ "$(driver_of "$vf")" = vfio-pci ]
            check "vfiotool info of the VF through VFIO" vfiotool info "$vf" --json
            check "vfiotool restore of the VF" vfiotool restore "$vf"
        fi
        check "vfiotool sriov removes the VFs" vfiotool sriov "$VFIO_LAB_IGB" --numvfs 0
        check "igb reports 0 VFs" [ "$(cat "$pf/sriov_numvfs")" -eq 0 ]
    fi
else
    skip "SR-IOV (igb): QEMU $VFIO_LAB_QEMU does not emulate igb (QEMU 8 or later does: suite boots the newest kernels with it)"
fi

# --- a real mdev: the mtty sample driver (custom newest kernel) -----------------------------
# mtty is a virtual device (/sys/devices/virtual/mtty/mtty), not a PCI function: vfiotool
# finds it through /sys/class/mdev_bus and names it by its device name. The library's
# part (create, open through VFIO, device/region/IRQ info, remove) is in vfio-vm-checks.
if [ -d /sys/class/mdev_bus ] && [ -n "$(ls /sys/class/mdev_bus 2>/dev/null)" ]; then
    parent=$(ls /sys/class/mdev_bus | head -1)
    say "mdev parents: $(ls /sys/class/mdev_bus | tr '\n' ' ')"
    if command -v vfiotool >/dev/null; then
        vfiotool mdev list 2>&1
        t=$(ls "/sys/class/mdev_bus/$parent/mdev_supported_types" | head -1)
        check "vfiotool mdev list shows $parent's type $t" sh -c "vfiotool mdev list 2>&1 | grep -q '^$parent  $t  '"
        check "vfiotool mdev list --json names the parent $parent" sh -c "vfiotool mdev list --json | grep -q '\"parent\": *\"$parent\"'"
        u=83b8f4f2-509f-382f-3c1e-e6bfe0fa1001
        check "vfiotool mdev create $parent $t" vfiotool mdev create "$parent" "$t" --uuid "$u"
        check "the mdev exists with an IOMMU group" [ -e "/sys/bus/mdev/devices/$u/iommu_group" ]
        g=$(basename "$(readlink "/sys/bus/mdev/devices/$u/iommu_group")")
        say "mdev $u: group $g (name $(cat "/sys/kernel/iommu_groups/$g/name" 2>/dev/null)), node $(ls -d "/dev/vfio/$g" 2>/dev/null), vfio-dev $(ls "/sys/bus/mdev/devices/$u/vfio-dev" 2>/dev/null), driver $(basename "$(readlink "/sys/bus/mdev/devices/$u/driver")")"
        vfiotool mdev list 2>&1
        check "vfiotool mdev list shows the instance with its group" sh -c "vfiotool mdev list 2>&1 | grep -q 'instance $u (IOMMU group $g)'"
        check "vfiotool mdev remove" vfiotool mdev remove "$u"
        check "the mdev is gone" [ ! -e "/sys/bus/mdev/devices/$u" ]
        vfiotool mdev create nosuch "$t" > /tmp/mdev.err 2>&1
        say "an unknown parent: $(cat /tmp/mdev.err)"
        check "an unknown parent is refused in one line" [ "$(wc -l < /tmp/mdev.err)" -eq 1 ]
        check "the refusal names the parents" grep -q "mdev parent nosuch not found; the mdev parents are .*$parent" /tmp/mdev.err
    fi
else
    skip "mdev: no mdev parent on this kernel (the custom newest kernel has the mtty sample)"
fi

# --- the kernel's own VFIO selftests (newest linux-source), on edu in every mode ----------------
# An outside check of the lab: each test runs every IOMMU mode it knows (vfio_type1[v2]_iommu
# through /dev/vfio/vfio, iommufd_compat_type1[v2] and iommufd through /dev/iommu).
if ! command -v vfio_dma_mapping_test >/dev/null; then
    skip "kernel selftests: not built on the host (its message says why)"
elif [ ! -c /dev/iommu ] || [ "$VFIO_LAB_IOMMU" != virtio-iommu ]; then
    skip "kernel selftests: they need iommufd and an IOMMU (Debian's stock kernels build no IOMMUFD; no-IOMMU boots have no IOMMU)"
else
    bind_vfio "$VFIO_LAB_EDU"
    # Kernels before 6.18 (type1 without check_add_overflow) cannot map the last page of
    # the 64-bit space and answer EINVAL for a wrapping range: the selftests' map-limit
    # tests expect the newer rules (the conformance files record both).
    rel=$(uname -r); maj=${rel%%.*}; min=${rel#*.}; min=${min%%[!0-9]*}
    if [ "$maj" -lt 6 ] || { [ "$maj" -eq 6 ] && [ "$min" -lt 18 ]; }; then OLD_TYPE1=1; else OLD_TYPE1=; fi
    for t in vfio_iommufd_setup_test vfio_pci_device_test vfio_dma_mapping_test vfio_dma_mapping_mmio_test; do
        out=$("$t" "$VFIO_LAB_EDU" 2>&1)
        echo "$out" | grep -E '^(ok|not ok) ' | sed "s/^/selftest: /"
        echo "$out" | grep -E '^# Totals' | sed "s/^/selftest: $t: /"
        unexpected=$(echo "$out" | grep -E '^not ok ' | while read -r _ _ _ name _; do
            # With iommufd's compat container behind /dev/vfio/vfio, the selftests'
            # vfio_type1 modes are iommufd too, which cannot map MMIO (EFAULT): expected.
            case "$VFIO_LAB_CONTAINER:$OLD_TYPE1:$name" in
                compat:*:vfio_dma_mapping_mmio_test.vfio_type1*) ;;
                legacy:1:vfio_dma_map_limit_test.vfio_type1*) ;;
                *) echo "$name" ;;
            esac
        done)
        check "kernel selftest $t: every failure expected${unexpected:+ (unexpected: $unexpected)}" [ -z "$unexpected" ]
    done
    unbind_restore "$VFIO_LAB_EDU"
fi

# --- the benchmarks' smoke run: vfio-core, raw C and vfio-ioctls on edu and edu2 -------------
if [ -x /bin/hot_paths ] && [ "$VFIO_LAB_IOMMU" = virtio-iommu ]; then
    check "the benchmark smoke run" /lab/bench.sh --smoke
fi

# --- test executables ----------------------------------------------------------------------
for t in /tests/*; do
    [ -x "$t" ] || continue
    say "running $t"
    "$t"
    rc=$?
    check "$(basename "$t") exits 0 (got $rc)" [ "$rc" -eq 0 ]
done

say "suite: $PASSED passed, $FAILED failed, $SKIPPED skipped"
[ "$FAILED" -gt 100 ] && FAILED=100
exit "$FAILED"
