//! PLACEHOLDER codec (raw samples) until the Gorilla codec lands; same API.
#![allow(missing_docs)]

pub const MAX_SAMPLES_PER_CHUNK: usize = 120;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ChunkError {
    #[error("truncated at {offset}")]
    Truncated { offset: usize },
}

#[derive(Debug, Clone, Default)]
pub struct XorAppender {
    buf: Vec<u8>,
}

impl XorAppender {
    pub fn new() -> Self {
        Self { buf: vec![0, 0] }
    }
    pub fn append(&mut self, t: i64, v: f64) {
        if self.buf.is_empty() {
            self.buf = vec![0, 0];
        }
        self.buf.extend_from_slice(&t.to_le_bytes());
        self.buf.extend_from_slice(&v.to_bits().to_le_bytes());
        let n = self.num_samples() as u16 + 1;
        self.buf[..2].copy_from_slice(&n.to_le_bytes());
    }
    pub fn num_samples(&self) -> usize {
        if self.buf.len() < 2 {
            0
        } else {
            u16::from_le_bytes([self.buf[0], self.buf[1]]) as usize
        }
    }
    fn sample(&self, i: usize) -> (i64, f64) {
        let o = 2 + i * 16;
        (
            i64::from_le_bytes(self.buf[o..o + 8].try_into().unwrap()),
            f64::from_bits(u64::from_le_bytes(
                self.buf[o + 8..o + 16].try_into().unwrap(),
            )),
        )
    }
    pub fn first_t(&self) -> Option<i64> {
        (self.num_samples() > 0).then(|| self.sample(0).0)
    }
    pub fn last_t(&self) -> Option<i64> {
        (self.num_samples() > 0).then(|| self.sample(self.num_samples() - 1).0)
    }
    pub fn last_value(&self) -> Option<f64> {
        (self.num_samples() > 0).then(|| self.sample(self.num_samples() - 1).1)
    }
    pub fn bytes(&self) -> &[u8] {
        if self.buf.is_empty() {
            &[0, 0]
        } else {
            &self.buf
        }
    }
    pub fn heap_bytes(&self) -> usize {
        self.buf.capacity()
    }
    pub fn finish(self) -> XorChunk {
        XorChunk {
            bytes: self.bytes().to_vec().into_boxed_slice(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XorChunk {
    bytes: Box<[u8]>,
}

impl XorChunk {
    pub fn from_bytes(bytes: Box<[u8]>) -> Result<Self, ChunkError> {
        if bytes.len() < 2 {
            return Err(ChunkError::Truncated { offset: 0 });
        }
        Ok(Self { bytes })
    }
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    pub fn num_samples(&self) -> usize {
        u16::from_le_bytes([self.bytes[0], self.bytes[1]]) as usize
    }
    pub fn iter(&self) -> XorIter<'_> {
        XorIter::new(&self.bytes).unwrap()
    }
    pub fn heap_bytes(&self) -> usize {
        self.bytes.len()
    }
}

#[derive(Debug, Clone)]
pub struct XorIter<'a> {
    bytes: &'a [u8],
    index: usize,
    count: usize,
    err: Option<ChunkError>,
}

impl<'a> XorIter<'a> {
    pub fn new(bytes: &'a [u8]) -> Result<Self, ChunkError> {
        if bytes.len() < 2 {
            return Err(ChunkError::Truncated { offset: 0 });
        }
        Ok(Self {
            bytes,
            index: 0,
            count: u16::from_le_bytes([bytes[0], bytes[1]]) as usize,
            err: None,
        })
    }
    pub fn seek(&mut self, target: i64) -> Option<(i64, f64)> {
        loop {
            let (t, v) = self.next()?;
            if t >= target {
                return Some((t, v));
            }
        }
    }
    pub fn err(&self) -> Option<&ChunkError> {
        self.err.as_ref()
    }
}

impl Iterator for XorIter<'_> {
    type Item = (i64, f64);
    fn next(&mut self) -> Option<(i64, f64)> {
        if self.index >= self.count {
            return None;
        }
        let o = 2 + self.index * 16;
        if self.bytes.len() < o + 16 {
            self.err = Some(ChunkError::Truncated { offset: o });
            self.index = self.count;
            return None;
        }
        self.index += 1;
        Some((
            i64::from_le_bytes(self.bytes[o..o + 8].try_into().unwrap()),
            f64::from_bits(u64::from_le_bytes(
                self.bytes[o + 8..o + 16].try_into().unwrap(),
            )),
        ))
    }
}
