//! Series descriptions: `metric`, `metric{a="x"}`, `{__name__="metric", a="x"}`, `{}`.

use lookout_model::{Labels, METRIC_NAME_LABEL};

/// Splits a series line into its label set and the text after the description (the value
/// sequence, or `@st ...` on a start-timestamp line).
///
/// Metric names may contain `.` (SOFALookout's dotted names) and `:`; names inside the braces
/// may be quoted (`{"my.metric", "a.b"="x"}`); values use PromQL string syntax.
pub fn parse_series_description(line: &str) -> Result<(Labels, &str), String> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let name_len = line
        .find(|character: char| !is_metric_name_char(character))
        .unwrap_or(line.len());
    let (name, mut rest) = line.split_at(name_len);
    if !name.is_empty() {
        if name.starts_with(|character: char| character.is_ascii_digit()) {
            return Err(format!("{name:?} is not a metric name"));
        }
        pairs.push((METRIC_NAME_LABEL.to_owned(), name.to_owned()));
    }
    // `{{` right after a name starts a histogram value, not a label set.
    if rest.starts_with('{') && !rest.starts_with("{{") {
        rest = parse_label_set(&rest[1..], &mut pairs)?;
    } else if name.is_empty() {
        return Err(format!("{line:?} does not start with a series description"));
    }
    let labels = Labels::from_pairs(pairs).map_err(|error| error.to_string())?;
    Ok((labels, rest.trim()))
}

fn is_metric_name_char(character: char) -> bool {
    character.is_ascii_alphanumeric() || matches!(character, '_' | ':' | '.')
}

/// Reads `name="value", ...}` (the opening brace already consumed) into `pairs` and returns
/// the text after the closing brace.
fn parse_label_set<'a>(
    mut text: &'a str,
    pairs: &mut Vec<(String, String)>,
) -> Result<&'a str, String> {
    loop {
        text = text.trim_start();
        if let Some(after) = text.strip_prefix('}') {
            return Ok(after);
        }
        let (name, quoted, name_end) = if text.starts_with(['"', '\'', '`']) {
            let (name, after) = unquote_prefix(text)?;
            (name, true, after)
        } else {
            let end = text
                .find(|character: char| !(character.is_ascii_alphanumeric() || character == '_'))
                .unwrap_or(text.len());
            if end == 0 {
                return Err(format!("expected a label name at {text:?}"));
            }
            (text[..end].to_owned(), false, &text[end..])
        };
        let after_name = name_end.trim_start();
        text = if let Some(after_equals) = after_name.strip_prefix('=') {
            if after_equals.starts_with('~') {
                return Err("series descriptions only take `=` matchers".to_owned());
            }
            let (value, after_value) = unquote_prefix(after_equals.trim_start())?;
            pairs.push((name, value));
            after_value.trim_start()
        } else if quoted {
            // `{"metric.name", ...}`: a quoted string on its own is the metric name.
            pairs.push((METRIC_NAME_LABEL.to_owned(), name));
            after_name
        } else {
            return Err(format!("expected `=` after label name {name:?}"));
        };
        if let Some(after_comma) = text.strip_prefix(',') {
            text = after_comma;
        } else if !text.starts_with('}') {
            return Err(format!("expected `,` or `}}` at {text:?}"));
        }
    }
}

/// Unquotes the PromQL string literal at the start of `text` (`"..."` or `'...'` with Go
/// escapes, or a raw `` `...` ``) and returns it with the rest of the text.
pub fn unquote_prefix(text: &str) -> Result<(String, &str), String> {
    let quote = text
        .chars()
        .next()
        .filter(|character| matches!(character, '"' | '\'' | '`'))
        .ok_or_else(|| format!("expected a quoted string at {text:?}"))?;
    let body = &text[1..];
    if quote == '`' {
        let end = body.find('`').ok_or("unterminated raw string")?;
        return Ok((body[..end].to_owned(), &body[end + 1..]));
    }
    let mut bytes = Vec::new();
    let mut characters = body.char_indices();
    while let Some((index, character)) = characters.next() {
        if character == quote {
            let value = String::from_utf8(bytes)
                .map_err(|_| format!("string {text:?} is not valid UTF-8"))?;
            return Ok((value, &body[index + 1..]));
        }
        if character != '\\' {
            let mut buffer = [0; 4];
            bytes.extend_from_slice(character.encode_utf8(&mut buffer).as_bytes());
            continue;
        }
        let (_, escape) = characters.next().ok_or("unterminated escape")?;
        let simple = match escape {
            'a' => Some(0x07),
            'b' => Some(0x08),
            'f' => Some(0x0c),
            'n' => Some(b'\n'),
            'r' => Some(b'\r'),
            't' => Some(b'\t'),
            'v' => Some(0x0b),
            '\\' => Some(b'\\'),
            '"' | '\'' if escape == quote => Some(escape as u8),
            _ => None,
        };
        if let Some(byte) = simple {
            bytes.push(byte);
            continue;
        }
        let (digit_count, radix) = match escape {
            'x' => (2, 16),
            'u' => (4, 16),
            'U' => (8, 16),
            '0'..='7' => (3, 8),
            _ => return Err(format!("unknown escape sequence \\{escape}")),
        };
        let mut digits = String::new();
        if radix == 8 {
            digits.push(escape);
        }
        while digits.len() < digit_count {
            let (_, digit) = characters.next().ok_or("unterminated escape")?;
            digits.push(digit);
        }
        let code = u32::from_str_radix(&digits, radix)
            .map_err(|_| format!("invalid escape digits {digits:?}"))?;
        if matches!(escape, 'u' | 'U') {
            let character =
                char::from_u32(code).ok_or_else(|| format!("invalid code point {code:#x}"))?;
            let mut buffer = [0; 4];
            bytes.extend_from_slice(character.encode_utf8(&mut buffer).as_bytes());
        } else {
            let byte = u8::try_from(code).map_err(|_| format!("octal escape {digits} > 255"))?;
            bytes.push(byte);
        }
    }
    Err(format!("unterminated string {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied()).unwrap()
    }

    #[test]
    fn name_and_labels() {
        let (parsed, rest) =
            parse_series_description(r#"http_requests{job="api", instance="0"}  0+10x10"#).unwrap();
        assert_eq!(
            parsed,
            labels(&[
                ("__name__", "http_requests"),
                ("instance", "0"),
                ("job", "api")
            ])
        );
        assert_eq!(rest, "0+10x10");

        let (parsed, rest) = parse_series_description("up 1 2").unwrap();
        assert_eq!(parsed, labels(&[("__name__", "up")]));
        assert_eq!(rest, "1 2");
    }

    #[test]
    fn name_as_label_and_empty_set() {
        let (by_label, _) = parse_series_description(r#"{__name__="m", a='x'} 1"#).unwrap();
        let (by_name, _) = parse_series_description(r#"m{a="x",} 1"#).unwrap();
        assert_eq!(by_label, by_name);
        let (empty, rest) = parse_series_description("{} 3").unwrap();
        assert_eq!(empty, Labels::empty());
        assert_eq!(rest, "3");
    }

    #[test]
    fn dotted_and_quoted_names() {
        let (parsed, _) = parse_series_description(r#"jvm.memory.heap.used{app="x"} 1"#).unwrap();
        assert_eq!(parsed.metric_name(), Some("jvm.memory.heap.used"));
        let (parsed, _) = parse_series_description(r#"{"my.metric", "a.b"="c"} 1"#).unwrap();
        assert_eq!(parsed, labels(&[("__name__", "my.metric"), ("a.b", "c")]));
    }

    #[test]
    fn values_with_braces_spaces_and_escapes() {
        let (parsed, rest) =
            parse_series_description(r#"m{a="x}y z", b="q\"\n\x41\u00e9\101"} 1"#).unwrap();
        assert_eq!(parsed.get("a"), Some("x}y z"));
        assert_eq!(parsed.get("b"), Some("q\"\nAéA"));
        assert_eq!(rest, "1");
        let (parsed, _) = parse_series_description("m{a=`raw\\n`} 1").unwrap();
        assert_eq!(parsed.get("a"), Some("raw\\n"));
    }

    #[test]
    fn histogram_right_after_the_name() {
        let (parsed, rest) = parse_series_description("h{{schema:0}}").unwrap();
        assert_eq!(parsed.metric_name(), Some("h"));
        assert_eq!(rest, "{{schema:0}}");
    }

    #[test]
    fn start_timestamp_suffix_is_left_over() {
        let (parsed, rest) = parse_series_description(r#"c{type="x"}@st _ -1mx2"#).unwrap();
        assert_eq!(parsed.get("type"), Some("x"));
        assert_eq!(rest, "@st _ -1mx2");
    }

    #[test]
    fn malformed_descriptions() {
        for bad in [
            "",
            "1abc 2",
            r#"m{a=~"x"} 1"#,
            r#"m{a="x" b="y"} 1"#,
            r#"m{a="x"#,
            r#"m{a="x", a="y"} 1"#,
            "m{a} 1",
        ] {
            assert!(
                parse_series_description(bad).is_err(),
                "{bad:?} should not parse"
            );
        }
    }
}
