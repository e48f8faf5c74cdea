//! Device policy: what a device checks in an authenticated manifest before it writes anything.
//!
//! | check            | refused when                                                         | error |
//! |------------------|----------------------------------------------------------------------|-------|
//! | hardware version | the device names its hardware version, the manifest lists at least one, and none is byte-equal to the device's | [`Error::WrongHardware`] |
//! | software type    | the device names its software type and the manifest's differs or is absent | [`Error::WrongSoftwareType`] |
//! | anti-rollback    | the manifest's `security_counter` < the counter the device stores     | [`Error::Rollback`] |
//! | expiry           | the device has a trusted clock (`now`), the manifest expires (≠ 0) and `now >= expires` | [`Error::Expired`] |
//!
//! A manifest that lists no hardware version is meant for any hardware. The stored counter
//! only moves up when an update is confirmed good (see [`crate::session`]): a package with an
//! equal counter is accepted (a re-install or a bug-fix release that does not close a hole).

use crate::error::{Error, Result};
use crate::wire::manifest::Manifest;

/// What the device knows about itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceInfo<'a> {
    /// The device's hardware version; `None` skips the check.
    pub hardware_version: Option<&'a str>,
    /// The device's software type; `None` skips the check.
    pub software_type: Option<&'a str>,
    /// The anti-rollback counter the device stores (confirmed updates only).
    pub security_counter: u64,
    /// Unix seconds from a trusted clock, or `None` if the device has none.
    pub now: Option<u64>,
}

/// Checks an authenticated manifest against the device (see the module documentation).
pub fn check_device(manifest: &Manifest<'_>, device: &DeviceInfo<'_>) -> Result<()> {
    if let Some(hw) = device.hardware_version {
        let mut listed = manifest.hardware_versions().peekable();
        if listed.peek().is_some() && !listed.any(|v| v == hw) {
            return Err(Error::WrongHardware);
        }
    }
    if let Some(ty) = device.software_type {
        if manifest.software_type() != Some(ty) {
            return Err(Error::WrongSoftwareType);
        }
    }
    if manifest.security_counter() < device.security_counter {
        return Err(Error::Rollback {
            package: manifest.security_counter(),
            device: device.security_counter,
        });
    }
    if let (Some(now), Some(expires)) = (device.now, manifest.expires()) {
        if now >= expires {
            return Err(Error::Expired { expires, now });
        }
    }
    Ok(())
}
