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
    // Almost every label name and value needs no escape: one pass over the bytes settles it
    // (0xe2 starts U+2028 and U+2029, the only escaped characters beyond ASCII).
    let plain = text
        .bytes()
        .all(|byte| !matches!(byte, b'"' | b'\\' | b'<' | b'>' | b'&' | 0..=0x1f | 0xe2));
    if plain {
        out.push_str(text);
        out.push('"');
        return;
    }
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

/// Appends a JSON array of string literals.
pub fn push_string_list(out: &mut String, items: &[String]) {
    push_array(out, items, |out, item| push_string(out, item));
}

/// Appends a JSON array, each item written by `push_item`.
fn push_array<T>(
    out: &mut String,
    items: impl IntoIterator<Item = T>,
    mut push_item: impl FnMut(&mut String, T),
) {
    out.push('[');
    for (index, item) in items.into_iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        push_item(out, item);
    }
    out.push(']');
}

/// Go's `strconv.FormatFloat(value, 'f', -1, 64)`: the shortest decimal that reads back as
/// `value`, never an exponent; `+Inf`, `-Inf`, `NaN`.
pub fn format_float_fixed(value: f64) -> String {
    let mut out = String::new();
    push_float(&mut out, value, false);
    out
}

/// Go's `strconv.FormatFloat(value, 'e', -1, 64)` for a finite value: shortest digits,
/// exponent with a sign and at least two digits (`1e-07`, `1.5e+21`).
fn format_float_exponent(value: f64) -> String {
    let mut out = String::new();
    push_float(&mut out, value, true);
    out
}

/// A sample value as Prometheus' API writes it (without the quotes): fixed notation, but
/// an exponent below 1e-6 and from 1e21 on in magnitude, as Go's JSON encoder does.
#[cfg(test)]
fn format_sample_value(value: f64) -> String {
    let mut out = String::new();
    push_sample_value(&mut out, value);
    out
}

/// Appends a sample value as Prometheus' API writes it (without the quotes): fixed
/// notation, but an exponent below 1e-6 and from 1e21 on in magnitude, as Go's JSON encoder
/// does.
pub fn push_sample_value(out: &mut String, value: f64) {
    let magnitude = value.abs();
    // Whole numbers below 2^53 print as their integer: no shorter decimal reads back as
    // them, since neighbouring floats are at most 1 apart. Zero is left to the general path
    // for its sign.
    if (1.0..1e15).contains(&magnitude) && value.fract() == 0.0 {
        out.push_str(itoa::Buffer::new().format(value as i64));
        return;
    }
    let exponent = value.is_finite() && magnitude != 0.0 && !(1e-6..1e21).contains(&magnitude);
    push_float(out, value, exponent);
}

/// Appends `value` in Go's `strconv` shortest format, with an exponent (`'e'`) or without
/// (`'f'`); `+Inf`, `-Inf` and `NaN` as Go writes them.
fn push_float(out: &mut String, value: f64, exponent: bool) {
    if value.is_nan() {
        out.push_str("NaN");
        return;
    }
    if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
        return;
    }
    if value.is_sign_negative() {
        out.push('-');
    }
    // ryu writes the same shortest digits as Go. Magnitudes from 1e-5 to 1e16 come out in
    // plain notation, with ".0" after whole numbers: Go's 'f' text once the ".0" goes. Others
    // come out as `d.ddde-7` or `de16`: Go's 'e' text once the exponent has its sign and two
    // digits. The rest (a plain text wanted in ryu's exponent range, or the reverse) is
    // rebuilt from the digits.
    let mut buffer = ryu::Buffer::new();
    let text = buffer.format_finite(value.abs());
    match (exponent, text.find('e')) {
        (false, None) => {
            out.push_str(text.strip_suffix(".0").unwrap_or(text));
            return;
        }
        (true, Some(at)) => {
            out.push_str(&text[..at]);
            let power = &text[at + 1..];
            let (sign, digits) = match power.strip_prefix('-') {
                Some(digits) => ("e-", digits),
                None => ("e+", power),
            };
            out.push_str(sign);
            if digits.len() < 2 {
                out.push('0');
            }
            out.push_str(digits);
            return;
        }
        _ => {}
    }
    let (digits, point) = shortest_digits(value.abs());
    let digits = &digits;
    let digits = std::str::from_utf8(digits.as_slice()).expect("ASCII digits");
    if exponent {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        let power = point - 1;
        out.push_str(if power < 0 { "e-" } else { "e+" });
        if power.unsigned_abs() < 10 {
            out.push('0');
        }
        out.push_str(itoa::Buffer::new().format(power.unsigned_abs()));
    } else if point <= 0 {
        out.push_str("0.");
        (0..-point).for_each(|_| out.push('0'));
        out.push_str(digits);
    } else if point as usize >= digits.len() {
        out.push_str(digits);
        (digits.len()..point as usize).for_each(|_| out.push('0'));
    } else {
        let (whole, fraction) = digits.split_at(point as usize);
        out.push_str(whole);
        out.push('.');
        out.push_str(fraction);
    }
}

/// The shortest decimal digits that read back as `magnitude` (finite, not negative), without
/// leading or trailing zeros (`"0"` for zero), and where the decimal point goes: the value is
/// `0.<digits> × 10^point`.
fn shortest_digits(magnitude: f64) -> (DigitBuffer, i32) {
    let mut buffer = ryu::Buffer::new();
    let text = buffer.format_finite(magnitude).as_bytes();
    // ryu writes `ddd.ddd`, `0.000ddd` or `d.ddde±x`.
    let (mantissa, power) = match text.iter().position(|&byte| byte == b'e') {
        Some(at) => {
            let power: i32 = std::str::from_utf8(&text[at + 1..])
                .ok()
                .and_then(|power| power.parse().ok())
                .expect("ryu writes an integer exponent");
            (&text[..at], power)
        }
        None => (text, 0),
    };
    let whole_digits = mantissa
        .iter()
        .position(|&byte| byte == b'.')
        .unwrap_or(mantissa.len()) as i32;
    let mut digits = DigitBuffer::default();
    let mut point = whole_digits + power;
    for &byte in mantissa.iter().filter(|byte| byte.is_ascii_digit()) {
        if digits.len == 0 && byte == b'0' {
            // A leading zero moves the point instead.
            point -= 1;
            continue;
        }
        digits.push(byte);
    }
    while digits.len > 0 && digits.bytes[digits.len - 1] == b'0' {
        digits.len -= 1;
    }
    if digits.len == 0 {
        digits.push(b'0');
        point = 1;
    }
    (digits, point)
}

/// Up to 32 ASCII digits on the stack (a shortest f64 has at most 17).
#[derive(Default)]
struct DigitBuffer {
    bytes: [u8; 32],
    len: usize,
}

impl DigitBuffer {
    fn push(&mut self, byte: u8) {
        self.bytes[self.len] = byte;
        self.len += 1;
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
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
    if millis < 0 {
        out.push('-');
    }
    let magnitude = millis.unsigned_abs();
    let (seconds, fraction) = (magnitude / 1000, magnitude % 1000);
    out.push_str(itoa::Buffer::new().format(seconds));
    if fraction != 0 {
        let fraction = fraction as u32;
        let digits = [
            b'.',
            b'0' + (fraction / 100) as u8,
            b'0' + (fraction / 10 % 10) as u8,
            b'0' + (fraction % 10) as u8,
        ];
        out.push_str(std::str::from_utf8(&digits).expect("ASCII digits"));
    }
}

/// `[<timestamp>,"<value>"]` for a scalar result: Prometheus writes a scalar's value in
/// fixed notation at any magnitude (`strconv.FormatFloat(v, 'f', -1, 64)`), unlike sample
/// values (`1e+21` for a sample, `1000000000000000000000` for a scalar).
pub fn push_scalar_point(out: &mut String, millis: i64, value: f64) {
    out.push('[');
    push_timestamp(out, millis);
    out.push_str(",\"");
    push_float(out, value, false);
    out.push_str("\"]");
}

/// `[<timestamp>,"<value>"]`, one sample point.
pub fn push_point(out: &mut String, millis: i64, value: f64) {
    out.push('[');
    push_timestamp(out, millis);
    out.push_str(",\"");
    push_sample_value(out, value);
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
        Value::Array(items) => push_array(out, items, push_value),
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
        // Starts with the byte 0xe2 as U+2028 does, and needs no escape.
        assert_eq!(string("5 €"), "\"5 €\"");
    }

    proptest::proptest! {
        /// Any string, with or without characters to escape, comes out as Go writes it: the
        /// fast path for plain strings and the escaping path agree with a char-by-char
        /// rendering of Go's rules.
        #[test]
        fn strings_escape_like_go_whatever_they_hold(text in "[a-z0-9 <>&\"\\\\\n\t\u{1}\u{2028}\u{2029}é€]{0,40}") {
            let mut expected = String::from("\"");
            for character in text.chars() {
                match character {
                    '"' => expected.push_str("\\\""),
                    '\\' => expected.push_str("\\\\"),
                    '\n' => expected.push_str("\\n"),
                    '\r' => expected.push_str("\\r"),
                    '\t' => expected.push_str("\\t"),
                    '\u{2028}' | '\u{2029}' | '<' | '>' | '&' | '\u{0}'..='\u{1f}' => {
                        expected.push_str(&format!("\\u{:04x}", u32::from(character)));
                    }
                    other => expected.push(other),
                }
            }
            expected.push('"');
            proptest::prop_assert_eq!(string(&text), expected);
        }
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

    /// The formatting through Rust's own float printing, as this module first did it: the
    /// oracle for the faster one, except at exact ties (see [`agrees_with_std`]).
    fn sample_value_by_std(value: f64) -> String {
        let magnitude = value.abs();
        if value.is_nan() {
            "NaN".to_owned()
        } else if value.is_infinite() {
            (if value > 0.0 { "+Inf" } else { "-Inf" }).to_owned()
        } else if magnitude != 0.0 && !(1e-6..1e21).contains(&magnitude) {
            let rust = format!("{value:e}");
            let (mantissa, exponent) = rust.split_once('e').unwrap();
            let exponent: i32 = exponent.parse().unwrap();
            let sign = if exponent < 0 { '-' } else { '+' };
            format!("{mantissa}e{sign}{:02}", exponent.unsigned_abs())
        } else {
            value.to_string()
        }
    }

    /// Whether `ours` is what Go prints for `value`, given Rust's text for it. Both print the
    /// shortest digits that read back; when the value lies exactly halfway between two such
    /// digit strings, Rust rounds the last digit up and Go (like Ryū) to even, so there the
    /// texts differ by one in their last digit and Go's ends in an even one.
    fn agrees_with_std(value: f64, ours: &str, by_std: &str) -> bool {
        if ours == by_std {
            return true;
        }
        let (ours_bytes, std_bytes) = (ours.as_bytes(), by_std.as_bytes());
        let last = ours_bytes
            .iter()
            .zip(std_bytes)
            .rposition(|(a, b)| a.is_ascii_digit() && b.is_ascii_digit() && a != b);
        ours.len() == by_std.len()
            && ours.parse::<f64>().ok().map(f64::to_bits) == Some(value.to_bits())
            && last.is_some_and(|at| {
                ours_bytes[..at] == std_bytes[..at]
                    && ours_bytes[at + 1..] == std_bytes[at + 1..]
                    && (std_bytes[at] as i32 - ours_bytes[at] as i32).abs() == 1
                    && ours_bytes[at] % 2 == 0
                    && !ours_bytes[at + 1..].iter().any(u8::is_ascii_digit)
            })
    }

    proptest::proptest! {
        #[test]
        fn sample_values_print_as_go_does(
            bits in proptest::prelude::any::<u64>(),
            whole in proptest::prelude::any::<i64>(),
            scale in -25i32..25,
        ) {
            for value in [
                f64::from_bits(bits),
                whole as f64,
                (whole % 100_000) as f64 * 10f64.powi(scale),
                (whole % 1_000_000_007) as f64 / 1000.0,
            ] {
                let ours = format_sample_value(value);
                let by_std = sample_value_by_std(value);
                proptest::prop_assert!(agrees_with_std(value, &ours, &by_std), "{} against {}", ours, by_std);
            }
        }
    }

    #[test]
    fn scalars_are_fixed_notation_at_any_magnitude() {
        // As Prometheus answers the PromQL literals `1e21` and `1e-7`.
        let point = |value: f64| {
            let mut out = String::new();
            push_scalar_point(&mut out, 1000, value);
            out
        };
        assert_eq!(point(1e21), r#"[1,"1000000000000000000000"]"#);
        assert_eq!(point(1e-7), r#"[1,"0.0000001"]"#);
        assert_eq!(point(-2.5), r#"[1,"-2.5"]"#);
        assert_eq!(point(f64::INFINITY), r#"[1,"+Inf"]"#);
    }

    #[test]
    fn exact_ties_round_to_even_as_go_does() {
        // 215353567451745.625 exactly: Prometheus answers the PromQL literal with "...62".
        let value = f64::from_bits(4_821_239_315_817_516_084);
        assert_eq!(format_sample_value(value), "215353567451745.62");
        assert_eq!(sample_value_by_std(value), "215353567451745.63");
    }

    #[test]
    fn sample_values_at_the_edges_print_as_go_does() {
        for value in [
            1e15,
            1e15 - 1.0,
            9_007_199_254_740_992.0,
            1e16,
            123_456.0,
            0.5,
            1e-6,
            9.99e-7,
            1e21,
            9.999_999_999_999_999e20,
            5e-324,
            f64::MAX,
            f64::MIN_POSITIVE,
            100.0,
            0.01,
        ] {
            for value in [value, -value] {
                assert_eq!(
                    format_sample_value(value),
                    sample_value_by_std(value),
                    "{value:e}"
                );
            }
        }
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
