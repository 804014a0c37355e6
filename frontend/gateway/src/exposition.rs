//! The Prometheus text exposition format (0.0.4) and OpenMetrics 1.0 text, one line at a
//! time: what pushes and scrapes send.
//!
//! `name{label="value",...} value [timestamp]`, with `# ...` comment lines (HELP, TYPE) and
//! blank lines yielding nothing. Label values are unescaped (`\\`, `\"`, `\n`) and may hold
//! any character, commas and braces included; a trailing comma in the label block (the Java
//! client writes `{method="get",}`) is accepted; values are Go-style floats (`+Inf`, `-Inf`,
//! `NaN` included). Prometheus 3's quoted names (`{"my.metric", "a.b"="x"}`) are read too.
//! Each line is independent, so a caller can skip a bad line and keep the rest.
//!
//! OpenMetrics ([`Format::OpenMetrics`], chosen by [`Format::from_content_type`]) differs in
//! what [`parse_body`] and [`parse_line_in`] take care of: timestamps are float seconds, a
//! sample may carry an exemplar (` # {trace_id="..."} 1 [ts]`, ignored), `# UNIT` lines are
//! metadata, the body must end with `# EOF`, and the `_created` series of counters,
//! histograms and summaries are creation times, not samples, so they are left out.

/// The exposition format of a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4` (and anything that is not OpenMetrics).
    Text,
    /// `application/openmetrics-text; version=1.0.0` (or `0.0.1`).
    OpenMetrics,
}

impl Format {
    /// The format a `Content-Type` names; text when absent or unknown, as Prometheus falls
    /// back.
    pub fn from_content_type(content_type: Option<&str>) -> Format {
        let media_type = content_type
            .and_then(|value| value.split(';').next())
            .map(|media| media.trim().to_ascii_lowercase());
        match media_type.as_deref() {
            Some("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct TextSample {
    /// The metric name.
    pub name: String,
    /// The labels in the order written, values unescaped.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
    /// The explicit timestamp in milliseconds, if the line has one.
    pub timestamp: Option<i64>,
}

/// Why a line does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} at byte {position}")]
pub struct LineError {
    /// What was wrong.
    pub reason: &'static str,
    /// Byte offset in the line.
    pub position: usize,
}

/// Parses one line of the text format: `Ok(None)` for blank and comment lines.
pub fn parse_line(line: &str) -> Result<Option<TextSample>, LineError> {
    parse_line_in(line, Format::Text)
}

/// Parses one sample line of `format`: `Ok(None)` for blank and comment lines. In
/// OpenMetrics the timestamp is float seconds (returned in milliseconds) and an exemplar
/// after the value is skipped.
pub fn parse_line_in(line: &str, format: Format) -> Result<Option<TextSample>, LineError> {
    let mut cursor = Cursor { line, position: 0 };
    cursor.skip_blanks();
    if cursor.at_end() || cursor.peek() == Some('#') {
        return Ok(None);
    }
    let mut name = if cursor.peek() == Some('{') {
        None
    } else {
        Some(cursor.metric_name()?)
    };
    let mut labels = Vec::new();
    let mut blank_before_value = cursor.skip_blanks();
    if cursor.peek() == Some('{') {
        cursor.advance(1);
        cursor.label_block(&mut name, &mut labels)?;
        blank_before_value = cursor.skip_blanks();
    }
    let name = name.ok_or_else(|| cursor.error("no metric name"))?;
    if !blank_before_value {
        return Err(cursor.error("expected a space before the value"));
    }
    let value_text = cursor.word();
    let value = parse_go_float(value_text).ok_or_else(|| cursor.error("invalid value"))?;
    cursor.skip_blanks();
    let exemplar_next =
        |cursor: &Cursor<'_>| format == Format::OpenMetrics && cursor.peek() == Some('#');
    let timestamp = if cursor.at_end() || exemplar_next(&cursor) {
        None
    } else {
        let text = cursor.word();
        let timestamp = match format {
            Format::Text => text.parse::<i64>().ok(),
            Format::OpenMetrics => parse_go_float(text)
                .filter(|seconds| seconds.is_finite())
                .map(|seconds| (seconds * 1000.0).round())
                .filter(|millis| millis.abs() < 9.2e18)
                .map(|millis| millis as i64),
        };
        Some(timestamp.ok_or_else(|| cursor.error("invalid timestamp"))?)
    };
    cursor.skip_blanks();
    if exemplar_next(&cursor) {
        cursor.exemplar()?;
    }
    if !cursor.at_end() {
        return Err(cursor.error("unexpected text after the sample"));
    }
    Ok(Some(TextSample {
        name,
        labels,
        value,
        timestamp,
    }))
}

/// A float as Go's `strconv.ParseFloat` reads exposition values: decimal and exponent forms,
/// `Inf`/`Infinity` with an optional sign and `NaN`, case-insensitively.
fn parse_go_float(text: &str) -> Option<f64> {
    if text.is_empty() {
        return None;
    }
    // Rust accepts the same spellings except a leading '+' before "inf"/"nan", which it also
    // accepts; it does not accept hex floats, which no client writes.
    text.parse::<f64>().ok()
}

#[derive(Debug)]
struct Cursor<'a> {
    line: &'a str,
    position: usize,
}

impl Cursor<'_> {
    fn rest(&self) -> &str {
        &self.line[self.position..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn at_end(&self) -> bool {
        self.position >= self.line.len()
    }

    fn advance(&mut self, bytes: usize) {
        self.position += bytes;
    }

    fn error(&self, reason: &'static str) -> LineError {
        LineError {
            reason,
            position: self.position,
        }
    }

    /// Skips spaces and tabs; whether any were skipped.
    fn skip_blanks(&mut self) -> bool {
        let count = self
            .rest()
            .bytes()
            .take_while(|byte| matches!(byte, b' ' | b'\t'))
            .count();
        self.advance(count);
        count > 0
    }

    /// Everything up to the next blank.
    fn word(&mut self) -> &str {
        let start = self.position;
        let count = self
            .rest()
            .bytes()
            .take_while(|byte| !matches!(byte, b' ' | b'\t'))
            .count();
        self.advance(count);
        &self.line[start..start + count]
    }

    /// `[a-zA-Z_:][a-zA-Z0-9_:]*`
    fn metric_name(&mut self) -> Result<String, LineError> {
        self.identifier(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':'))
            .ok_or_else(|| self.error("invalid metric name"))
    }

    fn identifier(&mut self, allowed: impl Fn(char) -> bool) -> Option<String> {
        let first = self.peek()?;
        if first.is_ascii_digit() || !allowed(first) {
            return None;
        }
        let length: usize = self
            .rest()
            .chars()
            .take_while(|&c| allowed(c))
            .map(char::len_utf8)
            .sum();
        let identifier = self.rest()[..length].to_owned();
        self.advance(length);
        Some(identifier)
    }

    /// After `{`: `label="value"` items separated by commas, an optional trailing comma,
    /// then `}`. A quoted string not followed by `=` is the metric name.
    fn label_block(
        &mut self,
        name: &mut Option<String>,
        labels: &mut Vec<(String, String)>,
    ) -> Result<(), LineError> {
        loop {
            self.skip_blanks();
            match self.peek() {
                Some('}') => {
                    self.advance(1);
                    return Ok(());
                }
                None => return Err(self.error("unterminated label block")),
                _ => {}
            }
            let key = if self.peek() == Some('"') {
                self.quoted()?
            } else {
                self.identifier(|c| c.is_ascii_alphanumeric() || c == '_')
                    .ok_or_else(|| self.error("invalid label name"))?
            };
            self.skip_blanks();
            if self.peek() == Some('=') {
                self.advance(1);
                self.skip_blanks();
                if self.peek() != Some('"') {
                    return Err(self.error("expected a quoted label value"));
                }
                let value = self.quoted()?;
                if labels.iter().any(|(existing, _)| *existing == key) {
                    return Err(self.error("duplicate label name"));
                }
                labels.push((key, value));
            } else if name.is_none() && labels.is_empty() {
                *name = Some(key);
            } else {
                return Err(self.error("expected '='"));
            }
            self.skip_blanks();
            match self.peek() {
                Some(',') => self.advance(1),
                Some('}') => {}
                _ => return Err(self.error("expected ',' or '}'")),
            }
        }
    }

    /// An OpenMetrics exemplar after `#`: `{labels} value [timestamp]`, checked and skipped.
    fn exemplar(&mut self) -> Result<(), LineError> {
        debug_assert_eq!(self.peek(), Some('#'));
        self.advance(1);
        self.skip_blanks();
        if self.peek() != Some('{') {
            return Err(self.error("expected an exemplar's labels after '#'"));
        }
        self.advance(1);
        let mut no_name = Some(String::new());
        let mut labels = Vec::new();
        self.label_block(&mut no_name, &mut labels)?;
        self.skip_blanks();
        parse_go_float(self.word()).ok_or_else(|| self.error("invalid exemplar value"))?;
        self.skip_blanks();
        if !self.at_end() {
            parse_go_float(self.word()).ok_or_else(|| self.error("invalid exemplar timestamp"))?;
            self.skip_blanks();
        }
        Ok(())
    }

    /// A double-quoted string with `\\`, `\"` and `\n` escapes; other escapes are kept as
    /// written.
    fn quoted(&mut self) -> Result<String, LineError> {
        debug_assert_eq!(self.peek(), Some('"'));
        self.advance(1);
        let mut value = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((offset, c)) = chars.next() {
            match c {
                '"' => {
                    self.advance(offset + 1);
                    return Ok(value);
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, escaped @ ('\\' | '"'))) => value.push(escaped),
                    Some((_, other)) => {
                        value.push('\\');
                        value.push(other);
                    }
                    None => break,
                },
                other => value.push(other),
            }
        }
        self.position = self.line.len();
        Err(self.error("unterminated quoted string"))
    }
}

/// Why a body does not parse: the first bad line (1-based) and what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct BodyError {
    /// The line number, from 1.
    pub line: usize,
    /// What was wrong.
    pub reason: String,
}

/// Metric types whose `_created` series OpenMetrics uses for creation times.
const TYPES_WITH_CREATED: [&str; 4] = ["counter", "histogram", "summary", "gaugehistogram"];

/// Every sample of a whole body, as a scrape reads it: the first bad line fails the body.
/// OpenMetrics bodies must end with `# EOF` (nothing but an empty line after it); their
/// `_created` series of counters, histograms and summaries are left out.
pub fn parse_body(text: &str, format: Format) -> Result<Vec<TextSample>, BodyError> {
    let mut samples = Vec::new();
    let mut created_families: std::collections::HashSet<&str> = Default::default();
    let mut saw_eof = false;
    let mut lines = text.split('\n').enumerate().peekable();
    while let Some((index, raw_line)) = lines.next() {
        let line = raw_line.strip_suffix('\r').unwrap_or(raw_line);
        let error = |reason: String| BodyError {
            line: index + 1,
            reason,
        };
        if saw_eof {
            let last_empty = line.is_empty() && lines.peek().is_none();
            if last_empty {
                break;
            }
            return Err(error("data after # EOF".into()));
        }
        if format == Format::OpenMetrics {
            if line == "# EOF" {
                saw_eof = true;
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut words = rest.split_whitespace();
                if let (Some(family), Some(kind)) = (words.next(), words.next()) {
                    if TYPES_WITH_CREATED.contains(&kind) {
                        created_families.insert(family);
                    }
                }
                continue;
            }
        }
        let Some(sample) = parse_line_in(line, format).map_err(|e| error(e.to_string()))? else {
            continue;
        };
        let created_time = sample
            .name
            .strip_suffix("_created")
            .is_some_and(|family| created_families.contains(family));
        if !created_time {
            samples.push(sample);
        }
    }
    if format == Format::OpenMetrics && !saw_eof {
        return Err(BodyError {
            line: text.split('\n').count(),
            reason: "data does not end with # EOF".into(),
        });
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(line: &str) -> TextSample {
        parse_line(line).unwrap().unwrap()
    }

    fn pairs(labels: &[(&str, &str)]) -> Vec<(String, String)> {
        labels
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn comments_and_blank_lines_yield_nothing() {
        assert_eq!(parse_line("").unwrap(), None);
        assert_eq!(parse_line("   ").unwrap(), None);
        assert_eq!(parse_line("# HELP x Help text.").unwrap(), None);
        assert_eq!(parse_line("# TYPE x counter").unwrap(), None);
    }

    #[test]
    fn plain_and_labelled_samples() {
        assert_eq!(
            sample("up 1"),
            TextSample {
                name: "up".into(),
                labels: vec![],
                value: 1.0,
                timestamp: None
            }
        );
        let parsed = sample(r#"http_requests_total{method="post",code="200"} 1027 1395066363000"#);
        assert_eq!(parsed.labels, pairs(&[("method", "post"), ("code", "200")]));
        assert_eq!(parsed.value, 1027.0);
        assert_eq!(parsed.timestamp, Some(1_395_066_363_000));
        assert_eq!(sample("x{} 2").labels, vec![]);
        assert_eq!(
            sample("  x\t{ a = \"1\" }\t3  ").labels,
            pairs(&[("a", "1")])
        );
    }

    #[test]
    fn java_trailing_commas_and_tricky_values() {
        assert_eq!(
            sample(r#"m{method="get",} 1.0"#).labels,
            pairs(&[("method", "get")])
        );
        let tricky = sample(r#"temperature_celsius{room="lab a",sensor="s,1"} 21.5"#);
        assert_eq!(
            tricky.labels,
            pairs(&[("room", "lab a"), ("sensor", "s,1")])
        );
        let escaped = sample(r#"m{path="C:\\dir\"x\"\nend",brace="}{",other="\d"} 1"#);
        assert_eq!(
            escaped.labels,
            pairs(&[
                ("path", "C:\\dir\"x\"\nend"),
                ("brace", "}{"),
                ("other", "\\d")
            ])
        );
    }

    #[test]
    fn special_float_values() {
        assert_eq!(sample("m +Inf").value, f64::INFINITY);
        assert_eq!(sample("m -Inf").value, f64::NEG_INFINITY);
        assert!(sample("m NaN").value.is_nan());
        assert_eq!(sample("m 1e3").value, 1000.0);
    }

    #[test]
    fn quoted_utf8_names() {
        let parsed = sample(r#"{"my.metric", "service.name"="api"} 4"#);
        assert_eq!(parsed.name, "my.metric");
        assert_eq!(parsed.labels, pairs(&[("service.name", "api")]));
    }

    #[test]
    fn malformed_lines_are_errors() {
        for line in [
            "m",
            "m{a=\"1\"}",
            "m{a=\"1\" 1",
            "m{a=1} 1",
            "m{a=\"1\",a=\"2\"} 1",
            "m{=\"1\"} 1",
            "m{a=\"1\"} one",
            "m 1 2 3",
            "m 1 1.5",
            "9m 1",
            "m{a=\"1\"b=\"2\"} 1",
            "{} 1",
            "m{a=\"unterminated} 1",
        ] {
            assert!(parse_line(line).is_err(), "{line:?} should not parse");
        }
    }

    #[test]
    fn formats_from_content_types() {
        let format = Format::from_content_type;
        assert_eq!(
            format(Some(
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            )),
            Format::OpenMetrics
        );
        assert_eq!(format(Some("text/plain; version=0.0.4")), Format::Text);
        assert_eq!(format(Some("application/json")), Format::Text);
        assert_eq!(format(None), Format::Text);
    }

    #[test]
    fn openmetrics_bodies() {
        let body = "# TYPE requests counter\n# UNIT requests requests\n# HELP requests Requests.\n\
                    requests_total{code=\"200\"} 10 1520879607.789 # {trace_id=\"abc\"} 1 1520879607.7\n\
                    requests_created{code=\"200\"} 1520430000.123\n\
                    # TYPE temperature gauge\ntemperature 21.5\ntemperature_created 3\n# EOF\n";
        let samples = parse_body(body, Format::OpenMetrics).unwrap();
        let names: Vec<&str> = samples.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["requests_total", "temperature", "temperature_created"],
            "a counter's _created is a creation time; a gauge's is an ordinary series"
        );
        assert_eq!(samples[0].timestamp, Some(1_520_879_607_789));
        assert_eq!(samples[0].value, 10.0);
        // The same body as text: no EOF needed, `_created` kept, `# EOF` a comment.
        let text = parse_body("a 1 1000\na_created 2\n", Format::Text).unwrap();
        assert_eq!(text.len(), 2);
        assert_eq!(text[0].timestamp, Some(1000));
    }

    #[test]
    fn openmetrics_mistakes() {
        let error = |body: &str| parse_body(body, Format::OpenMetrics).unwrap_err();
        assert_eq!(error("a 1\n").reason, "data does not end with # EOF");
        assert_eq!(error("# EOF\na 1\n").line, 2);
        assert_eq!(error("a 1\n# EOF\n\n").reason, "data after # EOF");
        assert_eq!(error("a 1 # trace\n# EOF").line, 1);
        assert_eq!(error("a 1 x\n# EOF").line, 1);
        assert_eq!(error("ok 1\nbad{ 1\n# EOF").line, 2);
        assert!(parse_body("# EOF", Format::OpenMetrics).unwrap().is_empty());
        // A text body fails at its first bad line too.
        assert_eq!(parse_body("a 1\nb x\n", Format::Text).unwrap_err().line, 2);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(
            body in "[a-z_{}=\",\\ #0-9.+\n-]{0,120}",
            open_metrics: bool,
        ) {
            let format = if open_metrics { Format::OpenMetrics } else { Format::Text };
            let _ = parse_body(&body, format);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..120)) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse_body(&text, Format::Text);
            let _ = parse_body(&text, Format::OpenMetrics);
        }

        #[test]
        fn arbitrary_lines_never_panic(line in "[a-z{}=\",\\\\ #0-9.+-é]{0,60}") {
            let _ = parse_line(&line);
        }

        #[test]
        fn label_values_round_trip(value in "\\PC{0,20}") {
            let escaped = value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            let parsed = sample(&format!("m{{v=\"{escaped}\"}} 1"));
            proptest::prop_assert_eq!(&parsed.labels[0].1, &value);
        }
    }
}
