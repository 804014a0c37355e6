//! Byte-level helpers shared by the on-disk formats: LEB128 varints, zigzag, and a bounds-
//! checked reader that reports the offset of the first byte it could not read.

/// Appends `value` as an unsigned LEB128 varint.
pub fn put_uvarint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends `value` zigzag-encoded as a varint (small magnitudes of either sign stay short).
pub fn put_varint(out: &mut Vec<u8>, value: i64) {
    put_uvarint(out, zigzag(value));
}

/// Maps signed to unsigned so that small magnitudes get small codes.
pub fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

/// Inverse of [`zigzag`].
pub fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

/// A decoding failure at a byte offset within the buffer being read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} at byte {offset}")]
pub struct DecodeError {
    /// Offset in the decoded buffer.
    pub offset: usize,
    /// What was wrong.
    pub reason: &'static str,
}

/// A cursor over a byte slice.
#[derive(Debug, Clone)]
pub struct Decoder<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Decoder<'a> {
    /// Starts at the beginning of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Decoder<'a> {
        Decoder { bytes, position: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.position
    }

    /// The bytes not consumed yet.
    pub fn remaining(&self) -> &'a [u8] {
        self.bytes.get(self.position..).unwrap_or_default()
    }

    /// Whether everything was consumed.
    pub fn is_empty(&self) -> bool {
        self.position >= self.bytes.len()
    }

    fn error(&self, reason: &'static str) -> DecodeError {
        DecodeError {
            offset: self.position,
            reason,
        }
    }

    /// Reads an unsigned varint.
    #[inline(always)]
    pub fn uvarint(&mut self) -> Result<u64, DecodeError> {
        // Most varints of the formats (deltas of deltas, ids, lengths) are one byte.
        if let Some(&byte) = self.bytes.get(self.position) {
            if byte < 0x80 {
                self.position += 1;
                return Ok(u64::from(byte));
            }
        }
        self.uvarint_long()
    }

    fn uvarint_long(&mut self) -> Result<u64, DecodeError> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let Some(&byte) = self.bytes.get(self.position) else {
                return Err(self.error("truncated varint"));
            };
            self.position += 1;
            if shift == 63 && byte > 1 {
                return Err(self.error("varint overflows 64 bits"));
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(self.error("varint longer than 10 bytes"))
    }

    /// Reads a zigzag varint.
    #[inline(always)]
    pub fn varint(&mut self) -> Result<i64, DecodeError> {
        self.uvarint().map(unzigzag)
    }

    /// Reads a varint that must fit in u32.
    pub fn uvarint_u32(&mut self) -> Result<u32, DecodeError> {
        let value = self.uvarint()?;
        u32::try_from(value).map_err(|_| self.error("value does not fit in 32 bits"))
    }

    /// Reads a little-endian u64.
    pub fn u64_le(&mut self) -> Result<u64, DecodeError> {
        let bytes = self.bytes(8)?;
        Ok(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
    }

    /// Reads `len` raw bytes.
    pub fn bytes(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .position
            .checked_add(len)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| self.error("truncated bytes"))?;
        let slice = &self.bytes[self.position..end];
        self.position = end;
        Ok(slice)
    }

    /// Reads a varint length followed by that many bytes of UTF-8.
    pub fn string(&mut self) -> Result<&'a str, DecodeError> {
        let len = self.uvarint()?;
        let len = usize::try_from(len).map_err(|_| self.error("string length overflows"))?;
        let start = self.position;
        let bytes = self.bytes(len)?;
        std::str::from_utf8(bytes).map_err(|_| DecodeError {
            offset: start,
            reason: "string is not valid UTF-8",
        })
    }
}

/// Appends a varint length and the bytes of `text`.
pub fn put_string(out: &mut Vec<u8>, text: &str) {
    put_uvarint(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varints_round_trip(unsigned in any::<u64>(), signed in any::<i64>(), text in ".{0,20}") {
            let mut out = Vec::new();
            put_uvarint(&mut out, unsigned);
            put_varint(&mut out, signed);
            put_string(&mut out, &text);
            let mut decoder = Decoder::new(&out);
            prop_assert_eq!(decoder.uvarint().unwrap(), unsigned);
            prop_assert_eq!(decoder.varint().unwrap(), signed);
            prop_assert_eq!(decoder.string().unwrap(), text.as_str());
            prop_assert!(decoder.is_empty());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..32)) {
            let mut decoder = Decoder::new(&bytes);
            while !decoder.is_empty() {
                if decoder.string().is_err() { break; }
            }
        }
    }

    #[test]
    fn errors_name_the_offset() {
        let mut decoder = Decoder::new(&[0x05, b'a']);
        let error = decoder.string().unwrap_err();
        assert_eq!(error.offset, 1);
        let mut overlong = Decoder::new(&[0xff; 11]);
        assert!(overlong.uvarint().is_err());
        assert_eq!(zigzag(-1), 1);
        assert_eq!(unzigzag(zigzag(i64::MIN)), i64::MIN);
    }
}
