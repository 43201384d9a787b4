//! Why the host itself needs a device: the guards of `bind`, `persist` and `sriov`.
//!
//! A device is in use when it is the boot display, a bridge, a network interface with
//! routes or addresses (IPv4 or IPv6), or a block device with mounted filesystems, swap
//! or holders (LVM, RAID, dm-crypt). The readers of `/proc` files are pure functions over
//! text, fuzzed like every other parser.

use std::path::Path;

use crate::hostfs::HostFs;
use crate::hostfs::SysfsDevice;
use crate::pci::PciAddress;

/// A route of `/proc/net/route` (IPv4): interface and whether it is the default route.
pub fn parse_routes_v4(text: &str) -> Vec<(String, bool)> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (ifname, dest) = (f.next()?, f.next()?);
            let mask = f.nth(5).unwrap_or("");
            Some((ifname.to_string(), dest == "00000000" && matches!(mask, "" | "00000000")))
        })
        .collect()
}

/// A route of `/proc/net/ipv6_route`: interface and whether it is a default route
/// (`::/0`). Unreachable and loopback routes (`lo`) are left out.
pub fn parse_routes_v6(text: &str) -> Vec<(String, bool)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() != 10 || f[9] == "lo" {
                return None;
            }
            let default = f[0].bytes().all(|b| b == b'0') && f[1] == "00";
            Some((f[9].to_string(), default))
        })
        .collect()
}

/// The interfaces of `/proc/net/if_inet6` that have a global or site address (scope
/// `00`/`40`); link-local addresses, present on every interface that is up, do not count.
pub fn parse_if_inet6(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 6 && matches!(f[3], "00" | "40")).then(|| f[5].to_string())
        })
        .collect()
}

/// The (source, mount point) pairs of `/proc/mounts`.
pub fn parse_mounts(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_string(), f.next()?.to_string()))
        })
        .collect()
}

/// The swap areas of `/proc/swaps` (the first column, after the header).
pub fn parse_swaps(text: &str) -> Vec<String> {
    text.lines().skip(1).filter_map(|l| l.split_whitespace().next().map(str::to_string)).collect()
}

/// Whether a device node path (`/dev/nvme0n1p2`) is the disk `blk` or one of its
/// partitions (`nvme0n1` -> `nvme0n1p2`, `sda` -> `sda1`; not `nvme0n10`).
pub fn is_on_disk(source: &str, blk: &str) -> bool {
    let Some(rest) = source.strip_prefix("/dev/").and_then(|s| s.strip_prefix(blk)) else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    let digits_only = rest.bytes().all(|b| b.is_ascii_digit());
    let ends_in_digit = blk.bytes().last().is_some_and(|b| b.is_ascii_digit());
    match rest.strip_prefix('p') {
        Some(n) if ends_in_digit => !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()),
        _ => !ends_in_digit && digits_only,
    }
}

fn read(fs: &dyn HostFs, p: &str) -> String {
    fs.read_string(Path::new(p)).unwrap_or_default()
}

/// Why the host needs a device (empty when it does not).
pub fn host_uses(fs: &dyn HostFs, a: PciAddress) -> Vec<String> {
    let dev = SysfsDevice::new(fs, a);
    let mut why = vec![];
    if dev.boot_vga() {
        why.push("it is the boot display (boot_vga is 1); the host console would go dark".into());
    }
    let nets = dev.class_members("/sys/class/net");
    if !nets.is_empty() {
        let mut routes = parse_routes_v4(&read(fs, "/proc/net/route"));
        routes.extend(parse_routes_v6(&read(fs, "/proc/net/ipv6_route")));
        let v6 = parse_if_inet6(&read(fs, "/proc/net/if_inet6"));
        for ifname in &nets {
            let mine: Vec<bool> =
                routes.iter().filter(|(i, _)| i == ifname).map(|(_, d)| *d).collect();
            if mine.contains(&true) {
                why.push(format!("network interface {ifname} carries the default route"));
            } else if !mine.is_empty() || v6.contains(ifname) {
                why.push(format!("network interface {ifname} has an address (it has routes)"));
            }
        }
    }
    let blocks = dev.class_members("/sys/block");
    if !blocks.is_empty() {
        let mounts = parse_mounts(&read(fs, "/proc/mounts"));
        let swaps = parse_swaps(&read(fs, "/proc/swaps"));
        for blk in &blocks {
            let used: Vec<String> = mounts
                .iter()
                .filter(|(src, _)| is_on_disk(src, blk))
                .map(|(src, dst)| format!("{src} on {dst}"))
                .collect();
            if !used.is_empty() {
                why.push(format!(
                    "block device {blk} has mounted filesystems ({})",
                    used.join(", ")
                ));
            }
            let swap: Vec<&String> = swaps.iter().filter(|s| is_on_disk(s, blk)).collect();
            if !swap.is_empty() {
                let s: Vec<&str> = swap.iter().map(|s| s.as_str()).collect();
                why.push(format!("block device {blk} holds active swap ({})", s.join(", ")));
            }
            let holders =
                fs.read_dir(&Path::new("/sys/block").join(blk).join("holders")).unwrap_or_default();
            if !holders.is_empty() {
                why.push(format!("block device {blk} is held by {}", holders.join(", ")));
            }
        }
    }
    why
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_routes_addresses_mounts_and_swaps() {
        let v4 = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
                  eth0\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000\n\
                  eth1\t0000A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\n";
        assert_eq!(parse_routes_v4(v4), vec![("eth0".into(), true), ("eth1".into(), false)]);
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 \
                  fe800000000000000000000000000001 00000400 00000001 00000000 00000003 ens3\n\
                  20010db8000000000000000000000000 40 00000000000000000000000000000000 00 \
                  00000000000000000000000000000000 00000100 00000001 00000000 00000001 ens4\n\
                  00000000000000000000000000000001 80 00000000000000000000000000000000 00 \
                  00000000000000000000000000000000 00000000 00000002 00000000 80200001 lo\n";
        assert_eq!(parse_routes_v6(v6), vec![("ens3".into(), true), ("ens4".into(), false)]);
        let addrs = "20010db8000000000000000000000002 03 40 00 80 ens5\n\
                     fe800000000000000000000000000002 03 40 20 80 ens6\n";
        assert_eq!(parse_if_inet6(addrs), vec!["ens5".to_string()]);
        assert_eq!(
            parse_swaps("Filename Type Size Used Priority\n/dev/sda2 partition 1 0 -2\n"),
            vec!["/dev/sda2".to_string()]
        );
        assert_eq!(parse_mounts("/dev/sda1 / ext4 rw 0 0\nbad\n").len(), 1);
    }

    #[test]
    fn partitions_belong_to_their_disk_only() {
        assert!(is_on_disk("/dev/nvme0n1p2", "nvme0n1"));
        assert!(is_on_disk("/dev/nvme0n1", "nvme0n1"));
        assert!(!is_on_disk("/dev/nvme0n10", "nvme0n1"));
        assert!(!is_on_disk("/dev/nvme0n10p1", "nvme0n1"));
        assert!(is_on_disk("/dev/sda1", "sda"));
        assert!(!is_on_disk("/dev/sdaa1", "sda"));
        assert!(!is_on_disk("/dev/mapper/root", "sda"));
    }
}
