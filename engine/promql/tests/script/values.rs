//! Value sequences (`0+10x5 _ stale 3`), their numbers, and the signed durations of `@st`
//! start-timestamp lines.

use std::ops::{AddAssign, Neg};

use lookout_model::STALE_NAN;

/// One expanded slot of a value sequence that holds a value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// A float; a stale marker is [`STALE_NAN`].
    Float(f64),
    /// A native histogram (`{{...}}`). Its contents are not kept: native histograms are not
    /// supported, the slot only marks the series or expectation as native.
    Histogram,
}

/// One expanded position of a sequence: `None` for an omitted slot (`_`).
pub type Slot<T> = Option<T>;

/// Expands a value sequence into one slot per position.
///
/// Items are separated by whitespace outside `{{...}}`. `x` after a number is always the
/// repetition operator, as in Prometheus' series lexer (so `0x59` is sixty zeros); a
/// hexadecimal literal such as `0x1f` is only read as one when its digits cannot be a count.
pub fn expand_values(text: &str) -> Result<Vec<Slot<Value>>, String> {
    let mut slots = Vec::new();
    for item in split_items(text)? {
        expand_value_item(item, &mut slots).map_err(|error| format!("{item:?}: {error}"))?;
    }
    Ok(slots)
}

/// Expands a sequence of signed durations in milliseconds (the `@st` lines of
/// `start_timestamps.test`): `_`, `_xN`, `dxN`, `d+dxN`, `d-dxN`.
pub fn expand_durations(text: &str) -> Result<Vec<Slot<i64>>, String> {
    let mut slots = Vec::new();
    for item in split_items(text)? {
        expand_duration_item(item, &mut slots).map_err(|error| format!("{item:?}: {error}"))?;
    }
    Ok(slots)
}

/// Splits a sequence at whitespace that is not inside braces.
fn split_items(text: &str) -> Result<Vec<&str>, String> {
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut start = None;
    for (index, character) in text.char_indices() {
        match character {
            '{' => depth += 1,
            '}' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("unbalanced '}}' in {text:?}"))?;
            }
            _ => {}
        }
        if character.is_whitespace() && depth == 0 {
            if let Some(begin) = start.take() {
                items.push(&text[begin..index]);
            }
        } else if start.is_none() {
            start = Some(index);
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced '{{' in {text:?}"));
    }
    if let Some(begin) = start {
        items.push(&text[begin..]);
    }
    Ok(items)
}

/// Pushes the slots of an omitted item (`_` or `_xN`) and returns whether `item` was one.
fn expand_omitted<T>(item: &str, slots: &mut Vec<Slot<T>>) -> Result<bool, String> {
    let Some(rest) = item.strip_prefix('_') else {
        return Ok(false);
    };
    let count = if rest.is_empty() {
        1
    } else {
        let digits = rest.strip_prefix('x').ok_or("expected `_` or `_xN`")?;
        parse_count(digits)?
    };
    slots.extend((0..count).map(|_| None));
    Ok(true)
}

fn expand_value_item(item: &str, slots: &mut Vec<Slot<Value>>) -> Result<(), String> {
    if expand_omitted(item, slots)? {
        return Ok(());
    }
    if item == "stale" {
        slots.push(Some(Value::Float(STALE_NAN)));
        return Ok(());
    }
    if item.starts_with("{{") {
        let count = histogram_item_count(item)?;
        slots.extend((0..count).map(|_| Some(Value::Histogram)));
        return Ok(());
    }
    let progression = Progression::parse(item, scan_number)?;
    progression.expand(|value| slots.push(Some(Value::Float(value))));
    Ok(())
}

fn expand_duration_item(item: &str, slots: &mut Vec<Slot<i64>>) -> Result<(), String> {
    if expand_omitted(item, slots)? {
        return Ok(());
    }
    let progression = Progression::parse(item, scan_signed_duration)?;
    progression.expand(|millis| slots.push(Some(millis)));
    Ok(())
}

/// `a`, `axN` (`N + 1` copies), or `a+bxN` / `a-bxN` (`a`, `a ± b`, ... `N + 1` values).
#[derive(Debug)]
struct Progression<T> {
    start: T,
    increment: Option<T>,
    repeats: u64,
}

impl<T: Copy + Neg<Output = T> + AddAssign> Progression<T> {
    /// Parses an item whose numbers `scan` reads (returning the rest of the text).
    fn parse(item: &str, scan: fn(&str) -> Result<(T, &str), String>) -> Result<Self, String> {
        let (start, after_start) = scan(item)?;
        let (increment, after_increment) = match after_start.chars().next() {
            Some(sign @ ('+' | '-')) => {
                let (magnitude, after_magnitude) = scan(&after_start[1..])?;
                let increment = if sign == '-' { -magnitude } else { magnitude };
                (Some(increment), after_magnitude)
            }
            _ => (None, after_start),
        };
        let repeats = match after_increment.strip_prefix('x') {
            Some(digits) => parse_count(digits)?,
            None if after_increment.is_empty() && increment.is_none() => 0,
            None if after_increment.is_empty() => {
                return Err("`a+b` and `a-b` need a count: `a+bxN`".to_owned());
            }
            None => return Err(format!("unexpected {after_increment:?}")),
        };
        Ok(Progression {
            start,
            increment,
            repeats,
        })
    }

    /// Hands out the values in order. Increments are applied by repeated addition, not as
    /// `start + k * increment`, so that the values are bit-identical to Prometheus'.
    fn expand(&self, mut push: impl FnMut(T)) {
        let mut value = self.start;
        push(value);
        for _ in 0..self.repeats {
            if let Some(increment) = self.increment {
                value += increment;
            }
            push(value);
        }
    }
}

/// How many histograms `{{h}}`, `{{h}}xN` or `{{h}}+{{d}}xN` stands for. The histogram
/// bodies themselves are not interpreted.
fn histogram_item_count(item: &str) -> Result<u64, String> {
    let first_end = item.find("}}").ok_or("unterminated `{{`")?;
    let after_first = &item[first_end + 2..];
    let after_increment = match after_first.chars().next() {
        Some('+' | '-') => {
            let increment = &after_first[1..];
            if !increment.starts_with("{{") {
                return Err("expected `{{` after the sign".to_owned());
            }
            let increment_end = increment.find("}}").ok_or("unterminated `{{`")?;
            &increment[increment_end + 2..]
        }
        _ => after_first,
    };
    if after_increment.is_empty() {
        return Ok(1);
    }
    let digits = after_increment
        .strip_prefix('x')
        .ok_or_else(|| format!("unexpected {after_increment:?} after the histogram"))?;
    Ok(parse_count(digits)? + 1)
}

fn parse_count(digits: &str) -> Result<u64, String> {
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(format!("{digits:?} is not a count"));
    }
    digits
        .parse()
        .map_err(|error| format!("count {digits:?}: {error}"))
}

/// Parses a whole string as one PromQL number (`12`, `-2.5e3`, `0x1f`, `Inf`, `NaN`).
pub fn parse_number(text: &str) -> Result<f64, String> {
    match scan_number(text)? {
        (value, "") => Ok(value),
        (_, rest) => Err(format!("unexpected {rest:?} after the number")),
    }
}

/// Reads a number at the start of `text` and returns it with the rest of the text: an
/// optional sign, then `Inf`/`Infinity`/`NaN` (any case), a decimal number with optional
/// fraction and exponent, or a hexadecimal integer whose digits are not all decimal.
fn scan_number(text: &str) -> Result<(f64, &str), String> {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let sign_len = text.len() - unsigned.len();
    let negative = text.starts_with('-');

    for word in ["infinity", "inf", "nan"] {
        let matches_word = unsigned
            .get(..word.len())
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case(word));
        if matches_word {
            let magnitude = if word == "nan" {
                f64::NAN
            } else {
                f64::INFINITY
            };
            let value = if negative { -magnitude } else { magnitude };
            return Ok((value, &unsigned[word.len()..]));
        }
    }

    if let Some((magnitude, rest)) = scan_hex(unsigned) {
        return Ok((if negative { -magnitude } else { magnitude }, rest));
    }

    let bytes = unsigned.as_bytes();
    let mut end = 0;
    let mut digits = 0;
    while end < bytes.len() && bytes[end].is_ascii_digit() {
        end += 1;
        digits += 1;
    }
    if end < bytes.len() && bytes[end] == b'.' {
        end += 1;
        while end < bytes.len() && bytes[end].is_ascii_digit() {
            end += 1;
            digits += 1;
        }
    }
    if digits == 0 {
        return Err(format!("{text:?} does not start with a number"));
    }
    if end < bytes.len() && matches!(bytes[end], b'e' | b'E') {
        let mut exponent_end = end + 1;
        if exponent_end < bytes.len() && matches!(bytes[exponent_end], b'+' | b'-') {
            exponent_end += 1;
        }
        let exponent_digits_start = exponent_end;
        while exponent_end < bytes.len() && bytes[exponent_end].is_ascii_digit() {
            exponent_end += 1;
        }
        if exponent_end > exponent_digits_start {
            end = exponent_end;
        }
    }
    let literal = &text[..sign_len + end];
    let value = literal
        .parse::<f64>()
        .map_err(|error| format!("{literal:?}: {error}"))?;
    Ok((value, &unsigned[end..]))
}

/// `0x1f`-style integers, unless the digits after `x` are all decimal (then the `x` is the
/// repetition operator: `0x5` is six zeros).
fn scan_hex(unsigned: &str) -> Option<(f64, &str)> {
    let after_prefix = unsigned
        .strip_prefix("0x")
        .or_else(|| unsigned.strip_prefix("0X"))?;
    let hex_len = after_prefix
        .find(|character: char| !character.is_ascii_hexdigit())
        .unwrap_or(after_prefix.len());
    let hex_digits = &after_prefix[..hex_len];
    if hex_digits.is_empty() || hex_digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let value = u64::from_str_radix(hex_digits, 16).ok()?;
    Some((value as f64, &after_prefix[hex_len..]))
}

/// Reads `[+-]<duration>` at the start of `text` (units `ms s m h d w y`, which never
/// contain `x`), returning milliseconds and the rest.
fn scan_signed_duration(text: &str) -> Result<(i64, &str), String> {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let negative = text.starts_with('-');
    let end = unsigned
        .find(|character: char| !character.is_ascii_alphanumeric() || character == 'x')
        .unwrap_or(unsigned.len());
    let millis = lookout_promql::parse_duration(&unsigned[..end])?;
    Ok((if negative { -millis } else { millis }, &unsigned[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lookout_model::is_stale_nan;

    fn floats(text: &str) -> Vec<Option<f64>> {
        expand_values(text)
            .unwrap()
            .into_iter()
            .map(|slot| {
                slot.map(|value| match value {
                    Value::Float(float) => float,
                    Value::Histogram => panic!("unexpected histogram in {text:?}"),
                })
            })
            .collect()
    }

    #[test]
    fn plain_numbers_and_specials() {
        assert_eq!(
            floats("1 -2.5 1e3 +4 .5 2E-1"),
            [1.0, -2.5, 1000.0, 4.0, 0.5, 0.2].map(Some)
        );
        assert_eq!(floats("0x1f 0XfF"), [Some(31.0), Some(255.0)]);
        let specials = floats("Inf +Inf -Inf inf NaN nan");
        assert_eq!(
            specials[..4],
            [
                f64::INFINITY,
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::INFINITY
            ]
            .map(Some)
        );
        assert!(specials[4..].iter().all(|value| value.unwrap().is_nan()));
    }

    #[test]
    fn repetitions_and_increments() {
        assert_eq!(floats("1x3"), [1.0; 4].map(Some));
        assert_eq!(floats("-2+4x3"), [-2.0, 2.0, 6.0, 10.0].map(Some));
        assert_eq!(floats("1-2x4"), [1.0, -1.0, -3.0, -5.0, -7.0].map(Some));
        assert_eq!(
            floats("1+1x4 9+1x1"),
            [1.0, 2.0, 3.0, 4.0, 5.0, 9.0, 10.0].map(Some)
        );
        assert_eq!(floats("Infx1"), [f64::INFINITY; 2].map(Some));
        assert_eq!(floats("1e-3x1"), [0.001; 2].map(Some));
        assert_eq!(floats("1e3+1e2x1"), [1000.0, 1100.0].map(Some));
        // `x` after a number is the repetition operator, not a hexadecimal prefix.
        assert_eq!(floats("0x59").len(), 60);
        assert_eq!(floats("0x8"), [0.0; 9].map(Some));
    }

    #[test]
    fn increments_are_repeated_additions() {
        let values = floats("0+0.1x10");
        let mut expected = 0.0;
        for value in &values[1..] {
            expected += 0.1;
            assert_eq!(value.unwrap().to_bits(), f64::to_bits(expected));
        }
        // 10 additions of 0.1 are not exactly 1.0, unlike 0 + 10 * 0.1.
        assert_ne!(values[10], Some(1.0));
    }

    #[test]
    fn omitted_slots_and_stale_markers() {
        assert_eq!(
            floats("_ 1 _x3 2"),
            [None, Some(1.0), None, None, None, Some(2.0)]
        );
        let slots = floats("0 stale 1");
        assert!(is_stale_nan(slots[1].unwrap()));
        assert_eq!(slots.len(), 3);
        assert_eq!(floats(""), []);
    }

    #[test]
    fn histograms_are_counted_not_interpreted() {
        let slots = expand_values("{{schema:0 sum:5 count:4 buckets:[1 2 1]}}x2 3 _").unwrap();
        assert_eq!(slots.len(), 5);
        assert_eq!(slots[..3], [Some(Value::Histogram); 3]);
        assert_eq!(slots[3], Some(Value::Float(3.0)));
        let slots = expand_values("{{schema:0 count:1}}+{{count:2 buckets:[1]}}x3").unwrap();
        assert_eq!(slots, [Some(Value::Histogram); 4]);
        assert!(expand_values("{{schema:0").is_err());
    }

    #[test]
    fn malformed_items_are_errors() {
        for bad in ["1+2", "abc", "1x", "1xy", "_y", "1 2 3q", "+", "1+x3"] {
            assert!(expand_values(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn whole_numbers() {
        assert_eq!(parse_number("12340000"), Ok(12_340_000.0));
        assert_eq!(parse_number("-Inf"), Ok(f64::NEG_INFINITY));
        assert!(parse_number("NaN").unwrap().is_nan());
        assert!(parse_number("1 2").is_err());
        assert!(parse_number("{} 1").is_err());
    }

    #[test]
    fn start_timestamp_durations() {
        assert_eq!(
            expand_durations("_ _ -30s-1mx2 0 1ms").unwrap(),
            [
                None,
                None,
                Some(-30_000),
                Some(-90_000),
                Some(-150_000),
                Some(0),
                Some(1)
            ]
        );
        assert_eq!(expand_durations("-59999msx1").unwrap(), [Some(-59_999); 2]);
        assert_eq!(expand_durations("-0msx2").unwrap(), [Some(0); 3]);
        assert!(expand_durations("1q").is_err());
    }
}
