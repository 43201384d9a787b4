//! What `vfiotool snapshot` leaves out of a host's files by default: pure functions over
//! text, each keeping exactly what the toolkit's readers use.
//!
//! | file | kept | replaced |
//! |---|---|---|
//! | kernel log | lines about the IOMMU, DMAR, AMD-Vi, VFIO and interrupt remapping, from `kernel:` on | every other line; the time stamp and host name before `kernel:` |
//! | `/proc/cmdline`, `/etc/default/grub`, `/etc/kernel/cmdline` | every parameter | the values of `UUID=`, `PARTUUID=`, `LABEL=`, `PARTLABEL=` (and `*.uuid=`, `*.label=` keys), `/dev/disk/by-uuid/...` names |
//! | `/proc/net/route` | interface, flags, metric, whether a route is the default route | gateways (zeroed); destinations and masks of other routes (`192.0.2.0/24`) |
//! | `/proc/net/ipv6_route`, `/proc/net/if_inet6` | interface, prefix lengths, scope, flags, default routes (`::/0`), `::1`, multicast | addresses: `2001:db8::N` (link-local `fe80::N`, site-local `fec0::N`, unique local `fd00::N`) |
//! | `/proc/mounts` | the device, the file system type, mount points `/`, `/boot`, `/boot/efi`, `/usr`, `/var`, `/home` | other mount points (`/redacted/N`); the source and options of network mounts |
//! | `/proc/swaps` | swap partitions (`/dev/...`) | swap file paths |
//! | PCI `config` | every register | the serial number of the Device Serial Number capability |
//!
//! The guards ([`crate::host::guards`]) and `doctor` ([`crate::host::doctor`]) give the
//! same answers on the redacted text as on the original; the unit tests and the `redact`
//! fuzz target check it.

use std::collections::HashMap;

use crate::pci::caps::ext_id;
use crate::pci::config::ConfigSpace;

/// Words that make a kernel log line worth keeping (compared case-insensitively).
const LOG_WORDS: [&str; 5] = ["iommu", "dmar", "amd-vi", "vfio", "remapping"];

/// The mount points kept as they are: the system's own, which identify no one.
pub const KEPT_MOUNT_POINTS: [&str; 6] = ["/", "/boot", "/boot/efi", "/usr", "/var", "/home"];

/// The value that replaces a redacted identifier.
pub const REDACTED: &str = "redacted";

/// Keeps the kernel log lines about the IOMMU, DMAR, AMD-Vi, VFIO and interrupt
/// remapping, without the syslog time stamp and host name (everything before the last
/// ` kernel: `).
pub fn kernel_log(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        let line = match line.rfind(" kernel: ") {
            Some(i) => &line[i + 1..],
            None => line,
        };
        let lower = line.to_ascii_lowercase();
        if !LOG_WORDS.iter().any(|w| lower.contains(w)) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Whether a parameter key names a disk or file system identifier (`UUID`, `PARTUUID`,
/// `LABEL`, `PARTLABEL`, `rd.luks.uuid`, ...).
fn identifying_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    let last = k.rsplit('.').next().unwrap_or(&k);
    matches!(last, "uuid" | "partuuid" | "label" | "partlabel" | "machine_id")
}

const BY_PATHS: [&str; 4] = ["by-uuid/", "by-partuuid/", "by-label/", "by-partlabel/"];

/// Replaces the disk and file system identifiers of a kernel command line (or of a file
/// holding one, such as `/etc/default/grub`): the values of `UUID=`, `PARTUUID=`,
/// `LABEL=`, `PARTLABEL=` and `*.uuid=` keys, and the names after `/dev/disk/by-uuid/`
/// and its kin. Every other character, the parameters and white space are kept: a value
/// ends at white space (a quoted label with a space keeps its later words), so each
/// parameter stays one parameter and [`parse_cmdline`](crate::host::doctor::parse_cmdline)
/// finds the same facts in the result.
pub fn cmdline(text: &str) -> String {
    // White space as the readers split on it (Unicode's, as `split_whitespace`).
    let value_len = |from: usize| -> usize {
        text[from..]
            .char_indices()
            .find(|(_, c)| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | ':'))
            .map_or(text.len() - from, |(n, _)| n)
    };
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let boundary = text[..i]
            .chars()
            .next_back()
            .is_none_or(|c| c.is_whitespace() || matches!(c, '"' | '=' | ',' | ':' | '\''));
        if boundary {
            // A key: [A-Za-z0-9._-]+ followed by '='.
            let key_end = i + b[i..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
                .count();
            if key_end > i
                && key_end < b.len()
                && b[key_end] == b'='
                && identifying_key(&text[i..key_end])
            {
                out.push_str(&text[i..=key_end]);
                // The value ends at white space even inside quotes, so that every
                // parameter stays one parameter for the readers that split on it.
                let n = value_len(key_end + 1);
                if n > 0 {
                    out.push_str(REDACTED);
                }
                i = key_end + 1 + n;
                continue;
            }
        }
        if let Some(p) = BY_PATHS.iter().find(|p| text[i..].starts_with(**p)) {
            out.push_str(p);
            let n = value_len(i + p.len());
            if n > 0 {
                out.push_str(REDACTED);
            }
            i += p.len() + n;
            continue;
        }
        // Copy one character (text is UTF-8: move to the next boundary).
        let n = text[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&text[i..i + n]);
        i += n;
    }
    out
}

/// `192.0.2.0` as `/proc/net/route` prints it (little-endian hexadecimal).
const DOC_NET_V4: &str = "000200C0";
/// `255.255.255.0` in the same form.
const DOC_MASK_V4: &str = "00FFFFFF";
const ZERO_V4: &str = "00000000";

/// Replaces the addresses of `/proc/net/route`: gateways become `0.0.0.0`, the
/// destination and mask of every route but the default one become `192.0.2.0/24`. The
/// interface, the flags, the metric and the default route are kept, as
/// [`parse_routes_v4`](crate::host::guards::parse_routes_v4) reads them.
pub fn routes_v4(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.lines().enumerate() {
        if n == 0 && line.starts_with("Iface") {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let mut f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            out.push('\n');
            continue;
        }
        let mask = f.get(7).copied().unwrap_or("");
        let default = f.get(1) == Some(&ZERO_V4) && matches!(mask, "" | ZERO_V4);
        if f.len() > 1 && !default {
            f[1] = DOC_NET_V4;
            if f.len() > 7 {
                f[7] = DOC_MASK_V4;
            }
        }
        if f.len() > 2 {
            f[2] = ZERO_V4;
        }
        out.push_str(&f.join("\t"));
        out.push('\n');
    }
    out
}

/// Maps the IPv6 addresses of one file (32 hexadecimal digits, as `/proc` prints them)
/// to documentation ones, the same address always to the same replacement, keeping what
/// the address says about itself: `::`, `::1` and multicast stay; link-local, site-local
/// and unique-local addresses keep their prefix; the rest become `2001:db8::N`.
#[derive(Default)]
struct V6Map {
    seen: HashMap<String, String>,
}

fn is_hex32(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl V6Map {
    fn map(&mut self, a: &str) -> String {
        let lower = a.to_ascii_lowercase();
        let zero = lower.bytes().all(|b| b == b'0');
        let loopback = lower == "00000000000000000000000000000001";
        if zero || loopback || lower.starts_with("ff") {
            return a.to_string();
        }
        if let Some(v) = self.seen.get(&lower) {
            return v.clone();
        }
        let n = self.seen.len() + 1;
        let top = u16::from_str_radix(&lower[..4], 16).unwrap_or(0);
        let prefix = if top & 0xffc0 == 0xfe80 {
            "fe80"
        } else if top & 0xffc0 == 0xfec0 {
            "fec0"
        } else if top & 0xfe00 == 0xfc00 {
            "fd00"
        } else {
            "20010db8"
        };
        let v = format!("{prefix}{n:0width$x}", width = 32 - prefix.len());
        // More addresses than fit after the prefix cannot happen in a file read whole
        // (the count is bounded by its size), but stay at 32 digits regardless.
        let v: String = v.chars().take(32).collect();
        self.seen.insert(lower, v.clone());
        v
    }
}

/// Replaces the addresses of `/proc/net/ipv6_route` (destination, source, next hop) by
/// documentation ones; prefix lengths, flags, the interface and whether a route is the
/// default route (`::/0`) are kept, as
/// [`parse_routes_v6`](crate::host::guards::parse_routes_v6) reads them.
pub fn routes_v6(text: &str) -> String {
    let mut m = V6Map::default();
    map_v6_lines(text, 10, &[0, 2, 4], &mut m)
}

/// Replaces the addresses of `/proc/net/if_inet6` by documentation ones; the interface
/// index, prefix length, scope, flags and name are kept, as
/// [`parse_if_inet6`](crate::host::guards::parse_if_inet6) reads them.
pub fn if_inet6(text: &str) -> String {
    let mut m = V6Map::default();
    map_v6_lines(text, 6, &[0], &mut m)
}

/// Maps the address fields of each line: the given columns of a line with `columns`
/// fields, every field that looks like an address in any other line.
fn map_v6_lines(text: &str, columns: usize, fields: &[usize], m: &mut V6Map) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let mapped: Vec<String> = f
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let field = if f.len() == columns { fields.contains(&i) } else { true };
                if field && is_hex32(s) {
                    m.map(s)
                } else {
                    s.to_string()
                }
            })
            .collect();
        out.push_str(&mapped.join(" "));
        out.push('\n');
    }
    out
}

fn is_network_source(src: &str) -> bool {
    src.starts_with("//") || (src.contains(':') && !src.starts_with("/dev/"))
}

/// Replaces the mount points of `/proc/mounts` other than [`KEPT_MOUNT_POINTS`] by
/// `/redacted/N`, and the source and options of network mounts (`server:/export`,
/// `//server/share`) by `redacted`. Devices (`/dev/nvme0n1p2`), file system types and
/// the options of local mounts are kept, as
/// [`parse_mounts`](crate::host::guards::parse_mounts) and the guards read them.
pub fn mounts(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut points: HashMap<String, String> = HashMap::new();
    for line in text.lines() {
        let mut f: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        if let Some(p) = f.get(1) {
            if !KEPT_MOUNT_POINTS.contains(&p.as_str()) {
                let n = points.len() + 1;
                let r = points.entry(p.clone()).or_insert_with(|| format!("/redacted/{n}"));
                f[1] = r.clone();
            }
        }
        if f.first().is_some_and(|s| is_network_source(s)) {
            f[0] = REDACTED.into();
            if f.len() > 3 {
                f[3] = REDACTED.into();
            }
        }
        out.push_str(&f.join(" "));
        out.push('\n');
    }
    out
}

/// Replaces the paths of swap files in `/proc/swaps` (`/home/x/swapfile`) by
/// `/redacted/swapN`; swap partitions (`/dev/...`), which the guards read, are kept.
pub fn swaps(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut n = 0;
    for (i, line) in text.lines().enumerate() {
        let mut f: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        let header = i == 0 && line.starts_with("Filename");
        if !header && f.first().is_some_and(|s| !s.starts_with("/dev/")) {
            n += 1;
            f[0] = format!("/redacted/swap{n}");
        }
        if header {
            out.push_str(line);
        } else {
            out.push_str(&f.join("\t"));
        }
        out.push('\n');
    }
    out
}

/// Zeroes the serial number of the Device Serial Number extended capability of a
/// device's config space (the 8 bytes after its header); every other byte is kept.
pub fn config(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let offsets: Vec<usize> = ConfigSpace::new(bytes)
        .extended_capabilities()
        .filter_map(Result::ok)
        .filter(|c| c.id == ext_id::DSN)
        .map(|c| c.offset as usize)
        .collect();
    for off in offsets {
        let start = (off + 4).min(out.len());
        let end = (off + 12).min(out.len());
        out[start..end].fill(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::doctor::{kernel_version, parse_cmdline, parse_memlock};
    use crate::host::guards::{
        is_on_disk, parse_if_inet6, parse_mounts, parse_routes_v4, parse_routes_v6, parse_swaps,
    };

    #[test]
    fn the_kernel_log_keeps_iommu_lines_without_host_names() {
        let log = "Jan  1 00:00:01 alice-laptop kernel: [    0.1] DMAR: IOMMU enabled\n\
                   Jan  1 00:00:01 alice-laptop kernel: [    0.2] usb 1-1: new device, SerialNumber: 1234\n\
                   Jan  1 00:00:02 alice-laptop kernel: [    0.3] DMAR-IR: Enabled IRQ remapping in x2apic mode\n\
                   AMD-Vi: Interrupt remapping enabled\n\
                   vfio-pci 0000:01:00.0: enabling device\n\
                   wlan0: associated with ssid home-network\n";
        let r = kernel_log(log);
        assert_eq!(
            r,
            "kernel: [    0.1] DMAR: IOMMU enabled\n\
             kernel: [    0.3] DMAR-IR: Enabled IRQ remapping in x2apic mode\n\
             AMD-Vi: Interrupt remapping enabled\n\
             vfio-pci 0000:01:00.0: enabling device\n"
        );
        assert!(!r.contains("alice") && !r.contains("Serial") && !r.contains("ssid"));
        assert_eq!(kernel_log(&r), r);
    }

    #[test]
    fn the_command_line_loses_disk_identifiers_only() {
        let c = "BOOT_IMAGE=/vmlinuz-6.12 root=UUID=0b6c1b4e-7d3a-4a5e-9b1e-2f0c3d4e5f60 ro \
                 resume=PARTUUID=1234abcd-02 rd.luks.uuid=luks-99aa quiet LABEL=x \
                 cryptdevice=UUID=aaaa-bbbb:cryptroot root2=\"LABEL=My Disk\" \
                 swap=/dev/disk/by-uuid/5f1e-22 intel_iommu=on iommu=pt pcie_acs_override=downstream\n";
        let r = cmdline(c);
        assert_eq!(
            r,
            "BOOT_IMAGE=/vmlinuz-6.12 root=UUID=redacted ro \
             resume=PARTUUID=redacted rd.luks.uuid=redacted quiet LABEL=redacted \
             cryptdevice=UUID=redacted:cryptroot root2=\"LABEL=redacted Disk\" \
             swap=/dev/disk/by-uuid/redacted intel_iommu=on iommu=pt pcie_acs_override=downstream\n"
        );
        assert_eq!(cmdline(&r), r);
        // What doctor reads (the parameters, by white space): as many, every one without
        // an identifier unchanged, the same facts.
        let (a, b): (Vec<&str>, Vec<&str>) =
            (c.split_whitespace().collect(), r.split_whitespace().collect());
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            if !["UUID", "LABEL", "uuid", "by-uuid"].iter().any(|k| x.contains(k)) {
                assert_eq!(x, y);
            }
        }
        assert_eq!(parse_cmdline(&r), parse_cmdline(c));
        let grub = "GRUB_CMDLINE_LINUX=\"resume=UUID=abc quiet\"\n";
        assert_eq!(cmdline(grub), "GRUB_CMDLINE_LINUX=\"resume=UUID=redacted quiet\"\n");
        assert_eq!(cmdline("UUID="), "UUID=");
        assert_eq!(cmdline("é UUID=ü"), "é UUID=redacted");
    }

    #[test]
    fn routes_keep_the_interface_and_the_default_route() {
        let v4 =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  eth0\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                  eth0\t0000A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n\
                  wg0\t00000000\t00000000\t0001\t0\t0\t0\t00000080\t0\t0\t0\n\
                  tun0\t0A0B0C0D\n";
        let r = routes_v4(v4);
        assert_eq!(parse_routes_v4(&r), parse_routes_v4(v4));
        assert!(!r.contains("A8C0") && !r.contains("0A0B0C0D"), "{r}");
        assert!(r.contains("eth0\t00000000\t00000000\t0003\t0\t0\t100\t00000000"), "{r}");
        assert!(r.contains("wg0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF"), "{r}");
        assert_eq!(routes_v4(&r), r);

        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 \
                  fe800000000000000211223344556677 00000400 00000001 00000000 00000003 ens3\n\
                  2a0104f8000000000000000000000000 40 00000000000000000000000000000000 00 \
                  00000000000000000000000000000000 00000100 00000001 00000000 00000001 ens4\n\
                  fd12345678900000000000000000abcd 80 00000000000000000000000000000000 00 \
                  00000000000000000000000000000000 00000100 00000001 00000000 00000001 ens4\n\
                  00000000000000000000000000000001 80 00000000000000000000000000000000 00 \
                  00000000000000000000000000000000 00000000 00000002 00000000 80200001 lo\n\
                  2a0104f8000000000000000000000000 short\n";
        let r = routes_v6(v6);
        assert_eq!(parse_routes_v6(&r), parse_routes_v6(v6));
        assert!(!r.contains("2a0104f8") && !r.contains("0211223344") && !r.contains("fd1234"));
        assert!(r.contains("fe800000000000000000000000000001 00000400"), "{r}");
        assert!(r.contains("20010db8000000000000000000000002 40"), "{r}");
        assert!(r.contains("fd000000000000000000000000000003 80"), "{r}");
        // The same address maps to the same replacement.
        assert!(r.ends_with("20010db8000000000000000000000002 short\n"), "{r}");

        let addrs = "2a0104f8000000000000000000000002 03 40 00 80 ens5\n\
                     fe800000000000000211223344556677 03 40 20 80 ens6\n\
                     00000000000000000000000000000001 01 80 10 80 lo\n";
        let r = if_inet6(addrs);
        assert_eq!(parse_if_inet6(&r), parse_if_inet6(addrs));
        assert_eq!(
            r,
            "20010db8000000000000000000000001 03 40 00 80 ens5\n\
             fe800000000000000000000000000002 03 40 20 80 ens6\n\
             00000000000000000000000000000001 01 80 10 80 lo\n"
        );
    }

    #[test]
    fn mounts_and_swaps_keep_devices_and_system_mount_points() {
        let m = "/dev/nvme0n1p2 / ext4 rw,relatime 0 0\n\
                 /dev/nvme0n1p1 /boot/efi vfat rw 0 0\n\
                 /dev/sdb1 /media/alice/Holiday\\040Photos ext4 rw 0 0\n\
                 nas.example.com:/export/alice /home/alice/nas nfs4 rw,addr=10.1.2.3 0 0\n\
                 //fileserver/share /mnt/share cifs rw,username=alice 0 0\n\
                 proc /proc proc rw 0 0\n\
                 /dev/sdb2 /media/alice/Holiday\\040Photos ext4 rw 0 0\n";
        let r = mounts(m);
        let (a, b) = (parse_mounts(m), parse_mounts(&r));
        assert_eq!(a.len(), b.len());
        for ((s1, d1), (s2, d2)) in a.iter().zip(&b) {
            if s1.starts_with("/dev/") {
                assert_eq!(s1, s2);
            }
            assert_eq!(KEPT_MOUNT_POINTS.contains(&d1.as_str()), d1 == d2);
        }
        assert!(!r.contains("alice") && !r.contains("example") && !r.contains("10.1.2.3"));
        assert!(r.contains("/dev/sdb1 /redacted/1 ext4") && r.contains("/dev/sdb2 /redacted/1"));
        assert!(r.contains("redacted /redacted/2 nfs4 redacted 0 0"), "{r}");
        for blk in ["nvme0n1", "sdb"] {
            let on = |t: &str| parse_mounts(t).iter().filter(|(s, _)| is_on_disk(s, blk)).count();
            assert_eq!(on(m), on(&r));
        }
        let s = "Filename\tType\tSize\tUsed\tPriority\n/dev/sda2 partition 1 0 -2\n\
                 /home/alice/swapfile file 4 0 -3\n";
        let r = swaps(s);
        assert_eq!(parse_swaps(&r), vec!["/dev/sda2".to_string(), "/redacted/swap1".into()]);
        assert!(!r.contains("alice"));
    }

    #[test]
    fn config_space_loses_the_device_serial_number_only() {
        let mut cs = vec![0u8; 4096];
        cs[0..4].copy_from_slice(&[0x86, 0x80, 0xc9, 0x10]);
        // DSN at 0x100 (id 3, version 1, next 0), serial 0x0123456789abcdef.
        cs[0x100..0x104].copy_from_slice(&0x0001_0003u32.to_le_bytes());
        cs[0x104..0x10c].copy_from_slice(&0x0123_4567_89ab_cdefu64.to_le_bytes());
        let r = config(&cs);
        assert_eq!(&r[0x104..0x10c], &[0; 8]);
        assert_eq!(&r[..0x104], &cs[..0x104]);
        assert_eq!(&r[0x10c..], &cs[0x10c..]);
        // A short (unprivileged) read has no extended space: unchanged.
        assert_eq!(config(&cs[..64]), cs[..64].to_vec());
        // Not texts the doctor reads, but the parsers it uses are untouched by design.
        assert_eq!(kernel_version("6.12.0"), Some((6, 12)));
        assert_eq!(parse_memlock("Max locked memory unlimited unlimited bytes"), Some(None));
    }
}
