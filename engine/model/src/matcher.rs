//! Label matchers with Prometheus semantics plus SOFALookout's in-list matchers.
//!
//! Semantics, exactly as Prometheus:
//! - a series without the label is matched as if the label had the empty value, so
//!   `{a=""}` selects series without `a` and `{a!=""}` series with it;
//! - regular expressions are RE2 syntax (the `regex` crate), fully anchored and with `.`
//!   matching newlines: `=~"ab"` is `^(?s:ab)$`.
//!
//! SOFALookout adds `=~|` (value is one of a `|`-separated literal list, like SQL `IN`) and
//! `!~|` (value is none of them). Membership is exact, not substring containment (SOFALookout's
//! in-memory matcher got this wrong; spec §8.1 states the intended behaviour).

use std::fmt;
use std::sync::Arc;

use regex::Regex;
use regex_syntax::hir::{Class, Hir, HirKind};

use crate::ModelError;

/// The comparison a matcher makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchKind {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~`
    Regex,
    /// `!~`
    NotRegex,
    /// `=~|` (SOFALookout): value is in a `|`-separated literal list.
    InList,
    /// `!~|` (SOFALookout): value is not in a `|`-separated literal list.
    NotInList,
}

impl MatchKind {
    /// The operator as written in PromQL.
    pub fn operator(self) -> &'static str {
        match self {
            MatchKind::Equal => "=",
            MatchKind::NotEqual => "!=",
            MatchKind::Regex => "=~",
            MatchKind::NotRegex => "!~",
            MatchKind::InList => "=~|",
            MatchKind::NotInList => "!~|",
        }
    }

    /// Whether the matcher selects values that do NOT satisfy its positive form.
    pub fn is_negative(self) -> bool {
        matches!(
            self,
            MatchKind::NotEqual | MatchKind::NotRegex | MatchKind::NotInList
        )
    }
}

/// What an index can do for a regular expression without running it on every value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegexFastPath {
    /// The expression matches exactly these strings (an alternation of literals, an in-list,
    /// or a literal). Sorted, de-duplicated.
    Literals(Vec<String>),
    /// The expression matches every value starting with the prefix (`prefix.*`).
    Prefix(String),
    /// Every matching value starts with the prefix, but the regex must still be checked.
    PrefixThenRegex(String),
    /// The expression matches any string (`.*`).
    Any,
    /// The expression matches any non-empty string (`.+`).
    NonEmpty,
    /// Nothing better than running the regex on every value.
    None,
}

#[derive(Clone)]
enum Compiled {
    Literal,
    Regex {
        regex: Regex,
        fast_path: RegexFastPath,
    },
    List {
        members: Arc<[String]>,
    },
}

/// One label matcher: `name op "value"`.
#[derive(Clone)]
pub struct Matcher {
    name: String,
    kind: MatchKind,
    value: String,
    compiled: Compiled,
}

impl Matcher {
    /// Builds and compiles a matcher. Regex syntax errors are reported with the pattern.
    pub fn new(
        kind: MatchKind,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Matcher, ModelError> {
        let name = name.into();
        let value = value.into();
        let compiled = match kind {
            MatchKind::Equal | MatchKind::NotEqual => Compiled::Literal,
            MatchKind::Regex | MatchKind::NotRegex => {
                let anchored = format!("^(?s:{value})$");
                let regex = Regex::new(&anchored).map_err(|error| ModelError::InvalidRegex {
                    name: name.clone(),
                    pattern: value.clone(),
                    reason: error.to_string(),
                })?;
                Compiled::Regex {
                    regex,
                    fast_path: analyze_regex(&value),
                }
            }
            MatchKind::InList | MatchKind::NotInList => {
                let mut members: Vec<String> = value.split('|').map(str::to_owned).collect();
                members.sort_unstable();
                members.dedup();
                Compiled::List {
                    members: members.into(),
                }
            }
        };
        Ok(Matcher {
            name,
            kind,
            value,
            compiled,
        })
    }

    /// `name="value"`.
    pub fn equal(name: impl Into<String>, value: impl Into<String>) -> Matcher {
        Matcher::new(MatchKind::Equal, name, value).expect("equality matchers always compile")
    }

    /// `name!="value"`.
    pub fn not_equal(name: impl Into<String>, value: impl Into<String>) -> Matcher {
        Matcher::new(MatchKind::NotEqual, name, value).expect("equality matchers always compile")
    }

    /// The label name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The comparison.
    pub fn kind(&self) -> MatchKind {
        self.kind
    }

    /// The value or pattern as written.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Whether `value` (empty for an absent label) satisfies the matcher.
    pub fn matches(&self, value: &str) -> bool {
        let positive = match &self.compiled {
            Compiled::Literal => value == self.value,
            Compiled::Regex { regex, fast_path } => match fast_path {
                RegexFastPath::Literals(literals) => {
                    literals.binary_search_by(|l| l.as_str().cmp(value)).is_ok()
                }
                RegexFastPath::Prefix(prefix) => value.starts_with(prefix.as_str()),
                RegexFastPath::Any => true,
                RegexFastPath::NonEmpty => !value.is_empty(),
                RegexFastPath::PrefixThenRegex(_) | RegexFastPath::None => regex.is_match(value),
            },
            Compiled::List { members } => {
                members.binary_search_by(|m| m.as_str().cmp(value)).is_ok()
            }
        };
        positive != self.kind.is_negative()
    }

    /// Whether a series that lacks the label is selected.
    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }

    /// The shortcut an index may take for the positive form of this matcher (for negative
    /// kinds, the shortcut finds what is excluded). `None` for equality matchers, which an
    /// index answers directly.
    pub fn fast_path(&self) -> Option<RegexFastPath> {
        match &self.compiled {
            Compiled::Literal => None,
            Compiled::Regex { fast_path, .. } => Some(fast_path.clone()),
            Compiled::List { members } => Some(RegexFastPath::Literals(members.to_vec())),
        }
    }
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.kind == other.kind && self.value == other.value
    }
}

impl Eq for Matcher {}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.kind.operator(), self.value)
    }
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Largest number of strings a character class may expand to before we stop treating it as a
/// literal set.
const MAX_CLASS_EXPANSION: usize = 64;

fn analyze_regex(pattern: &str) -> RegexFastPath {
    let parsed = regex_syntax::ParserBuilder::new()
        .dot_matches_new_line(true)
        .build()
        .parse(pattern);
    let Ok(hir) = parsed else {
        return RegexFastPath::None;
    };
    let hir = strip_captures(&hir);
    if is_dot_star(hir) {
        return RegexFastPath::Any;
    }
    if is_dot_plus(hir) {
        return RegexFastPath::NonEmpty;
    }
    if let Some(mut literals) = literal_set(hir) {
        literals.sort_unstable();
        literals.dedup();
        return RegexFastPath::Literals(literals);
    }
    if let HirKind::Concat(parts) = hir.kind() {
        let mut prefix = String::new();
        let mut rest = parts.as_slice();
        while let Some((first, tail)) = rest.split_first() {
            match literal_string(strip_captures(first)) {
                Some(text) => prefix.push_str(&text),
                None => break,
            }
            rest = tail;
        }
        if !prefix.is_empty() {
            if rest.len() == 1 && is_dot_star(strip_captures(&rest[0])) {
                return RegexFastPath::Prefix(prefix);
            }
            return RegexFastPath::PrefixThenRegex(prefix);
        }
    }
    RegexFastPath::None
}

fn strip_captures(hir: &Hir) -> &Hir {
    match hir.kind() {
        HirKind::Capture(capture) => strip_captures(&capture.sub),
        _ => hir,
    }
}

fn is_any_char(hir: &Hir) -> bool {
    match hir.kind() {
        HirKind::Class(Class::Unicode(class)) => {
            let ranges = class.ranges();
            ranges.len() == 1 && ranges[0].start() == '\0' && ranges[0].end() == char::MAX
        }
        _ => false,
    }
}

fn is_repetition_of_any(hir: &Hir, min: u32) -> bool {
    match hir.kind() {
        HirKind::Repetition(repetition) => {
            repetition.min == min
                && repetition.max.is_none()
                && is_any_char(strip_captures(&repetition.sub))
        }
        _ => false,
    }
}

fn is_dot_star(hir: &Hir) -> bool {
    is_repetition_of_any(hir, 0)
}

fn is_dot_plus(hir: &Hir) -> bool {
    is_repetition_of_any(hir, 1)
}

fn literal_string(hir: &Hir) -> Option<String> {
    match hir.kind() {
        HirKind::Literal(literal) => String::from_utf8(literal.0.to_vec()).ok(),
        HirKind::Empty => Some(String::new()),
        _ => None,
    }
}

/// The finite set of strings `hir` matches, if it is small and made of literals, small
/// classes, alternations and concatenations of those.
fn literal_set(hir: &Hir) -> Option<Vec<String>> {
    let hir = strip_captures(hir);
    if let Some(text) = literal_string(hir) {
        return Some(vec![text]);
    }
    match hir.kind() {
        HirKind::Class(Class::Unicode(class)) => {
            let mut out = Vec::new();
            for range in class.ranges() {
                for code in u32::from(range.start())..=u32::from(range.end()) {
                    if out.len() >= MAX_CLASS_EXPANSION {
                        return None;
                    }
                    out.push(char::from_u32(code)?.to_string());
                }
            }
            Some(out)
        }
        HirKind::Alternation(branches) => {
            let mut out = Vec::new();
            for branch in branches {
                out.extend(literal_set(branch)?);
                if out.len() > MAX_CLASS_EXPANSION {
                    return None;
                }
            }
            Some(out)
        }
        HirKind::Concat(parts) => {
            let mut out = vec![String::new()];
            for part in parts {
                let options = literal_set(part)?;
                if out.len() * options.len() > MAX_CLASS_EXPANSION {
                    return None;
                }
                out = out
                    .iter()
                    .flat_map(|head| options.iter().map(move |tail| format!("{head}{tail}")))
                    .collect();
            }
            Some(out)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn matcher(kind: MatchKind, value: &str) -> Matcher {
        Matcher::new(kind, "a", value).unwrap()
    }

    #[test]
    fn equality_and_empty_value_rules() {
        assert!(matcher(MatchKind::Equal, "").matches(""));
        assert!(!matcher(MatchKind::Equal, "").matches("x"));
        assert!(matcher(MatchKind::NotEqual, "").matches("x"));
        assert!(!matcher(MatchKind::NotEqual, "").matches_empty());
        assert!(matcher(MatchKind::NotEqual, "x").matches_empty());
    }

    #[test]
    fn regexes_are_fully_anchored_and_dot_matches_newline() {
        let m = matcher(MatchKind::Regex, "b.");
        assert!(m.matches("bc"));
        assert!(!m.matches("abc"));
        assert!(!m.matches("bcd"));
        assert!(m.matches("b\n"));
        assert!(matcher(MatchKind::Regex, ".*").matches_empty());
        assert!(matcher(MatchKind::Regex, "").matches_empty());
        assert!(!matcher(MatchKind::Regex, ".+").matches_empty());
        assert!(matcher(MatchKind::NotRegex, "x|y").matches("z"));
        assert!(!matcher(MatchKind::NotRegex, "x|y").matches("y"));
        assert!(matcher(MatchKind::Regex, "(?i)FOO").matches("foo"));
    }

    #[test]
    fn in_list_is_exact_membership() {
        let m = matcher(MatchKind::InList, "a|bb|c");
        assert!(m.matches("bb"));
        assert!(!m.matches("b"));
        assert!(!m.matches("a|bb"));
        assert!(!m.matches_empty());
        let not_in = matcher(MatchKind::NotInList, "a|bb");
        assert!(not_in.matches("b"));
        assert!(not_in.matches_empty());
        assert!(!not_in.matches("a"));
    }

    #[test]
    fn bad_regex_is_a_clear_error() {
        let error = Matcher::new(MatchKind::Regex, "job", "a(").unwrap_err();
        assert!(matches!(error, ModelError::InvalidRegex { ref pattern, .. } if pattern == "a("));
        assert!(error.to_string().contains("job"));
    }

    #[test]
    fn fast_paths_are_recognised() {
        let path = |pattern: &str| matcher(MatchKind::Regex, pattern).fast_path().unwrap();
        assert_eq!(
            path("foo|bar|baz"),
            RegexFastPath::Literals(vec!["bar".into(), "baz".into(), "foo".into()])
        );
        assert_eq!(
            path("(a|b)"),
            RegexFastPath::Literals(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            path("api-(v1|v2)"),
            RegexFastPath::Literals(vec!["api-v1".into(), "api-v2".into()])
        );
        assert_eq!(path("node_.*"), RegexFastPath::Prefix("node_".into()));
        assert_eq!(
            path("node_[0-9]+x"),
            RegexFastPath::PrefixThenRegex("node_".into())
        );
        assert_eq!(path(".*"), RegexFastPath::Any);
        assert_eq!(path(".+"), RegexFastPath::NonEmpty);
        assert_eq!(path("[a-z]+"), RegexFastPath::None);
        assert_eq!(path(""), RegexFastPath::Literals(vec![String::new()]));
    }

    #[test]
    fn display_round_trips_operators() {
        assert_eq!(
            matcher(MatchKind::InList, "x|y").to_string(),
            r#"a=~|"x|y""#
        );
        assert_eq!(matcher(MatchKind::NotRegex, "x").to_string(), r#"a!~"x""#);
    }

    proptest! {
        /// The fast path must agree with running the anchored regex itself.
        #[test]
        fn fast_path_agrees_with_regex(
            pattern in prop::sample::select(vec![
                "foo|bar", "a.*", "ab[cd]", "(x|y)z.*", ".*", ".+", "", "a|", "[a-c]",
                "pre(fix)?", "x.*y", "(?i)ab", "a\\.b.*", "ß|é",
            ]),
            value in "[a-z.ßé]{0,6}",
        ) {
            let m = Matcher::new(MatchKind::Regex, "l", pattern).unwrap();
            let reference = Regex::new(&format!("^(?s:{pattern})$")).unwrap();
            prop_assert_eq!(m.matches(&value), reference.is_match(&value));
        }
    }
}
