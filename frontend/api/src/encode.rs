//! JSON text byte for byte as Prometheus writes it.
//!
//! Prometheus encodes responses with Go's standard-library rules: strings escape `<`, `>`,
//! `&`, U+2028 and U+2029 besides quotes, backslashes and control characters; struct fields
//! keep their declared order while map keys are sorted. Sample values are strings in Go's
//! `strconv` float format and sample timestamps are seconds with at most three decimals.
//! `serde_json` differs on each of these points, so responses are written here.

use serde_json::Value;

/// Appends `text` as a JSON string literal escaped as Go's `encoding/json` does.
pub fn push_string(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let mut unescaped_from = 0;
    for (index, character) in text.char_indices() {
        let escape: Option<&str> = match character {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            '\u{2028}' => Some("\\u2028"),
            '\u{2029}' => Some("\\u2029"),
            '<' | '>' | '&' | '\u{0}'..='\u{1f}' => None,
            _ => continue,
        };
        out.push_str(&text[unescaped_from..index]);
        unescaped_from = index + character.len_utf8();
        match escape {
            Some(escape) => out.push_str(escape),
            None => {
                let byte = character as u8;
                out.push_str("\\u00");
                out.push(HEX[usize::from(byte >> 4)] as char);
                out.push(HEX[usize::from(byte & 0xf)] as char);
            }
        }
    }
    out.push_str(&text[unescaped_from..]);
    out.push('"');
}

/// Go's `strconv.FormatFloat(value, 'f', -1, 64)`: the shortest decimal that reads back as
/// `value`, never an exponent; `+Inf`, `-Inf`, `NaN`.
pub fn format_float_fixed(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value == f64::INFINITY {
        "+Inf".to_owned()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        // Rust's `Display` for floats is the shortest round-trip decimal without exponent.
        value.to_string()
    }
}

/// Go's `strconv.FormatFloat(value, 'e', -1, 64)` for a finite value: shortest digits,
/// exponent with a sign and at least two digits (`1e-07`, `1.5e+21`).
fn format_float_exponent(value: f64) -> String {
    let rust = format!("{value:e}");
    let (mantissa, exponent) = rust
        .split_once('e')
        .expect("`{:e}` always writes an exponent");
    let exponent: i32 = exponent.parse().expect("`{:e}` writes an integer exponent");
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exponent.unsigned_abs())
}

/// A sample value as Prometheus' API writes it (without the quotes): fixed notation, but
/// an exponent below 1e-6 and from 1e21 on in magnitude, as Go's JSON encoder does.
pub fn format_sample_value(value: f64) -> String {
    let magnitude = value.abs();
    if value.is_finite() && magnitude != 0.0 && !(1e-6..1e21).contains(&magnitude) {
        format_float_exponent(value)
    } else {
        format_float_fixed(value)
    }
}

/// A float as a JSON number the way Go's `encoding/json` writes `float64` (used for the query
/// timings of `stats=all`).
pub fn push_go_number(out: &mut String, value: f64) {
    if !value.is_finite() {
        // Go refuses to encode these; never produced for timings.
        out.push('0');
        return;
    }
    let magnitude = value.abs();
    if magnitude != 0.0 && !(1e-6..1e21).contains(&magnitude) {
        let text = format_float_exponent(value);
        // Go trims one leading zero of a negative two-digit exponent: 1e-07 -> 1e-7.
        out.push_str(&text.replacen("e-0", "e-", 1));
    } else {
        out.push_str(&format_float_fixed(value));
    }
}

/// A timestamp in milliseconds as Prometheus writes sample times: seconds, then the
/// milliseconds as three digits when not zero (`1435781451.781`, `1435781451.080`,
/// `1435781451`).
pub fn push_timestamp(out: &mut String, millis: i64) {
    use std::fmt::Write;
    if millis < 0 {
        out.push('-');
    }
    let magnitude = millis.unsigned_abs();
    let (seconds, fraction) = (magnitude / 1000, magnitude % 1000);
    let _ = write!(out, "{seconds}");
    if fraction != 0 {
        let _ = write!(out, ".{fraction:03}");
    }
}

/// `[<timestamp>,"<value>"]`, one sample point.
pub fn push_point(out: &mut String, millis: i64, value: f64) {
    out.push('[');
    push_timestamp(out, millis);
    out.push_str(",\"");
    out.push_str(&format_sample_value(value));
    out.push_str("\"]");
}

/// Appends any JSON value, object keys in the value's own order (insertion order: build
/// objects with Prometheus' field order, and label maps sorted).
pub fn push_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(flag) => out.push_str(if *flag { "true" } else { "false" }),
        Value::Number(number) => match number.as_f64() {
            Some(float) if !number.is_i64() && !number.is_u64() => push_go_number(out, float),
            _ => out.push_str(&number.to_string()),
        },
        Value::String(text) => push_string(out, text),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                push_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (index, (key, item)) in map.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                push_string(out, key);
                out.push(':');
                push_value(out, item);
            }
            out.push('}');
        }
    }
}

/// `{"name":"value",...}` for labels already sorted by name.
pub fn push_labels(out: &mut String, labels: &lookout_model::Labels) {
    out.push('{');
    for (index, label) in labels.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        push_string(out, &label.name);
        out.push(':');
        push_string(out, &label.value);
    }
    out.push('}');
}

/// Sorts every object's keys, recursively: Go writes maps with sorted keys.
pub fn sort_keys(value: Value) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.into_iter().map(sort_keys).collect()),
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(key, item)| (key, sort_keys(item)))
                    .collect(),
            )
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(text: &str) -> String {
        let mut out = String::new();
        push_string(&mut out, text);
        out
    }

    fn timestamp(millis: i64) -> String {
        let mut out = String::new();
        push_timestamp(&mut out, millis);
        out
    }

    fn go_number(value: f64) -> String {
        let mut out = String::new();
        push_go_number(&mut out, value);
        out
    }

    #[test]
    fn strings_escape_like_go() {
        assert_eq!(string("plain"), "\"plain\"");
        assert_eq!(string("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(string("<a&b>"), r#""\u003ca\u0026b\u003e""#);
        assert_eq!(string("x\ny\tz\r"), r#""x\ny\tz\r""#);
        assert_eq!(string("\u{1}\u{8}\u{1f}"), r#""\u0001\u0008\u001f""#);
        assert_eq!(string("é\u{2028}ü"), "\"é\\u2028ü\"");
    }

    #[test]
    fn sample_values_follow_prometheus() {
        assert_eq!(format_sample_value(1.0), "1");
        assert_eq!(format_sample_value(-0.5), "-0.5");
        assert_eq!(format_sample_value(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(format_sample_value(1e20), "100000000000000000000");
        assert_eq!(format_sample_value(1e21), "1e+21");
        assert_eq!(format_sample_value(1.5e300), "1.5e+300");
        assert_eq!(format_sample_value(0.000001), "0.000001");
        assert_eq!(format_sample_value(1e-7), "1e-07");
        assert_eq!(format_sample_value(-2.5e-10), "-2.5e-10");
        assert_eq!(format_sample_value(0.0), "0");
        assert_eq!(format_sample_value(-0.0), "-0");
        assert_eq!(format_sample_value(f64::INFINITY), "+Inf");
        assert_eq!(format_sample_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_sample_value(f64::NAN), "NaN");
        assert_eq!(format_float_fixed(1e-7), "0.0000001");
    }

    #[test]
    fn timestamps_are_seconds_with_millisecond_digits() {
        assert_eq!(timestamp(1_435_781_451_781), "1435781451.781");
        assert_eq!(timestamp(1_435_781_451_000), "1435781451");
        assert_eq!(timestamp(1_435_781_451_080), "1435781451.080");
        assert_eq!(timestamp(1_435_781_451_500), "1435781451.500");
        assert_eq!(timestamp(5), "0.005");
        assert_eq!(timestamp(-1_500), "-1.500");
        assert_eq!(timestamp(0), "0");
    }

    #[test]
    fn go_numbers() {
        assert_eq!(go_number(0.000059954), "0.000059954");
        assert_eq!(go_number(1.2e-7), "1.2e-7");
        assert_eq!(go_number(0.0), "0");
        assert_eq!(go_number(3.0), "3");
        assert_eq!(go_number(1e21), "1e+21");
    }

    #[test]
    fn values_keep_insertion_order_and_sort_keys_sorts() {
        let value =
            serde_json::json!({"status": "success", "data": {"b": 1, "a": [true, null, 1.5]}});
        let mut out = String::new();
        push_value(&mut out, &value);
        assert_eq!(
            out,
            r#"{"status":"success","data":{"b":1,"a":[true,null,1.5]}}"#
        );
        let mut sorted = String::new();
        push_value(&mut sorted, &sort_keys(value));
        assert_eq!(
            sorted,
            r#"{"data":{"a":[true,null,1.5],"b":1},"status":"success"}"#
        );
    }
}
