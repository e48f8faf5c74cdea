//! otapack-zstd against libzstd: every frame libzstd writes (any level, window, block limit,
//! checksum or not) decodes to the same bytes; frames libzstd refuses are refused; corrupted
//! frames never panic.

use otapack_zstd::{ring_len, Decoder, Error, FrameHeader, Prefix};
use proptest::prelude::*;
use zstd::zstd_safe::CParameter;

/// Decodes one whole frame with a ring sized for `max_window` and `max_block`.
fn decode(frame: &[u8], max_window: usize, max_block: usize) -> Result<Vec<u8>, Error> {
    decode_with(frame, max_window, max_block, None)
}

/// A prefix held in memory, counting what was read of it.
struct Held<'a>(&'a [u8], usize);

impl Prefix for Held<'_> {
    fn read(&mut self, at: u64, buf: &mut [u8]) -> Result<(), Error> {
        let at = usize::try_from(at).map_err(|_| Error::Prefix)?;
        let src = self.0.get(at..at + buf.len()).ok_or(Error::Prefix)?;
        buf.copy_from_slice(src);
        self.1 += buf.len();
        Ok(())
    }
}

/// [`decode`], against `prefix` when given (a frame of content at most `max_window`).
fn decode_with(
    frame: &[u8],
    max_window: usize,
    max_block: usize,
    prefix: Option<&[u8]>,
) -> Result<Vec<u8>, Error> {
    decode_counting(frame, max_window, max_block, prefix).map(|(out, _)| out)
}

/// [`decode_with`], also returning how many prefix bytes were read.
fn decode_counting(
    frame: &[u8],
    max_window: usize,
    max_block: usize,
    prefix: Option<&[u8]>,
) -> Result<(Vec<u8>, usize), Error> {
    let header = FrameHeader::parse(frame)?.ok_or(Error::Corrupt("short header"))?;
    let mut ring = vec![0u8; ring_len(max_window, max_block)];
    let mut dec = Decoder::new();
    let mut held = prefix.map(|p| Held(p, 0));
    match &held {
        Some(h) => dec.begin_frame_with_prefix(
            &header,
            max_window as u64,
            max_block,
            ring.len(),
            h.0.len() as u64,
        )?,
        None => dec.begin_frame(&header, max_window as u64, max_block, ring.len())?,
    }
    let mut rest = &frame[header.len..];
    let mut out = Vec::new();
    loop {
        let n = dec.block_len(rest)?.ok_or(Error::Corrupt("truncated"))?;
        if n > rest.len() {
            return Err(Error::Corrupt("truncated"));
        }
        let (block, tail) = rest.split_at(n);
        rest = tail;
        let o = dec.decode_block_with(
            &mut ring,
            block,
            held.as_mut().map(|h| h as &mut dyn Prefix),
        )?;
        out.extend_from_slice(o.first);
        out.extend_from_slice(o.second);
        if o.last {
            break;
        }
    }
    if header.checksum {
        let (sum, tail) = rest
            .split_first_chunk::<4>()
            .ok_or(Error::Corrupt("no checksum"))?;
        if u32::from_le_bytes(*sum) != dec.checksum() {
            return Err(Error::Corrupt("checksum"));
        }
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(Error::Corrupt("trailing bytes"));
    }
    if header.content_size.is_some_and(|c| c != out.len() as u64) {
        return Err(Error::Corrupt("content size"));
    }
    Ok((out, held.map_or(0, |h| h.1)))
}

fn compress(
    data: &[u8],
    level: i32,
    window_log: u32,
    block_log: Option<u32>,
    checksum: bool,
) -> Vec<u8> {
    let mut c = zstd::bulk::Compressor::new(level).unwrap();
    c.set_parameter(CParameter::WindowLog(window_log)).unwrap();
    c.set_parameter(CParameter::ChecksumFlag(checksum)).unwrap();
    c.set_parameter(CParameter::ContentSizeFlag(true)).unwrap();
    if let Some(b) = block_log {
        c.set_parameter(CParameter::MaxBlockSize(1 << b)).unwrap();
    }
    c.compress(data).unwrap()
}

/// One frame of `data` written against `prefix` (libzstd's `ZSTD_CCtx_refPrefix`, what
/// `zstd --patch-from` does), its window covering both.
fn compress_with_prefix(data: &[u8], prefix: &[u8], level: i32, block_log: u32) -> Vec<u8> {
    use zstd::zstd_safe::CCtx;
    let mut c = CCtx::create();
    let reach = (prefix.len() + data.len())
        .next_power_of_two()
        .trailing_zeros();
    c.set_parameter(CParameter::CompressionLevel(level))
        .unwrap();
    c.set_parameter(CParameter::WindowLog(reach.max(10)))
        .unwrap();
    c.set_parameter(CParameter::ContentSizeFlag(true)).unwrap();
    c.set_parameter(CParameter::MaxBlockSize(1 << block_log))
        .unwrap();
    c.ref_prefix(prefix).unwrap();
    let mut out = Vec::with_capacity(data.len() + 1024);
    c.compress2(&mut out, data).unwrap();
    out
}

/// Data that looks like firmware and patches: runs of zeros, repeats at varied distances,
/// small edits and random stretches (literals for Huffman).
fn firmware_like() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        (1usize..3000).prop_map(|n| vec![0u8; n]),
        proptest::collection::vec(any::<u8>(), 1..600),
        proptest::collection::vec(0u8..8, 1..2000),
        (1usize..40, 1usize..400)
            .prop_map(|(period, n)| (0..n * period).map(|i| (i % period) as u8 ^ 0xA5).collect()),
        proptest::collection::vec(
            prop_oneof![
                Just(0x46u8),
                Just(0xF0),
                Just(0x00),
                Just(0x20),
                any::<u8>()
            ],
            1..3000
        ),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|pieces| {
        let mut out = Vec::new();
        for (i, p) in pieces.into_iter().enumerate() {
            // Sometimes repeat an earlier stretch: long-distance matches.
            if i % 3 == 2 && out.len() > 64 {
                let from = (i * 7919) % (out.len() - 32);
                let len = (out.len() - from).min(5000);
                let copy: Vec<u8> = out[from..from + len].to_vec();
                out.extend_from_slice(&copy);
            }
            out.extend_from_slice(&p);
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn decodes_what_libzstd_writes(
        data in firmware_like(),
        level in prop_oneof![Just(1), Just(3), Just(9), Just(19), Just(22), -5i32..0],
        window_log in 10u32..=17,
        block_log in proptest::option::of(10u32..=17),
        checksum in any::<bool>(),
    ) {
        let frame = compress(&data, level, window_log, block_log, checksum);
        let window = 1usize << window_log;
        let block = block_log.map_or(128 * 1024, |b| 1 << b).min(window);
        prop_assert_eq!(decode(&frame, window, block), Ok(data));
    }

    #[test]
    fn corrupted_frames_are_refused_or_decode_like_libzstd(
        data in firmware_like(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        window_log in 10u32..=16,
    ) {
        let mut frame = compress(&data, 19, window_log, Some(12), true);
        for (at, x) in flips {
            let i = at.index(frame.len());
            frame[i] ^= x;
        }
        let window = 1usize << window_log;
        let ours = decode(&frame, window, 4096.min(window));
        let theirs = zstd::stream::decode_all(&frame[..]);
        if let Ok(out) = &ours {
            // When we accept, libzstd must produce the same bytes.
            prop_assert_eq!(Some(out), theirs.as_ref().ok());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 120, ..ProptestConfig::default() })]

    /// A frame written against a prefix (a new slice against the old image) decodes to the
    /// same bytes with the prefix read on demand, its content alone held in the ring.
    #[test]
    fn decodes_frames_written_against_a_prefix(
        prefix in firmware_like(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..40),
        take in (any::<prop::sample::Index>(), 1usize..9000),
        tail in proptest::collection::vec(any::<u8>(), 0..300),
        level in prop_oneof![Just(3), Just(19)],
        block_log in 10u32..=13,
    ) {
        // The content: an edited stretch of the prefix, then something new.
        let mut data: Vec<u8> = if prefix.is_empty() {
            Vec::new()
        } else {
            let from = take.0.index(prefix.len());
            prefix[from..(from + take.1).min(prefix.len())].to_vec()
        };
        for (at, b) in &edits {
            if !data.is_empty() {
                let i = at.index(data.len());
                data[i] = *b;
            }
        }
        data.extend_from_slice(&tail);
        let frame = compress_with_prefix(&data, &prefix, level, block_log);
        let window = data.len().next_power_of_two().max(1024);
        let block = (1usize << block_log).min(window);
        prop_assert_eq!(decode_with(&frame, window, block, Some(&prefix)), Ok(data.clone()));
        // Without its prefix, a frame that used it is refused.
        if let Ok(out) = decode(&frame, window, block) {
            prop_assert_eq!(out, data);
        }
    }

    #[test]
    fn corrupted_prefix_frames_are_refused_or_decode_like_libzstd(
        prefix in firmware_like(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
    ) {
        let data: Vec<u8> = prefix.iter().rev().take(5000).map(|b| b ^ 1).chain(prefix.iter().take(3000).copied()).collect();
        let mut frame = compress_with_prefix(&data, &prefix, 19, 12);
        for (at, x) in flips {
            let i = at.index(frame.len());
            frame[i] ^= x;
        }
        let ours = decode_with(&frame, 8192, 4096, Some(&prefix));
        let mut d = zstd::zstd_safe::DCtx::create();
        d.ref_prefix(&prefix[..]).unwrap();
        let mut theirs = Vec::with_capacity(1 << 16);
        let theirs = d.decompress(&mut theirs, &frame).map(|_| theirs);
        if let Ok(out) = &ours {
            prop_assert_eq!(Some(out), theirs.as_ref().ok());
        }
    }
}

#[test]
fn a_match_into_the_prefix_reads_only_what_it_copies() {
    let prefix: Vec<u8> = (0..50_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    // 3,000 bytes from the prefix's middle, then 1,000 from its start.
    let data: Vec<u8> = prefix[20_000..23_000]
        .iter()
        .chain(&prefix[..1000])
        .copied()
        .collect();
    let frame = compress_with_prefix(&data, &prefix, 19, 12);
    assert!(
        frame.len() < 100,
        "{} bytes: the matches were not found",
        frame.len()
    );
    let header = FrameHeader::parse(&frame).unwrap().unwrap();
    let mut dec = Decoder::new();
    let mut ring = vec![0u8; ring_len(4096, 4096)];
    // The content (4,000 bytes) is bounded, not the declared window.
    assert_eq!(
        dec.begin_frame_with_prefix(&header, 2048, 4096, ring.len(), 50_000),
        Err(Error::WindowTooLarge { window: 4000 })
    );
    let (out, read) = decode_counting(&frame, 4096, 4096, Some(&prefix)).unwrap();
    assert_eq!(out, data);
    // Nearly every byte came from the prefix, none twice (libzstd may keep a literal or two).
    assert!((3_900..=4_000).contains(&read), "{read} bytes read");
    // A prefix shorter than the frame's matches reach is refused, and so is none at all;
    // a reader that fails stops the frame.
    assert!(matches!(
        decode_with(&frame, 4096, 4096, Some(&prefix[..20_000])),
        Err(Error::Corrupt(_))
    ));
    assert!(matches!(
        decode(&frame, 1 << 17, 4096),
        Err(Error::Corrupt(_))
    ));
    struct Failing;
    impl Prefix for Failing {
        fn read(&mut self, _: u64, _: &mut [u8]) -> Result<(), Error> {
            Err(Error::Prefix)
        }
    }
    dec.begin_frame_with_prefix(&header, 4096, 4096, ring.len(), 50_000)
        .unwrap();
    let n = dec.block_len(&frame[header.len..]).unwrap().unwrap();
    let block = &frame[header.len..header.len + n];
    assert_eq!(
        dec.decode_block_with(&mut ring, block, Some(&mut Failing))
            .map(|o| o.len()),
        Err(Error::Prefix)
    );
}

#[test]
fn a_window_larger_than_allowed_is_refused_before_decoding() {
    let data: Vec<u8> = (0..200_000u32)
        .map(|i| (i % 251) as u8 ^ (i / 1000) as u8)
        .collect();
    let frame = compress(&data, 19, 16, None, true);
    let header = FrameHeader::parse(&frame).unwrap().unwrap();
    let mut dec = Decoder::new();
    assert!(matches!(
        dec.begin_frame(&header, 1 << 15, 1 << 15, ring_len(1 << 15, 1 << 15)),
        Err(Error::WindowTooLarge { window: 65536 })
    ));
    assert_eq!(decode(&frame, 1 << 16, 1 << 16), Ok(data));
}

#[test]
fn blocks_above_the_limit_are_refused_by_their_header() {
    let data: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let frame = compress(&data, 3, 16, Some(14), false);
    assert_eq!(
        decode(&frame, 1 << 16, 1 << 14).map(|d| d.len()),
        Ok(data.len())
    );
    assert!(matches!(
        decode(&frame, 1 << 16, 1 << 13),
        Err(Error::Corrupt(_))
    ));
}

#[test]
fn one_decoder_serves_frames_of_different_windows() {
    let mut dec = Decoder::new();
    let mut ring = vec![0u8; ring_len(1 << 14, 1 << 14)];
    for (i, wl) in [14u32, 10, 12, 14].into_iter().enumerate() {
        let data: Vec<u8> = (0..40_000u32)
            .map(|j| ((j / (i as u32 + 3)) % 97) as u8)
            .collect();
        let frame = compress(&data, 19, wl, None, true);
        let header = FrameHeader::parse(&frame).unwrap().unwrap();
        dec.begin_frame(&header, 1 << 14, 1 << 14, ring.len())
            .unwrap();
        let mut rest = &frame[header.len..];
        let mut out = Vec::new();
        loop {
            let n = dec.block_len(rest).unwrap().unwrap();
            let (block, tail) = rest.split_at(n);
            rest = tail;
            let o = dec.decode_block(&mut ring, block).unwrap();
            out.extend_from_slice(o.first);
            out.extend_from_slice(o.second);
            if o.last {
                break;
            }
        }
        assert_eq!(u32::from_le_bytes(rest.try_into().unwrap()), dec.checksum());
        assert_eq!(out, data, "frame {i}");
    }
}

#[test]
fn an_empty_frame_needs_a_ring_all_the_same() {
    // Single segment, content size 0: Window_Size 0, one empty raw block.
    let frame = [0x28, 0xB5, 0x2F, 0xFD, 0x20, 0x00, 0x01, 0x00, 0x00];
    let header = FrameHeader::parse(&frame).unwrap().unwrap();
    assert_eq!(header.window_size, 0);
    let mut dec = Decoder::new();
    assert_eq!(
        dec.begin_frame(&header, 1 << 10, 1 << 10, 0),
        Err(Error::RingSize { needed: 1 })
    );
    assert_eq!(decode(&frame, 1 << 10, 1 << 10), Ok(Vec::new()));
    // A window too large for any ring is refused, not wrapped around.
    let huge = FrameHeader {
        window_size: u64::MAX,
        ..header
    };
    assert!(matches!(
        dec.begin_frame(&huge, u64::MAX, 1 << 10, 1 << 20),
        Err(Error::RingSize { .. })
    ));
}
