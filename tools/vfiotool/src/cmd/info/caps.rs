//! One line per decoded capability, for `info -v`: the fields a passthrough user looks
//! at, in lspci's `+`/`-` style.

use vfio_core::pci::caps::{AcsBits, CapabilityFields};

use crate::format::human_size;

/// `+` for a set bit, `-` for a clear one (as lspci writes flags).
pub fn pm(b: bool) -> char {
    if b {
        '+'
    } else {
        '-'
    }
}

fn acs_bits(b: &AcsBits) -> String {
    format!(
        "SV{} TB{} RR{} CR{} UF{} EC{} DT{}",
        pm(b.sv),
        pm(b.tb),
        pm(b.rr),
        pm(b.cr),
        pm(b.uf),
        pm(b.ec),
        pm(b.dt)
    )
}

/// One line describing a capability's decoded fields.
pub fn cap_summary(f: &CapabilityFields) -> String {
    match f {
        CapabilityFields::PowerManagement(p) => format!(
            "version {}, D1{} D2{}, state {}, NoSoftRst{}{}",
            p.version,
            pm(p.d1),
            pm(p.d2),
            p.power_state,
            pm(p.no_soft_reset),
            if p.no_soft_reset { " (a PM reset does not reset the device)" } else { "" }
        ),
        CapabilityFields::Msi(m) => format!(
            "{}/{} vectors enabled/capable, 64-bit{}, per-vector masking{}, enabled{}",
            m.vectors_enabled,
            m.vectors_capable,
            pm(m.address_64bit),
            pm(m.per_vector_masking),
            pm(m.enabled)
        ),
        CapabilityFields::Msix(m) => format!(
            "{} vectors, table BAR{}+{:#x}, PBA BAR{}+{:#x}, enabled{}, function mask{}",
            m.table_size,
            m.table_bir,
            m.table_offset,
            m.pba_bir,
            m.pba_offset,
            pm(m.enabled),
            pm(m.function_mask)
        ),
        CapabilityFields::PciExpress(e) => {
            let mut s = format!(
                "v{} {}, MaxPayload {}/{} bytes, FLR{}",
                e.version,
                e.port_type,
                e.device_control.max_payload,
                e.device_capabilities.max_payload,
                pm(e.device_capabilities.flr_capable)
            );
            if let (Some(ls), Some(lc)) = (&e.link_status, &e.link_capabilities) {
                s += &format!(
                    ", link {} x{} (max {} x{}), ASPM {}",
                    ls.speed, ls.width, lc.max_speed, lc.max_width, lc.aspm_support
                );
            }
            s
        }
        CapabilityFields::VendorSpecific(v) => match &v.virtio {
            Some(c) => format!(
                "VirtIO: {} BAR={} offset={:08x} size={:08x}{}",
                c.type_name,
                c.bar,
                c.offset,
                c.length,
                c.notify_off_multiplier.map(|m| format!(" multiplier={m:08x}")).unwrap_or_default()
            ),
            None => format!("length {}", v.length),
        },
        CapabilityFields::Aer(a) => format!(
            "uncorrectable status {:#x} (mask {:#x}), correctable status {:#x} (mask {:#x})",
            a.uncorrectable_status, a.uncorrectable_mask, a.correctable_status, a.correctable_mask
        ),
        CapabilityFields::Acs(a) => {
            format!("capable {}; enabled {}", acs_bits(&a.capabilities), acs_bits(&a.control))
        }
        CapabilityFields::Ari(a) => {
            format!("next function {}, MFVC{} ACS{}", a.next_function, pm(a.mfvc), pm(a.acs))
        }
        CapabilityFields::Ats(a) => format!(
            "enabled{}, invalidate queue depth {}, smallest translation unit {}",
            pm(a.enabled),
            a.invalidate_queue_depth,
            a.smallest_translation_unit
        ),
        CapabilityFields::Pri(p) => format!(
            "enabled{}, outstanding requests {} (allocated {})",
            pm(p.enabled),
            p.outstanding_capacity,
            p.outstanding_allocation
        ),
        CapabilityFields::Pasid(p) => format!(
            "max width {} bits, exec{} privileged{}, enabled{}",
            p.max_pasid_width,
            pm(p.exec_permission),
            pm(p.privileged_mode),
            pm(p.enabled)
        ),
        CapabilityFields::Sriov(s) => format!(
            "VFs {} enabled of {} (initial {}), VF enable{}, first VF offset {}, stride {}, \
             VF device {:04x}, {} VF BAR(s)",
            s.num_vfs,
            s.total_vfs,
            s.initial_vfs,
            pm(s.vf_enabled),
            s.first_vf_offset,
            s.vf_stride,
            s.vf_device_id,
            s.vf_bars.len()
        ),
        CapabilityFields::ResizableBar(r) => r
            .entries
            .iter()
            .map(|e| {
                format!(
                    "BAR{} {} (supports {})",
                    e.bar,
                    human_size(e.current_size),
                    e.supported_sizes.iter().map(|s| human_size(*s)).collect::<Vec<_>>().join(" ")
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        CapabilityFields::DeviceSerialNumber(d) => d.text.clone(),
        CapabilityFields::VendorSpecificExtended(v) => {
            format!("VSEC id {:#x} rev {} length {}", v.vsec_id, v.vsec_revision, v.vsec_length)
        }
        CapabilityFields::Dvsec(v) => format!(
            "vendor {:04x} DVSEC id {:#x} rev {} length {}",
            v.vendor_id, v.dvsec_id, v.revision, v.length
        ),
        CapabilityFields::AdvancedFeatures(a) => format!(
            "AFCap: TP{} FLR{}, AFCtrl: FLR{}, AFStatus: TP{}{}",
            pm(a.tp_capable),
            pm(a.flr_capable),
            pm(a.initiate_flr),
            pm(a.transactions_pending),
            if a.flr_capable { " (function level reset through AF)" } else { "" }
        ),
        CapabilityFields::BridgeSubsystem(b) => {
            format!("subsystem {:04x}:{:04x}", b.subsystem_vendor_id, b.subsystem_id)
        }
        CapabilityFields::Vpd(v) => format!(
            "address {:#06x}, F{}, data {:08x} (the VPD itself: sysfs vpd)",
            v.address,
            pm(v.flag),
            v.data
        ),
        CapabilityFields::DebugPort(d) => format!("BAR={} offset={:04x}", d.bar, d.offset),
        CapabilityFields::Sata(s) => format!(
            "SATA HBA v{}.{} {}",
            s.major,
            s.minor,
            match s.bar {
                Some(b) => format!("BAR{b} Offset={:08x}", s.offset),
                None if s.in_config_space => "InCfgSpace".into(),
                None => format!("BAR??{}", s.bar_location),
            }
        ),
        CapabilityFields::Truncated { needed, available } => {
            format!("not decoded: needs {needed} bytes, the image holds {available}")
        }
    }
}
