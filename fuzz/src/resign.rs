//! Structure-aware mutation shared by the `resigned` and `apply_stream` targets: start from a
//! valid small package, edit its header, manifest and payloads with the fuzzer's bytes,
//! optionally repair the digests the edits broke, then re-sign the result with the Ed25519 test
//! private key and write a fresh trailer. The fuzzer thereby gets past the MD5 and signature
//! checks into the manifest rules, the digest checks and the decoders, under a trusted
//! signature.
//!
//! [`mutate`] takes one flags byte and a script of 4-byte edits `[op, offset_lo, offset_hi,
//! value]`.
//!
//! | flags bits | meaning |
//! |---|---|
//! | 0-2 | base package 0 to 7 ([`BASES`]); 7 picks base 8 instead when the script's length is not a multiple of 4 (see [`base_index`]) |
//! | 3 | set header manifest_len / payload_len to the edited lengths |
//! | 4 | recompute each record's payload_sha256 (and, for raw, slice_sha256); a payload the edited manifest segments (§5.5: `segment_log` 10 to 20, longer than a segment) first gets its segment links recomputed, last to first, and payload_sha256 is then the first segment's digest |
//! | 5 | recompute each record's slice_sha256 from what the decoder produces (and, for an unsegmented raw payload, payload_sha256) |
//! | 6 | recompute image_sha256 from the decoded slices; for a delta kind, first set base_size and base_sha256 to the harness's base image |
//! | 7 | leave the signature block empty (verify with `allow_unsigned`) |
//!
//! Edit `op`: bits 0-1 pick the part (0 header, 1 and 3 manifest, 2 payloads); bits 2-4 the
//! action: 0 set byte, 1 xor byte, 2 add to byte, 3 set a little-endian u32 to `value`, 4
//! insert `value` zero bytes, 5 delete up to `value` bytes, 6 set a u16 to `value`, 7 set a
//! u64 to `value << (8 * (op >> 5))`. The offset is taken modulo the part's length. The 1 to 3
//! bytes after the last whole edit are no edit; they only pick base 8 in place of base 7.
//!
//! Delta packages are decoded against [`crate::base_image`], the image the delta bases were
//! built against.

use crate::{base_image, ed25519_signing, with_slice_buf};
use otapack_core::decode::SliceDecoder;
use otapack_core::package::signed_message;
use otapack_core::patch::BaseImage;
use otapack_core::verify::Policy;
use otapack_core::wire::header::HEADER_LEN;
use otapack_core::wire::manifest::{Kind, Manifest, FIXED_LEN};
use otapack_core::wire::sigblock::{self, SignatureEntry};
use otapack_core::wire::slice::RECORD_LEN;
use otapack_core::wire::trailer;
use otapack_core::{Error, Package};
use sha2::{Digest, Sha256};

/// The packages the edits start from (the `seeds/parse` packages), picked by [`base_index`].
pub const BASES: &[&[u8]] = &[
    include_bytes!("../seeds/parse/seabios-12k-ed25519.ota.md5.bin"),
    include_bytes!("../seeds/parse/fill-zstd-raw-ed25519.ota.md5.bin"),
    include_bytes!("../seeds/parse/raw-ed25519-rsa-untrusted.ota.md5.bin"),
    include_bytes!("../seeds/parse/microbit-9k-unsigned.ota.md5.bin"),
    include_bytes!("../seeds/parse/microbit-9k-pss-ed25519.ota.md5.bin"),
    include_bytes!("../seeds/parse/delta-seabios-12k-ed25519.ota.md5.bin"),
    include_bytes!("../seeds/parse/delta-copy-ed25519.ota.md5.bin"),
    // Index 7: no committed resigned/apply_stream seed starts from it (theirs use 0 to 6, and
    // 7 for base 8), so the mutator reaches it through the base-selection bits alone.
    include_bytes!("../seeds/parse/delta-zstd-ref-seabios-12k-ed25519.ota.md5.bin"),
    // Index 8: payloads in hash-chained 1 KiB segments with 16-byte links (a zstd slice in two
    // segments, a raw slice in three). Three flag bits give only 8 bases, so it is picked by
    // flags bits 0-2 = 7 plus a script with 1 to 3 trailing bytes, which no edit uses: no
    // committed seed meant anything else before it was added (none uses base 7).
    include_bytes!("../seeds/parse/seg16-zstd-raw-ed25519.ota.md5.bin"),
];

/// The index into [`BASES`] that `flags` and `script` pick: flags bits 0-2, except that 7 with
/// a script whose length is not a multiple of 4 picks 8.
pub fn base_index(flags: u8, script: &[u8]) -> usize {
    match usize::from(flags & 7) {
        7 if script.len() % 4 != 0 => 8,
        i => i,
    }
}

/// A signature entry [`mutate_with`] adds to the block beside the Ed25519 one (or alone, in an
/// unsigned package), so the block holds more than the one entry the re-signing writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtraEntry {
    /// An unknown algorithm code with a `len`-byte signature (1..=65535): untrusted, skipped.
    Unknown { len: u16 },
    /// An RSA-2048-sized entry from a key nobody trusts: untrusted, skipped.
    UntrustedRsa,
    /// An Ed25519 entry under the trusted key's id with a wrong signature: a duplicate key id
    /// beside the real signature, a bad signature alone.
    BadTrusted,
    /// The trusted key's id with the RSA algorithm code: an algorithm mismatch (and a
    /// duplicate id beside the real signature).
    WrongAlgorithm,
}

impl ExtraEntry {
    fn bytes(self) -> Vec<u8> {
        let trusted_id = ed25519_signing().key_id();
        let (id, alg, len, fill) = match self {
            ExtraEntry::Unknown { len } => ([0xA5; 32], 0x7F00u16, usize::from(len), 0x5A),
            ExtraEntry::UntrustedRsa => ([0xC3; 32], 2, 256, 0x33),
            ExtraEntry::BadTrusted => (trusted_id, 1, 64, 0x11),
            ExtraEntry::WrongAlgorithm => (trusted_id, 2, 256, 0x22),
        };
        let mut e = Vec::with_capacity(36 + len);
        e.extend_from_slice(&id);
        e.extend_from_slice(&alg.to_le_bytes());
        e.extend_from_slice(&(len as u16).to_le_bytes());
        e.resize(36 + len, fill);
        e
    }
}

/// A mutated, repaired and re-signed package.
pub struct Resigned {
    /// The whole package: header, manifest, signature block, payloads, trailer.
    pub bytes: Vec<u8>,
    /// No edit changed anything (repairs aside): the package must still verify.
    pub untouched: bool,
    /// The signature block is empty (flags bit 7).
    pub unsigned: bool,
}

impl Resigned {
    /// The policy the package is meant to be checked under: one signature, or none when it
    /// was left unsigned.
    pub fn policy(&self) -> Policy {
        Policy {
            required_signatures: 1,
            allow_unsigned: self.unsigned,
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn put(b: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = b.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

fn edit(part: &mut Vec<u8>, action: u8, shift: u8, offset: usize, value: u8) {
    let len = part.len();
    let at = if len == 0 { 0 } else { offset % len };
    match action {
        0 if len > 0 => part[at] = value,
        1 if len > 0 => part[at] ^= value,
        2 if len > 0 => part[at] = part[at].wrapping_add(value),
        3 => put(part, at, &u32::from(value).to_le_bytes()),
        4 => {
            let tail = part.split_off(at.min(len));
            part.resize(part.len() + usize::from(value), 0);
            part.extend_from_slice(&tail);
        }
        5 if len > 0 => {
            let end = (at + usize::from(value)).min(len);
            part.drain(at..end);
        }
        6 => put(part, at, &u16::from(value).to_le_bytes()),
        7 => put(
            part,
            at,
            &(u64::from(value) << (8 * u32::from(shift))).to_le_bytes(),
        ),
        _ => {}
    }
}

/// The segment size G and link length K that a (possibly edited) manifest declares (§5.5):
/// `None` when it does not segment payloads, or when `segment_log` is outside 10 to 20 (the
/// parser refuses such a manifest anyway). A non-zero link code counts as 16, as in
/// `Manifest::segment_link_len`.
fn segmenting(manifest: &[u8]) -> Option<(usize, usize)> {
    let log = *manifest.get(129)?;
    let link = if *manifest.get(130)? == 0 { 32 } else { 16 };
    // `then`, not `then_some`: the shift must not run for a log of 64 or more.
    (10..=20).contains(&log).then(|| (1usize << log, link))
}

/// Repairs the segment links of `payload` (last to first, so each link covers the repaired
/// segment after it) and returns its payload_sha256 (the first segment's digest) and the
/// SHA-256 of its data (the segments without their links: a raw slice's digest). Without
/// segments, or when the payload fits in one, both are the payload's SHA-256.
fn relink(payload: &mut [u8], seg: Option<(usize, usize)>) -> ([u8; 32], [u8; 32]) {
    let Some((g, k)) = seg.filter(|&(g, _)| payload.len() > g) else {
        let d: [u8; 32] = Sha256::digest(&*payload).into();
        return (d, d);
    };
    let count = payload.len().div_ceil(g);
    for i in (1..count).rev() {
        let next: [u8; 32] =
            Sha256::digest(&payload[i * g..((i + 1) * g).min(payload.len())]).into();
        payload[i * g - k..i * g].copy_from_slice(&next[..k]);
    }
    let mut data = Sha256::new();
    for (i, s) in payload.chunks(g).enumerate() {
        data.update(if i + 1 < count { &s[..g - k] } else { s });
    }
    (Sha256::digest(&payload[..g]).into(), data.finalize().into())
}

/// Record `i` of a (possibly broken) manifest: its byte range, when it is in bounds.
fn record_range(manifest: &[u8], i: usize) -> Option<core::ops::Range<usize>> {
    let tlv_len = u32_at(manifest, 12)? as usize;
    let at = FIXED_LEN
        .checked_add(tlv_len)?
        .checked_add(i.checked_mul(RECORD_LEN)?)?;
    let end = at.checked_add(RECORD_LEN)?;
    (end <= manifest.len()).then_some(at..end)
}

/// Applies `script` to the base package `flags` picks, repairs what `flags` asks for, and
/// re-signs. `None` only when the result is too large for a trailer.
pub fn mutate(flags: u8, script: &[u8]) -> Option<Resigned> {
    mutate_with(flags, script, None)
}

/// [`mutate`], with `extra` added to the signature block: before the Ed25519 entry when its
/// flag is true, after it otherwise. The block is written byte by byte, so it may break the
/// block's rules (a duplicate key id) on purpose.
pub fn mutate_with(
    flags: u8,
    script: &[u8],
    extra: Option<(ExtraEntry, bool)>,
) -> Option<Resigned> {
    let base = BASES[base_index(flags, script)];
    let pkg = Package::parse(base).expect("base package parses");
    let header0 = pkg.header().as_bytes().to_vec();
    let manifest0 = pkg.manifest().as_bytes().to_vec();
    let payloads0 = pkg.payload_area().to_vec();
    let (mut header, mut manifest, mut payloads) =
        (header0.clone(), manifest0.clone(), payloads0.clone());

    for e in script.chunks_exact(4) {
        let (op, offset, value) = (e[0], usize::from(u16::from_le_bytes([e[1], e[2]])), e[3]);
        let part = match op & 3 {
            0 => &mut header,
            2 => &mut payloads,
            _ => &mut manifest,
        };
        edit(part, (op >> 2) & 7, op >> 5, offset, value);
    }
    let untouched = header == header0 && manifest == manifest0 && payloads == payloads0;

    if flags & 0x08 != 0 {
        put(&mut header, 12, &(manifest.len() as u32).to_le_bytes());
        put(&mut header, 16, &(payloads.len() as u32).to_le_bytes());
    }
    if flags & 0x10 != 0 {
        let seg = segmenting(&manifest);
        let count = u32_at(&manifest, 8).unwrap_or(0) as usize;
        for i in 0..count {
            let Some(r) = record_range(&manifest, i) else {
                break;
            };
            let (off, len) = (
                u32_at(&manifest, r.start + 8),
                u32_at(&manifest, r.start + 12),
            );
            let (Some(off), Some(len)) = (off, len) else {
                break;
            };
            let Some(payload) = payloads.get_mut(off as usize..off as usize + len as usize) else {
                continue;
            };
            let (digest, data) = relink(payload, seg);
            put(&mut manifest, r.start + 32, &digest);
            if manifest[r.start + 4] == 1 {
                put(&mut manifest, r.start + 64, &data); // raw: slice = payload data
            }
        }
    }
    if flags & 0x40 != 0 && manifest.get(2).is_some_and(|&k| k != 0) {
        let base = base_image();
        put(&mut manifest, 88, &(base.len() as u64).to_le_bytes());
        put(&mut manifest, 96, &<[u8; 32]>::from(Sha256::digest(base)));
    }
    if flags & 0x60 != 0 {
        // Decode every slice with the real decoder; a slice digest mismatch still leaves the
        // decoded bytes in the buffer, which is what the repaired digest is taken from.
        let payload_len = u32_at(&header, 16).unwrap_or(0);
        let fixed = Manifest::new_checked(&manifest, 1, payload_len)
            .ok()
            .map(|m| {
                let mut dec = SliceDecoder::new();
                let mut image = Sha256::new();
                let mut slice_digests = Vec::new();
                let mut complete = true;
                with_slice_buf(m.slice_size() as usize, |buf| {
                    for rec in m.slices() {
                        let Some(p) = payloads.get(
                            rec.payload_offset() as usize
                                ..rec.payload_offset() as usize + rec.payload_len() as usize,
                        ) else {
                            complete = false;
                            break;
                        };
                        let len = m.slice_len(rec.index()) as usize;
                        let mut base = base_image();
                        let base =
                            (m.kind() != Kind::Full).then_some(&mut base as &mut dyn BaseImage);
                        match dec.decode(&m, &rec, p, base, buf) {
                            Ok(_) | Err(Error::SliceDigest { .. }) => {
                                let d: [u8; 32] = Sha256::digest(&buf[..len]).into();
                                image.update(&buf[..len]);
                                slice_digests.push(d);
                            }
                            Err(_) => {
                                complete = false;
                                slice_digests.push(rec.slice_sha256());
                            }
                        }
                    }
                });
                let image: [u8; 32] = image.finalize().into();
                (slice_digests, complete.then_some(image))
            });
        if let Some((slice_digests, image)) = fixed {
            if flags & 0x20 != 0 {
                let seg = segmenting(&manifest);
                for (i, d) in slice_digests.iter().enumerate() {
                    let Some(r) = record_range(&manifest, i) else {
                        break;
                    };
                    put(&mut manifest, r.start + 64, d);
                    // A raw payload in one segment is the slice; a segmented one's
                    // payload_sha256 is its first segment's digest, left to bit 4.
                    let len = u32_at(&manifest, r.start + 12).unwrap_or(0) as usize;
                    if manifest[r.start + 4] == 1 && seg.map_or(true, |(g, _)| len <= g) {
                        put(&mut manifest, r.start + 32, d);
                    }
                }
            }
            if let (true, Some(image)) = (flags & 0x40 != 0, image) {
                put(&mut manifest, 56, &image);
            }
        }
    }

    // Re-sign and reassemble: header, manifest, signature block, payloads, trailer.
    let unsigned = flags & 0x80 != 0;
    let mut out = Vec::with_capacity(HEADER_LEN + manifest.len() + 104 + payloads.len() + 28);
    out.extend_from_slice(&header);
    out.extend_from_slice(&manifest);
    let mut entries: Vec<Vec<u8>> = Vec::new();
    if !unsigned {
        let key = ed25519_signing();
        let message = signed_message(&Sha256::digest(&out).into());
        let sig = key.sign(&message).expect("Ed25519 signs");
        let block = sigblock::emit(&[SignatureEntry {
            key_id: key.key_id(),
            algorithm: key.algorithm(),
            signature: &sig,
        }])
        .expect("one-entry signature block");
        entries.push(block[sigblock::BLOCK_HEAD_LEN..].to_vec());
    }
    if let Some((e, first)) = extra {
        entries.insert(if first { 0 } else { entries.len() }, e.bytes());
    }
    let mut block = (entries.len() as u16).to_le_bytes().to_vec();
    block.extend_from_slice(&[0, 0]);
    for e in &entries {
        block.extend_from_slice(e);
    }
    out.extend_from_slice(&block);
    out.extend_from_slice(&payloads);
    let t = trailer::emit(&out).ok()?;
    out.extend_from_slice(&t);
    Some(Resigned {
        bytes: out,
        untouched,
        unsigned,
    })
}
