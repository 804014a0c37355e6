//! Head chunk files: full head chunks move out of the heap into memory-mapped files.
//!
//! When a series cuts its open chunk, the finished chunk's bytes are written to the current
//! file of `<data dir>/chunks_head/` and the series keeps only a reference into the file's
//! map, so the heap holds open chunks alone and the kernel pages cold chunks in and out. The
//! files are a cache of what the WAL already holds: they are not checksummed and are deleted at
//! open (replay rebuilds them as it goes, so replay needs no more memory than the live head).
//! A file is deleted once no series refers to it any more (after truncation).

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use parking_lot::Mutex;

use crate::error::{Result, TsdbError};
use crate::mmap::map_file;

/// Size of each head chunk file.
const FILE_BYTES: u64 = 64 << 20;

/// A chunk's bytes inside a mapped head chunk file.
#[derive(Debug, Clone)]
pub(crate) struct MappedChunk {
    map: Arc<Mmap>,
    offset: u32,
    len: u32,
}

impl MappedChunk {
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.map[self.offset as usize..(self.offset + self.len) as usize]
    }
}

#[derive(Debug)]
struct MappedFile {
    path: PathBuf,
    file: Arc<File>,
    map: Arc<Mmap>,
    used: u64,
}

#[derive(Debug, Default)]
struct State {
    current: Option<MappedFile>,
    sealed: Vec<MappedFile>,
    next_number: u32,
}

/// The head chunk files of one store.
#[derive(Debug)]
pub(crate) struct HeadChunkFiles {
    dir: PathBuf,
    state: Mutex<State>,
}

impl HeadChunkFiles {
    /// Starts with an empty `dir`, deleting what a previous process left.
    pub(crate) fn open(dir: &Path) -> Result<HeadChunkFiles> {
        if dir.exists() {
            fs::remove_dir_all(dir).map_err(|error| TsdbError::io(dir, error))?;
        }
        fs::create_dir_all(dir).map_err(|error| TsdbError::io(dir, error))?;
        Ok(HeadChunkFiles {
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                next_number: 1,
                ..State::default()
            }),
        })
    }

    fn new_file(&self, state: &mut State) -> Result<MappedFile> {
        let path = self.dir.join(format!("{:06}", state.next_number));
        state.next_number += 1;
        let file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|error| TsdbError::io(&path, error))?;
        file.set_len(FILE_BYTES)
            .map_err(|error| TsdbError::io(&path, error))?;
        let map = Arc::new(map_file(&path)?);
        Ok(MappedFile {
            path,
            file: Arc::new(file),
            map,
            used: 0,
        })
    }

    /// Writes a finished chunk and returns where it is mapped.
    pub(crate) fn write(&self, bytes: &[u8]) -> Result<MappedChunk> {
        let len = bytes.len() as u64;
        if len > FILE_BYTES {
            return Err(TsdbError::InvalidOptions {
                reason: format!("a head chunk of {len} bytes does not fit a head chunk file"),
            });
        }
        let mut state = self.state.lock();
        if state
            .current
            .as_ref()
            .is_none_or(|current| current.used + len > FILE_BYTES)
        {
            let fresh = self.new_file(&mut state)?;
            if let Some(full) = state.current.replace(fresh) {
                state.sealed.push(full);
            }
        }
        // The room is taken under the lock and written after it: writers on several threads
        // (replay's workers) do not wait for each other's system calls.
        let current = state.current.as_mut().expect("a current file");
        let offset = current.used;
        current.used += len;
        let (file, map) = (current.file.clone(), current.map.clone());
        let path = current.path.clone();
        drop(state);
        // Written through the file; the shared read-only map sees the same page cache.
        file.write_all_at(bytes, offset)
            .map_err(|error| TsdbError::io(&path, error))?;
        Ok(MappedChunk {
            map,
            offset: offset as u32,
            len: len as u32,
        })
    }

    /// Deletes files no series refers to any more, the one being filled included (after a
    /// truncation that emptied the head, as a stop that writes the head into blocks does, its
    /// written chunks would otherwise stay on disk until the next open); returns how many.
    pub(crate) fn collect_garbage(&self) -> usize {
        let mut state = self.state.lock();
        let remove = |file: &MappedFile| {
            if let Err(error) = fs::remove_file(&file.path) {
                tracing::warn!(path = %file.path.display(), %error, "could not delete a head chunk file");
            }
        };
        let before = state.sealed.len();
        state.sealed.retain(|file| {
            if Arc::strong_count(&file.map) > 1 {
                return true;
            }
            remove(file);
            false
        });
        let mut removed = before - state.sealed.len();
        if state
            .current
            .as_ref()
            .is_some_and(|file| Arc::strong_count(&file.map) == 1)
        {
            if let Some(file) = state.current.take() {
                remove(&file);
                removed += 1;
            }
        }
        removed
    }

    /// Number of files in use.
    pub(crate) fn file_count(&self) -> usize {
        let state = self.state.lock();
        state.sealed.len() + usize::from(state.current.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_readable_through_the_map_and_unreferenced_files_go() {
        let dir = tempfile::tempdir().unwrap();
        let files = HeadChunkFiles::open(&dir.path().join("chunks_head")).unwrap();
        let first = files.write(b"hello").unwrap();
        let second = files.write(b"world!").unwrap();
        assert_eq!(first.bytes(), b"hello");
        assert_eq!(second.bytes(), b"world!");
        assert_eq!(files.file_count(), 1);
        assert_eq!(
            files.collect_garbage(),
            0,
            "the current file is never collected"
        );
        drop((first, second));
        // Nothing refers to the current file any more: it goes too, and the next write
        // starts a new one.
        assert_eq!(files.collect_garbage(), 1);
        assert_eq!(files.file_count(), 0);
        assert_eq!(
            fs::read_dir(dir.path().join("chunks_head"))
                .unwrap()
                .count(),
            0
        );
        let third = files.write(b"again").unwrap();
        assert_eq!(third.bytes(), b"again");
        drop(third);
        // Reopening starts empty.
        let files = HeadChunkFiles::open(&dir.path().join("chunks_head")).unwrap();
        assert_eq!(files.file_count(), 0);
    }
}
