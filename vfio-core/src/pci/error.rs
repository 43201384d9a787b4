//! The decoders' error: input that does not parse. It knows nothing of the kernel or the
//! host; the object layer turns it into [`crate::Error::Invalid`] with `From`, with the
//! same message.

/// Input a decoder refused (an address, a config-space image, a sysfs `resource` line):
/// what it is, the input as given, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {input:?}: {reason}")]
pub struct DecodeError {
    /// What kind of input ("PCI address", "config space image", ...).
    pub what: &'static str,
    /// The input as given.
    pub input: String,
    /// Why it was refused, and what was expected.
    pub reason: String,
}
