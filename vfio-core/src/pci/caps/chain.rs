//! Walking the two capability chains of a config-space image, bounded and loop-proof.

use super::{id, RawCapability, EXT_CAP_START, HEADER_SIZE};
use crate::pci::header::capabilities_pointer;
use crate::pci::space::{ConfigSpace, Diagnostic, DiagnosticKind};

impl<'a> ConfigSpace<'a> {
    /// The standard capability chain.
    pub fn capabilities(&self) -> Capabilities<'a> {
        Capabilities::new(*self)
    }

    /// The extended capability chain: whatever chain the bytes from 0x100 hold (empty for
    /// images of 256 bytes or less). Only PCI Express and PCI-X functions have extended
    /// config space: see [`ConfigSpace::has_extended_space`], which the full decode checks.
    pub fn extended_capabilities(&self) -> ExtendedCapabilities<'a> {
        ExtendedCapabilities::new(*self)
    }

    /// Whether the function can have extended config space (0x100-0xfff): the image goes
    /// past 0x100 and the standard chain has a PCI Express or PCI-X capability. A
    /// conventional function has none, whatever the bytes above 0x100 read (a device that
    /// ignores the upper address bits repeats its header there); lspci shows none either.
    pub fn has_extended_space(&self) -> bool {
        self.len() >= usize::from(EXT_CAP_START) + 4
            && self
                .capabilities()
                .filter_map(Result::ok)
                .any(|c| c.id == u16::from(id::PCIE) || c.id == u16::from(id::PCIX))
    }

    /// The first standard capability with this id.
    pub fn find_capability(&self, id: u8) -> Option<RawCapability> {
        self.capabilities().filter_map(Result::ok).find(|c| c.id == u16::from(id))
    }

    /// The first extended capability with this id.
    pub fn find_extended_capability(&self, id: u16) -> Option<RawCapability> {
        self.extended_capabilities().filter_map(Result::ok).find(|c| c.id == id)
    }
}

/// Visited offsets, one bit per dword of a 4 KiB config space.
#[derive(Debug, Clone, Default)]
struct Seen([u64; 16]);

impl Seen {
    /// Marks `off`; returns whether it was marked before.
    fn visit(&mut self, off: u16) -> bool {
        let dw = usize::from(off / 4) & 0x3ff;
        let (w, b) = (dw / 64, dw % 64);
        let before = self.0[w] & (1 << b) != 0;
        self.0[w] |= 1 << b;
        before
    }
}

/// Where a walk along one chain is.
#[derive(Debug, Clone)]
struct Walk<'a> {
    cs: ConfigSpace<'a>,
    next: u16,
    prev: Option<u16>,
    seen: Seen,
    done: bool,
    /// The offset a damage before the first capability is reported at: the capabilities
    /// pointer (0x34, 0x14 on a CardBus bridge), or the extended chain's start.
    origin: u16,
}

impl Walk<'_> {
    /// Ends the walk with a diagnostic at the last capability read.
    fn fail(
        &mut self,
        kind: DiagnosticKind,
        message: String,
    ) -> Option<Result<RawCapability, Diagnostic>> {
        self.done = true;
        let offset = Some(self.prev.unwrap_or(self.origin));
        Some(Err(Diagnostic { kind, offset, message }))
    }
}

/// Iterator over the standard capability chain. Items are capabilities, or one final
/// diagnostic when the chain is damaged. Built by [`ConfigSpace::capabilities`].
#[derive(Debug, Clone)]
pub struct Capabilities<'a>(Walk<'a>);

impl<'a> Capabilities<'a> {
    fn new(cs: ConfigSpace<'a>) -> Self {
        let origin = capabilities_pointer(cs.read_u8(0x0e).unwrap_or(0));
        let mut walk = Walk { cs, next: 0, prev: None, seen: Seen::default(), done: true, origin };
        let has_list = cs.read_u16(0x06).map(|s| s & (1 << 4) != 0).unwrap_or(false);
        if let (true, Some(p)) = (has_list, cs.read_u8(origin)) {
            walk.next = u16::from(p & !3);
            walk.done = walk.next == 0;
        }
        Capabilities(walk)
    }
}

impl Iterator for Capabilities<'_> {
    type Item = Result<RawCapability, Diagnostic>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next_standard()
    }
}

impl Walk<'_> {
    /// The next item of the standard chain.
    fn next_standard(&mut self) -> Option<Result<RawCapability, Diagnostic>> {
        if self.done {
            return None;
        }
        let ptr = self.next;
        let from = match self.prev {
            Some(p) => format!("capability at {p:#04x}"),
            None => format!("capabilities pointer ({:#04x})", self.origin),
        };
        if ptr < HEADER_SIZE {
            return self.fail(
                DiagnosticKind::PointerIntoHeader,
                format!("{from} points to {ptr:#04x}, inside the 64-byte header; chain ends here"),
            );
        }
        if usize::from(ptr) + 2 > self.cs.len() {
            let kind = if self.cs.len() < 256 {
                DiagnosticKind::Truncated
            } else {
                DiagnosticKind::PointerOutOfRange
            };
            return self.fail(
                kind,
                format!(
                    "{from} points to {ptr:#04x}, beyond the {} bytes of the image{}",
                    self.cs.len(),
                    if self.cs.len() < 256 {
                        " (sysfs gives only 64 bytes to non-root readers: run as root)"
                    } else {
                        ""
                    }
                ),
            );
        }
        if self.seen.visit(ptr) {
            return self.fail(
                DiagnosticKind::Loop,
                format!("{from} points back to {ptr:#04x}, already visited: the chain loops"),
            );
        }
        let id = self.cs.read_u8(ptr).unwrap_or(0xff);
        if id == 0xff {
            return self.fail(
                DiagnosticKind::InvalidId,
                format!(
                    "capability at {ptr:#04x} has id 0xff (the device reads as all ones: \
                     powered down, in reset or gone); chain ends here"
                ),
            );
        }
        let next = u16::from(self.cs.read_u8(ptr + 1).unwrap_or(0) & !3);
        self.prev = Some(ptr);
        self.next = next;
        self.done = next == 0;
        Some(Ok(RawCapability {
            offset: ptr,
            id: u16::from(id),
            version: 0,
            next,
            extended: false,
        }))
    }
}

/// Iterator over the extended capability chain from 0x100. Items are capabilities, or
/// one final diagnostic when the chain is damaged. Built by
/// [`ConfigSpace::extended_capabilities`].
#[derive(Debug, Clone)]
pub struct ExtendedCapabilities<'a>(Walk<'a>);

impl<'a> ExtendedCapabilities<'a> {
    fn new(cs: ConfigSpace<'a>) -> Self {
        let done = cs.len() < usize::from(EXT_CAP_START) + 4;
        let next = EXT_CAP_START;
        let seen = Seen::default();
        ExtendedCapabilities(Walk { cs, next, prev: None, seen, done, origin: EXT_CAP_START })
    }
}

impl Iterator for ExtendedCapabilities<'_> {
    type Item = Result<RawCapability, Diagnostic>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next_extended()
    }
}

impl Walk<'_> {
    /// The next item of the extended chain.
    fn next_extended(&mut self) -> Option<Result<RawCapability, Diagnostic>> {
        if self.done {
            return None;
        }
        let ptr = self.next;
        let from = match self.prev {
            Some(p) => format!("extended capability at {p:#05x}"),
            None => "extended chain start".to_string(),
        };
        if ptr < EXT_CAP_START {
            return self.fail(
                DiagnosticKind::PointerIntoHeader,
                format!(
                    "{from} points to {ptr:#05x}, inside the standard 256-byte space; chain ends here"
                ),
            );
        }
        if usize::from(ptr) + 4 > self.cs.len() {
            return self.fail(
                if self.cs.len() < 4096 {
                    DiagnosticKind::Truncated
                } else {
                    DiagnosticKind::PointerOutOfRange
                },
                format!(
                    "{from} points to {ptr:#05x}, beyond the {} bytes of the image",
                    self.cs.len()
                ),
            );
        }
        let header = self.cs.read_u32(ptr).unwrap_or(u32::MAX);
        if header == 0 && self.prev.is_none() {
            self.done = true;
            return None;
        }
        if header == u32::MAX {
            if self.prev.is_none() && self.cs.find_capability(id::PCIE).is_none() {
                // Conventional PCI device read through an ECAM window: nothing there.
                self.done = true;
                return None;
            }
            return self.fail(
                DiagnosticKind::BrokenHeader,
                format!(
                    "extended capability header at {ptr:#05x} reads 0xffffffff (extended config \
                     space not accessible, or the device stopped answering); chain ends here"
                ),
            );
        }
        if self.seen.visit(ptr) {
            return self.fail(
                DiagnosticKind::Loop,
                format!("{from} points back to {ptr:#05x}, already visited: the chain loops"),
            );
        }
        let id = (header & 0xffff) as u16;
        let version = ((header >> 16) & 0xf) as u8;
        let next = ((header >> 20) & !3) as u16;
        self.prev = Some(ptr);
        self.next = next;
        self.done = next == 0;
        Some(Ok(RawCapability { offset: ptr, id, version, next, extended: true }))
    }
}
