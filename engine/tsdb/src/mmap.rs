//! Read-only memory maps of immutable files: the only place the engine uses `unsafe`.

#![allow(unsafe_code)]

use std::fs::File;
use std::path::Path;

use memmap2::Mmap;

use crate::error::{Result, TsdbError};

/// Maps `path` read-only. An empty file maps to an empty slice.
pub fn map_file(path: &Path) -> Result<Mmap> {
    let file = File::open(path).map_err(|error| TsdbError::io(path, error))?;
    // SAFETY: block files are immutable once their directory has been renamed into place: the
    // engine never writes, truncates or replaces a file it has mapped (blocks are replaced by
    // new directories, and a block's directory is deleted only after every reader dropped its
    // `Arc<Block>`). Another process modifying the file would break this, as it would for any
    // mmap-based database; the data directory lock keeps other Lookout processes out.
    unsafe { Mmap::map(&file) }.map_err(|error| TsdbError::io(path, error))
}

/// Drops this process's resident pages of `map` after a pass over the whole file (the
/// checksum at open), so that opening blocks does not leave every byte of them counted in the
/// resident set. The pages stay in the page cache and fault back in cheaply when read.
pub fn release_pages(map: &Mmap) {
    if map.is_empty() {
        return;
    }
    // SAFETY: MADV_DONTNEED on a read-only shared file mapping only removes page table
    // entries; the next read of any address faults in the same file contents (the files are
    // immutable, see `map_file`), so no value the program can observe changes.
    let _ = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
}
