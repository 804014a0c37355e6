//! Writes a deterministic OpenMetrics back-fill file to standard output, for measuring
//! `lookout-tsdb import` (see `benches/README.md`):
//!
//! ```sh
//! cargo run --release -p lookout-tsdb-cli --example gen_openmetrics -- 10000000 1000 > in.om
//! ```
//!
//! Arguments: total samples, series (default 1000). Samples are 15 s apart, series
//! interleaved by time as a scrape would write them, starting 2023-11-14T22:13:20Z.

use std::io::{BufWriter, Write};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let samples: u64 = args
        .next()
        .and_then(|text| text.parse().ok())
        .unwrap_or(1_000_000);
    let series: u64 = args
        .next()
        .and_then(|text| text.parse().ok())
        .unwrap_or(1000)
        .max(1);
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let base_ms: u64 = 1_700_000_000_000;
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for sample in 0..samples {
        let step = sample / series;
        let id = sample % series;
        // xorshift64*: a cheap deterministic value stream.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let random = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let millis = base_ms + step * 15_000 + random % 7;
        let value = (random >> 40) % 10_000;
        writeln!(
            out,
            "import_bench_metric{{instance=\"host-{}\",job=\"node\",series=\"{id}\"}} {}.{:02} {}.{:03}",
            id % 50,
            value / 100,
            value % 100,
            millis / 1000,
            millis % 1000
        )?;
    }
    writeln!(out, "# EOF")?;
    out.flush()
}
