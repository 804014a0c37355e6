//! The footer every block file ends with: `magic (8 bytes) | format version (u32 LE) |
//! crc32 of everything before the footer (u32 LE)`.

use std::path::Path;

use crate::error::{Result, TsdbError};

/// Size of the footer in bytes.
pub const FOOTER_LEN: usize = 16;

/// Appends the footer for `body` (all bytes written so far).
pub fn append_footer(body: &mut Vec<u8>, magic: &[u8; 8], version: u32) {
    let crc = crc32fast::hash(body);
    body.extend_from_slice(magic);
    body.extend_from_slice(&version.to_le_bytes());
    body.extend_from_slice(&crc.to_le_bytes());
}

/// Checks the footer of `bytes` (a whole file) and returns the body before it.
pub fn verify_footer<'a>(
    path: &Path,
    bytes: &'a [u8],
    magic: &[u8; 8],
    version: u32,
) -> Result<&'a [u8]> {
    let corruption = |offset: usize, reason: String| TsdbError::Corruption {
        file: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    if bytes.len() < FOOTER_LEN {
        return Err(corruption(
            0,
            format!("file is {} bytes, shorter than its footer", bytes.len()),
        ));
    }
    let footer_at = bytes.len() - FOOTER_LEN;
    let (body, footer) = bytes.split_at(footer_at);
    if &footer[..8] != magic {
        return Err(corruption(footer_at, "bad footer magic".into()));
    }
    let found_version = u32::from_le_bytes(footer[8..12].try_into().expect("4 bytes"));
    if found_version != version {
        return Err(corruption(
            footer_at + 8,
            format!("format version {found_version} is not supported (expected {version})"),
        ));
    }
    let crc = u32::from_le_bytes(footer[12..16].try_into().expect("4 bytes"));
    if crc32fast::hash(body) != crc {
        return Err(corruption(
            0,
            "checksum of the file body does not match its footer".into(),
        ));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footer_round_trips_and_catches_damage() {
        let mut bytes = b"hello".to_vec();
        append_footer(&mut bytes, b"LKTEST01", 1);
        let path = Path::new("x");
        assert_eq!(
            verify_footer(path, &bytes, b"LKTEST01", 1).unwrap(),
            b"hello"
        );
        assert!(verify_footer(path, &bytes, b"LKTEST02", 1).is_err());
        assert!(verify_footer(path, &bytes, b"LKTEST01", 2).is_err());
        bytes[1] ^= 1;
        assert!(verify_footer(path, &bytes, b"LKTEST01", 1).is_err());
        assert!(verify_footer(path, &bytes[..3], b"LKTEST01", 1).is_err());
    }
}
