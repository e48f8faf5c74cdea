//! Typed errors. Every rejection of a package names what was wrong, so a CLI can print a
//! one-line cause and a device can map it to a cloud failure code.

use core::fmt;

/// Why a package (or a key) was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Fewer bytes than the named structure needs.
    Truncated { what: &'static str },
    /// The named magic number is wrong: this is not an otapack package.
    BadMagic { what: &'static str },
    /// The container format version is not one this reader implements.
    UnsupportedVersion(u16),
    /// A field holds a value the format forbids (reserved bits set, out of range, ...).
    Malformed { what: &'static str },
    /// A length or count disagrees with what the rest of the package implies.
    LengthMismatch {
        what: &'static str,
        expected: u64,
        actual: u64,
    },
    /// A manifest field marked critical that this reader does not know.
    UnknownCriticalField(u16),
    /// A slice method code this reader does not know.
    UnknownMethod(u8),
    /// A known slice method that the package kind does not allow.
    MethodNotAllowed { slice: u32, method: u8 },
    /// A package kind code this reader does not know or does not implement.
    UnsupportedKind(u8),
    /// Two signatures from the same key.
    DuplicateSignature,
    /// The trailer's MD5 does not match the bytes before it.
    Md5Mismatch,
    /// The SHA-256 of a slice payload does not match its record.
    PayloadDigest { slice: u32 },
    /// The SHA-256 of a decoded slice does not match its record.
    SliceDigest { slice: u32 },
    /// The SHA-256 of the whole decoded image does not match the manifest.
    ImageDigest,
    /// A slice payload could not be decoded (corrupt or oversized stream).
    Decode { slice: u32 },
    /// A zstd frame asks for a larger window than the manifest declares.
    WindowTooLarge { slice: u32 },
    /// This reader was built without the codec the slice needs.
    CodecUnavailable { slice: u32 },
    /// A caller-provided buffer is smaller than needed.
    BufferTooSmall { needed: u64 },
    /// A signature from a trusted key does not verify: the package was altered or mis-signed.
    BadSignature { key_id: [u8; 32] },
    /// A signature names a trusted key but a different algorithm than that key has.
    AlgorithmMismatch { key_id: [u8; 32] },
    /// The package carries no signature at all.
    Unsigned,
    /// No signature from a trusted key (or fewer than the policy requires).
    NotEnoughTrustedSignatures { required: u8, found: u8 },
    /// A public key could not be used (malformed, unsupported algorithm or size).
    BadKey { what: &'static str },
    /// The caller's output sink failed (flash write, file write); the cause is the caller's.
    Output,
    /// A delta package was given no base image.
    BaseRequired,
    /// The base image's size or SHA-256 differs from what the manifest names.
    BaseMismatch,
    /// Reading the base image failed.
    BaseRead,
    /// The destination slot is smaller than the image (or than the flash's address range).
    SlotTooSmall,
    /// What was read back from flash after writing differs from what was written.
    Readback { offset: u64 },
    /// The update-state flash region is too small or its geometry is unsupported.
    StateLayout,
    /// Reading, erasing or programming the update-state region failed.
    StateFlash,
    /// The package lists hardware versions and the device's is not one of them.
    WrongHardware,
    /// The package's software type is not the device's.
    WrongSoftwareType,
    /// The package's security counter is below the one the device stores (a rollback).
    Rollback { package: u64, device: u64 },
    /// The package expired (by the device's trusted clock).
    Expired { expires: u64, now: u64 },
    /// The operation does not fit the update state (nothing to confirm, another update in
    /// progress, a package different from the one being resumed).
    WrongState { what: &'static str },
    /// An in-place delta slice reads base bytes outside its read window: bytes that slices
    /// applied before it have already overwritten (a copy range, checked at parse, or a patch
    /// read, checked while decoding).
    ReadOutsideWindow { slice: u32 },
    /// The allocator could not provide the zstd decoder's buffers (`ram::zstd_heap` bytes).
    OutOfMemory { needed: u64 },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Error::*;
        match self {
            Truncated { what } => write!(f, "truncated: {what} is cut short"),
            BadMagic { what } => write!(f, "not an otapack package: bad {what} magic"),
            UnsupportedVersion(v) => write!(f, "unsupported container format version {v}"),
            Malformed { what } => write!(f, "malformed package: {what}"),
            LengthMismatch {
                what,
                expected,
                actual,
            } => {
                write!(
                    f,
                    "length mismatch: {what} is {actual}, expected {expected}"
                )
            }
            UnknownCriticalField(t) => write!(f, "unknown critical manifest field 0x{t:04x}"),
            UnknownMethod(m) => write!(f, "unknown slice method {m}"),
            MethodNotAllowed { slice, method } => {
                write!(
                    f,
                    "slice {slice}: method {method} is not allowed in this package kind"
                )
            }
            UnsupportedKind(k) => write!(f, "unsupported package kind {k}"),
            DuplicateSignature => write!(f, "two signatures carry the same key id"),
            Md5Mismatch => write!(f, "trailer MD5 does not match the package bytes"),
            PayloadDigest { slice } => write!(f, "slice {slice}: payload SHA-256 mismatch"),
            SliceDigest { slice } => write!(f, "slice {slice}: decoded data SHA-256 mismatch"),
            ImageDigest => write!(f, "decoded image SHA-256 does not match the manifest"),
            Decode { slice } => write!(f, "slice {slice}: payload does not decode"),
            WindowTooLarge { slice } => {
                write!(
                    f,
                    "slice {slice}: zstd window larger than the manifest allows"
                )
            }
            CodecUnavailable { slice } => {
                write!(f, "slice {slice}: this build has no decoder for its codec")
            }
            BufferTooSmall { needed } => write!(f, "buffer too small: {needed} bytes needed"),
            BadSignature { key_id } => {
                write!(f, "signature by trusted key ")?;
                write_hex(f, key_id)?;
                write!(f, " does not verify")
            }
            AlgorithmMismatch { key_id } => {
                write!(f, "signature names trusted key ")?;
                write_hex(f, key_id)?;
                write!(f, " with an algorithm that key does not use")
            }
            Unsigned => write!(f, "package is not signed"),
            NotEnoughTrustedSignatures { required, found } => write!(
                f,
                "{found} valid signature(s) from trusted keys, {required} required"
            ),
            BadKey { what } => write!(f, "unusable key: {what}"),
            Output => write!(f, "writing the output failed"),
            BaseRequired => write!(f, "delta package: the base image it applies to is needed"),
            BaseMismatch => write!(
                f,
                "the base image is not the one this delta package applies to"
            ),
            BaseRead => write!(f, "reading the base image failed"),
            SlotTooSmall => write!(f, "the destination slot is too small for the image"),
            Readback { offset } => write!(
                f,
                "flash read back at image offset {offset} differs from what was written"
            ),
            StateLayout => write!(f, "update-state region: unsupported size or geometry"),
            StateFlash => write!(f, "update-state region: flash operation failed"),
            WrongHardware => write!(f, "the package is not for this hardware version"),
            WrongSoftwareType => write!(f, "the package is not for this software type"),
            Rollback { package, device } => write!(
                f,
                "security counter {package} is below the device's {device} (rollback refused)"
            ),
            Expired { expires, now } => {
                write!(f, "the package expired at {expires} (device time {now})")
            }
            WrongState { what } => write!(f, "update state: {what}"),
            ReadOutsideWindow { slice } => write!(
                f,
                "slice {slice}: reads base bytes outside its in-place read window"
            ),
            OutOfMemory { needed } => write!(
                f,
                "out of memory: the zstd decoder needs {needed} bytes of heap"
            ),
        }
    }
}

/// Writes bytes as lowercase hex.
pub fn write_hex(f: &mut dyn fmt::Write, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

impl Error {
    /// The failure code AliOS Things, iotkit and EnOS style OTA services expect a device to
    /// report: -1 upgrade failed, -2 download failed, -3 verification failed, -4 flash write
    /// failed.
    pub fn report_code(&self) -> i8 {
        use Error::*;
        match self {
            Truncated { .. } => -2,
            BadMagic { .. }
            | UnsupportedVersion(_)
            | Malformed { .. }
            | LengthMismatch { .. }
            | UnknownCriticalField(_)
            | UnknownMethod(_)
            | MethodNotAllowed { .. }
            | DuplicateSignature
            | Md5Mismatch
            | PayloadDigest { .. }
            | SliceDigest { .. }
            | ImageDigest
            | Decode { .. }
            | WindowTooLarge { .. }
            | BadSignature { .. }
            | AlgorithmMismatch { .. }
            | Unsigned
            | NotEnoughTrustedSignatures { .. }
            | BaseMismatch
            | ReadOutsideWindow { .. } => -3,
            Output | SlotTooSmall | Readback { .. } | StateFlash => -4,
            _ => -1,
        }
    }
}

impl core::error::Error for Error {}

pub type Result<T> = core::result::Result<T, Error>;
