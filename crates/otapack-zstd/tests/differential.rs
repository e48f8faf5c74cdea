//! otapack-zstd against libzstd: every frame libzstd writes (any level, window, block limit,
//! checksum or not) decodes to the same bytes; frames libzstd refuses are refused; corrupted
//! frames never panic.

use otapack_zstd::{ring_len, Decoder, Error, FrameHeader};
use proptest::prelude::*;
use zstd::zstd_safe::CParameter;

/// Decodes one whole frame with a ring sized for `max_window` and `max_block`.
fn decode(frame: &[u8], max_window: usize, max_block: usize) -> Result<Vec<u8>, Error> {
    let header = FrameHeader::parse(frame)?.ok_or(Error::Corrupt("short header"))?;
    let mut ring = vec![0u8; ring_len(max_window, max_block)];
    let mut dec = Decoder::new();
    dec.begin_frame(&header, max_window as u64, max_block, ring.len())?;
    let mut rest = &frame[header.len..];
    let mut out = Vec::new();
    loop {
        let n = dec.block_len(rest)?.ok_or(Error::Corrupt("truncated"))?;
        if n > rest.len() {
            return Err(Error::Corrupt("truncated"));
        }
        let (block, tail) = rest.split_at(n);
        rest = tail;
        let o = dec.decode_block(&mut ring, block)?;
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
    Ok(out)
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
