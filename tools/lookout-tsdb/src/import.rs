//! `import`: back-fills samples from OpenMetrics text, CSV or JSON lines into blocks, with
//! memory bounded independently of the input's size.
//!
//! Two passes. The first streams the input, interns each series once, and buffers samples up
//! to `--buffer-samples`; a full buffer is sorted by (block range, series labels, time) and
//! spilled to a run file of fixed 20-byte records. The second merges the runs (one buffered
//! reader each) in that order, so series arrive block by block, in label order, one series at
//! a time, which is what the block writer consumes. Memory: the series labels, the buffer,
//! one series' samples of one block range, and the block writer's index entries. A parse error
//! stops the import before any block is written.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::ValueEnum;
use indicatif::ProgressBar;
use lookout_model::{LabelLimits, Labels, Sample};
use lookout_tsdb::block::writer::write_block;
use lookout_tsdb::block::{ChunkEncoding, Compaction};
use lookout_tsdb::{HeadOptions, TsdbError};
use serde::Deserialize;

use crate::common::{
    bytes_bar, count_bar, format_time, offline_options, open_for_writing, spinner,
};
use crate::offline::require_data_dir;

/// Input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// OpenMetrics / Prometheus text: `name{labels} value timestamp-in-seconds`; every sample
    /// needs a timestamp; `#` lines are skipped and `# EOF` ends the input.
    Openmetrics,
    /// CSV with a header row: `timestamp` (ms or RFC 3339), `value`, `__name__` (or `metric`)
    /// and one column per label; empty cells mean the label is absent.
    Csv,
    /// JSON lines as `dump --format jsonl` (and VictoriaMetrics' export) write them:
    /// `{"metric":{..},"values":[..],"timestamps":[..]}`, or one sample per line with
    /// `"value"` and `"timestamp"` (ms).
    Jsonl,
}

/// What to import and where.
#[derive(Debug)]
pub struct ImportOptions {
    pub format: Format,
    pub file: PathBuf,
    pub dir: PathBuf,
    pub block_duration_ms: i64,
    pub retention_ms: Option<i64>,
    pub buffer_samples: usize,
    pub tmp_dir: Option<PathBuf>,
    pub compact: bool,
}

/// Timestamps are refused beyond this many ms from the epoch (about ±285 000 years), which
/// keeps block range arithmetic far from overflow.
const MAX_ABS_TIMESTAMP_MS: i64 = 1 << 53;

/// Bytes of one spilled sample: series id u32, timestamp i64, value bits u64, little-endian.
const RECORD_LEN: usize = 20;

pub fn run(options: &ImportOptions) -> anyhow::Result<ExitCode> {
    if options.buffer_samples == 0 {
        bail!("--buffer-samples must be at least 1");
    }
    require_data_dir(&options.dir)?;
    let tsdb = open_for_writing(offline_options(
        &options.dir,
        options.block_duration_ms,
        options.retention_ms,
    ))?;
    let head_min = tsdb.head().time_range().map(|(min_time, _)| min_time);
    let tmp_parent = options
        .tmp_dir
        .clone()
        .unwrap_or_else(|| options.dir.clone());
    let tmp = tempfile::Builder::new()
        .prefix(".import-")
        .tempdir_in(&tmp_parent)
        .with_context(|| {
            format!(
                "cannot create a temporary directory in {}",
                tmp_parent.display()
            )
        })?;

    let mut spiller = Spiller {
        tmp: tmp.path().to_path_buf(),
        series: Vec::new(),
        by_labels: HashMap::new(),
        by_text: HashMap::new(),
        buffer: Vec::with_capacity(options.buffer_samples.min(1 << 20)),
        capacity: options.buffer_samples,
        runs: Vec::new(),
        block_ms: options.block_duration_ms,
        head_min,
        limits: LabelLimits::default(),
        samples: 0,
        min_time: i64::MAX,
        max_time: i64::MIN,
    };
    let source = if options.file == Path::new("-") {
        None
    } else {
        Some(
            File::open(&options.file)
                .with_context(|| format!("cannot open {}", options.file.display()))?,
        )
    };
    let total = source
        .as_ref()
        .and_then(|file| file.metadata().ok())
        .map_or(0, |metadata| metadata.len());
    let bar = if source.is_some() {
        bytes_bar(total, "reading")
    } else {
        spinner("reading standard input")
    };
    let reader: Box<dyn Read> = match source {
        Some(file) => Box::new(file),
        None => Box::new(std::io::stdin()),
    };
    let mut input = BufReader::with_capacity(
        1 << 16,
        Counting {
            inner: reader,
            bar: bar.clone(),
        },
    );
    let parsed = match options.format {
        Format::Openmetrics => parse_openmetrics(&mut input, &mut spiller),
        Format::Csv => parse_csv(&mut input, &mut spiller),
        Format::Jsonl => parse_jsonl(&mut input, &mut spiller),
    };
    parsed
        .and_then(|()| spiller.spill())
        .with_context(|| format!("{}: nothing was imported", options.file.display()))?;
    bar.finish_and_clear();
    if spiller.samples == 0 {
        println!("no samples in the input; nothing imported");
        return Ok(ExitCode::SUCCESS);
    }

    let blocks_dir = options.dir.join("blocks");
    let mut merger = Merger::new(&spiller)?;
    let bar = count_bar(spiller.samples, "writing blocks", "samples");
    let mut written = Vec::new();
    while let Some(range) = merger.peek_range() {
        let block_min = range * options.block_duration_ms;
        let block_max = block_min + options.block_duration_ms;
        let series = std::iter::from_fn(|| merger.next_series(range, &spiller.series, &bar));
        let meta = write_block(
            &blocks_dir,
            series,
            block_min,
            block_max,
            Compaction {
                level: 1,
                sources: Vec::new(),
            },
            ChunkEncoding::Xor,
            HeadOptions::default().chunk_samples,
        )
        .with_context(|| {
            format!(
                "writing the block for {} failed; blocks written so far are complete and kept: {}",
                format_time(block_min),
                written.join(", ")
            )
        })?;
        tsdb.add_block(&meta.id)
            .with_context(|| format!("opening the new block {}", meta.id))?;
        written.push(meta.id);
    }
    bar.finish_and_clear();
    drop(merger);
    drop(tmp);

    let compacted = if options.compact {
        let spinner = spinner("compacting");
        let compacted = tsdb.compact().context(
            "compacting the imported blocks failed (they are complete and served as they are; \
             run `lookout-tsdb compact` to retry)",
        )?;
        spinner.finish_and_clear();
        compacted.len()
    } else {
        0
    };
    tsdb.close().context("closing the store failed")?;
    println!(
        "imported {} samples of {} series ({} .. {}) into {} blocks; {} compactions; {} blocks \
         now. A server picks them up when it next starts.",
        spiller.samples,
        spiller.series.len(),
        format_time(spiller.min_time),
        format_time(spiller.max_time),
        written.len(),
        compacted,
        tsdb.blocks().len()
    );
    Ok(ExitCode::SUCCESS)
}

/// Counts bytes read into the progress bar.
struct Counting {
    inner: Box<dyn Read>,
    bar: ProgressBar,
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.bar.inc(read as u64);
        Ok(read)
    }
}

/// Pass one: interns series and spills sorted runs.
struct Spiller {
    tmp: PathBuf,
    series: Vec<Labels>,
    by_labels: HashMap<Labels, u32>,
    /// Series by their text in the input (a cache that skips label parsing).
    by_text: HashMap<Box<str>, u32>,
    buffer: Vec<(u32, i64, u64)>,
    capacity: usize,
    runs: Vec<PathBuf>,
    block_ms: i64,
    head_min: Option<i64>,
    limits: LabelLimits,
    samples: u64,
    min_time: i64,
    max_time: i64,
}

impl Spiller {
    fn series_id(&mut self, labels: Labels) -> anyhow::Result<u32> {
        if let Some(id) = self.by_labels.get(&labels) {
            return Ok(*id);
        }
        if labels.is_empty() {
            bail!("a series without labels");
        }
        labels
            .validate(&self.limits)
            .map_err(|error| anyhow!("series {labels}: {error}"))?;
        let id = u32::try_from(self.series.len()).map_err(|_| anyhow!("too many series"))?;
        self.series.push(labels.clone());
        self.by_labels.insert(labels, id);
        Ok(id)
    }

    /// The id of the series written as `text` in the input, parsing it only the first time.
    fn series_id_by_text(
        &mut self,
        text: &str,
        parse: impl FnOnce(&str) -> anyhow::Result<Labels>,
    ) -> anyhow::Result<u32> {
        if let Some(id) = self.by_text.get(text) {
            return Ok(*id);
        }
        let id = self.series_id(parse(text)?)?;
        if self.by_text.len() < 4 * self.series.len() + 1024 {
            self.by_text.insert(text.into(), id);
        }
        Ok(id)
    }

    fn add(&mut self, id: u32, t: i64, v: f64) -> anyhow::Result<()> {
        if !(-MAX_ABS_TIMESTAMP_MS..=MAX_ABS_TIMESTAMP_MS).contains(&t) {
            bail!("timestamp {t} ms is out of range");
        }
        if let Some(head_min) = self.head_min {
            if t >= head_min {
                bail!(
                    "sample at {} is not older than the head's oldest sample ({}); import only \
                     history before the head (or let the server cut its head into blocks first)",
                    format_time(t),
                    format_time(head_min)
                );
            }
        }
        self.buffer.push((id, t, v.to_bits()));
        self.samples += 1;
        self.min_time = self.min_time.min(t);
        self.max_time = self.max_time.max(t);
        if self.buffer.len() >= self.capacity {
            self.spill()?;
        }
        Ok(())
    }

    /// Sorts the buffer by (block range, labels, time), keeping input order among equals,
    /// and writes it as a run file.
    fn spill(&mut self) -> anyhow::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let rank = label_ranks(&self.series);
        let block_ms = self.block_ms;
        self.buffer
            .sort_by_key(|(id, t, _)| (t.div_euclid(block_ms), rank[*id as usize], *t));
        let path = self.tmp.join(format!("run-{:06}", self.runs.len()));
        let file =
            File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut out = BufWriter::with_capacity(1 << 16, file);
        for (id, t, v) in self.buffer.drain(..) {
            let mut record = [0u8; RECORD_LEN];
            record[..4].copy_from_slice(&id.to_le_bytes());
            record[4..12].copy_from_slice(&t.to_le_bytes());
            record[12..].copy_from_slice(&v.to_le_bytes());
            out.write_all(&record)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        out.flush()
            .with_context(|| format!("cannot write {}", path.display()))?;
        self.runs.push(path);
        Ok(())
    }
}

/// Position of each series (by id) in label order.
fn label_ranks(series: &[Labels]) -> Vec<u32> {
    let mut order: Vec<u32> = (0..series.len() as u32).collect();
    order.sort_by(|a, b| series[*a as usize].cmp(&series[*b as usize]));
    let mut rank = vec![0u32; series.len()];
    for (position, id) in order.into_iter().enumerate() {
        rank[id as usize] = position as u32;
    }
    rank
}

/// Pass two: the runs merged in (block range, labels, time, run) order.
struct Merger {
    runs: Vec<RunReader>,
    heap: BinaryHeap<Reverse<(i64, u32, i64, usize)>>,
    rank: Vec<u32>,
    block_ms: i64,
}

struct RunReader {
    path: PathBuf,
    reader: BufReader<File>,
    current: Option<(u32, i64, u64)>,
}

impl RunReader {
    fn advance(&mut self) -> std::io::Result<()> {
        let mut record = [0u8; RECORD_LEN];
        match self.reader.read_exact(&mut record) {
            Ok(()) => {
                self.current = Some((
                    u32::from_le_bytes(record[..4].try_into().expect("4 bytes")),
                    i64::from_le_bytes(record[4..12].try_into().expect("8 bytes")),
                    u64::from_le_bytes(record[12..].try_into().expect("8 bytes")),
                ));
                Ok(())
            }
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                self.current = None;
                Ok(())
            }
            Err(error) => Err(error),
        }
    }
}

impl Merger {
    fn new(spiller: &Spiller) -> anyhow::Result<Merger> {
        let mut merger = Merger {
            runs: Vec::with_capacity(spiller.runs.len()),
            heap: BinaryHeap::new(),
            rank: label_ranks(&spiller.series),
            block_ms: spiller.block_ms,
        };
        for path in &spiller.runs {
            let file =
                File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            let mut run = RunReader {
                path: path.clone(),
                reader: BufReader::with_capacity(1 << 16, file),
                current: None,
            };
            run.advance()
                .with_context(|| format!("cannot read {}", path.display()))?;
            merger.runs.push(run);
            merger.push(merger.runs.len() - 1);
        }
        Ok(merger)
    }

    fn push(&mut self, run: usize) {
        if let Some((id, t, _)) = self.runs[run].current {
            self.heap.push(Reverse((
                t.div_euclid(self.block_ms),
                self.rank[id as usize],
                t,
                run,
            )));
        }
    }

    fn peek_range(&self) -> Option<i64> {
        self.heap.peek().map(|Reverse((range, ..))| *range)
    }

    /// The next record in merged order.
    fn pop(&mut self) -> Result<Option<(u32, i64, u64)>, TsdbError> {
        let Some(Reverse((.., run))) = self.heap.pop() else {
            return Ok(None);
        };
        let record = self.runs[run].current;
        self.runs[run]
            .advance()
            .map_err(|error| TsdbError::io(&self.runs[run].path, error))?;
        self.push(run);
        Ok(record)
    }

    /// The next series of block range `range` with its samples (the last of samples sharing
    /// a timestamp wins), or `None` when the range is done.
    fn next_series(
        &mut self,
        range: i64,
        series: &[Labels],
        bar: &ProgressBar,
    ) -> Option<Result<(Labels, Vec<Sample>), TsdbError>> {
        let Reverse((first_range, first_rank, ..)) = *self.heap.peek()?;
        if first_range != range {
            return None;
        }
        let mut samples: Vec<Sample> = Vec::new();
        let mut id = None;
        let mut consumed = 0u64;
        while let Some(Reverse((next_range, next_rank, ..))) = self.heap.peek() {
            if *next_range != range || *next_rank != first_rank {
                break;
            }
            let (record_id, t, bits) = match self.pop() {
                Ok(Some(record)) => record,
                Ok(None) => break,
                Err(error) => return Some(Err(error)),
            };
            consumed += 1;
            id = Some(record_id);
            let sample = Sample::new(t, f64::from_bits(bits));
            match samples.last_mut() {
                Some(last) if last.timestamp.0 == t => *last = sample,
                _ => samples.push(sample),
            }
        }
        bar.inc(consumed);
        let labels = series[id? as usize].clone();
        Some(Ok((labels, samples)))
    }
}

/// A value in text: a number, `NaN`, `+Inf`, `Inf` or `-Inf`.
fn parse_value(text: &str) -> anyhow::Result<f64> {
    match text {
        "+Inf" | "Inf" | "+inf" | "inf" => Ok(f64::INFINITY),
        "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
        "NaN" | "nan" => Ok(f64::NAN),
        _ => text
            .parse::<f64>()
            .map_err(|_| anyhow!("{text:?} is not a number")),
    }
}

/// Seconds (with up to millisecond precision kept exactly) as milliseconds.
fn parse_seconds(text: &str) -> anyhow::Result<i64> {
    let bad = || anyhow!("{text:?} is not a timestamp in seconds");
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let plain = !whole.is_empty()
        && whole.bytes().all(|byte| byte.is_ascii_digit())
        && fraction.bytes().all(|byte| byte.is_ascii_digit());
    if !plain {
        // Exponent forms and the like: through f64.
        let seconds: f64 = text.parse().map_err(|_| bad())?;
        let millis = (seconds * 1000.0).round();
        if !millis.is_finite() || millis.abs() > MAX_ABS_TIMESTAMP_MS as f64 {
            return Err(bad());
        }
        return Ok(millis as i64);
    }
    let seconds: i64 = whole.parse().map_err(|_| bad())?;
    let mut millis_text: String = fraction.chars().take(3).collect();
    while millis_text.len() < 3 {
        millis_text.push('0');
    }
    let millis: i64 = millis_text.parse().map_err(|_| bad())?;
    let magnitude = seconds
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(millis))
        .ok_or_else(bad)?;
    Ok(if negative { -magnitude } else { magnitude })
}

fn parse_openmetrics(input: &mut impl BufRead, spiller: &mut Spiller) -> anyhow::Result<()> {
    let mut line = String::new();
    let mut number = 0u64;
    loop {
        line.clear();
        let read = input.read_line(&mut line).context("reading the input")?;
        if read == 0 {
            return Ok(());
        }
        number += 1;
        let text = line.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            continue;
        }
        if let Some(comment) = text.strip_prefix('#') {
            if comment.trim() == "EOF" {
                return Ok(());
            }
            continue;
        }
        parse_openmetrics_line(text, spiller).with_context(|| format!("line {number}"))?;
    }
}

fn parse_openmetrics_line(text: &str, spiller: &mut Spiller) -> anyhow::Result<()> {
    let series_end = series_text_end(text)?;
    let series_text = &text[..series_end];
    let mut fields = text[series_end..].split_whitespace();
    let value = fields
        .next()
        .ok_or_else(|| anyhow!("no value after the series"))?;
    let timestamp = fields.next().ok_or_else(|| {
        anyhow!("no timestamp; every sample of a back-fill needs one (seconds since the epoch)")
    })?;
    if let Some(extra) = fields.next() {
        if !extra.starts_with('#') {
            bail!("unexpected {extra:?} after the timestamp");
        }
    }
    let value = parse_value(value)?;
    let t = parse_seconds(timestamp)?;
    let id = spiller.series_id_by_text(series_text, parse_series_text)?;
    spiller.add(id, t, value)
}

/// Where the series part (`name{...}`) of a sample line ends.
fn series_text_end(text: &str) -> anyhow::Result<usize> {
    let bytes = text.as_bytes();
    let name_end = bytes
        .iter()
        .position(|byte| *byte == b'{' || byte.is_ascii_whitespace())
        .ok_or_else(|| anyhow!("no value after the series"))?;
    if bytes[name_end] != b'{' {
        return Ok(name_end);
    }
    let mut in_quotes = false;
    let mut escaped = false;
    for (position, byte) in bytes.iter().enumerate().skip(name_end + 1) {
        match (in_quotes, escaped, byte) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_quotes = false,
            (false, _, b'"') => in_quotes = true,
            (false, _, b'}') => return Ok(position + 1),
            _ => {}
        }
    }
    bail!("unterminated label set (no closing `}}`)")
}

/// Labels of `name{label="value",...}`.
fn parse_series_text(text: &str) -> anyhow::Result<Labels> {
    let (name, rest) = match text.find('{') {
        Some(brace) => (&text[..brace], &text[brace + 1..text.len() - 1]),
        None => (text, ""),
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    if !name.is_empty() {
        pairs.push((lookout_model::METRIC_NAME_LABEL.to_owned(), name.to_owned()));
    }
    let mut chars = rest.char_indices().peekable();
    loop {
        while chars
            .peek()
            .is_some_and(|(_, c)| c.is_whitespace() || *c == ',')
        {
            chars.next();
        }
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        let mut label_name = String::new();
        for (_, character) in chars.by_ref() {
            if character == '=' {
                break;
            }
            label_name.push(character);
        }
        let label_name = label_name.trim().trim_matches('"').to_owned();
        if label_name.is_empty() {
            bail!("empty label name at column {}", start + 1);
        }
        while chars.peek().is_some_and(|(_, c)| c.is_whitespace()) {
            chars.next();
        }
        if chars.next().map(|(_, c)| c) != Some('"') {
            bail!("the value of label {label_name:?} is not quoted");
        }
        let mut value = String::new();
        let mut closed = false;
        while let Some((_, character)) = chars.next() {
            match character {
                '"' => {
                    closed = true;
                    break;
                }
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('n') => value.push('\n'),
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some(other) => bail!("unknown escape \\{other} in label {label_name:?}"),
                    None => break,
                },
                other => value.push(other),
            }
        }
        if !closed {
            bail!("unterminated value of label {label_name:?}");
        }
        pairs.push((label_name, value));
    }
    Labels::from_pairs(pairs).map_err(|error| anyhow!("{error}"))
}

fn parse_csv(input: &mut impl BufRead, spiller: &mut Spiller) -> anyhow::Result<()> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(input);
    let headers = reader.headers().context("reading the CSV header")?.clone();
    let column = |name: &str| headers.iter().position(|header| header == name);
    let timestamp_column =
        column("timestamp").ok_or_else(|| anyhow!("the CSV header has no `timestamp` column"))?;
    let value_column =
        column("value").ok_or_else(|| anyhow!("the CSV header has no `value` column"))?;
    let label_columns: Vec<(usize, String)> = headers
        .iter()
        .enumerate()
        .filter(|(position, _)| *position != timestamp_column && *position != value_column)
        .map(|(position, header)| {
            let name = if header == "metric" {
                lookout_model::METRIC_NAME_LABEL
            } else {
                header
            };
            (position, name.to_owned())
        })
        .collect();
    if !label_columns
        .iter()
        .any(|(_, name)| name == lookout_model::METRIC_NAME_LABEL)
    {
        bail!("the CSV header has no `__name__` (or `metric`) column");
    }
    let mut record = csv::StringRecord::new();
    let mut key = String::new();
    loop {
        let line = reader.position().line() + 1;
        let more = reader
            .read_record(&mut record)
            .with_context(|| format!("line {line}"))?;
        if !more {
            return Ok(());
        }
        (|| -> anyhow::Result<()> {
            let field = |position: usize| record.get(position).unwrap_or_default();
            let timestamp_text = field(timestamp_column);
            let t = match timestamp_text.parse::<i64>() {
                Ok(millis) => millis,
                Err(_) => lookout_model::time::parse_rfc3339(timestamp_text).ok_or_else(|| {
                    anyhow!("timestamp {timestamp_text:?} is neither ms nor RFC 3339")
                })?,
            };
            let value = parse_value(field(value_column))?;
            key.clear();
            for (position, _) in &label_columns {
                key.push_str(field(*position));
                key.push('\u{1f}');
            }
            let id = spiller.series_id_by_text(&key, |_| {
                Labels::from_pairs(
                    label_columns
                        .iter()
                        .map(|(position, name)| (name.clone(), field(*position).to_owned())),
                )
                .map_err(|error| anyhow!("{error}"))
            })?;
            spiller.add(id, t, value)
        })()
        .with_context(|| format!("line {line}"))?;
    }
}

#[derive(Debug, Deserialize)]
struct JsonLine {
    metric: HashMap<String, String>,
    #[serde(default)]
    values: Vec<serde_json::Value>,
    #[serde(default)]
    timestamps: Vec<i64>,
    value: Option<serde_json::Value>,
    timestamp: Option<i64>,
}

fn json_value(value: &serde_json::Value) -> anyhow::Result<f64> {
    match value {
        serde_json::Value::Number(number) => number
            .as_f64()
            .ok_or_else(|| anyhow!("{number} is not a number")),
        serde_json::Value::String(text) => parse_value(text),
        other => bail!("value {other} is neither a number nor a string"),
    }
}

fn parse_jsonl(input: &mut impl BufRead, spiller: &mut Spiller) -> anyhow::Result<()> {
    let mut line = String::new();
    let mut number = 0u64;
    loop {
        line.clear();
        let read = input.read_line(&mut line).context("reading the input")?;
        if read == 0 {
            return Ok(());
        }
        number += 1;
        if line.trim().is_empty() {
            continue;
        }
        (|| -> anyhow::Result<()> {
            let parsed: JsonLine =
                serde_json::from_str(&line).map_err(|error| anyhow!("{error}"))?;
            let labels = Labels::from_pairs(parsed.metric).map_err(|error| anyhow!("{error}"))?;
            let id = spiller.series_id(labels)?;
            match (parsed.value, parsed.timestamp) {
                (Some(value), Some(t)) => spiller.add(id, t, json_value(&value)?)?,
                (None, None) => {}
                _ => bail!("`value` and `timestamp` go together"),
            }
            if parsed.values.len() != parsed.timestamps.len() {
                bail!(
                    "{} values but {} timestamps",
                    parsed.values.len(),
                    parsed.timestamps.len()
                );
            }
            for (value, t) in parsed.values.iter().zip(&parsed.timestamps) {
                spiller.add(id, *t, json_value(value)?)?;
            }
            Ok(())
        })()
        .with_context(|| format!("line {number}"))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_keep_milliseconds_exactly() {
        assert_eq!(parse_seconds("1714521600").unwrap(), 1_714_521_600_000);
        assert_eq!(parse_seconds("1714521600.123").unwrap(), 1_714_521_600_123);
        assert_eq!(parse_seconds("1714521600.5").unwrap(), 1_714_521_600_500);
        assert_eq!(parse_seconds("-1.5").unwrap(), -1_500);
        assert_eq!(parse_seconds("1.7e9").unwrap(), 1_700_000_000_000);
        assert!(parse_seconds("soon").is_err());
    }

    #[test]
    fn series_text_parses_with_escapes() {
        let text = r#"http_requests_total{code="200",path="a\"b\\c\nd"}"#;
        assert_eq!(series_text_end(&format!("{text} 1 2")).unwrap(), text.len());
        let labels = parse_series_text(text).unwrap();
        assert_eq!(labels.metric_name(), Some("http_requests_total"));
        assert_eq!(labels.get("path"), Some("a\"b\\c\nd"));
        assert_eq!(labels.get("code"), Some("200"));
        assert!(parse_series_text(r#"m{a=b}"#).is_err());
        assert!(series_text_end(r#"m{a="b" 1 2"#).is_err());
    }
}
