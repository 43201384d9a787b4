//! The host facts procfs, `/sys/module` and the kernel log show: `/proc/cmdline`,
//! `/proc/mounts`, `/proc/net/route`, `/proc/self/limits`,
//! `/proc/sys/kernel/osrelease`, other processes' `/proc/PID`; the loaded modules with
//! their parameters (writable), and `modprobe`; `/var/log/kern.log`.

use std::collections::BTreeSet;
use std::io;
use std::path::Path;

use super::{dir, files, rw, text, word, Attr, Lookup, Node};
use crate::mock::HostState;

/// What a write to a module attribute does.
pub(super) enum Ctl {
    /// `/sys/module/M/parameters/P`.
    Param(String, String),
}

/// The module a driver is in (`vfio-pci` is in `vfio_pci`).
pub(super) fn module_of(driver: &str) -> String {
    driver.replace('-', "_")
}

impl HostState {
    /// Whether a module is loaded (or built in, as the driver of some device).
    pub(super) fn module_loaded(&self, module: &str) -> bool {
        self.sys.modules.contains(module)
            || self
                .devices
                .values()
                .any(|d| d.driver.as_deref().map(module_of).as_deref() == Some(module))
    }
}

/// `/sys/module`, `/proc` and `/var/log/kern.log`.
pub(super) fn node(st: &HostState, parts: &[&str]) -> Lookup {
    match parts {
        ["sys", "module", rest @ ..] => Some(module_node(st, rest)),
        ["proc", rest @ ..] => proc_node(st, rest),
        ["var", rest @ ..] => log_node(st, rest),
        _ => None,
    }
}

/// `/sys/module/rest`.
fn module_node(st: &HostState, rest: &[&str]) -> Option<Node> {
    let [m, rest @ ..] = rest else {
        let mut v: BTreeSet<String> = st.sys.modules.clone();
        v.extend(st.devices.values().filter_map(|d| d.driver.as_deref().map(module_of)));
        return Some(Node::Dir(v.into_iter().collect()));
    };
    if !st.module_loaded(m) {
        return None;
    }
    let params: Vec<String> =
        st.sys.module_params.keys().filter(|(mm, _)| mm == m).map(|(_, p)| p.clone()).collect();
    match rest {
        [] => Some(dir(&["parameters", "refcnt"])),
        ["refcnt"] => Some(text("0")),
        ["parameters"] => Some(Node::Dir(params)),
        ["parameters", p] if params.iter().any(|x| x == p) => {
            let v = &st.sys.module_params[&(m.to_string(), p.to_string())];
            Some(rw(v, Ctl::Param(m.to_string(), p.to_string())))
        }
        _ => None,
    }
}

/// `/proc/rest`.
fn proc_node(st: &HostState, rest: &[&str]) -> Lookup {
    Some(match rest {
        [] => Some(dir(&["cmdline", "mounts", "net", "self", "sys"])),
        ["self"] => Some(dir(&["limits"])),
        ["self", "limits"] => {
            let v = st.sys.memlock.map_or("unlimited".to_string(), |v| v.to_string());
            Some(text(format!(
                "Limit                     Soft Limit           Hard Limit           Units     \n\
                 Max locked memory         {v:<20} {v:<20} bytes     "
            )))
        }
        ["cmdline"] => Some(text(&st.sys.cmdline)),
        ["mounts"] => Some(Node::File(
            Attr::Text(st.sys.mounts.iter().map(|l| format!("{l}\n")).collect()),
            0o444,
        )),
        ["net"] => Some(dir(&["route"])),
        ["net", "route"] => Some(Node::File(Attr::Text(routes(st)), 0o444)),
        [pid] if pid.parse().is_ok_and(|p: u32| st.sys.processes.contains(&p)) => Some(dir(&[])),
        ["sys"] => Some(dir(&["kernel"])),
        ["sys", "kernel"] => Some(dir(&["osrelease"])),
        ["sys", "kernel", "osrelease"] => Some(text(&st.sys.kernel_release)),
        _ => return None,
    })
}

/// `/proc/net/route`: the default route and one route per address of each interface.
fn routes(st: &HostState) -> String {
    let mut s =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
            .to_string();
    for n in &st.sys.nets {
        if n.default_route {
            s += &format!("{}\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n", n.name);
        }
        for _ in &n.ipv4 {
            s += &format!("{}\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n", n.name);
        }
    }
    s
}

/// `/var/rest`: the kernel log among the plain files, while there is one.
fn log_node(st: &HostState, rest: &[&str]) -> Lookup {
    let log = st.sys.kernel_log.as_ref();
    Some(match rest {
        [] | ["log"] if log.is_some() => {
            let here = if rest.is_empty() { "/var" } else { "/var/log" };
            let mut v = match files::plain(st, Path::new(here)) {
                Some(Node::Dir(v)) => v,
                _ => vec![],
            };
            v.push(if rest.is_empty() { "log".into() } else { "kern.log".into() });
            v.sort();
            v.dedup();
            Some(Node::Dir(v))
        }
        ["log", "kern.log"] => log.map(|l| Node::File(Attr::Text(l.clone()), 0o640)),
        _ => return None,
    })
}

pub(super) fn store(st: &mut HostState, ctl: Ctl, data: &[u8]) -> io::Result<()> {
    match ctl {
        Ctl::Param(m, p) => {
            st.sys.module_params.insert((m, p), word(data));
            Ok(())
        }
    }
}

/// `modprobe MODULE`: loads an available module (`vfio-pci` brings the VFIO modules).
pub(super) fn modprobe(st: &mut HostState, module: &str) -> io::Result<()> {
    let m = module_of(module);
    if !st.sys.available_modules.contains(&m) && !st.sys.modules.contains(&m) {
        return Err(io::Error::other(format!("modprobe: FATAL: Module {module} not found")));
    }
    if m == "vfio_pci" {
        st.sys.load_vfio();
    }
    st.sys.modules.insert(m);
    Ok(())
}
