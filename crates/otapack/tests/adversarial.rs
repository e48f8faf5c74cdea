//! Adversarial packages, from the hardening issue's list. Each one is hand-crafted and correctly
//! signed with testdata/keys/test-ed25519 (the only trusted key here), so its hostile content
//! gets past the signature check and reaches the deep checks. Each must be refused with the
//! expected typed error, both by the streaming device applier (pushed in chunks of 1, 7, 4096
//! bytes and all at once, onto a simulated NOR flash that must see no erase and no write) and
//! by `verify_package` (whose sink must never receive a slice), with:
//!
//! - bounded memory: a per-thread counting allocator measures the peak heap of each rejection
//!   (caller-provided buffers excluded), which must stay under a stated bound far below the
//!   declared hostile size: 0 bytes unless a zstd decoder was started, 32 KiB if one was
//!   (otapack-zstd allocates its fixed buffers once, 22 KiB for these 4 KiB windows);
//! - bounded work: the applier, fed one byte at a time, must stop at a stated byte offset (no
//!   further), and a base image is read only by its own digest check, never by a decoder that
//!   was about to go out of range.
//!
//! Some cases are refused by structure checks before any signature is looked at; the table
//! printed by `cargo test -p otapack --test adversarial -- --nocapture` names the check for each
//! (columns: case, verify error, applier error, check, applier's refusing byte, heap of each).
//! Each family also has a control: the same package without its hostile part is accepted.
//!
//! Two library bugs these found are fixed in otapack-core's `decode`: a Window_Descriptor of
//! 0xFF was reported as `Decode` rather than `WindowTooLarge`, and zstd blocks whose headers
//! ask for more than the window (2^20 RLE literals, 98047 sequences) made ruzstd allocate
//! megabytes (`zstd_blocks_asking_for_more_than_the_window`). Since otapack-zstd replaced
//! ruzstd, no frame can make the decoder allocate anything after its buffers. What "before any flash write"
//! cannot mean for a streaming applier is shown by `a_late_hostile_op_fails_the_update_inside_
//! its_slice`.
//!
//! Covered elsewhere, and only referenced here:
//! - hostile.rs: every byte flip and truncation; absurd manifest_len/payload_len/slice_count/
//!   tlv_len/image_size and a 65535-entry signature count, through `Package::parse` on unsigned
//!   packages; records swapped/duplicated (`is_err` only); manifest window log above the slice.
//! - review_fixes.rs: zstd slices without a content size, with the reserved bit, with trailing
//!   bytes, with a bad checksum (verify path); unknown algorithms beside a valid signature;
//!   `load_address` overflow via `ManifestRepr::emit`.
//! - delta.rs: a copy range one byte past the base and a patch format other than 1, through
//!   `Package::parse`. otapack-core `patch::tests`: the patch decoder's rules on bare op streams.
//! - applier.rs: a header declaring a 4 GiB manifest (applier and `apply_streaming`), slot and
//!   buffer sizes, wrong or missing base, flips before the payloads never touching flash.

mod common;
use common::*;
use otapack::apply::{apply_streaming, HostFlash};
use otapack::otapack_core::apply::Applier;
use otapack::otapack_core::decode::SliceDecoder;
use otapack::otapack_core::package::signed_message;
use otapack::otapack_core::patch::BaseImage;
use otapack::otapack_core::verify::{verify_package, Policy, SignatureSummary};
use otapack::otapack_core::wire::header::HeaderRepr;
use otapack::otapack_core::wire::manifest::{field, Kind, ManifestRepr};
use otapack::otapack_core::wire::slice::{Method, SliceRepr};
use otapack::otapack_core::wire::{tlv, trailer};
use otapack::otapack_core::{Error, Package};
use sha2::{Digest, Sha256};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

// ---------------------------------------------------------------------------------------------
// Heap accounting, per thread (the test harness runs tests on several threads at once).

struct Counting;

thread_local! {
    static CURRENT: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    let _ = CURRENT.try_with(|c| {
        let now = c.get() + delta;
        c.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        track(l.size() as isize);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        track(-(l.size() as isize));
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Runs `f` and returns its result and the peak heap it allocated on this thread.
fn peak_heap<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let start = CURRENT.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let r = f();
    let peak = PEAK.with(Cell::get) - start;
    (r, peak.max(0) as usize)
}

// ---------------------------------------------------------------------------------------------
// Crafting packages.

/// The slice size of the small packages (and their image size: one slice).
const S: usize = 4096;
/// Peak heap allowed while a zstd decoder runs: otapack-zstd's fixed buffers for a 4 KiB
/// window (`ram::zstd_heap(12, 0)`, 21,831 bytes), with margin. The hostile frames
/// declare windows up to 2^41 + 7 x 2^38 bytes and content sizes up to 2^40.
const ZSTD_HEAP: usize = 32 * 1024;

fn sha(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// One 4 KiB slice that compresses well but is not a fill.
fn pattern() -> Vec<u8> {
    (0..S)
        .map(|i| b"otapack adversarial test pattern"[i % 32])
        .collect()
}

/// The base image of the delta packages: 8 KiB of noise.
fn base_image() -> Vec<u8> {
    noise(2 * S, 0x2545_F491)
}

/// A record for slice `index` stored as `payload` (digests computed).
fn rec(
    index: u32,
    method: Method,
    offset: u32,
    payload: &[u8],
    arg: u64,
    slice: &[u8],
) -> SliceRepr {
    SliceRepr {
        index,
        method,
        payload_offset: offset,
        payload_len: payload.len() as u32,
        arg,
        payload_sha256: sha(payload),
        slice_sha256: sha(slice),
    }
}

fn manifest(
    kind: Kind,
    image: &[u8],
    zstd_window_log: u8,
    base: Option<&[u8]>,
    slices: Vec<SliceRepr>,
) -> ManifestRepr {
    ManifestRepr {
        kind,
        erase_value: 0xFF,
        slice_log2: 12,
        zstd_window_log,
        security_counter: 0,
        created: 1_700_000_000,
        expires: None,
        load_address: 0x0800_0000,
        image_size: image.len() as u64,
        image_sha256: sha(image),
        base_size: base.map_or(0, |b| b.len() as u64),
        base_sha256: base.map_or([0; 32], sha),
        apply_descending: false,
        zstd_block_log: 0,
        segment_log: 0,
        segment_link_len: 0,
        device_ram: 0,
        software_version: "6.6.6".into(),
        software_type: None,
        hardware_versions: vec![],
        slices,
    }
}

/// The manifest bytes, laid out like `ManifestRepr::emit` but without its checks, so hostile
/// values get through (`emitter_matches_the_library` pins the layout).
fn emit(m: &ManifestRepr) -> Vec<u8> {
    let mut tlvs = Vec::new();
    tlv::emit(
        &mut tlvs,
        tlv::SOFTWARE_VERSION,
        m.software_version.as_bytes(),
    );
    if let Some(t) = &m.software_type {
        tlv::emit(&mut tlvs, tlv::SOFTWARE_TYPE, t.as_bytes());
    }
    for h in &m.hardware_versions {
        tlv::emit(&mut tlvs, tlv::HARDWARE_VERSION, h.as_bytes());
    }
    let mut b = vec![0u8; field::DEVICE_RAM + 4];
    set(&mut b, field::FORMAT_VERSION, &1u16.to_le_bytes());
    b[field::KIND] = m.kind as u8;
    b[field::ERASE_VALUE] = m.erase_value;
    b[field::SLICE_LOG2] = m.slice_log2;
    b[field::ZSTD_WINDOW_LOG] = m.zstd_window_log;
    b[field::ZSTD_BLOCK_LOG] = m.zstd_block_log;
    b[field::SEGMENT_LOG] = m.segment_log;
    b[field::SEGMENT_LINK_LEN] = m.segment_link_len;
    set(&mut b, field::DEVICE_RAM, &m.device_ram.to_le_bytes());
    set(
        &mut b,
        field::SLICE_COUNT,
        &(m.slices.len() as u32).to_le_bytes(),
    );
    set(&mut b, field::TLV_LEN, &(tlvs.len() as u32).to_le_bytes());
    set(
        &mut b,
        field::SECURITY_COUNTER,
        &m.security_counter.to_le_bytes(),
    );
    set(&mut b, field::CREATED, &m.created.to_le_bytes());
    set(
        &mut b,
        field::EXPIRES,
        &m.expires.unwrap_or(0).to_le_bytes(),
    );
    set(&mut b, field::LOAD_ADDRESS, &m.load_address.to_le_bytes());
    set(&mut b, field::IMAGE_SIZE, &m.image_size.to_le_bytes());
    set(&mut b, field::IMAGE_SHA256, &m.image_sha256);
    set(&mut b, field::BASE_SIZE, &m.base_size.to_le_bytes());
    set(&mut b, field::BASE_SHA256, &m.base_sha256);
    b.extend_from_slice(&tlvs);
    for s in &m.slices {
        b.extend_from_slice(&s.emit());
    }
    b
}

fn set(b: &mut [u8], at: usize, v: &[u8]) {
    b[at..at + v.len()].copy_from_slice(v);
}

/// One signature entry, as raw fields (the library's emitter refuses hostile blocks).
#[derive(Clone)]
struct Entry {
    key_id: [u8; 32],
    algorithm: u16,
    sig: Vec<u8>,
}

/// The trusted key's valid Ed25519 signature over `header ‖ manifest`.
fn trusted_entry(header: &[u8], manifest: &[u8]) -> Entry {
    let k = key("test-ed25519");
    let mut h = Sha256::new();
    h.update(header);
    h.update(manifest);
    let sig = k.sign(&signed_message(&h.finalize().into())).unwrap();
    Entry {
        key_id: k.key_id(),
        algorithm: 1,
        sig,
    }
}

fn trusted_id() -> [u8; 32] {
    key("test-ed25519").key_id()
}

/// An entry for a key nobody trusts, with an algorithm code nobody knows.
fn unknown_entry(id: u8, len: usize) -> Entry {
    Entry {
        key_id: [id; 32],
        algorithm: 0x7777,
        sig: vec![0xAB; len],
    }
}

/// A signature block with `count` = the number of entries, written without any check.
fn sig_block(entries: &[Entry]) -> Vec<u8> {
    let mut b = (entries.len() as u16).to_le_bytes().to_vec();
    b.extend_from_slice(&[0, 0]);
    for e in entries {
        b.extend_from_slice(&e.key_id);
        b.extend_from_slice(&e.algorithm.to_le_bytes());
        b.extend_from_slice(&(e.sig.len() as u16).to_le_bytes());
        b.extend_from_slice(&e.sig);
    }
    b
}

/// A package, with the offsets where its parts end.
struct Crafted {
    bytes: Vec<u8>,
    /// 32 + manifest_len: where the signature block starts.
    manifest_end: usize,
    payload_start: usize,
}

/// Header (with the given lengths), manifest, the signature block `entries` makes from the
/// trusted signature over that header and manifest, payloads, and a correct trailer.
fn craft_with(
    manifest_len: u32,
    payload_len: u32,
    manifest: &[u8],
    entries: impl FnOnce(Entry) -> Vec<Entry>,
    payloads: &[u8],
) -> Crafted {
    let header = HeaderRepr {
        manifest_len,
        payload_len,
    }
    .emit();
    let block = sig_block(&entries(trusted_entry(&header, manifest)));
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(manifest);
    let manifest_end = bytes.len();
    bytes.extend_from_slice(&block);
    let payload_start = bytes.len();
    bytes.extend_from_slice(payloads);
    let t = trailer::emit(&bytes).unwrap();
    bytes.extend_from_slice(&t);
    Crafted {
        bytes,
        manifest_end,
        payload_start,
    }
}

/// A consistent header and one valid signature from the trusted key.
fn signed(manifest: &[u8], payloads: &[u8]) -> Crafted {
    craft_with(
        manifest.len() as u32,
        payloads.len() as u32,
        manifest,
        |e| vec![e],
        payloads,
    )
}

/// A full package of one 4 KiB fill slice: the plainest valid package.
fn fill_manifest() -> ManifestRepr {
    let image = vec![0x5A; S];
    manifest(
        Kind::Full,
        &image,
        0,
        None,
        vec![rec(0, Method::Fill, 0, &[], 0x5A, &image)],
    )
}

/// A signed delta package of one patch slice rebuilding `base_image()[..4096]`.
fn patch_package(payload: &[u8], zstd_window_log: u8) -> Crafted {
    let base = base_image();
    let image = &base[..S];
    let m = manifest(
        Kind::Delta,
        image,
        zstd_window_log,
        Some(&base),
        vec![rec(0, Method::Patch, 0, payload, 1, image)],
    );
    signed(&emit(&m), payload)
}

/// A signed full package of one zstd slice of 4096 x 0x5A.
fn zstd_package(payload: &[u8], zstd_window_log: u8) -> Crafted {
    let image = vec![0x5A; S];
    let m = manifest(
        Kind::Full,
        &image,
        zstd_window_log,
        None,
        vec![rec(0, Method::Zstd, 0, payload, 0, &image)],
    );
    signed(&emit(&m), payload)
}

// --- zstd frames, by hand (RFC 8878 §3.1.1), so every header field can be set ----------------

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
/// Frame_Header_Descriptor: a 4-byte Frame_Content_Size, no single segment, no dictionary.
const FHD_FCS4: u8 = 0x80;
/// Window_Descriptor for 2^12 (exponent 2, mantissa 0).
const WD_4K: u8 = 2 << 3;

fn block(kind: u8, size: usize, last: bool, body: &[u8]) -> Vec<u8> {
    let h = (size as u32) << 3 | u32::from(kind) << 1 | u32::from(last);
    let mut b = h.to_le_bytes()[..3].to_vec();
    b.extend_from_slice(body);
    b
}
fn raw_block(data: &[u8], last: bool) -> Vec<u8> {
    block(0, data.len(), last, data)
}
fn rle_block(byte: u8, n: usize, last: bool) -> Vec<u8> {
    block(1, n, last, &[byte])
}
/// `n` copies of `byte` in RLE blocks of at most 4 KiB (the block limit of a 4 KiB window).
fn rle_run(byte: u8, mut n: usize, last: bool) -> Vec<u8> {
    let mut b = Vec::new();
    while n > 0 {
        let k = n.min(S);
        n -= k;
        b.extend(rle_block(byte, k, last && n == 0));
    }
    b
}

/// magic ‖ descriptor ‖ the header fields that follow it ‖ blocks.
fn zframe(fhd: u8, fields: &[u8], blocks: &[u8]) -> Vec<u8> {
    let mut f = ZSTD_MAGIC.to_vec();
    f.push(fhd);
    f.extend_from_slice(fields);
    f.extend_from_slice(blocks);
    f
}

/// The blocks of the zstd slice's content: 4096 x 0x5A.
fn zstd_blocks() -> Vec<u8> {
    rle_block(0x5A, S, true)
}

/// An op stream rebuilding `base[..4096]`: seek 0, 4096 add bytes of 0, copy_len 0 (4100
/// bytes), as three blocks.
const PATCH_CONTENT: usize = 4100;
fn patch_blocks(last: bool) -> Vec<u8> {
    let mut b = raw_block(&[0x00, 0x80, 0x20], false);
    b.extend(rle_block(0x00, S, false));
    b.extend(raw_block(&[0x00], last));
    b
}

/// The header fields after the descriptor for `FHD_FCS4`: window descriptor, content size.
fn wd_fcs4(wd: u8, fcs: u32) -> Vec<u8> {
    let mut v = vec![wd];
    v.extend_from_slice(&fcs.to_le_bytes());
    v
}

// --- patch op streams, by hand ----------------------------------------------------------------

#[derive(Default)]
struct Ops(Vec<u8>);
impl Ops {
    fn uv(mut self, mut v: u64) -> Self {
        loop {
            let b = (v & 0x7F) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(b);
                return self;
            }
            self.0.push(b | 0x80);
        }
    }
    fn seek(self, s: i64) -> Self {
        self.uv(((s << 1) ^ (s >> 63)) as u64)
    }
    fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
}

/// The op stream in one frame made by libzstd (window 4 KiB, content size recorded).
fn libzstd_frame(content: &[u8]) -> Vec<u8> {
    use zstd::zstd_safe::CParameter;
    let mut c = zstd::bulk::Compressor::new(19).unwrap();
    c.set_parameter(CParameter::WindowLog(12)).unwrap();
    c.set_parameter(CParameter::ContentSizeFlag(true)).unwrap();
    c.set_parameter(CParameter::ChecksumFlag(false)).unwrap();
    c.compress(content).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Running both device paths.

/// A base image that counts the bytes read from it.
struct CountingBase<'a> {
    data: &'a [u8],
    read: u64,
}

impl BaseImage for CountingBase<'_> {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        self.read += buf.len() as u64;
        let mut d = self.data;
        d.read(offset, buf)
    }
}

/// What one run of a device path did.
#[derive(Debug)]
struct Outcome {
    result: Result<SignatureSummary, Error>,
    /// Bytes pushed into the applier when it returned (the failing chunk included).
    pushed: usize,
    heap: usize,
    erases: u64,
    written: u64,
    /// Slices `verify_package` handed to its sink.
    slices_out: usize,
    base_read: u64,
}

/// Device buffers: a manifest buffer for up to ~5000 slices, a payload buffer of 64 KiB, a
/// 64 KiB destination slot with 4 KiB sectors.
const MANIFEST_BUF: usize = 512 * 1024;
const PAYLOAD_BUF: usize = 64 * 1024;
const SLOT: usize = 64 * 1024;

fn run_applier(pkg: &[u8], base: Option<&[u8]>, chunk: usize) -> Outcome {
    let trusted = [pubkey("test-ed25519").key];
    let mut flash = HostFlash::new(SLOT);
    let mut manifest_buf = vec![0u8; MANIFEST_BUF];
    let mut payload_buf = vec![0u8; PAYLOAD_BUF];
    let mut write_buf = [0u8; 256];
    let mut base = base.map(|data| CountingBase { data, read: 0 });
    let mut pushed = 0;
    let (result, heap) = peak_heap(|| {
        let b = base.as_mut().map(|b| b as &mut dyn BaseImage);
        let mut a = Applier::new(
            &trusted,
            Policy::default(),
            &mut flash,
            b,
            &mut manifest_buf,
            &mut payload_buf,
            &mut write_buf,
        )?;
        for piece in pkg.chunks(chunk) {
            pushed += piece.len();
            a.push(piece)?;
        }
        a.finish()
    });
    Outcome {
        result,
        pushed,
        heap,
        erases: flash.erases_total(),
        written: flash.bytes_written,
        slices_out: 0,
        base_read: base.map_or(0, |b| b.read),
    }
}

fn run_verify(pkg: &[u8], base: Option<&[u8]>) -> Outcome {
    let trusted = [pubkey("test-ed25519").key];
    let slice = Package::parse(pkg).map_or(1, |p| p.manifest().slice_size() as usize);
    let mut buf = vec![0u8; slice];
    let mut base = base.map(|data| CountingBase { data, read: 0 });
    let mut slices_out = 0;
    let (result, heap) = peak_heap(|| {
        let p = Package::parse(pkg)?;
        let mut decoder = SliceDecoder::new();
        let b = base.as_mut().map(|b| b as &mut dyn BaseImage);
        verify_package(
            &p,
            &trusted,
            &Policy::default(),
            &mut decoder,
            b,
            &mut buf,
            |_, _| {
                slices_out += 1;
                Ok(())
            },
        )
    });
    Outcome {
        result,
        pushed: 0,
        heap,
        erases: 0,
        written: 0,
        slices_out,
        base_read: base.map_or(0, |b| b.read),
    }
}

/// What a hostile package must be refused with, where, and in how much heap.
struct Expect {
    /// The check that refuses it (for the printed table).
    check: &'static str,
    /// From `Package::parse` + `verify_package`.
    verify: Error,
    /// From the applier (usually the same).
    apply: Error,
    /// Fed one byte at a time, the applier refuses exactly when byte `at` (1-based) arrives.
    at: usize,
    /// Peak heap bound for each path.
    heap: usize,
}

fn expect(check: &'static str, err: Error, at: usize, heap: usize) -> Expect {
    Expect {
        check,
        verify: err,
        apply: err,
        at,
        heap,
    }
}

/// Asserts that both device paths refuse `pkg` as `e` says, before any flash erase or write,
/// before any slice is handed on, and without reading the base beyond its digest check.
fn refuses(name: &str, pkg: &[u8], base: Option<&[u8]>, e: Expect) {
    let base_ok = |read: u64| read == 0 || Some(read) == base.map(|b| b.len() as u64);
    let v = run_verify(pkg, base);
    assert_eq!(v.result, Err(e.verify), "{name}: verify_package");
    assert_eq!(v.slices_out, 0, "{name}: verify_package handed on a slice");
    assert!(
        v.heap <= e.heap,
        "{name}: verify peak heap {} > {}",
        v.heap,
        e.heap
    );
    assert!(
        base_ok(v.base_read),
        "{name}: verify read {} base bytes",
        v.base_read
    );
    let mut apply_heap = 0;
    for chunk in [1, 7, 4096, usize::MAX] {
        let a = run_applier(pkg, base, chunk);
        assert_eq!(a.result, Err(e.apply), "{name}: applier, chunks of {chunk}");
        assert_eq!(a.erases, 0, "{name}: flash erased (chunks of {chunk})");
        assert_eq!(a.written, 0, "{name}: flash written (chunks of {chunk})");
        assert!(
            a.heap <= e.heap,
            "{name}: applier peak heap {} > {}",
            a.heap,
            e.heap
        );
        assert!(
            base_ok(a.base_read),
            "{name}: applier read {} base bytes",
            a.base_read
        );
        if chunk == 1 {
            assert_eq!(a.pushed, e.at, "{name}: applier refused at the wrong byte");
        }
        apply_heap = apply_heap.max(a.heap);
    }
    println!(
        "| {name} | {:?} | {:?} | {} | {} of {} | {} / {} |",
        e.verify,
        e.apply,
        e.check,
        e.at,
        pkg.len(),
        v.heap,
        apply_heap
    );
}

/// Both paths accept `pkg` and rebuild `image` (the controls: a case minus its hostile part).
fn accepts(pkg: &[u8], base: Option<&[u8]>, image: &[u8]) -> (Outcome, Outcome) {
    let v = run_verify(pkg, base);
    assert!(v.result.is_ok(), "verify: {:?}", v.result);
    assert_eq!(
        v.slices_out,
        Package::parse(pkg).unwrap().manifest().slice_count() as usize
    );
    let a = run_applier(pkg, base, 4096);
    assert!(a.result.is_ok(), "applier: {:?}", a.result);
    let trusted = [pubkey("test-ed25519").key];
    assert_eq!(
        verify_collect(pkg, base, &trusted, &Policy::default()).unwrap(),
        image
    );
    let applied = apply_streaming(pkg, &trusted, &Policy::default(), base, 4096).unwrap();
    assert_eq!(applied.image, image);
    (v, a)
}

fn malformed(what: &'static str) -> Error {
    Error::Malformed { what }
}

const RULES: &str = "slice record fields break its method's rules";
const OVERLAP: &str = "slice payloads overlap, leave gaps or are out of order";

// ---------------------------------------------------------------------------------------------

#[test]
fn emitter_matches_the_library() {
    let base = base_image();
    let m = manifest(
        Kind::Delta,
        &pattern(),
        12,
        Some(&base),
        vec![rec(0, Method::Copy, 0, &[], 17, &base[17..17 + S])],
    );
    assert_eq!(emit(&m), m.emit().unwrap());
    let m = fill_manifest();
    let p = signed(&emit(&m), &[]);
    assert_eq!(
        Package::parse(&p.bytes).unwrap().payload_start(),
        p.payload_start
    );
    accepts(&p.bytes, None, &[0x5A; S]);
}

/// Copy and patch ops that would read outside the base image.
#[test]
fn reads_outside_the_base_image() {
    let base = base_image();
    let b = base.len() as u64; // 8192
    let image = &base[S..]; // what a copy at 4096 gives
    let copy = |arg: u64| {
        let m = manifest(
            Kind::Delta,
            image,
            0,
            Some(&base),
            vec![rec(0, Method::Copy, 0, &[], arg, image)],
        );
        signed(&emit(&m), &[])
    };
    let ok = copy(b - S as u64);
    accepts(&ok.bytes, Some(&base), image);
    for (name, arg) in [
        ("copy arg = base_size", b),
        // (delta.rs `delta_records_out_of_range_are_refused_at_parse`: parse only)
        ("copy range 1 byte past the base", b - S as u64 + 1),
        ("copy arg + len overflows u64", u64::MAX - 100),
        ("copy arg = 2^64-1", u64::MAX),
    ] {
        let p = copy(arg);
        refuses(
            name,
            &p.bytes,
            Some(&base),
            expect(
                "manifest: copy range inside base_size (§6.1)",
                malformed(RULES),
                p.manifest_end,
                0,
            ),
        );
    }

    // Patch ops, each the first op of the stream, so a decoder that failed to check would
    // read the base or emit output before anything else could stop it.
    let patch = |ops: Ops| patch_package(&libzstd_frame(&ops.0), 12);
    let adds = vec![0u8; S];
    let ok = patch(Ops::default().seek(0).uv(S as u64).bytes(&adds).uv(0));
    accepts(&ok.bytes, Some(&base), &base[..S]);
    for (name, ops) in [
        (
            "patch seek -1",
            Ops::default().seek(-1).uv(1).bytes(&[0]).uv(0),
        ),
        (
            "patch seek -2^63",
            Ops::default().seek(i64::MIN).uv(1).bytes(&[0]).uv(0),
        ),
        (
            "patch seek to base_size + 1",
            Ops::default().seek(b as i64 + 1).uv(0).uv(1).bytes(&[0]),
        ),
        (
            "patch seek +2^63-1",
            Ops::default().seek(i64::MAX).uv(0).uv(1).bytes(&[0]),
        ),
        (
            "patch add run 1 byte past the base",
            Ops::default()
                .seek(b as i64 - 10)
                .uv(11)
                .bytes(&[0; 11])
                .uv(0),
        ),
        (
            "patch add_len 2^64-1",
            Ops::default().seek(0).uv(u64::MAX).bytes(&[0; 16]),
        ),
    ] {
        let p = patch(ops);
        let payload = Package::parse(&p.bytes)
            .unwrap()
            .manifest()
            .slice(0)
            .unwrap()
            .payload_len();
        refuses(
            name,
            &p.bytes,
            Some(&base),
            expect(
                "patch decoder: cursor and add run inside the base (§6.5)",
                Error::Decode { slice: 0 },
                p.payload_start + payload as usize,
                ZSTD_HEAP,
            ),
        );
    }
}

/// Patches and frames that would expand far beyond their slice.
#[test]
fn patches_that_expand() {
    let base = base_image();
    let b = Some(&base[..]);
    let len = S as u64;
    let decode = Error::Decode { slice: 0 };
    let payload_end = |p: &Crafted| {
        let m = Package::parse(&p.bytes).unwrap().manifest();
        p.payload_start + m.slice(0).unwrap().payload_len() as usize
    };

    // An op stream of 8 x 4096 + 1 bytes: a valid first op that produces the whole slice
    // (4100 bytes), then zeros. Without the 8x limit the decoder would emit the slice (and
    // the applier write it) before finding the extra bytes. With it, the frame header stops it:
    // the base is read by its digest check only (so no add byte was ever decoded).
    let mut blocks = patch_blocks(false);
    blocks.extend(rle_run(0, 8 * S + 1 - PATCH_CONTENT, true));
    let over = patch_package(
        &zframe(FHD_FCS4, &wd_fcs4(WD_4K, 8 * S as u32 + 1), &blocks),
        12,
    );
    refuses(
        "patch op stream 8 x slice + 1",
        &over.bytes,
        b,
        expect(
            "zstd frame header: content size <= 8 x slice_len (§6.5)",
            decode,
            payload_end(&over),
            ZSTD_HEAP,
        ),
    );
    // At exactly 8x the header passes and the ops are decoded (the base is read past its
    // digest check) before the trailing zeros are refused: the limit is exactly 8x.
    let mut blocks = patch_blocks(false);
    blocks.extend(rle_run(0, 8 * S - PATCH_CONTENT, true));
    let at8 = patch_package(
        &zframe(FHD_FCS4, &wd_fcs4(WD_4K, 8 * S as u32), &blocks),
        12,
    );
    let v = run_verify(&at8.bytes, b);
    assert_eq!(v.result, Err(decode));
    assert_eq!(
        v.base_read,
        2 * base.len() as u64 - len,
        "8x: the op stream was decoded"
    );

    // A frame declaring 2^40 bytes of op stream, holding a valid patch.
    let mut fields = vec![WD_4K];
    fields.extend_from_slice(&(1u64 << 40).to_le_bytes());
    let huge = patch_package(&zframe(0xC0, &fields, &patch_blocks(true)), 12);
    refuses(
        "patch frame declaring 2^40 bytes",
        &huge.bytes,
        b,
        expect(
            "zstd frame header: content size <= 8 x slice_len (§6.5)",
            decode,
            payload_end(&huge),
            ZSTD_HEAP,
        ),
    );
    // A zstd slice's frame declaring 2^40 bytes.
    let huge = zstd_package(&zframe(0xC0, &fields, &zstd_blocks()), 12);
    refuses(
        "zstd frame declaring 2^40 bytes",
        &huge.bytes,
        None,
        expect(
            "zstd frame header: content size = slice_len (§6.3)",
            decode,
            payload_end(&huge),
            ZSTD_HEAP,
        ),
    );
    // A frame that holds far more than it declares (4 bytes declared: one op producing one
    // byte; 40 KiB held): the first piece past the declared size is refused before the patch
    // decoder sees it, so the op stream is never longer than declared.
    let mut blocks = raw_block(&[0, 0, 1, 7], false);
    blocks.extend(rle_run(0, 10 * S, true));
    let more = patch_package(&zframe(FHD_FCS4, &wd_fcs4(WD_4K, 4), &blocks), 12);
    refuses(
        "patch frame holding more than it declares",
        &more.bytes,
        b,
        expect(
            "zstd decoder: output <= declared content size (§6.3)",
            decode,
            payload_end(&more),
            ZSTD_HEAP,
        ),
    );
    // Blocks larger than the window allows (RFC 8878 Block_Maximum_Size = min(Window_Size,
    // 128 KiB)): an RLE block of 4097 bytes in a 4 KiB window, and a raw block of 1025 bytes
    // in a 1 KiB window (zstd_window_log 10), the rest of the slice in 1 KiB RLE blocks.
    let big_rle = zstd_package(
        &zframe(
            FHD_FCS4,
            &wd_fcs4(WD_4K, S as u32),
            &rle_block(0x5A, S + 1, true),
        ),
        12,
    );
    let rle_1k = |first: Vec<u8>, rest: usize| {
        let mut b = first;
        for k in (0..rest).step_by(1024) {
            b.extend(rle_block(0x5A, (rest - k).min(1024), k + 1024 >= rest));
        }
        zstd_package(&zframe(FHD_FCS4, &wd_fcs4(0, S as u32), &b), 10)
    };
    let ok = rle_1k(raw_block(&[0x5A; 1024], false), S - 1024);
    accepts(&ok.bytes, None, &[0x5A; S]);
    let big_raw = rle_1k(raw_block(&[0x5A; 1025], false), S - 1025);
    for (name, p) in [
        ("zstd RLE block of 4097 bytes in a 4 KiB window", &big_rle),
        ("zstd raw block of 1025 bytes in a 1 KiB window", &big_raw),
    ] {
        refuses(
            name,
            &p.bytes,
            None,
            expect(
                "zstd block checks: Block_Maximum_Size (§6.3)",
                decode,
                payload_end(p),
                ZSTD_HEAP,
            ),
        );
    }

    // Add and literal lengths past the slice end (the base is large enough for the add).
    let patch = |ops: Ops| patch_package(&libzstd_frame(&ops.0), 12);
    for (name, ops) in [
        (
            "patch add_len = slice_len + 1",
            Ops::default().seek(0).uv(len + 1).bytes(&[0; 64]),
        ),
        (
            "patch copy_len = slice_len + 1",
            Ops::default().seek(0).uv(0).uv(len + 1).bytes(&[1; 64]),
        ),
        (
            "patch copy_len 2^64-1",
            Ops::default().seek(0).uv(0).uv(u64::MAX).bytes(&[1; 64]),
        ),
    ] {
        let p = patch(ops);
        refuses(
            name,
            &p.bytes,
            b,
            expect(
                "patch decoder: no op produces more than the slice needs (§6.5)",
                decode,
                payload_end(&p),
                ZSTD_HEAP,
            ),
        );
    }
}

/// The limit of "before any flash write": the applier writes a slice as it decodes (it holds no
/// slice buffer), so a rule an op breaks *after* earlier ops produced output is found after
/// that output reached the destination slot. The update still fails, the writes stay inside
/// the slice's own range of the inactive slot, and `finish` never returns `Ok`. (Every case
/// above breaks its rule in the first op or the frame header, and touches no flash.)
#[test]
fn a_late_hostile_op_fails_the_update_inside_its_slice() {
    let base = base_image();
    let ops = Ops::default()
        .seek(0)
        .uv(4000)
        .bytes(&[0; 4000])
        .uv(97)
        .bytes(&[1; 97]);
    let p = patch_package(&libzstd_frame(&ops.0), 12);
    let v = run_verify(&p.bytes, Some(&base));
    assert_eq!(v.result, Err(Error::Decode { slice: 0 }));
    assert_eq!(v.slices_out, 0);
    for chunk in [1, 4096, usize::MAX] {
        let a = run_applier(&p.bytes, Some(&base), chunk);
        assert_eq!(a.result, Err(Error::Decode { slice: 0 }));
        assert!(a.written <= 4000, "{} bytes written", a.written);
        assert!(a.erases <= 1, "{} sectors erased", a.erases);
    }
}

/// Records for an image of `size` bytes in 1 MiB slices (slice_log2 20): every slice a fill of
/// 0xFF, or raw when `raw`, each claiming digest `digest` (nothing is decoded that far).
fn mib_records(size: u64, raw: bool, digest: [u8; 32]) -> Vec<SliceRepr> {
    let count = size.div_ceil(1 << 20) as u32;
    (0..count)
        .map(|i| {
            let len = (size - (u64::from(i) << 20)).min(1 << 20) as u32;
            SliceRepr {
                index: i,
                method: if raw { Method::Raw } else { Method::Fill },
                payload_offset: if raw { i << 20 } else { 0 },
                payload_len: if raw { len } else { 0 },
                arg: if raw { 0 } else { 0xFF },
                payload_sha256: if raw { digest } else { sha(&[]) },
                slice_sha256: digest,
            }
        })
        .collect()
}

/// A manifest of 1 MiB slices declaring `size` image bytes.
fn mib_manifest(size: u64, slices: Vec<SliceRepr>) -> ManifestRepr {
    let mut m = fill_manifest();
    m.slice_log2 = 20;
    m.image_size = size;
    m.slices = slices;
    m
}

/// Declared sizes at and past the u32/u64 limits.
#[test]
fn declared_sizes_near_the_limits() {
    let image = vec![0x5A; S];
    let fill = fill_manifest();

    // image_size one past its maximum, with a consistent slice table (4096 x 1 MiB).
    let m = mib_manifest(1 << 32, mib_records(1 << 32, false, [7; 32]));
    let p = signed(&emit(&m), &[]);
    let image_size = malformed("image_size must be 1..=4294967295");
    refuses(
        "image_size = 2^32",
        &p.bytes,
        None,
        expect(
            "manifest: image_size <= 2^32-1 (§5.1)",
            image_size,
            p.manifest_end,
            0,
        ),
    );
    let mut m = fill.clone();
    // (hostile.rs has this one through Package::parse on an unsigned package.) slice_count
    // stays 1: image_size is checked first.
    m.image_size = u64::MAX;
    let p = signed(&emit(&m), &[]);
    refuses(
        "image_size = 2^64-1",
        &p.bytes,
        None,
        expect(
            "manifest: image_size <= 2^32-1 (§5.1)",
            image_size,
            p.manifest_end,
            0,
        ),
    );

    // image_size at its maximum, everything consistent: the applier refuses it for its slot
    // before the signatures; verify_package (no slot) decodes one 1 MiB fill slice into the
    // caller's buffer, whose digest is wrong, and stops there.
    let m = mib_manifest(
        u32::MAX.into(),
        mib_records(u32::MAX.into(), false, [7; 32]),
    );
    let p = signed(&emit(&m), &[]);
    refuses(
        "image_size = 2^32-1 (valid), one slice's digest wrong",
        &p.bytes,
        None,
        Expect {
            check: "applier: image fits the slot; verify: slice 0 digest (§6.2)",
            verify: Error::SliceDigest { slice: 0 },
            apply: Error::SlotTooSmall,
            at: p.manifest_end,
            heap: 0,
        },
    );

    // payload_len near 4 GiB and consistent with its records: 4096 raw 1 MiB slices, and a
    // file that holds none of them. Signed; the applier's payload buffer (64 KiB) cannot hold
    // a 1 MiB raw payload, verify finds the payload area missing.
    let m = mib_manifest(u32::MAX.into(), mib_records(u32::MAX.into(), true, [7; 32]));
    let mbytes = emit(&m);
    let p = craft_with(mbytes.len() as u32, u32::MAX, &mbytes, |e| vec![e], &[]);
    refuses(
        "payload_len = 2^32-1 (consistent records, absent payloads)",
        &p.bytes,
        None,
        Expect {
            check:
                "applier: largest payload fits the buffer; verify: payload area length (§11 #11)",
            verify: Error::Truncated {
                what: "payload area",
            },
            apply: Error::BufferTooSmall { needed: 1 << 20 },
            at: p.manifest_end,
            heap: 0,
        },
    );
    // payload_len = 2^32-1 in the (signed) header, records summing to 0.
    let mbytes = emit(&fill);
    let p = craft_with(mbytes.len() as u32, u32::MAX, &mbytes, |e| vec![e], &[]);
    refuses(
        "header payload_len = 2^32-1, records sum to 0",
        &p.bytes,
        None,
        expect(
            "manifest: records sum to payload_len (§11 #9)",
            Error::LengthMismatch {
                what: "payload_len",
                expected: 0,
                actual: u32::MAX.into(),
            },
            p.manifest_end,
            0,
        ),
    );

    // manifest_len at the u32 limit (32 + manifest_len = 2^32 + 31). No signature can cover a
    // manifest the file does not hold: refused by structure, by the applier before it buffers
    // anything. (0xFFFF_FFE0, where 32 + manifest_len wraps a u32 to 0, is applier.rs's
    // `a_header_declaring_a_4_gib_manifest_allocates_nothing_large`.)
    let mbytes = emit(&fill);
    let p = craft_with(u32::MAX, 0, &mbytes, |e| vec![e], &[]);
    refuses(
        "manifest_len = 2^32-1",
        &p.bytes,
        None,
        Expect {
            check: "applier: manifest fits its buffer; verify: manifest inside the file (§11 #4)",
            verify: Error::Truncated { what: "manifest" },
            apply: Error::BufferTooSmall {
                needed: 32 + u64::from(u32::MAX),
            },
            at: 32,
            heap: 0,
        },
    );
    // manifest_len one record longer than slice_count implies; the signature covers it.
    let mut mbytes = emit(&fill);
    let extra = mbytes[mbytes.len() - 96..].to_vec();
    mbytes.extend_from_slice(&extra);
    let p = signed(&mbytes, &[]);
    refuses(
        "manifest_len = one record more than slice_count",
        &p.bytes,
        None,
        expect(
            "manifest: manifest_len = 136 + tlv_len + 96 x slice_count (§5.1)",
            Error::LengthMismatch {
                what: "manifest_len",
                expected: mbytes.len() as u64 - 96,
                actual: mbytes.len() as u64,
            },
            p.manifest_end,
            0,
        ),
    );

    // tlv_len past 4096 and at the u32 limit; a field whose len (65535) runs past the area.
    // (hostile.rs `absurd_declared_lengths_are_typed_errors` has both, parse only, unsigned.)
    for v in [4097u32, u32::MAX] {
        let mut mbytes = emit(&fill);
        set(&mut mbytes, field::TLV_LEN, &v.to_le_bytes());
        let p = signed(&mbytes, &[]);
        refuses(
            &format!("tlv_len = {v:#x}"),
            &p.bytes,
            None,
            expect(
                "manifest: tlv_len <= 4096 (§5.1)",
                malformed("tlv_len larger than 4096"),
                p.manifest_end,
                0,
            ),
        );
    }
    let mut mbytes = emit(&fill);
    set(&mut mbytes, 136 + 2, &u16::MAX.to_le_bytes());
    let p = signed(&mbytes, &[]);
    refuses(
        "TLV len = 65535 in a 9-byte area",
        &p.bytes,
        None,
        expect(
            "manifest: TLV entries inside tlv_len (§5.3)",
            Error::Truncated {
                what: "manifest field value",
            },
            p.manifest_end,
            0,
        ),
    );

    // base_size: 0, 2^32 and 2^64-1 in a delta; 2^32-1 (valid) against an 8 KiB base, which
    // is compared by size before a byte of it is read; non-zero in a full package.
    let base = base_image();
    let delta = |base_size: u64, kind: Kind| {
        let mut m = manifest(
            kind,
            &image,
            0,
            Some(&base),
            vec![rec(0, Method::Fill, 0, &[], 0x5A, &image)],
        );
        m.base_size = base_size;
        signed(&emit(&m), &[])
    };
    for v in [0, 1 << 32, u64::MAX] {
        let p = delta(v, Kind::Delta);
        refuses(
            &format!("delta base_size = {v:#x}"),
            &p.bytes,
            Some(&base),
            expect(
                "manifest: delta base_size 1..=2^32-1 (§5.1)",
                malformed("delta package base_size must be 1..=4294967295"),
                p.manifest_end,
                0,
            ),
        );
    }
    let p = delta(u32::MAX.into(), Kind::Delta);
    refuses(
        "delta base_size = 2^32-1 (valid), 8 KiB base",
        &p.bytes,
        Some(&base),
        expect(
            "base image size, before reading it (§12.1 #4)",
            Error::BaseMismatch,
            p.payload_start,
            0,
        ),
    );
    let p = delta(u32::MAX.into(), Kind::Full);
    refuses(
        "full package with base_size = 2^32-1",
        &p.bytes,
        None,
        expect(
            "manifest: full package has no base (§5.1)",
            malformed("full package with a base image"),
            p.manifest_end,
            0,
        ),
    );

    // load_address + image_size: 2^64 is refused, 2^64-1 is the largest allowed.
    let mut m = fill.clone();
    m.load_address = u64::MAX - S as u64 + 1;
    let p = signed(&emit(&m), &[]);
    refuses(
        "load_address + image_size = 2^64",
        &p.bytes,
        None,
        expect(
            "manifest: load_address + image_size <= 2^64-1 (§5.1)",
            malformed("load_address + image_size overflows"),
            p.manifest_end,
            0,
        ),
    );
    m.load_address -= 1;
    accepts(&signed(&emit(&m), &[]).bytes, None, &image);

    // payload_offset + payload_len past the u32 range, and a running sum past payload_len.
    let z = libzstd_frame(&pattern());
    let zm = |slices| manifest(Kind::Full, &pattern(), 12, None, slices);
    let p = signed(
        &emit(&zm(vec![rec(
            0,
            Method::Zstd,
            u32::MAX - 10,
            &z,
            0,
            &pattern(),
        )])),
        &z,
    );
    refuses(
        "payload_offset = 2^32-11 (+ payload_len overflows u32)",
        &p.bytes,
        None,
        expect(
            "manifest: payload_offset = running sum (§5.4)",
            malformed(OVERLAP),
            p.manifest_end,
            0,
        ),
    );
    let mut r = rec(0, Method::Zstd, 0, &z, 0, &pattern());
    r.payload_len = u32::MAX;
    let p = signed(&emit(&zm(vec![r])), &z);
    refuses(
        "zstd payload_len = 2^32-1",
        &p.bytes,
        None,
        expect(
            "manifest: zstd payload_len < slice_len (§6.1)",
            malformed(RULES),
            p.manifest_end,
            0,
        ),
    );
    let two = [pattern(), pattern()].concat();
    let m = manifest(
        Kind::Full,
        &two,
        12,
        None,
        vec![
            rec(0, Method::Zstd, 0, &z, 0, &pattern()),
            rec(1, Method::Raw, z.len() as u32, &pattern(), 0, &pattern()),
        ],
    );
    let mbytes = emit(&m);
    let p = craft_with(
        mbytes.len() as u32,
        z.len() as u32,
        &mbytes,
        |e| vec![e],
        &z,
    );
    refuses(
        "payloads running past header payload_len",
        &p.bytes,
        None,
        expect(
            "manifest: running sum <= payload_len (§5.4)",
            malformed("slice payload beyond the payload area"),
            p.manifest_end,
            0,
        ),
    );
}

/// Two 4 KiB zstd slices of the same content, whose records are laid out by `records`.
fn two_slices(records: impl FnOnce(&[u8]) -> (Vec<SliceRepr>, Vec<u8>)) -> Crafted {
    let z = libzstd_frame(&pattern());
    let (slices, payloads) = records(&z);
    let m = manifest(
        Kind::Full,
        &[pattern(), pattern()].concat(),
        12,
        None,
        slices,
    );
    signed(&emit(&m), &payloads)
}

/// Payloads that overlap or leave gaps; records duplicated or out of order.
#[test]
fn overlapping_payloads_and_misordered_records() {
    let s = pattern();
    let ok = two_slices(|z| {
        (
            vec![
                rec(0, Method::Zstd, 0, z, 0, &s),
                rec(1, Method::Zstd, z.len() as u32, z, 0, &s),
            ],
            [z, z].concat(),
        )
    });
    accepts(&ok.bytes, None, &[s.clone(), s.clone()].concat());
    let overlap = expect(
        "manifest: payload_offset = running sum (§5.4)",
        malformed(OVERLAP),
        0,
        0,
    );
    let order = expect(
        "manifest: record index = its position (§5.4)",
        malformed("slice records out of order"),
        0,
        0,
    );
    for (name, p, e) in [
        (
            // Both records name the same bytes, which decode to the right slice twice.
            "payload shared by two records",
            two_slices(|z| {
                (
                    vec![
                        rec(0, Method::Zstd, 0, z, 0, &s),
                        rec(1, Method::Zstd, 0, z, 0, &s),
                    ],
                    z.to_vec(),
                )
            }),
            &overlap,
        ),
        (
            "payloads overlapping by one byte",
            two_slices(|z| {
                let n = z.len();
                let mut area = z.to_vec();
                area.extend_from_slice(&z[1..]);
                let mut r1 = rec(1, Method::Zstd, n as u32 - 1, z, 0, &s);
                r1.payload_sha256 = sha(&area[n - 1..]);
                (vec![rec(0, Method::Zstd, 0, z, 0, &s), r1], area)
            }),
            &overlap,
        ),
        (
            "one-byte gap between payloads",
            two_slices(|z| {
                let n = z.len() as u32;
                (
                    vec![
                        rec(0, Method::Zstd, 0, z, 0, &s),
                        rec(1, Method::Zstd, n + 1, z, 0, &s),
                    ],
                    [z, &[0], z].concat(),
                )
            }),
            &overlap,
        ),
        (
            "records in reverse order",
            two_slices(|z| {
                let n = z.len() as u32;
                (
                    vec![
                        rec(1, Method::Zstd, 0, z, 0, &s),
                        rec(0, Method::Zstd, n, z, 0, &s),
                    ],
                    [z, z].concat(),
                )
            }),
            &order,
        ),
        (
            "record 0 twice",
            two_slices(|z| {
                let n = z.len() as u32;
                (
                    vec![
                        rec(0, Method::Zstd, 0, z, 0, &s),
                        rec(0, Method::Zstd, n, z, 0, &s),
                    ],
                    [z, z].concat(),
                )
            }),
            &order,
        ),
        (
            "record index 2^32-1",
            two_slices(|z| {
                let n = z.len() as u32;
                (
                    vec![
                        rec(0, Method::Zstd, 0, z, 0, &s),
                        rec(u32::MAX, Method::Zstd, n, z, 0, &s),
                    ],
                    [z, z].concat(),
                )
            }),
            &order,
        ),
    ] {
        refuses(
            name,
            &p.bytes,
            None,
            Expect {
                at: p.manifest_end,
                ..*e
            },
        );
    }
}

/// Signature blocks with many, huge or repeated entries (on a one-fill-slice package, so no
/// decoder allocates: the heap bound is 0 bytes against up to 1 MiB of signatures).
#[test]
fn signature_blocks_with_many_entries() {
    let m = emit(&fill_manifest());
    let image = [0x5A; S];
    let block_at = |p: &Crafted| p.manifest_end;

    // 17 entries: the valid one and 16 untrusted Ed25519-sized ones. And count = 65535.
    let p = craft_with(
        m.len() as u32,
        0,
        &m,
        |e| {
            let mut v = vec![e];
            v.extend((0..16).map(|i| Entry {
                key_id: [i; 32],
                algorithm: 1,
                sig: vec![0; 64],
            }));
            v
        },
        &[],
    );
    let too_many = expect(
        "signature block: count <= 16 (§7)",
        malformed("more than 16 signatures"),
        block_at(&p) + 4,
        0,
    );
    refuses("17 signature entries", &p.bytes, None, too_many);
    // (hostile.rs `signature_block_with_many_entries_is_refused`: parse only.)
    let mut b = p.bytes.clone();
    set(&mut b, p.manifest_end, &u16::MAX.to_le_bytes());
    fix_trailer(&mut b);
    refuses(
        "signature count 65535",
        &b,
        None,
        expect(
            "signature block: count <= 16 (§7)",
            malformed("more than 16 signatures"),
            block_at(&p) + 4,
            0,
        ),
    );

    // 16 untrusted entries, each an unknown algorithm with a 65535-byte signature: 1 MiB the
    // applier skips without buffering, then refuses for want of a trusted signature.
    let big = |n: u8| {
        (0..n)
            .map(|i| unknown_entry(0x40 + i, 65535))
            .collect::<Vec<_>>()
    };
    let p = craft_with(m.len() as u32, 0, &m, |_| big(16), &[]);
    assert_eq!(p.payload_start - p.manifest_end, 4 + 16 * (36 + 65535));
    refuses(
        "16 untrusted 65535-byte unknown-algorithm signatures",
        &p.bytes,
        None,
        expect(
            "signature policy: >= 1 valid trusted signature (§12.2)",
            Error::NotEnoughTrustedSignatures {
                required: 1,
                found: 0,
            },
            p.payload_start,
            0,
        ),
    );
    // The control: 15 of them and the valid signature, the largest block a trusted package
    // can carry, verifies and applies with no heap at all.
    let p = craft_with(m.len() as u32, 0, &m, |e| [big(15), vec![e]].concat(), &[]);
    let (v, a) = accepts(&p.bytes, None, &image);
    assert_eq!((v.heap, a.heap), (0, 0));

    // The trusted key's id under an unknown algorithm, with 65535 signature bytes: refused as
    // a mismatch once its (skipped, never buffered) bytes have passed.
    let p = craft_with(
        m.len() as u32,
        0,
        &m,
        |e| {
            vec![Entry {
                key_id: e.key_id,
                ..unknown_entry(0, 65535)
            }]
        },
        &[],
    );
    refuses(
        "trusted key id with an unknown algorithm, 65535 bytes",
        &p.bytes,
        None,
        expect(
            "signature check: algorithm of the trusted key (§9.2)",
            Error::AlgorithmMismatch {
                key_id: trusted_id(),
            },
            block_at(&p) + 4 + 36 + 65535,
            0,
        ),
    );

    // Duplicate key ids: the valid signature twice; two huge untrusted entries with one id
    // (refused at the second entry's head, before its 65535 bytes).
    let p = craft_with(m.len() as u32, 0, &m, |e| vec![e.clone(), e], &[]);
    refuses(
        "the valid signature twice",
        &p.bytes,
        None,
        expect(
            "signature block: key ids unique (§7)",
            Error::DuplicateSignature,
            block_at(&p) + 4 + 100 + 36,
            0,
        ),
    );
    let p = craft_with(
        m.len() as u32,
        0,
        &m,
        |e| vec![unknown_entry(9, 65535), unknown_entry(9, 65535), e],
        &[],
    );
    refuses(
        "one untrusted id twice, 65535-byte signatures",
        &p.bytes,
        None,
        expect(
            "signature block: key ids unique (§7)",
            Error::DuplicateSignature,
            block_at(&p) + 4 + 36 + 65535 + 36,
            0,
        ),
    );
}

/// zstd frames (of a zstd slice and of a patch slice) asking for huge windows, windows above
/// the manifest's zstd_window_log, no content size, or a dictionary.
#[test]
fn zstd_frames_asking_for_too_much() {
    let base = base_image();
    // (package from a frame, base, decoded content length, blocks)
    let zstd = |f: &[u8], wlog| (zstd_package(f, wlog), None);
    let patch = |f: &[u8], wlog| (patch_package(f, wlog), Some(&base[..]));
    type Make<'a> = &'a dyn Fn(&[u8], u8) -> (Crafted, Option<&'a [u8]>);
    let slots: [(&str, Make, u32, Vec<u8>); 2] = [
        ("zstd", &zstd, S as u32, zstd_blocks()),
        ("patch", &patch, PATCH_CONTENT as u32, patch_blocks(true)),
    ];
    let window = Error::WindowTooLarge { slice: 0 };
    let decode = Error::Decode { slice: 0 };
    for (slot, make, content, blocks) in &slots {
        let case = |name: &str, fhd: u8, fields: &[u8], wlog: u8, err: Error, check| {
            let (p, b) = make(&zframe(fhd, fields, blocks), wlog);
            let payload = Package::parse(&p.bytes)
                .unwrap()
                .manifest()
                .slice(0)
                .unwrap();
            let at = p.payload_start + payload.payload_len() as usize;
            refuses(
                &format!("{slot}: {name}"),
                &p.bytes,
                b,
                expect(check, err, at, ZSTD_HEAP),
            );
        };
        // The control: a 4 KiB window, content size present, no dictionary.
        let (p, b) = make(&zframe(FHD_FCS4, &wd_fcs4(WD_4K, *content), blocks), 12);
        let image = if b.is_some() {
            base[..S].to_vec()
        } else {
            vec![0x5A; S]
        };
        accepts(&p.bytes, b, &image);

        let win = "zstd frame header: Window_Size <= 2^zstd_window_log (§6.3)";
        for (name, wd) in [
            ("window descriptor 2^31", 21 << 3),
            (
                "window descriptor 2^41 (the largest below ruzstd's cap)",
                31 << 3,
            ),
            (
                "window descriptor 0xFF (2^41 + 7 x 2^38, the largest)",
                0xFF,
            ),
            ("window 2^13 > 2^zstd_window_log", 3 << 3),
            ("window 4608 (2^12 + 2^9) > 2^zstd_window_log", (2 << 3) | 1),
        ] {
            case(name, FHD_FCS4, &wd_fcs4(wd, *content), 12, window, win);
        }
        // Single segment: the window is the content size, above 2^10.
        case(
            "single segment, content above the 1 KiB window (zstd_window_log 10)",
            0xA0,
            &content.to_le_bytes(),
            10,
            window,
            win,
        );
        // Single segment declaring 2^40: the window check (2^40) comes before the content size.
        case(
            "single segment declaring 2^40 bytes",
            0xE0,
            &(1u64 << 40).to_le_bytes(),
            12,
            window,
            win,
        );

        let fhd = "zstd frame header: descriptor byte (§6.3)";
        case("no content size", 0x00, &[WD_4K], 12, decode, fhd);
        for (name, flag, id) in [
            ("dictionary id 7 (1 byte)", 1u8, &[7u8][..]),
            ("dictionary id 0x0107 (2 bytes)", 2, &[7, 1][..]),
            (
                "dictionary id field holding 0 (4 bytes)",
                3,
                &[0, 0, 0, 0][..],
            ),
        ] {
            let mut fields = vec![WD_4K];
            fields.extend_from_slice(id);
            fields.extend_from_slice(&content.to_le_bytes());
            case(name, FHD_FCS4 | flag, &fields, 12, decode, fhd);
        }
    }
}

/// A compressed block (type 2) holding `literals` as raw literals and no sequences.
fn literals_block(literals: &[u8], last: bool) -> Vec<u8> {
    let n = literals.len();
    let mut content = vec![(1 << 2) | ((n & 0xF) << 4) as u8, (n >> 4) as u8];
    content.extend_from_slice(literals);
    content.push(0); // Number_of_Sequences = 0
    block(2, content.len(), last, &content)
}

/// Blocks that would make a decoder allocate far beyond the window: what a frame can ask for
/// without declaring a large window. ruzstd allocated 2.3 MB for the RLE literals, 1.2 MB for
/// the sequence count and 271 KB for one long match (4 KiB window), and accepted the 1027-byte
/// block (which libzstd refuses). otapack-zstd refuses them all within its fixed buffers.
#[test]
fn zstd_blocks_asking_for_more_than_the_window() {
    let decode = Error::Decode { slice: 0 };
    let check = "zstd block checks: Block_Maximum_Size (§6.3)";
    let at = |p: &Crafted| {
        let m = Package::parse(&p.bytes).unwrap().manifest();
        p.payload_start + m.slice(0).unwrap().payload_len() as usize
    };
    // 2^20-1 RLE literals (Size_Format 3) in a 5-byte compressed block, no sequences.
    let n: u32 = (1 << 20) - 1;
    let rle = [
        1 | 3 << 2 | ((n & 0xF) << 4) as u8,
        (n >> 4) as u8,
        (n >> 12) as u8,
        0x5A,
        0,
    ];
    // 98047 sequences (the most a header can announce) in a 6-byte compressed block.
    let seqs = [0x00, 0xFF, 0xFF, 0xFF, 0x00, 0x80];
    for (name, content) in [
        ("2^20-1 RLE literals in a 5-byte block", &rle[..]),
        ("98047 sequences in a 6-byte block", &seqs[..]),
    ] {
        let blocks = block(2, content.len(), true, content);
        let z = zstd_package(&zframe(FHD_FCS4, &wd_fcs4(WD_4K, S as u32), &blocks), 12);
        refuses(
            &format!("zstd: {name}"),
            &z.bytes,
            None,
            expect(check, decode, at(&z), ZSTD_HEAP),
        );
        let base = base_image();
        let p = patch_package(
            &zframe(FHD_FCS4, &wd_fcs4(WD_4K, PATCH_CONTENT as u32), &blocks),
            12,
        );
        refuses(
            &format!("patch: {name}"),
            &p.bytes,
            Some(&base),
            expect(check, decode, at(&p), ZSTD_HEAP),
        );
    }
    // One sequence of 131074 bytes (ML code 52 with 16 extra bits set, the longest match) in
    // a 10-byte block: 1 raw literal, then the sequence in RLE table mode (literal length code
    // 1, offset code 0 = repeat offset 1). libzstd refuses it ("Destination buffer is too
    // small"); ruzstd reserved the match first (271 KB of heap). otapack-zstd compares the
    // match with what the block has left before it copies a byte.
    let one_seq = [0x08, 0x5A, 0x01, 0x54, 0x01, 0x00, 52, 0xFF, 0xFF, 0x01];
    let p = zstd_package(
        &zframe(
            FHD_FCS4,
            &wd_fcs4(WD_4K, S as u32),
            &block(2, one_seq.len(), true, &one_seq),
        ),
        12,
    );
    refuses(
        "zstd: one 131074-byte match in a 10-byte block",
        &p.bytes,
        None,
        expect(
            "otapack-zstd: a block's matches <= Block_Maximum_Size - literals",
            decode,
            at(&p),
            ZSTD_HEAP,
        ),
    );
    // A compressed block whose Block_Size (1027) exceeds a 1 KiB window though it decodes to
    // 1024 bytes; the control is the same slice with 1021 literals in a 1024-byte block.
    let frame = |lits: usize| {
        let mut b = literals_block(&vec![0x5A; lits], false);
        for n in [1024, 1024, 1024, 1024 - lits] {
            b.extend(rle_block(0x5A, n, false));
        }
        b.extend(rle_block(0x5A, S - 3 * 1024 - (1024 - lits) - lits, true));
        zstd_package(&zframe(FHD_FCS4, &wd_fcs4(0, S as u32), &b), 10)
    };
    accepts(&frame(1021).bytes, None, &[0x5A; S]);
    let big = frame(1024);
    refuses(
        "zstd: compressed block of 1027 bytes in a 1 KiB window",
        &big.bytes,
        None,
        expect(check, decode, at(&big), ZSTD_HEAP),
    );
}

/// The block checks refuse nothing libzstd writes: frames at every level and several windows,
/// of firmware and of synthetic data, all verify (`build_full` verifies what it built).
#[test]
fn libzstd_frames_pass_the_block_checks() {
    use otapack::build::{build_full, BuildOptions};
    let fw = std::fs::read(testdata("firmware/seabios-1.16.3-bios.bin")).unwrap();
    let noise = base_image();
    let text: Vec<u8> = (0..60_000u32)
        .flat_map(|i| format!("line {i}: {}\n", i * 7919 % 1000).into_bytes())
        .collect();
    for data in [&fw[..64 * 1024], &noise[..], &text[..], &mixed_image()[..]] {
        for (level, wlog) in [(-5, 10), (1, 12), (3, 15), (9, 10), (19, 15), (22, 17)] {
            let mut o = BuildOptions::new("1");
            o.slice_log2 = 17;
            o.zstd_window_log = wlog;
            o.zstd_level = level;
            build_full(&raw_image(data.to_vec()), &o, &[]).unwrap();
        }
    }
}
