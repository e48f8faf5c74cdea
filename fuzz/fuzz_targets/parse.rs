//! `Package::parse` on arbitrary bytes; when it accepts, every accessor of the checked views
//! is walked and the emit-side round trips are checked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otapack_core::wire::header::{HeaderRepr, HEADER_LEN};
use otapack_core::wire::manifest::{Kind, ManifestRepr, FLAG_APPLY_DESCENDING, SHA256_EMPTY};
use otapack_core::wire::sigblock;
use otapack_core::wire::slice::{Method, SliceRepr};
use otapack_core::wire::tlv;
use otapack_core::wire::trailer::TRAILER_LEN;
use otapack_core::Package;
use std::hint::black_box;

fuzz_target!(|data: &[u8]| {
    let Ok(pkg) = Package::parse(data) else {
        return;
    };
    assert_eq!(pkg.as_bytes().len(), data.len());

    // Header.
    let h = pkg.header();
    assert_eq!(h.as_bytes().len(), HEADER_LEN);
    assert_eq!(
        HeaderRepr::parse(&h).emit(),
        h.as_bytes(),
        "header round trip"
    );
    black_box(h.format_version());

    // Manifest, fixed part.
    let m = pkg.manifest();
    assert_eq!(m.as_bytes().len(), h.manifest_len() as usize);
    match m.kind() {
        Kind::Full => assert!(m.base_size() == 0 && m.base_sha256() == [0; 32]),
        _ => assert!((1..=u64::from(u32::MAX)).contains(&m.base_size())),
    }
    // Flags: only APPLY_DESCENDING, and only in an in-place delta; the apply order is a
    // permutation of the slice indices.
    assert_eq!(m.flags() & !FLAG_APPLY_DESCENDING, 0);
    assert!(!m.apply_descending() || m.kind() == Kind::DeltaInPlace);
    let mut order: Vec<u32> = m.apply_order().collect();
    order.sort_unstable();
    assert!(order.iter().copied().eq(0..m.slice_count()), "apply order");
    black_box((
        m.kind().name(),
        m.erase_value(),
        m.zstd_window_log(),
        m.security_counter(),
        m.created(),
        m.expires(),
        m.load_address(),
        m.image_sha256(),
        m.base_size(),
        m.base_sha256(),
        m.tlv_len(),
    ));
    let s = u64::from(m.slice_size());
    assert!((4096..=1 << 20).contains(&s));
    // Payload segments (§5.5): none, or 1 KiB up to the slice size, with 32- or 16-byte links
    // (16 only with segments).
    let g = m.segment_size();
    assert!(g == 0 || (1024..=s).contains(&g), "segment size {g}");
    match m.segment_link_code() {
        0 => assert_eq!(m.segment_link_len(), 32),
        16 => assert!(g != 0 && m.segment_link_len() == 16),
        c => panic!("segment_link_len code {c} accepted"),
    }
    black_box(m.device_ram());
    assert_eq!(u64::from(m.slice_count()), m.image_size().div_ceil(s));
    let total: u64 = (0..m.slice_count())
        .map(|i| u64::from(m.slice_len(i)))
        .sum();
    assert_eq!(
        total,
        m.image_size(),
        "slice lengths do not add up to image_size"
    );
    for i in [m.slice_count(), m.slice_count().saturating_add(1), u32::MAX] {
        assert_eq!(m.slice_len(i), 0, "slice_len past the last slice");
    }

    // Identity fields.
    let kinds: Vec<u16> = m.fields().map(|f| f.kind).collect();
    let field_bytes: usize = m.fields().map(|f| 4 + f.value.len()).sum();
    assert_eq!(field_bytes, m.tlv_len() as usize, "fields() skipped bytes");
    assert!(!m.software_version().is_empty());
    black_box(m.software_type());
    assert!(m.hardware_versions().count() <= tlv::MAX_HARDWARE_VERSIONS);

    // Slice records and their payloads.
    assert_eq!(m.slices().len(), m.slice_count() as usize);
    let mut offset: u64 = 0;
    for (i, rec) in m.slices().enumerate() {
        assert_eq!(rec.index() as usize, i);
        assert_eq!(u64::from(rec.payload_offset()), offset);
        let payload = pkg.payload(&rec);
        assert_eq!(
            payload.len(),
            rec.payload_len() as usize,
            "payload out of bounds"
        );
        offset += payload.len() as u64;
        // Data length: the payload less one link per segment after the first.
        let len = u64::from(rec.payload_len());
        let single = g == 0 || len <= g;
        let data_len = if single {
            len
        } else {
            len - m.segment_link_len() * (len.div_ceil(g) - 1)
        };
        assert_eq!(m.data_len(&rec), data_len, "data_len of slice {i}");
        let slice_len = u64::from(m.slice_len(i as u32));
        match rec.method() {
            Method::Fill => {
                assert!(payload.is_empty() && rec.arg() <= 0xFF);
                assert_eq!(rec.payload_sha256(), SHA256_EMPTY);
            }
            Method::Raw => {
                assert_eq!(data_len, slice_len, "raw data is not the slice");
                // One segment: the payload is the slice. A segmented payload's digest is its
                // first segment's.
                assert!(!single || rec.payload_sha256() == rec.slice_sha256());
            }
            Method::Zstd => {
                assert!(m.zstd_window_log() != 0);
                assert!((1..slice_len).contains(&data_len));
            }
            Method::Copy => {
                assert!(m.kind() != Kind::Full, "copy slice in a full package");
                assert!(payload.is_empty() && rec.payload_sha256() == SHA256_EMPTY);
                let end = rec.arg().checked_add(m.slice_len(i as u32).into());
                assert!(
                    end.is_some_and(|e| e <= m.base_size()),
                    "copy beyond the base"
                );
                let w = m.read_window(i as u32);
                assert!(
                    m.kind() != Kind::DeltaInPlace
                        || (rec.arg() >= w.start && end.is_some_and(|e| e <= w.end)),
                    "in-place copy outside its read window"
                );
            }
            Method::Patch => {
                assert!(m.kind() != Kind::Full, "patch slice in a full package");
                assert!(m.zstd_window_log() != 0 && (1..slice_len).contains(&data_len));
            }
            Method::ZstdRef => {
                assert!(m.kind() != Kind::Full, "zstd-ref slice in a full package");
                assert!(m.zstd_window_log() != 0 && (1..slice_len).contains(&data_len));
                let (start, len) = otapack_core::wire::slice::ref_region(rec.arg());
                assert!(
                    len > 0 && start + len <= m.base_size(),
                    "prefix beyond the base"
                );
                let w = m.read_window(i as u32);
                assert!(
                    m.kind() != Kind::DeltaInPlace || (start >= w.start && start + len <= w.end),
                    "in-place prefix outside its read window"
                );
            }
        }
        black_box((rec.method().name(), rec.slice_sha256()));
        let repr = SliceRepr::parse(&rec);
        assert_eq!(SliceRepr::parse(&rec), repr);
        black_box(repr.emit());
    }
    assert_eq!(offset, u64::from(h.payload_len()));
    assert_eq!(pkg.payload_area().len() as u64, offset);
    assert_eq!(
        pkg.payload_start() + pkg.payload_area().len() + TRAILER_LEN,
        data.len()
    );

    // Owned manifest: what a parsed manifest holds must emit and parse again. The bytes are
    // identical when the fields are in the order the writer uses and none is unknown.
    let repr = ManifestRepr::parse(&m);
    let emitted = repr
        .emit()
        .unwrap_or_else(|e| panic!("ManifestRepr of a parsed manifest does not emit: {e}"));
    let canonical = {
        let mut k = kinds.iter().copied().peekable();
        let ok_version = k.next() == Some(tlv::SOFTWARE_VERSION);
        if k.peek() == Some(&tlv::SOFTWARE_TYPE) {
            k.next();
        }
        ok_version && k.all(|t| t == tlv::HARDWARE_VERSION)
    };
    if canonical {
        assert_eq!(emitted, m.as_bytes(), "manifest round trip");
    }

    // Signature block.
    let sigs = pkg.signatures();
    let entries: Vec<_> = sigs.entries().collect();
    assert_eq!(entries.len(), sigs.count());
    assert_eq!(sigs.is_empty(), entries.is_empty());
    for e in &entries {
        black_box((e.key_id, e.algorithm.code(), e.algorithm.name()));
        assert!(!e.signature.is_empty());
    }
    let block = sigblock::emit(&entries).expect("signature block of a parsed package emits");
    assert_eq!(block, sigs.as_bytes(), "signature block round trip");
    assert_eq!(sigs.len(), sigs.as_bytes().len());
    assert_eq!(
        pkg.payload_start(),
        HEADER_LEN + m.as_bytes().len() + sigs.len()
    );

    // Signed bytes, trailer, host-side views.
    assert_eq!(pkg.signed_bytes().len(), HEADER_LEN + m.as_bytes().len());
    let msg = pkg.signed_message();
    assert_eq!(msg[32..], pkg.signed_digest());
    black_box(pkg.trailer().md5());
    let md5_ok = pkg.check_md5().is_ok();
    black_box(otapack::report::PackageInfo::of(&pkg));
    let described = otapack::describe::describe(
        data,
        "https://example.invalid/p.ota.md5.bin",
        otapack::describe::SignMethod::Sha256,
    );
    assert_eq!(
        described.is_ok(),
        md5_ok,
        "describe disagrees with check_md5"
    );
});
