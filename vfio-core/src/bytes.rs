//! Fixed-width readers over byte slices for the decoders: each returns `None` when the
//! value does not fit in the slice, so a short or hostile buffer never panics.
//!
//! PCI config space and option ROMs are little-endian (`le_*`); the VFIO info structs a
//! kernel returns are in the host's byte order (`ne_*`).

/// The `N` bytes at `off`, if they fit.
pub(crate) fn array<const N: usize>(buf: &[u8], off: usize) -> Option<[u8; N]> {
    buf.get(off..off.checked_add(N)?)?.try_into().ok()
}

/// The little-endian u16 at `off`.
pub(crate) fn le_u16(buf: &[u8], off: usize) -> Option<u16> {
    array(buf, off).map(u16::from_le_bytes)
}

/// The little-endian u32 at `off`.
pub(crate) fn le_u32(buf: &[u8], off: usize) -> Option<u32> {
    array(buf, off).map(u32::from_le_bytes)
}

/// The host-order u16 at `off`.
pub(crate) fn ne_u16(buf: &[u8], off: usize) -> Option<u16> {
    array(buf, off).map(u16::from_ne_bytes)
}

/// The host-order u32 at `off`.
pub(crate) fn ne_u32(buf: &[u8], off: usize) -> Option<u32> {
    array(buf, off).map(u32::from_ne_bytes)
}

/// The host-order u64 at `off`.
pub(crate) fn ne_u64(buf: &[u8], off: usize) -> Option<u64> {
    array(buf, off).map(u64::from_ne_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_inside_and_refuses_outside() {
        let b = [0x01, 0x02, 0x03, 0x04, 0x05];
        assert_eq!(le_u16(&b, 0), Some(0x0201));
        assert_eq!(le_u32(&b, 1), Some(0x0504_0302));
        assert_eq!(le_u32(&b, 2), None);
        assert_eq!(le_u16(&b, usize::MAX), None);
        assert_eq!(ne_u16(&b, 3), Some(u16::from_ne_bytes([0x04, 0x05])));
        assert_eq!(ne_u64(&b, 0), None);
    }
}
