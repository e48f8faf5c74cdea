//! What `inspect` and `verify` report, as plain data (serialisable to JSON).

use crate::keys::{hex, PublicKeyFile};
use otapack_core::decode::SliceDecoder;
use otapack_core::keys::{check_entry, TrustedKey};
use otapack_core::verify::{verify_package, Policy};
use otapack_core::wire::manifest::Kind;
use otapack_core::Package;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct SliceInfo {
    pub index: u32,
    pub method: &'static str,
    pub payload_offset: u32,
    pub payload_len: u32,
    pub arg: u64,
    pub payload_sha256: String,
    pub slice_sha256: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SignatureInfo {
    pub key_id: String,
    pub algorithm: &'static str,
    pub signature_len: usize,
}

/// Everything a package declares (nothing here is verified).
#[derive(Debug, Clone, Serialize)]
pub struct PackageInfo {
    pub format_version: u16,
    pub kind: &'static str,
    pub package_size: usize,
    pub software_version: String,
    pub software_type: Option<String>,
    pub hardware_versions: Vec<String>,
    pub security_counter: u64,
    pub created: u64,
    pub expires: Option<u64>,
    pub load_address: u64,
    pub image_size: u64,
    pub image_sha256: String,
    /// Delta kinds: the image the package applies to (0 and all-zero for full packages).
    pub base_size: u64,
    pub base_sha256: String,
    /// In-place deltas only: the order the device applies the slices in, `ascending` or
    /// `descending` (`None` for other kinds, which are written in index order).
    pub apply_order: Option<&'static str>,
    pub erase_value: u8,
    pub slice_size: u32,
    pub slice_count: u32,
    pub zstd_window_log: u8,
    /// 0, or the log2 of the largest decoded zstd block.
    pub zstd_block_log: u8,
    /// 0, or the log2 of the payload segment size.
    pub segment_log: u8,
    /// Bytes of each segment link (32 or 16); 0 without segments.
    pub segment_link_len: u64,
    /// The device RAM the manifest records (bytes; 0: not stated), and what otapack-core's
    /// applier needs for it, computed here.
    pub device_ram: u32,
    pub device_ram_needed: u64,
    pub manifest_len: u32,
    pub payload_start: usize,
    pub payload_len: u32,
    /// SHA-256 of header and manifest: what every signature covers (with the context string).
    pub signed_sha256: String,
    pub trailer_md5: String,
    pub signatures: Vec<SignatureInfo>,
    pub slices: Vec<SliceInfo>,
}

impl PackageInfo {
    pub fn of(pkg: &Package<'_>) -> Self {
        let m = pkg.manifest();
        PackageInfo {
            format_version: pkg.header().format_version(),
            kind: m.kind().name(),
            package_size: pkg.as_bytes().len(),
            software_version: m.software_version().to_string(),
            software_type: m.software_type().map(str::to_string),
            hardware_versions: m.hardware_versions().map(str::to_string).collect(),
            security_counter: m.security_counter(),
            created: m.created(),
            expires: m.expires(),
            load_address: m.load_address(),
            image_size: m.image_size(),
            image_sha256: hex(&m.image_sha256()),
            base_size: m.base_size(),
            base_sha256: hex(&m.base_sha256()),
            apply_order: (m.kind() == Kind::DeltaInPlace).then_some(if m.apply_descending() {
                "descending"
            } else {
                "ascending"
            }),
            erase_value: m.erase_value(),
            slice_size: m.slice_size(),
            slice_count: m.slice_count(),
            zstd_window_log: m.zstd_window_log(),
            zstd_block_log: m.zstd_block_log(),
            segment_log: m.segment_log(),
            segment_link_len: if m.segment_log() == 0 {
                0
            } else {
                m.segment_link_len()
            },
            device_ram: m.device_ram(),
            device_ram_needed: otapack_core::ram::needed(&m).total(),
            manifest_len: pkg.header().manifest_len(),
            payload_start: pkg.payload_start(),
            payload_len: pkg.header().payload_len(),
            signed_sha256: hex(&pkg.signed_digest()),
            trailer_md5: hex(&pkg.trailer().md5()),
            signatures: pkg
                .signatures()
                .entries()
                .map(|e| SignatureInfo {
                    key_id: hex(&e.key_id),
                    algorithm: e.algorithm.name(),
                    signature_len: e.signature.len(),
                })
                .collect(),
            slices: m
                .slices()
                .map(|r| SliceInfo {
                    index: r.index(),
                    method: r.method().name(),
                    payload_offset: r.payload_offset(),
                    payload_len: r.payload_len(),
                    arg: r.arg(),
                    payload_sha256: hex(&r.payload_sha256()),
                    slice_sha256: hex(&r.slice_sha256()),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SignatureCheck {
    pub key_id: String,
    pub algorithm: &'static str,
    /// `valid`, `INVALID`, `ALGORITHM MISMATCH` or `untrusted key`.
    pub status: &'static str,
    /// The public key file that matched, if any.
    pub trusted_key: Option<String>,
}

/// The outcome of `verify`: every check, and the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    /// The first failure, as one line.
    pub error: Option<String>,
    pub structure_ok: bool,
    pub md5_ok: Option<bool>,
    pub signatures: Vec<SignatureCheck>,
    /// Valid signatures from distinct trusted keys (0 unless the package verified).
    pub valid_trusted_signatures: usize,
    pub unsigned_allowed: bool,
    pub slices_verified: u32,
    pub image_sha256_ok: bool,
    pub package: Option<PackageInfo>,
}

/// Verifies a package held in memory against trusted keys (a delta package against `base`,
/// the image it applies to, which it needs to rebuild its slices). Never fails: failures are in the
/// report (`ok == false`, `error`).
pub fn verify(
    bytes: &[u8],
    trusted: &[PublicKeyFile],
    policy: &Policy,
    base: Option<&[u8]>,
) -> VerifyReport {
    let mut report = VerifyReport {
        ok: false,
        error: None,
        structure_ok: false,
        md5_ok: None,
        signatures: Vec::new(),
        valid_trusted_signatures: 0,
        unsigned_allowed: policy.allow_unsigned,
        slices_verified: 0,
        image_sha256_ok: false,
        package: None,
    };
    let pkg = match Package::parse(bytes) {
        Ok(p) => p,
        Err(e) => {
            report.error = Some(e.to_string());
            return report;
        }
    };
    report.structure_ok = true;
    report.package = Some(PackageInfo::of(&pkg));
    report.md5_ok = Some(pkg.check_md5().is_ok());
    let keys: Vec<TrustedKey> = trusted.iter().map(|k| k.key.clone()).collect();
    let message = pkg.signed_message();
    for e in pkg.signatures().entries() {
        let (status, _) = check_entry(&e, &message, &keys);
        report.signatures.push(SignatureCheck {
            key_id: hex(&e.key_id),
            algorithm: e.algorithm.name(),
            status: status.name(),
            trusted_key: trusted
                .iter()
                .find(|k| k.key.id() == e.key_id)
                .map(|k| k.path.display().to_string()),
        });
    }
    let mut buf = vec![0u8; pkg.manifest().slice_size() as usize];
    let mut slices = 0u32;
    let mut base = base;
    let result = verify_package(
        &pkg,
        &keys,
        policy,
        &mut SliceDecoder::new(),
        crate::apply::base_image(&mut base),
        &mut buf,
        |_, _| {
            slices += 1;
            Ok(())
        },
    );
    report.slices_verified = slices;
    match result {
        Ok(summary) => {
            report.valid_trusted_signatures = summary.valid.into();
            report.ok = true;
            report.image_sha256_ok = true;
        }
        Err(e) => report.error = Some(e.to_string()),
    }
    report
}

/// Verifies everything but the signatures (trailer, every slice, the image digest, and for a
/// delta the base image): what `build` checks of its own output and `sign` checks before it
/// signs.
pub fn verify_contents(pkg: &Package<'_>, base: Option<&[u8]>) -> otapack_core::Result<()> {
    let mut buf = vec![0u8; pkg.manifest().slice_size() as usize];
    let mut base = base;
    let policy = Policy {
        required_signatures: 0,
        allow_unsigned: true,
    };
    let b = crate::apply::base_image(&mut base);
    verify_package(
        pkg,
        &[],
        &policy,
        &mut SliceDecoder::new(),
        b,
        &mut buf,
        |_, _| Ok(()),
    )?;
    Ok(())
}
