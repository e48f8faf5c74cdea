//! Firmware images: raw binary, ELF (loadable segments at their physical addresses, as
//! `objcopy -O binary` lays them out) and Intel HEX. Sparse inputs become one contiguous image,
//! gaps filled with the erase value; an input whose pieces lie far apart (e.g. a HEX file with
//! a UICR record at 0x10001000 beside flash at 0) must be narrowed with an address range.

use crate::error::{io, Error, Result};
use std::path::Path;

/// The largest span a sparse input may cover without an explicit address range.
pub const MAX_IMPLICIT_SPAN: u64 = 64 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Bin,
    Elf,
    IntelHex,
}

impl ImageFormat {
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Bin => "bin",
            ImageFormat::Elf => "elf",
            ImageFormat::IntelHex => "ihex",
        }
    }
    /// Guesses from content: ELF magic, or text that starts with an Intel HEX record.
    pub fn detect(data: &[u8]) -> Self {
        if data.starts_with(b"\x7fELF") {
            ImageFormat::Elf
        } else if data.first() == Some(&b':')
            && data
                .iter()
                .take(64)
                .all(|&c| c.is_ascii_hexdigit() || matches!(c, b':' | b'\r' | b'\n'))
        {
            ImageFormat::IntelHex
        } else {
            ImageFormat::Bin
        }
    }
}

/// A contiguous firmware image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub data: Vec<u8>,
    pub load_address: u64,
    pub format: ImageFormat,
}

/// How to read an image file.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Force a format instead of detecting it.
    pub format: Option<ImageFormat>,
    /// Keep only bytes in `start..end` (ELF/HEX), or the address a raw binary loads at
    /// (`start`; `end` must then be past the file's end).
    pub range: Option<(u64, u64)>,
    /// Fill value for gaps between pieces.
    pub erase_value: u8,
}

/// Loads an image file.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Image> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    from_bytes(&bytes, opts).map_err(|reason| Error::Image {
        path: path.to_path_buf(),
        reason,
    })
}

/// Parses image bytes; the error is a human-readable reason.
pub fn from_bytes(bytes: &[u8], opts: &LoadOptions) -> std::result::Result<Image, String> {
    let format = opts.format.unwrap_or_else(|| ImageFormat::detect(bytes));
    let pieces = match format {
        ImageFormat::Bin => {
            let start = opts.range.map_or(0, |r| r.0);
            vec![(start, bytes.to_vec())]
        }
        ImageFormat::Elf => elf_pieces(bytes)?,
        ImageFormat::IntelHex => hex_pieces(bytes)?,
    };
    let (load_address, data) = flatten(pieces, opts.range, opts.erase_value)?;
    if data.is_empty() {
        return Err("the image is empty".into());
    }
    if data.len() as u64 > otapack_core::wire::manifest::MAX_IMAGE_SIZE {
        return Err("the image is larger than 4 GiB".into());
    }
    Ok(Image {
        data,
        load_address,
        format,
    })
}

fn elf_pieces(bytes: &[u8]) -> std::result::Result<Vec<(u64, Vec<u8>)>, String> {
    use object::read::elf::{FileHeader, ProgramHeader};
    use object::Endianness;
    fn collect<H: FileHeader<Endian = Endianness>>(
        bytes: &[u8],
    ) -> std::result::Result<Vec<(u64, Vec<u8>)>, String> {
        let header = H::parse(bytes).map_err(|e| format!("bad ELF: {e}"))?;
        let endian = header.endian().map_err(|e| format!("bad ELF: {e}"))?;
        let mut out = Vec::new();
        for ph in header
            .program_headers(endian, bytes)
            .map_err(|e| format!("bad ELF: {e}"))?
        {
            if ph.p_type(endian) != object::elf::PT_LOAD || ph.p_filesz(endian).into() == 0 {
                continue;
            }
            let data = ph
                .data(endian, bytes)
                .map_err(|_| "ELF segment data out of bounds".to_string())?;
            out.push((ph.p_paddr(endian).into(), data.to_vec()));
        }
        if out.is_empty() {
            return Err("ELF has no loadable segment with data".into());
        }
        Ok(out)
    }
    match object::FileKind::parse(bytes).map_err(|e| format!("bad ELF: {e}"))? {
        object::FileKind::Elf32 => collect::<object::elf::FileHeader32<Endianness>>(bytes),
        object::FileKind::Elf64 => collect::<object::elf::FileHeader64<Endianness>>(bytes),
        other => Err(format!("not an ELF file ({other:?})")),
    }
}

fn hex_pieces(bytes: &[u8]) -> std::result::Result<Vec<(u64, Vec<u8>)>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "Intel HEX file is not text".to_string())?;
    let mut base: u64 = 0;
    let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut ended = false;
    for (n, rec) in ihex::Reader::new(text).enumerate() {
        let rec = rec.map_err(|e| format!("Intel HEX record {}: {e}", n + 1))?;
        if ended {
            return Err("Intel HEX data after the end-of-file record".into());
        }
        match rec {
            ihex::Record::Data { offset, value } => {
                let addr = base + u64::from(offset);
                match out.last_mut() {
                    Some((a, v)) if *a + v.len() as u64 == addr => v.extend_from_slice(&value),
                    _ => out.push((addr, value)),
                }
            }
            ihex::Record::ExtendedSegmentAddress(s) => base = u64::from(s) << 4,
            ihex::Record::ExtendedLinearAddress(s) => base = u64::from(s) << 16,
            ihex::Record::EndOfFile => ended = true,
            _ => {}
        }
    }
    if !ended {
        return Err("Intel HEX file has no end-of-file record (truncated?)".into());
    }
    Ok(out)
}

/// Lays pieces out contiguously; rejects overlaps that disagree and implausible spans.
fn flatten(
    mut pieces: Vec<(u64, Vec<u8>)>,
    range: Option<(u64, u64)>,
    fill: u8,
) -> std::result::Result<(u64, Vec<u8>), String> {
    if let Some((start, end)) = range {
        if start >= end {
            return Err(format!("empty address range 0x{start:x}:0x{end:x}"));
        }
        pieces = pieces
            .into_iter()
            .filter_map(|(a, v)| {
                let lo = a.max(start);
                let hi = (a + v.len() as u64).min(end);
                (lo < hi).then(|| (lo, v[(lo - a) as usize..(hi - a) as usize].to_vec()))
            })
            .collect();
    }
    pieces.retain(|(_, v)| !v.is_empty());
    pieces.sort_by_key(|(a, _)| *a);
    let (Some(first), Some(last_end)) = (
        pieces.first().map(|p| p.0),
        pieces.iter().map(|(a, v)| a + v.len() as u64).max(),
    ) else {
        return Err("no data (in the address range)".into());
    };
    let span = last_end - first;
    if range.is_none() && span > MAX_IMPLICIT_SPAN {
        let list: Vec<String> = pieces
            .iter()
            .map(|(a, v)| format!("0x{a:x}..0x{:x}", a + v.len() as u64))
            .collect();
        return Err(format!(
            "data spans {span} bytes from 0x{first:x} to 0x{last_end:x} (pieces: {}); \
             choose the flash region with --address-range START:END",
            summarize(&list)
        ));
    }
    if span > otapack_core::wire::manifest::MAX_IMAGE_SIZE {
        return Err("the image would be larger than 4 GiB".into());
    }
    let mut data = vec![fill; span as usize];
    let mut written = vec![false; 0];
    let check_overlap = pieces
        .windows(2)
        .any(|w| w[0].0 + w[0].1.len() as u64 > w[1].0);
    if check_overlap {
        written = vec![false; span as usize];
    }
    for (a, v) in &pieces {
        let off = (a - first) as usize;
        for (i, &b) in v.iter().enumerate() {
            if check_overlap {
                if written[off + i] && data[off + i] != b {
                    return Err(format!(
                        "overlapping data disagrees at 0x{:x}",
                        a + i as u64
                    ));
                }
                written[off + i] = true;
            }
            data[off + i] = b;
        }
    }
    Ok((first, data))
}

fn summarize(list: &[String]) -> String {
    if list.len() <= 6 {
        list.join(", ")
    } else {
        format!("{}, ... {} more", list[..6].join(", "), list.len() - 6)
    }
}

/// Parses `START:END` (decimal or 0x-hex, each optional suffix K/M for KiB/MiB not allowed).
pub fn parse_range(s: &str) -> std::result::Result<(u64, u64), String> {
    let (a, b) = s
        .split_once(':')
        .ok_or("expected START:END, e.g. 0x0:0x40000")?;
    Ok((parse_u64(a)?, parse_u64(b)?))
}

/// Parses a decimal or `0x` hexadecimal number.
pub fn parse_u64(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(&h.replace('_', ""), 16),
        None => s.replace('_', "").parse(),
    };
    r.map_err(|_| format!("'{s}' is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_pieces_flatten_with_gap_fill() {
        let hex = ":0400000001020304F2\n:02000800AABB91\n:00000001FF\n";
        let img = from_bytes(
            hex.as_bytes(),
            &LoadOptions {
                erase_value: 0xFF,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(img.format, ImageFormat::IntelHex);
        assert_eq!(img.load_address, 0);
        assert_eq!(img.data, [1, 2, 3, 4, 0xFF, 0xFF, 0xFF, 0xFF, 0xAA, 0xBB]);
    }

    #[test]
    fn rejects_truncated_hex_and_far_pieces() {
        assert!(from_bytes(b":0400000001020304F2\n", &LoadOptions::default()).is_err());
        // 0x10000000 apart: needs a range.
        let hex = ":0400000001020304F2\n:020000041000EA\n:0100000055AA\n:00000001FF\n";
        let err = from_bytes(hex.as_bytes(), &LoadOptions::default()).unwrap_err();
        assert!(err.contains("--address-range"), "{err}");
        let opts = LoadOptions {
            range: Some((0, 0x1000)),
            ..Default::default()
        };
        assert_eq!(
            from_bytes(hex.as_bytes(), &opts).unwrap().data,
            [1, 2, 3, 4]
        );
    }

    #[test]
    fn overlapping_pieces_must_agree() {
        let bad = vec![(0u64, vec![1, 2, 3]), (2, vec![9, 4])];
        assert!(flatten(bad, None, 0xFF).is_err());
        let ok = vec![(0u64, vec![1, 2, 3]), (2, vec![3, 4])];
        assert_eq!(flatten(ok, None, 0xFF).unwrap(), (0, vec![1, 2, 3, 4]));
    }
}
