//! From the text of a `.test` file to [`Script`] commands (README sections 1.1–1.10).

use lookout_model::{Labels, Sample};
use lookout_promql::parse_duration;

use super::series::{parse_series_description, unquote_prefix};
use super::values::{expand_durations, expand_values, parse_number, Value};
use super::{
    AnnotationExpectation, AnnotationKind, Command, EvalCase, EvalKind, Expected, ExpectedSeries,
    Load, LoadSeries, RangeSpec, Script, TextPattern,
};

/// A trimmed line with its 1-based number; comments are blanked, as they end blocks too.
struct Line<'a> {
    number: usize,
    text: &'a str,
}

/// Parses a whole file. Problems are kept inside the result (an [`Command::Invalid`], a
/// load's or a case's `errors`) so that one bad line does not hide the rest of the file.
pub fn parse_script(file: &str, text: &str) -> Script {
    let lines: Vec<Line<'_>> = text
        .lines()
        .enumerate()
        .map(|(index, raw)| {
            let trimmed = raw.trim_matches([' ', '\t', '\r']);
            Line {
                number: index + 1,
                text: if trimmed.starts_with('#') {
                    ""
                } else {
                    trimmed
                },
            }
        })
        .collect();

    let mut commands = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        let header = &lines[index];
        index += 1;
        if header.text.is_empty() {
            continue;
        }
        let body_start = index;
        // `clear` is one line; `load` and `eval` own the lines up to the next empty one.
        let is_clear = header.text.eq_ignore_ascii_case("clear");
        while !is_clear && index < lines.len() && !lines[index].text.is_empty() {
            index += 1;
        }
        let body = &lines[body_start..index];
        commands.push(parse_command(header, body));
    }
    Script {
        file: file.to_owned(),
        commands,
    }
}

fn parse_command(header: &Line<'_>, body: &[Line<'_>]) -> Command {
    let first_word = header
        .text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let invalid = |message: String| Command::Invalid {
        line: header.number,
        message,
    };
    if first_word == "clear" {
        if header.text.split_whitespace().count() > 1 {
            return invalid("`clear` takes no arguments".to_owned());
        }
        debug_assert!(body.is_empty());
        return Command::Clear;
    }
    if first_word.starts_with("load") {
        return match parse_load(&first_word, header, body) {
            Ok(load) => Command::Load(load),
            Err(message) => invalid(message),
        };
    }
    if first_word.starts_with("eval") {
        return match parse_eval(&first_word, header, body) {
            Ok(case) => Command::Eval(Box::new(case)),
            Err(message) => invalid(message),
        };
    }
    invalid(format!("unknown command {:?}", header.text))
}

fn parse_load(first_word: &str, header: &Line<'_>, body: &[Line<'_>]) -> Result<Load, String> {
    let nhcb = match first_word {
        "load" => false,
        "load_with_nhcb" => true,
        _ => return Err(format!("unknown command {first_word:?}")),
    };
    let arguments: Vec<&str> = header.text.split_whitespace().skip(1).collect();
    let [step] = arguments[..] else {
        return Err(format!("expected `{first_word} <step>`"));
    };
    let step_ms = parse_duration(step)?;
    let mut load = Load {
        line: header.number,
        nhcb,
        series: Vec::new(),
        histogram_series: 0,
        start_timestamp_series: 0,
        errors: Vec::new(),
    };
    // Start timestamps of the next line: (line, labels, number of positions).
    let mut pending_start_timestamps: Option<(usize, Labels, usize)> = None;
    for line in body {
        let result = parse_load_line(line, step_ms, &mut load, &mut pending_start_timestamps);
        if let Err(message) = result {
            load.errors.push((line.number, message));
        }
    }
    if let Some((line, _, _)) = pending_start_timestamps {
        load.errors.push((
            line,
            "start timestamps without a series line after them".to_owned(),
        ));
    }
    Ok(load)
}

fn parse_load_line(
    line: &Line<'_>,
    step_ms: i64,
    load: &mut Load,
    pending_start_timestamps: &mut Option<(usize, Labels, usize)>,
) -> Result<(), String> {
    let (labels, rest) = parse_series_description(line.text)?;
    if let Some(durations) = rest.strip_prefix("@st") {
        let positions = expand_durations(durations)?.len();
        *pending_start_timestamps = Some((line.number, labels, positions));
        return Ok(());
    }
    if let Some((_, st_labels, positions)) = pending_start_timestamps.take() {
        if st_labels != labels {
            return Err(format!(
                "start timestamps were given for {st_labels}, not {labels}"
            ));
        }
        let value_positions = expand_values(rest)?.len();
        if positions != value_positions {
            return Err(format!(
                "{positions} start timestamps for {value_positions} sample positions"
            ));
        }
        load.start_timestamp_series += 1;
    }
    let slots = expand_values(rest)?;
    if slots.contains(&Some(Value::Histogram)) {
        load.histogram_series += 1;
        return Ok(());
    }
    let mut samples = Vec::new();
    for (position, slot) in slots.iter().enumerate() {
        let Some(Value::Float(value)) = slot else {
            continue;
        };
        let timestamp = i64::try_from(position)
            .ok()
            .and_then(|position| position.checked_mul(step_ms))
            .ok_or("sample timestamp overflows")?;
        samples.push(Sample::new(timestamp, *value));
    }
    // A second line with the same label set replaces the first.
    load.series.retain(|series| series.labels != labels);
    load.series.push(LoadSeries { labels, samples });
    Ok(())
}

/// The rest of `text` after `count` whitespace-separated words.
fn after_words(text: &str, count: usize) -> Option<&str> {
    let mut rest = text.trim_start();
    for _ in 0..count {
        let end = rest.find(char::is_whitespace)?;
        rest = rest[end..].trim_start();
    }
    Some(rest)
}

/// Case-insensitive keyword check.
fn is_keyword(word: Option<&&str>, keyword: &str) -> bool {
    word.is_some_and(|word| word.eq_ignore_ascii_case(keyword))
}

/// Parses `from <a> to <b> step <s>` given as four-plus words starting at `words[0] == "from"`.
fn parse_range_words(words: &[&str]) -> Result<RangeSpec, String> {
    let well_formed = words.len() >= 6
        && words[0].eq_ignore_ascii_case("from")
        && words[2].eq_ignore_ascii_case("to")
        && words[4].eq_ignore_ascii_case("step");
    if !well_formed {
        return Err("expected `from <start> to <end> step <step>`".to_owned());
    }
    let range = RangeSpec {
        start_ms: parse_duration(words[1])?,
        end_ms: parse_duration(words[3])?,
        step_ms: parse_duration(words[5])?,
    };
    if range.step_ms <= 0 || range.end_ms < range.start_ms {
        return Err("a range needs a positive step and end >= start".to_owned());
    }
    Ok(range)
}

fn parse_eval(first_word: &str, header: &Line<'_>, body: &[Line<'_>]) -> Result<EvalCase, String> {
    let mut fail = None;
    let mut ordered = false;
    let mut annotations = Vec::new();
    match first_word {
        "eval" => {}
        "eval_fail" => fail = Some(TextPattern::Any),
        "eval_ordered" => ordered = true,
        "eval_warn" => annotations.push(AnnotationExpectation::Present(
            AnnotationKind::Warning,
            TextPattern::Any,
        )),
        "eval_info" => annotations.push(AnnotationExpectation::Present(
            AnnotationKind::Info,
            TextPattern::Any,
        )),
        _ => return Err(format!("unknown command {first_word:?}")),
    }
    let words: Vec<&str> = header.text.split_whitespace().collect();
    let (kind, query_text) = if is_keyword(words.get(1), "instant") {
        if !is_keyword(words.get(2), "at") || words.len() < 5 {
            return Err("expected `eval instant at <time> <query>`".to_owned());
        }
        let at_ms = parse_duration(words[3])?;
        (EvalKind::Instant { at_ms }, after_words(header.text, 4))
    } else if is_keyword(words.get(1), "range") {
        let range = parse_range_words(&words[2..])?;
        (EvalKind::Range(range), after_words(header.text, 8))
    } else {
        return Err("expected `eval instant ...` or `eval range ...`".to_owned());
    };
    let query = query_text
        .filter(|text| !text.is_empty())
        .ok_or("the eval command has no query")?;

    let mut case = EvalCase {
        line: header.number,
        query: query.to_owned(),
        kind,
        expected: Expected::Series {
            range: None,
            series: Vec::new(),
        },
        fail,
        ordered,
        annotations,
        errors: Vec::new(),
    };
    let mut body_parts = BodyParts::default();
    for line in body {
        if let Err(message) = parse_body_line(line, &mut case, &mut body_parts) {
            case.errors.push(format!("line {}: {message}", line.number));
        }
    }
    match body_parts.into_expected(&case.kind) {
        Ok(expected) => case.expected = expected,
        Err(message) => case.errors.push(message),
    }
    Ok(case)
}

/// The result-describing lines of an eval body, collected before they are checked together.
#[derive(Default)]
struct BodyParts {
    range_vector: Option<RangeSpec>,
    string: Option<String>,
    scalar: Option<f64>,
    series: Vec<ExpectedSeries>,
    fail_lines: usize,
}

impl BodyParts {
    fn into_expected(self, kind: &EvalKind) -> Result<Expected, String> {
        let shapes = usize::from(self.string.is_some())
            + usize::from(self.scalar.is_some())
            + usize::from(!self.series.is_empty());
        if shapes > 1 {
            return Err("the body mixes a string, a scalar and series".to_owned());
        }
        if let Some(string) = self.string {
            return Ok(Expected::String(string));
        }
        if let Some(scalar) = self.scalar {
            return Ok(Expected::Scalar(scalar));
        }
        let grid = match (kind, self.range_vector) {
            (EvalKind::Range(_), Some(_)) => {
                return Err("`expect range vector` only applies to instant queries".to_owned());
            }
            (EvalKind::Range(range), None) => Some(*range),
            (EvalKind::Instant { .. }, range_vector) => range_vector,
        };
        for (index, series) in self.series.iter().enumerate() {
            if self.series[..index]
                .iter()
                .any(|earlier| earlier.labels == series.labels)
            {
                return Err(format!(
                    "line {}: {} is expected twice",
                    series.line, series.labels
                ));
            }
            match grid {
                Some(range) => {
                    let steps = (range.end_ms - range.start_ms) / range.step_ms + 1;
                    if series.values.len() as i64 > steps {
                        return Err(format!(
                            "line {}: {} values for {steps} steps",
                            series.line,
                            series.values.len()
                        ));
                    }
                }
                None => {
                    if series.values.len() != 1 || series.values[0].is_none() {
                        return Err(format!(
                            "line {}: an instant vector expectation needs exactly one value",
                            series.line
                        ));
                    }
                }
            }
        }
        Ok(Expected::Series {
            range: self.range_vector,
            series: self.series,
        })
    }
}

/// Parses `msg: <text>`, `regex: <re>` or nothing.
fn parse_text_pattern(text: &str) -> Result<TextPattern, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Ok(TextPattern::Any);
    }
    if let Some(message) = trimmed.strip_prefix("msg:") {
        return Ok(TextPattern::Exact(message.trim().to_owned()));
    }
    if let Some(pattern) = trimmed.strip_prefix("regex:") {
        return Ok(TextPattern::Regex(pattern.trim().to_owned()));
    }
    Err(format!("expected `msg:` or `regex:`, found {trimmed:?}"))
}

/// Records an `expect fail` (or legacy `expected_fail_*`) line. `eval_fail` in the header
/// expects a failure already; such a line only adds the text the error must have.
fn set_fail(
    case: &mut EvalCase,
    parts: &mut BodyParts,
    pattern: TextPattern,
) -> Result<(), String> {
    parts.fail_lines += 1;
    if parts.fail_lines > 1 {
        return Err("more than one `expect fail`".to_owned());
    }
    case.fail = Some(pattern);
    Ok(())
}

fn parse_body_line(
    line: &Line<'_>,
    case: &mut EvalCase,
    parts: &mut BodyParts,
) -> Result<(), String> {
    let text = line.text;
    let words: Vec<&str> = text.split_whitespace().collect();
    if words[0] == "expect" {
        let directive = words.get(1).copied().unwrap_or_default();
        let rest = after_words(text, 2).unwrap_or_default();
        return match directive {
            "range" => {
                if !is_keyword(words.get(2), "vector") {
                    return Err("expected `expect range vector from ...`".to_owned());
                }
                parts.range_vector = Some(parse_range_words(&words[3..])?);
                if words.len() > 9 {
                    return Err("unexpected words after the range".to_owned());
                }
                Ok(())
            }
            "string" => {
                let (string, after) = unquote_prefix(rest)?;
                if !after.trim().is_empty() {
                    return Err(format!("unexpected {after:?} after the string"));
                }
                parts.string = Some(string);
                Ok(())
            }
            "fail" => set_fail(case, parts, parse_text_pattern(rest)?),
            "warn" | "info" => {
                let kind = if directive == "warn" {
                    AnnotationKind::Warning
                } else {
                    AnnotationKind::Info
                };
                let pattern = parse_text_pattern(rest)?;
                case.annotations
                    .push(AnnotationExpectation::Present(kind, pattern));
                Ok(())
            }
            "no_warn" | "no_info" if rest.is_empty() => {
                let kind = if directive == "no_warn" {
                    AnnotationKind::Warning
                } else {
                    AnnotationKind::Info
                };
                case.annotations.push(AnnotationExpectation::Absent(kind));
                Ok(())
            }
            "ordered" if rest.is_empty() => {
                case.ordered = true;
                Ok(())
            }
            _ => Err(format!("unknown directive {text:?}")),
        };
    }
    if words[0] == "expected_fail_message" {
        let message = after_words(text, 1).unwrap_or_default();
        return set_fail(case, parts, TextPattern::Exact(message.to_owned()));
    }
    if words[0] == "expected_fail_regexp" {
        let pattern = after_words(text, 1).unwrap_or_default();
        return set_fail(case, parts, TextPattern::Regex(pattern.to_owned()));
    }
    if let Ok(number) = parse_number(text) {
        if parts.scalar.is_some() {
            return Err("more than one scalar line".to_owned());
        }
        parts.scalar = Some(number);
        return Ok(());
    }
    let (labels, rest) = parse_series_description(text)?;
    let values = expand_values(rest)?;
    parts.series.push(ExpectedSeries {
        line: line.number,
        labels,
        values,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use lookout_model::is_stale_nan;

    use super::*;

    fn only_case(script: &Script) -> &EvalCase {
        let cases: Vec<&EvalCase> = script.cases().collect();
        assert_eq!(cases.len(), 1, "{script:?}");
        cases[0]
    }

    #[test]
    fn commands_blocks_and_comments() {
        let script = parse_script(
            "x.test",
            "# header\nload 5m\n  a{b=\"c\"} 0+1x2 _ stale\n  a{b=\"d\"} 1\n\nclear\n\
             eval instant at 10m a\n  a{b=\"c\"} 2\n# a comment ends the block\n\
             eval range from 0 to 10m step 5m a\n\tA 1 _ 3\n",
        );
        assert_eq!(script.commands.len(), 4, "{script:?}");
        let Command::Load(load) = &script.commands[0] else {
            panic!("{script:?}");
        };
        assert_eq!(load.line, 2);
        assert!(load.errors.is_empty(), "{load:?}");
        assert_eq!(load.series.len(), 2);
        let timestamps: Vec<i64> = load.series[0]
            .samples
            .iter()
            .map(|sample| sample.timestamp.0)
            .collect();
        assert_eq!(timestamps, [0, 300_000, 600_000, 1_200_000]);
        assert!(is_stale_nan(load.series[0].samples[3].value));
        assert!(matches!(script.commands[1], Command::Clear));

        let Command::Eval(instant) = &script.commands[2] else {
            panic!("{script:?}");
        };
        assert_eq!(instant.line, 7);
        assert_eq!(instant.kind, EvalKind::Instant { at_ms: 600_000 });
        assert!(instant.errors.is_empty(), "{instant:?}");
        let Command::Eval(range) = &script.commands[3] else {
            panic!("{script:?}");
        };
        assert_eq!(range.line, 10);
        assert_eq!(
            range.kind,
            EvalKind::Range(RangeSpec {
                start_ms: 0,
                end_ms: 600_000,
                step_ms: 300_000
            })
        );
        let Expected::Series { series, .. } = &range.expected else {
            panic!("{range:?}");
        };
        assert_eq!(series[0].values.len(), 3);
        assert_eq!(series[0].values[1], None);
    }

    #[test]
    fn repeated_label_set_in_one_load_replaces() {
        let script = parse_script("x.test", "load 1m\n  a 1 2\n  {__name__=\"a\"} 7\n");
        let Command::Load(load) = &script.commands[0] else {
            panic!("{script:?}");
        };
        assert_eq!(load.series.len(), 1);
        assert_eq!(load.series[0].samples.len(), 1);
        assert_eq!(load.series[0].samples[0].value, 7.0);
    }

    #[test]
    fn histograms_and_start_timestamps_are_noted() {
        let script = parse_script(
            "x.test",
            "load_with_nhcb 5m\n  h {{schema:0 count:1}}x2\n  c{t=\"a\"}@st _ -1mx1\n  \
             c{t=\"a\"} _ 1 2\n  f 1\n",
        );
        let Command::Load(load) = &script.commands[0] else {
            panic!("{script:?}");
        };
        assert!(load.nhcb);
        assert!(load.errors.is_empty(), "{load:?}");
        assert_eq!(load.histogram_series, 1);
        assert_eq!(load.start_timestamp_series, 1);
        assert_eq!(load.series.len(), 2);

        let mismatched = parse_script("x.test", "load 1m\n  c@st 1m\n  c 1 2\n");
        let Command::Load(load) = &mismatched.commands[0] else {
            panic!("{mismatched:?}");
        };
        assert_eq!(load.errors.len(), 1, "{load:?}");
    }

    #[test]
    fn expect_directives() {
        let script = parse_script(
            "x.test",
            "eval instant at 1m rate(x[5m])\n  expect fail msg:vector cannot contain metrics\n  \
             expect warn regex: a.*b\n  expect no_info\n  expect ordered\n",
        );
        let case = only_case(&script);
        assert!(case.errors.is_empty(), "{case:?}");
        assert!(
            matches!(&case.fail, Some(TextPattern::Exact(text)) if text == "vector cannot contain metrics")
        );
        assert!(case.ordered);
        assert!(matches!(
            &case.annotations[..],
            [
                AnnotationExpectation::Present(AnnotationKind::Warning, TextPattern::Regex(re)),
                AnnotationExpectation::Absent(AnnotationKind::Info),
            ] if re == "a.*b"
        ));
    }

    #[test]
    fn legacy_spellings() {
        let script = parse_script(
            "x.test",
            "eval_fail instant at 0 x\n  expected_fail_regexp foo.*\n",
        );
        let case = only_case(&script);
        assert!(matches!(&case.fail, Some(TextPattern::Regex(re)) if re == "foo.*"));
        let ordered = parse_script("x.test", "eval_ordered instant at 0 x\n  x 1\n");
        assert!(only_case(&ordered).ordered);
        let warn = parse_script("x.test", "eval_warn instant at 0 x\n");
        assert_eq!(only_case(&warn).annotations.len(), 1);
    }

    #[test]
    fn scalars_strings_and_range_vectors() {
        let scalar = parse_script("x.test", "eval instant at 0 1e3\n  1000\n");
        assert!(matches!(only_case(&scalar).expected, Expected::Scalar(value) if value == 1000.0));
        let string = parse_script(
            "x.test",
            "eval instant at 0 \" Foo \"\n  expect string \" Foo \"\n",
        );
        assert!(matches!(&only_case(&string).expected, Expected::String(text) if text == " Foo "));
        let matrix = parse_script(
            "x.test",
            "eval instant at 1m x[1m]\n  expect range vector from 10s to 1m step 10s\n  x 1 2 3\n",
        );
        let case = only_case(&matrix);
        assert!(case.errors.is_empty(), "{case:?}");
        let Expected::Series { range, series } = &case.expected else {
            panic!("{case:?}");
        };
        assert_eq!(range.unwrap().step_ms, 10_000);
        assert_eq!(series[0].values.len(), 3);
    }

    #[test]
    fn body_problems_are_case_errors() {
        for body in [
            "  x 1 2",      // two values for an instant vector
            "  x _",        // no value
            "  x 1\n  x 2", // same series twice
            "  1\n  x 1",   // scalar and series
            "  expect fail\n  expect fail",
            "  expect sometimes",
        ] {
            let script = parse_script("x.test", &format!("eval instant at 0 x\n{body}\n"));
            assert!(!only_case(&script).errors.is_empty(), "{body:?}");
        }
        let too_long = parse_script("x.test", "eval range from 0 to 1m step 1m x\n  x 1 2 3\n");
        assert!(!only_case(&too_long).errors.is_empty());
    }

    #[test]
    fn malformed_commands_are_invalid() {
        let script = parse_script("x.test", "frobnicate\n\neval instant x\n\nload\n");
        assert_eq!(script.commands.len(), 3);
        assert!(script
            .commands
            .iter()
            .all(|command| matches!(command, Command::Invalid { .. })));
    }
}
