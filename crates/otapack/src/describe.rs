//! The firmware description a cloud OTA service pushes to devices (AliOS Things / Link SDK
//! style): devices read `url`, `version`, `size` (a number), `sign` with `signMethod` (`Md5` or
//! `SHA256`, compared case-insensitively), the older `md5` key, and `isDiff`.

use crate::error::Result;
use crate::keys::hex;
use otapack_core::wire::manifest::Kind;
use otapack_core::Package;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignMethod {
    Md5,
    Sha256,
}

/// The JSON object for `package` served at `url`. The package must parse and its trailer MD5
/// must match, so a corrupt file is never described.
pub fn describe(package: &[u8], url: &str, method: SignMethod) -> Result<serde_json::Value> {
    let pkg = Package::parse(package)?;
    pkg.check_md5()?;
    let m = pkg.manifest();
    let md5 = hex(&otapack_core::wire::trailer::md5(package));
    let (sign, name) = match method {
        SignMethod::Md5 => (md5.clone(), "Md5"),
        SignMethod::Sha256 => (hex(&Sha256::digest(package)), "SHA256"),
    };
    let mut v = serde_json::json!({
        "version": m.software_version(),
        "size": package.len(),
        "url": url,
        "sign": sign,
        "signMethod": name,
        "isDiff": u8::from(m.kind() != Kind::Full),
        "hardwareVersions": m.hardware_versions().collect::<Vec<_>>(),
        "securityCounter": m.security_counter(),
    });
    if let Some(obj) = v.as_object_mut() {
        if method == SignMethod::Md5 {
            obj.insert("md5".into(), md5.into());
        }
        if let Some(t) = m.software_type() {
            obj.insert("softwareType".into(), t.into());
        }
    }
    Ok(v)
}
