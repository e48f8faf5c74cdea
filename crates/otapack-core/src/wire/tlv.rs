//! Manifest identity fields as type-length-value entries.
//!
//! Each entry: `u16 type`, `u16 len`, `len` bytes of value, no padding. Bit 15 of `type` marks a
//! field *critical*: a reader that does not know a critical type must reject the package; an
//! unknown non-critical entry is skipped (it is still covered by the signatures).
//!
//! | type   | name             | count   | value                              |
//! |--------|------------------|---------|------------------------------------|
//! | 0x0001 | software_version | exactly 1 | text, 1..=64 bytes               |
//! | 0x0002 | software_type    | 0 or 1  | text, 1..=64 bytes                 |
//! | 0x0003 | hardware_version | 0..=16  | text, 1..=64 bytes, no duplicates  |
//!
//! "text" is UTF-8 with no control characters (C0, DEL, C1: U+0000..U+001F, U+007F..U+009F)
//! and no bidirectional formatting characters (U+061C, U+200E, U+200F, U+202A..U+202E,
//! U+2066..U+2069), so it can be printed to a terminal or a log as is.

use super::le_u16;
use crate::error::{Error, Result};

pub const SOFTWARE_VERSION: u16 = 0x0001;
pub const SOFTWARE_TYPE: u16 = 0x0002;
pub const HARDWARE_VERSION: u16 = 0x0003;
pub const CRITICAL: u16 = 0x8000;

pub const MAX_TEXT_LEN: usize = 64;
pub const MAX_HARDWARE_VERSIONS: usize = 16;
/// Upper bound of the whole TLV area.
pub const MAX_TLV_AREA: usize = 4096;

/// One entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    pub kind: u16,
    pub value: &'a [u8],
}

/// Iterates the entries of an already checked TLV area.
#[derive(Debug, Clone)]
pub struct TlvIter<'a> {
    rest: &'a [u8],
}

impl<'a> TlvIter<'a> {
    pub fn new(area: &'a [u8]) -> Self {
        TlvIter { rest: area }
    }
}

impl<'a> Iterator for TlvIter<'a> {
    type Item = Result<Tlv<'a>>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let Some(head) = self.rest.get(..4) else {
            self.rest = &[];
            return Some(Err(Error::Truncated {
                what: "manifest field header",
            }));
        };
        let kind = le_u16(head, 0);
        let len = usize::from(le_u16(head, 2));
        let Some(value) = self.rest.get(4..4 + len) else {
            self.rest = &[];
            return Some(Err(Error::Truncated {
                what: "manifest field value",
            }));
        };
        self.rest = self.rest.get(4 + len..).unwrap_or(&[]);
        Some(Ok(Tlv { kind, value }))
    }
}

/// Checks a text value: length and character rules above.
pub fn check_text<'a>(value: &'a [u8], what: &'static str) -> Result<&'a str> {
    if value.is_empty() || value.len() > MAX_TEXT_LEN {
        return Err(Error::Malformed { what });
    }
    let s = core::str::from_utf8(value).map_err(|_| Error::Malformed { what })?;
    let forbidden = |c: char| {
        c.is_control()
            || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
    };
    if s.chars().any(forbidden) {
        return Err(Error::Malformed { what });
    }
    Ok(s)
}

/// Validates a whole TLV area: structure, counts, text rules, no unknown critical type.
pub fn check_area(area: &[u8]) -> Result<()> {
    if area.len() > MAX_TLV_AREA {
        return Err(Error::Malformed {
            what: "manifest field area larger than 4096 bytes",
        });
    }
    let (mut versions, mut types, mut hardware) = (0usize, 0usize, 0usize);
    for (i, tlv) in TlvIter::new(area).enumerate() {
        let tlv = tlv?;
        match tlv.kind {
            SOFTWARE_VERSION => {
                check_text(tlv.value, "software_version")?;
                versions += 1;
            }
            SOFTWARE_TYPE => {
                check_text(tlv.value, "software_type")?;
                types += 1;
            }
            HARDWARE_VERSION => {
                check_text(tlv.value, "hardware_version")?;
                hardware += 1;
                if hardware > MAX_HARDWARE_VERSIONS {
                    return Err(Error::Malformed {
                        what: "more than 16 hardware_version fields",
                    });
                }
                // No duplicates: compare with every earlier hardware_version (at most 15).
                let dup = TlvIter::new(area)
                    .take(i)
                    .filter_map(|t| t.ok())
                    .any(|t| t.kind == HARDWARE_VERSION && t.value == tlv.value);
                if dup {
                    return Err(Error::Malformed {
                        what: "duplicate hardware_version",
                    });
                }
            }
            k if k & CRITICAL != 0 => return Err(Error::UnknownCriticalField(k)),
            _ => {}
        }
    }
    if versions != 1 {
        return Err(Error::Malformed {
            what: "software_version must appear exactly once",
        });
    }
    if types > 1 {
        return Err(Error::Malformed {
            what: "software_type appears more than once",
        });
    }
    Ok(())
}

/// Appends one entry (emit side).
#[cfg(feature = "alloc")]
pub fn emit(out: &mut alloc::vec::Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn area(entries: &[(u16, &[u8])]) -> ([u8; 512], usize) {
        let mut b = [0u8; 512];
        let mut n = 0;
        for (k, v) in entries {
            b[n..n + 2].copy_from_slice(&k.to_le_bytes());
            b[n + 2..n + 4].copy_from_slice(&(v.len() as u16).to_le_bytes());
            b[n + 4..n + 4 + v.len()].copy_from_slice(v);
            n += 4 + v.len();
        }
        (b, n)
    }

    #[test]
    fn accepts_valid_and_skips_unknown_noncritical() {
        let (b, n) = area(&[
            (1, b"1.2.3"),
            (2, b"app"),
            (3, b"hw-a"),
            (3, b"hw-b"),
            (0x0042, b"x"),
        ]);
        check_area(&b[..n]).unwrap();
    }

    #[test]
    fn rejects_rule_breaks() {
        let cases: &[&[(u16, &[u8])]] = &[
            &[],                                // no version
            &[(1, b"1"), (1, b"2")],            // two versions
            &[(1, b"")],                        // empty text
            &[(1, b"a\nb")],                    // control char
            &[(1, b"\xff")],                    // not UTF-8
            &[(1, "a\u{9b}b".as_bytes())],      // C1 control (CSI)
            &[(1, "a\u{202e}b".as_bytes())],    // bidi override
            &[(1, &[b'a'; 65])],                // too long
            &[(1, b"1"), (2, b"a"), (2, b"b")], // two types
            &[(1, b"1"), (3, b"x"), (3, b"x")], // duplicate hw
            &[(1, b"1"), (0x8042, b"")],        // unknown critical
        ];
        for c in cases {
            let (b, n) = area(c);
            assert!(check_area(&b[..n]).is_err(), "{c:?}");
        }
        let (b, n) = area(&[(1, b"1.0")]);
        for cut in 1..n {
            assert!(check_area(&b[..cut]).is_err());
        }
    }
}
