//! Matching for delta packages: bidiff's bsdiff-style matches, one suffix sort of the old image
//! for the whole build, scanned in slice-sized chunks so each slice's matches start from old
//! cursor 0 and form an independent patch. In-place deltas instead diff each slice against its
//! read window of the old image ([`slice_matches_windowed`]).

use crate::error::{Error, Result};
use otapack_core::decode::WindowedBase;
use otapack_core::patch::{encode, encode_format2, Op, PatchDecoder, MAX_STREAM_FACTOR};
use otapack_core::predict::{Predict, MAX_MAP_ENTRIES};
use std::ops::Range;

/// One bsdiff match, in absolute new-image coordinates: `new[add_new..add_new+add_len]` is
/// `old[add_old..] + diff`, then `new[add_new+add_len..copy_end]` is literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    pub add_old: usize,
    pub add_new: usize,
    pub add_len: usize,
    pub copy_end: usize,
}

/// How much of the new image one bidiff scan covers. The scans run in parallel, and each
/// starts afresh: scanned one slice at a time (64 KiB), U-Boot's 11th slice found none of the
/// matches a longer scan finds (7,765 bytes of patch against 173; the package 34,441 bytes
/// against 26,820). 256 KiB scans gave the same packages as 1 MiB ones on every pair in
/// testdata.
pub const SCAN_CHUNK: usize = 256 << 10;

/// The matches of every slice of `new` against `old`, slice by slice. bidiff scans
/// [`SCAN_CHUNK`] bytes at a time (at least a slice); a match that crosses a slice boundary is
/// cut there, so each slice's matches tile it exactly.
pub fn slice_matches(old: &[u8], new: &[u8], slice_size: usize) -> Result<Vec<Vec<Match>>> {
    if old.is_empty() {
        return Err(Error::Invalid("the old image is empty".into()));
    }
    let params = bidiff::DiffParams::new(1, Some(slice_size.max(SCAN_CHUNK)))
        .map_err(|e| Error::Invalid(format!("diff parameters: {e}")))?;
    let mut per_slice: Vec<Vec<Match>> = vec![Vec::new(); new.len().div_ceil(slice_size)];
    bidiff::diff(old, new, &params, |m| {
        let mut m = Match {
            add_old: m.add_old_start,
            add_new: m.add_new_start,
            add_len: m.add_length,
            copy_end: m.copy_end,
        };
        // A match that crosses slice boundaries is cut at each.
        while m.copy_end > m.add_new {
            let boundary = (m.add_new / slice_size + 1) * slice_size;
            let mut head = m;
            if m.copy_end > boundary {
                head.copy_end = boundary;
                head.add_len = m.add_len.min(boundary - m.add_new);
                let moved = boundary - m.add_new;
                let add_rest = m.add_len.saturating_sub(moved);
                m = Match {
                    add_old: m.add_old + moved.min(m.add_len),
                    add_new: boundary,
                    add_len: add_rest,
                    copy_end: m.copy_end,
                };
            } else {
                m.add_new = m.copy_end;
            }
            if let Some(v) = per_slice.get_mut(head.add_new / slice_size) {
                v.push(head);
            }
        }
        Ok::<(), std::io::Error>(())
    })
    .map_err(|e| Error::Invalid(format!("diff: {e}")))?;
    Ok(per_slice)
}

/// The matches of every slice of `new` against only its read window of `old`
/// (`window(k)` for slice k), slice by slice: one bidiff run per slice against the window
/// sub-slice, in parallel. Used for in-place deltas, where slice k may read only base bytes
/// still intact when it is applied.
pub fn slice_matches_windowed(
    old: &[u8],
    new: &[u8],
    slice_size: usize,
    window: impl Fn(usize) -> Range<usize> + Sync,
) -> Result<Vec<Vec<Match>>> {
    use rayon::prelude::*;
    let params = bidiff::DiffParams::new(1, None)
        .map_err(|e| Error::Invalid(format!("diff parameters: {e}")))?;
    new.par_chunks(slice_size)
        .enumerate()
        .map(|(k, slice)| {
            let w = window(k);
            let Some(base) = old.get(w.clone()).filter(|b| !b.is_empty()) else {
                return Ok(Vec::new()); // nothing intact to match (bidiff needs a non-empty old)
            };
            let start = k * slice_size;
            let mut v = Vec::new();
            bidiff::diff(base, slice, &params, |m| {
                if m.copy_end > m.add_new_start {
                    v.push(Match {
                        add_old: m.add_old_start + w.start,
                        add_new: m.add_new_start + start,
                        add_len: m.add_length,
                        copy_end: m.copy_end + start,
                    });
                }
                Ok::<(), std::io::Error>(())
            })
            .map_err(|e| Error::Invalid(format!("diff: {e}")))?;
            Ok(v)
        })
        .collect()
}

/// An offset in `old` holding exactly `slice` (the new slice at `start`), with the whole range
/// inside `window`: the same offset, or the old range of a match that covers the whole slice.
pub fn find_copy(
    old: &[u8],
    slice: &[u8],
    start: usize,
    matches: &[Match],
    window: &Range<usize>,
) -> Option<u64> {
    let inside = |at: usize| at >= window.start && at + slice.len() <= window.end;
    if inside(start) && old.get(start..start + slice.len()) == Some(slice) {
        return Some(start as u64);
    }
    matches
        .iter()
        .filter(|m| m.add_len == slice.len() && inside(m.add_old))
        .find(|m| old.get(m.add_old..m.add_old + slice.len()) == Some(slice))
        .map(|m| m.add_old as u64)
}

/// Matches shorter than this say little about where code moved; they are left out of the
/// address map.
const MAP_MIN_MATCH: usize = 16;

/// The address map of patch format 2 (`otapack_core::predict`): for each base offset, how far
/// the byte moved in the new image, from the matches of every slice (pointers and calls reach
/// across slices). Each base byte takes the shift of the longest match covering it; runs of
/// one shift become entries, and when there are more than the header allows, the entries
/// covering the fewest bytes are dropped (their range takes the shift of the entry before).
pub fn address_map(old_len: usize, matches: &[Vec<Match>]) -> Vec<(u32, u32)> {
    let mut all: Vec<&Match> = matches
        .iter()
        .flatten()
        .filter(|m| m.add_len >= MAP_MIN_MATCH)
        .collect();
    all.sort_by_key(|m| std::cmp::Reverse(m.add_len));
    let mut shift: Vec<Option<u32>> = vec![None; old_len];
    for m in all {
        let s = (m.add_new as u64).wrapping_sub(m.add_old as u64) as u32;
        for b in shift.iter_mut().skip(m.add_old).take(m.add_len) {
            b.get_or_insert(s);
        }
    }
    // (start, shift, bytes covered)
    let mut runs: Vec<(u32, u32, usize)> = Vec::new();
    for (i, s) in shift.iter().enumerate() {
        let (Some(s), Ok(i)) = (*s, u32::try_from(i)) else {
            continue;
        };
        match runs.last_mut() {
            Some(last) if last.1 == s => last.2 += 1,
            _ => runs.push((i, s, 1)),
        }
    }
    if runs.len() > MAX_MAP_ENTRIES {
        runs.sort_by_key(|r| std::cmp::Reverse(r.2));
        runs.truncate(MAX_MAP_ENTRIES);
        runs.sort_by_key(|r| r.0);
    }
    runs.into_iter().map(|(start, s, _)| (start, s)).collect()
}

/// The address to give patch format 2's pointer rule (its `address`: where base byte 0 is
/// loaded) so that it predicts the most 32-bit words of the matched base bytes, judged against
/// `new`; `load` (the image's own load address, when it fits 32 bits) unless another address
/// predicts strictly better. A raw binary's load address is unknown (0), yet firmware is full of
/// absolute pointers into where it runs: rtw88's Wi-Fi firmware points at 0x8010xxxx, and
/// with address 0 its 182 moved pointers in slice 0 each cost add bytes.
///
/// Every aligned word that changed inside a match, from `v` to `w`, is a pointer only if its
/// target `v − address` lies in a map entry whose shift is `w − v`: that bounds `address` to
/// one interval per such entry. The address inside the most intervals (a sweep over their
/// ends) is then scored against `load` over all matched words: +1 for a word predicted to
/// its new value that changed, −1 for a word predicted to change that did not.
pub fn pointer_address(
    old: &[u8],
    new: &[u8],
    matches: &[Vec<Match>],
    map: &[(u32, u32)],
    load: Option<u32>,
) -> Option<u32> {
    let old_len = u32::try_from(old.len()).ok()?;
    let predict = Predict::new(0, 0, map)?;
    let le32 = |b: &[u8], i: usize| {
        b.get(i..i + 4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
    };
    // Every aligned matched word (old value, new value).
    let words = || {
        matches.iter().flatten().flat_map(move |m| {
            let first = m.add_old.next_multiple_of(4);
            let end = m.add_old + m.add_len;
            (first..end.saturating_sub(3))
                .step_by(4)
                .filter_map(move |a| Some((le32(old, a)?, le32(new, a - m.add_old + m.add_new)?)))
        })
    };
    // The moved ranges of the base, [start, end) and shift, by shift.
    let mut moved: std::collections::HashMap<u32, Vec<(u32, u32)>> = Default::default();
    for (k, &(start, shift)) in map.iter().enumerate() {
        let end = map
            .get(k + 1)
            .map_or(old_len, |&(next, _)| next.min(old_len));
        if shift != 0 && start < end {
            moved.entry(shift).or_default().push((start, end));
        }
    }
    // +1 where an interval of addresses begins, -1 just after it ends (u64: no wrap). At most
    // MAX_VOTES changed words vote (evenly spread), each in at most 32 intervals (a shift
    // recurs in at most every other of the 64 map entries): memory stays bounded.
    const MAX_VOTES: usize = 1 << 16;
    let changed: Vec<(u32, u32)> = words().filter(|(v, w)| v != w).collect();
    let stride = changed.len().div_ceil(MAX_VOTES).max(1);
    let mut events: Vec<(u64, i64)> = Vec::new();
    for &(v, w) in changed.iter().step_by(stride) {
        for &(start, end) in moved.get(&w.wrapping_sub(v)).into_iter().flatten() {
            // v - address in [start, end)  <=>  address in [v - end + 1, v - start] (mod 2^32)
            let lo = v.wrapping_sub(end).wrapping_add(1);
            let hi = v.wrapping_sub(start);
            if lo <= hi {
                events.extend([(u64::from(lo), 1), (u64::from(hi) + 1, -1)]);
            } else {
                events.extend([
                    (u64::from(lo), 1),
                    (1 << 32, -1),
                    (0, 1),
                    (u64::from(hi) + 1, -1),
                ]);
            }
        }
    }
    events.sort_unstable();
    let (mut depth, mut best) = (0i64, (0i64, 0u64, 0u64));
    for (k, &(at, step)) in events.iter().enumerate() {
        depth += step;
        let next = events.get(k + 1).map_or(at, |e| e.0);
        if depth > best.0 && next > at {
            best = (depth, at, next - 1);
        }
    }
    let score = |address: u32| -> i64 {
        words()
            .map(|(v, w)| {
                let t = v.wrapping_sub(address);
                let p = predict.map(t).wrapping_add(address);
                match (t < old_len && p != v, p == w) {
                    (true, true) => 1,
                    (true, false) if v == w => -1,
                    _ => 0,
                }
            })
            .sum()
    };
    let mut choice = load.map(|a| (score(a), a));
    if best.0 > 0 {
        let (_, lo, hi) = best;
        for a in [lo, lo + (hi - lo) / 2, hi] {
            let Ok(a) = u32::try_from(a) else { continue };
            let s = score(a);
            if choice.is_none_or(|(c, _)| s > c) {
                choice = Some((s, a));
            }
        }
    }
    choice.map(|(_, a)| a)
}

/// The patch-format-1 op stream rebuilding `new[start..start+len]` from `old`, or `None` when
/// the matches do not tile the slice exactly.
pub fn patch_stream(
    old: &[u8],
    new: &[u8],
    start: usize,
    len: usize,
    matches: &[Match],
) -> Option<Vec<u8>> {
    patch_stream_with(old, new, start, len, matches, None)
}

/// The op stream for `new[start..start+len]`: patch format 2 with `predict`'s header, its add
/// bytes taken against the predicted base, or format 1 without it.
pub fn patch_stream_with(
    old: &[u8],
    new: &[u8],
    start: usize,
    len: usize,
    matches: &[Match],
    predict: Option<&Predict>,
) -> Option<Vec<u8>> {
    let end = start + len;
    let mut diffs: Vec<Vec<u8>> = Vec::with_capacity(matches.len());
    let mut at = start;
    for m in matches {
        if m.add_new != at || m.copy_end > end || m.add_new + m.add_len > m.copy_end {
            return None;
        }
        let newer = new.get(m.add_new..m.add_new + m.add_len)?;
        let mut older = old.get(m.add_old..m.add_old + m.add_len)?.to_vec();
        if let Some(p) = predict {
            let d = (m.add_new as u64).wrapping_sub(m.add_old as u64) as u32;
            p.predict(old, 0, old.len() as u64, m.add_old as u64, d, &mut older);
        }
        diffs.push(
            newer
                .iter()
                .zip(older)
                .map(|(n, o)| n.wrapping_sub(o))
                .collect(),
        );
        at = m.copy_end;
    }
    if at != end {
        return None;
    }
    let mut cursor: i64 = 0;
    let mut ops = Vec::with_capacity(matches.len());
    for (m, diff) in matches.iter().zip(&diffs) {
        let copy = new.get(m.add_new + m.add_len..m.copy_end)?;
        if diff.is_empty() && copy.is_empty() {
            continue;
        }
        ops.push(Op {
            seek: m.add_old as i64 - cursor,
            add: diff,
            copy,
        });
        cursor = (m.add_old + m.add_len) as i64;
    }
    Some(match predict {
        Some(p) => encode_format2(p, &ops),
        None => encode(&ops),
    })
}

/// Whether a zstd-compressed op stream of patch format `format` rebuilds `slice` (at new-image
/// offset `start`) from `old` through the device's op decoder, reading only old bytes inside
/// `window` (the frame is decoded with libzstd here; the finished package is then verified
/// whole through the device path, otapack-zstd included, before it is written). The stream must
/// also keep to the device's length bound, `MAX_STREAM_FACTOR` bytes per slice byte, which a
/// format-2 header could break on a short slice.
pub fn patch_rebuilds(
    old: &[u8],
    payload: &[u8],
    format: u64,
    start: usize,
    slice: &[u8],
    window: &Range<usize>,
) -> bool {
    let Ok(stream) = zstd::bulk::decompress(payload, 32 * slice.len() + 64) else {
        return false;
    };
    if stream.len() as u64 > MAX_STREAM_FACTOR * slice.len() as u64 {
        return false;
    }
    let mut out = Vec::with_capacity(slice.len());
    let Some(mut d) = PatchDecoder::with_format(
        format,
        0,
        start as u64,
        slice.len() as u64,
        old.len() as u64,
    ) else {
        return false;
    };
    let mut old = old;
    let window = window.start as u64..window.end as u64;
    let mut base = WindowedBase::new(&mut old, window, 0);
    let mut sink = |p: &[u8]| {
        out.extend_from_slice(p);
        Ok(())
    };
    d.feed(&stream, &mut base, &mut sink).is_ok() && d.finish().is_ok() && out == slice
}

/// The most base bytes one `zstd-ref` slice refers to. libzstd indexes the whole prefix for
/// every frame, so this bounds build time on large images (a whole base up to this size is
/// used as it is).
pub const MAX_REF_REGION: usize = 256 * 1024;

/// The base range a `zstd-ref` encoding of the slice at `start` (`len` bytes) refers to: all
/// of `window` when it is at most [`MAX_REF_REGION`], else that much of it centred on where
/// the slice's matches read (weighted by length), or on the slice's own offset without them.
pub fn ref_region(
    window: &Range<usize>,
    matches: &[Match],
    start: usize,
    len: usize,
) -> Range<usize> {
    if window.len() <= MAX_REF_REGION {
        return window.clone();
    }
    let mut reads: Vec<(usize, usize)> = matches
        .iter()
        .filter(|m| m.add_len > 0)
        .map(|m| (m.add_old + m.add_len / 2, m.add_len))
        .collect();
    reads.sort_unstable();
    let total: usize = reads.iter().map(|r| r.1).sum();
    let mut seen = 0;
    let centre = reads
        .iter()
        .find(|r| {
            seen += r.1;
            2 * seen >= total
        })
        .map_or(start + len / 2, |r| r.0);
    let lo = centre
        .saturating_sub(MAX_REF_REGION / 2)
        .clamp(window.start, window.end - MAX_REF_REGION);
    lo..lo + MAX_REF_REGION
}

/// Whether a `zstd-ref` payload rebuilds `slice` against `prefix` (its base range): frames,
/// each declaring a content size from 1 to `2^window_log`, decoded here with libzstd (the
/// finished package is then verified whole through the device path, otapack-zstd included).
pub fn zstd_ref_rebuilds(prefix: &[u8], payload: &[u8], slice: &[u8], window_log: u8) -> bool {
    use zstd::zstd_safe::{get_frame_content_size, DCtx};
    let mut rest = payload;
    let mut out: Vec<u8> = Vec::with_capacity(slice.len());
    let mut d = DCtx::create();
    while !rest.is_empty() {
        let Ok(n) = zstd::zstd_safe::find_frame_compressed_size(rest) else {
            return false;
        };
        let Some(frame) = rest.get(..n) else {
            return false;
        };
        let size = match get_frame_content_size(frame) {
            Ok(Some(s)) if s > 0 && s <= 1u64 << window_log => s as usize,
            _ => return false,
        };
        if d.ref_prefix(prefix).is_err() {
            return false;
        }
        let mut buf = Vec::with_capacity(size);
        match d.decompress(&mut buf, frame) {
            Ok(m) if m == size => out.extend_from_slice(&buf),
            _ => return false,
        }
        rest = &rest[n..];
    }
    out == slice
}
