//! Offline verification of a whole data directory: every checksum and footer of every block
//! file and every WAL segment and checkpoint, each problem named by file and offset.
//!
//! Read-only: safe beside a running server (whose newest WAL segment may then end in a record
//! still being written, which is reported as a warning, as a torn tail is). Head chunk files
//! (`chunks_head/`) are not checked: they carry no checksums and are rebuilt from the WAL at
//! every open.

use std::fs;
use std::path::{Path, PathBuf};

use crate::block::verify_block_dir;
use crate::db::{BLOCKS_DIR, DELETING_SUFFIX, QUARANTINE_DIR};
use crate::error::{Result, TsdbError};
use crate::wal::{
    parse_segment_name, read_segment, segment_name, SegmentEnd, CHECKPOINT_PREFIX, CORRUPT_SUFFIX,
};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Damaged data: bytes fail their checksum or structure.
    Corruption,
    /// Not damage, but worth knowing (a torn WAL tail, leftovers an open cleans up, blocks or
    /// WAL bytes set aside earlier).
    Warning,
}

/// One problem, naming its file and, where known, the byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How bad.
    pub severity: Severity,
    /// The file (or directory) concerned.
    pub file: PathBuf,
    /// Byte offset of the damage within the file.
    pub offset: Option<u64>,
    /// What is wrong.
    pub reason: String,
}

/// What [`verify_dir`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Problems, in the order found.
    pub findings: Vec<Finding>,
    /// Blocks checked.
    pub blocks: u64,
    /// WAL segment and checkpoint files checked.
    pub wal_files: u64,
    /// Bytes read.
    pub bytes: u64,
}

impl VerifyReport {
    /// Whether no corruption was found (warnings allowed).
    pub fn is_clean(&self) -> bool {
        self.findings
            .iter()
            .all(|finding| finding.severity != Severity::Corruption)
    }

    fn warn(&mut self, file: PathBuf, reason: impl Into<String>) {
        self.findings.push(Finding {
            severity: Severity::Warning,
            file,
            offset: None,
            reason: reason.into(),
        });
    }

    fn corrupt(&mut self, file: PathBuf, offset: Option<u64>, reason: impl Into<String>) {
        self.findings.push(Finding {
            severity: Severity::Corruption,
            file,
            offset,
            reason: reason.into(),
        });
    }

    fn error(&mut self, error: TsdbError) {
        match error {
            TsdbError::Corruption {
                file,
                offset,
                reason,
            } => self.corrupt(file, Some(offset), reason),
            TsdbError::Io { path, source } => self.corrupt(path, None, source.to_string()),
            other => self.corrupt(PathBuf::new(), None, other.to_string()),
        }
    }
}

/// Bytes of the files [`verify_dir`] reads (for a progress bar).
pub fn bytes_to_verify(dir: &Path) -> u64 {
    fn walk(path: &Path) -> u64 {
        let Ok(entries) = fs::read_dir(path) else {
            return 0;
        };
        entries
            .filter_map(|entry| entry.ok())
            .map(|entry| match entry.file_type() {
                Ok(kind) if kind.is_dir() => walk(&entry.path()),
                Ok(_) => entry.metadata().map_or(0, |m| m.len()),
                Err(_) => 0,
            })
            .sum()
    }
    walk(&dir.join(BLOCKS_DIR)) + walk(&dir.join("wal"))
}

/// Checks every block and the WAL of the data directory `dir`. `progress` is called with the
/// bytes of each file group once it has been checked. Fails only if `dir` cannot be listed.
pub fn verify_dir(dir: &Path, progress: &mut dyn FnMut(u64)) -> Result<VerifyReport> {
    fs::read_dir(dir).map_err(|error| TsdbError::io(dir, error))?;
    let mut report = VerifyReport::default();

    let blocks_dir = dir.join(BLOCKS_DIR);
    for name in sorted_names(&blocks_dir)? {
        let path = blocks_dir.join(&name);
        if name.ends_with(".tmp") {
            report.warn(path, "unfinished block write (removed at the next open)");
            continue;
        }
        if name.ends_with(DELETING_SUFFIX) {
            report.warn(path, "block being deleted (removed at the next open)");
            continue;
        }
        if !path.is_dir() {
            report.warn(path, "not a block directory");
            continue;
        }
        let (problems, bytes) = verify_block_dir(&path);
        report.blocks += 1;
        report.bytes += bytes;
        progress(bytes);
        for problem in problems {
            report.error(problem);
        }
    }
    for name in sorted_names(&dir.join(QUARANTINE_DIR))? {
        report.warn(
            dir.join(QUARANTINE_DIR).join(name),
            "block quarantined at an earlier open (not served)",
        );
    }
    verify_wal(&dir.join("wal"), &mut report, progress)?;
    Ok(report)
}

fn verify_wal(
    wal_dir: &Path,
    report: &mut VerifyReport,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let mut segments = Vec::new();
    let mut checkpoints = Vec::new();
    for name in sorted_names(wal_dir)? {
        let path = wal_dir.join(&name);
        if let Some(number) = parse_segment_name(&name) {
            segments.push(number);
        } else if let Some(rest) = name.strip_prefix(CHECKPOINT_PREFIX) {
            match parse_segment_name(rest) {
                Some(number) => checkpoints.push(number),
                None => report.warn(path, "interrupted checkpoint (removed at the next open)"),
            }
        } else if name.ends_with(CORRUPT_SUFFIX) {
            report.warn(
                path,
                "WAL bytes set aside by an earlier repair (not replayed)",
            );
        }
    }
    segments.sort_unstable();
    checkpoints.sort_unstable();
    for &number in &checkpoints {
        let checkpoint = wal_dir.join(format!("{CHECKPOINT_PREFIX}{}", segment_name(number)));
        for name in sorted_names(&checkpoint)? {
            let path = checkpoint.join(&name);
            if parse_segment_name(&name).is_none() {
                continue;
            }
            match check_segment(&path, report, progress)? {
                SegmentEnd::Closed => {}
                SegmentEnd::Open { len } => report.corrupt(
                    path,
                    Some(len),
                    "checkpoint file ends without its end marker",
                ),
                SegmentEnd::Failed(error) => {
                    report.corrupt(path, Some(error.offset() as u64), error.reason())
                }
            }
        }
    }
    for (position, &number) in segments.iter().enumerate() {
        let path = wal_dir.join(segment_name(number));
        if position > 0 && segments[position - 1] + 1 != number {
            report.corrupt(
                wal_dir.join(segment_name(segments[position - 1] + 1)),
                None,
                format!(
                    "segment missing between {} and {number}",
                    segments[position - 1]
                ),
            );
        }
        let newest = position + 1 == segments.len();
        match check_segment(&path, report, progress)? {
            SegmentEnd::Closed => {}
            SegmentEnd::Open { .. } if newest => {}
            SegmentEnd::Open { len } => report.corrupt(
                path,
                Some(len),
                "segment lost its tail: it ends without its end marker",
            ),
            SegmentEnd::Failed(error @ crate::wal::record::FrameError::Torn { .. }) if newest => {
                let reason = format!(
                    "{} at offset {} (what a crash or a write in progress leaves; the next \
                     open cuts it)",
                    error.reason(),
                    error.offset()
                );
                report.warn(path, reason);
            }
            SegmentEnd::Failed(error) => {
                report.corrupt(path, Some(error.offset() as u64), error.reason())
            }
        }
    }
    Ok(())
}

/// Reads every frame of one WAL file, counting it in the report.
fn check_segment(
    path: &Path,
    report: &mut VerifyReport,
    progress: &mut dyn FnMut(u64),
) -> Result<SegmentEnd> {
    let (_, end) = read_segment(path, &mut |_| {})?;
    let bytes = fs::metadata(path).map_or(0, |m| m.len());
    report.wal_files += 1;
    report.bytes += bytes;
    progress(bytes);
    Ok(end)
}

/// Entry names of `dir`, sorted; none when it does not exist.
fn sorted_names(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(TsdbError::io(dir, error)),
    };
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}
