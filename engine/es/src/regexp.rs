//! Prometheus (RE2) regular expressions rewritten as Lucene `regexp` queries.
//!
//! Both dialects anchor the whole term, so the pattern carries over structurally: the RE2
//! pattern is parsed into `regex-syntax`'s HIR (which already expands `(?i)` and `\d`-style
//! classes into explicit ranges) and printed back in Lucene's syntax with every
//! non-alphanumeric literal escaped. What Lucene cannot say (look-arounds such as `\b`, byte
//! classes, overly long classes) is widened to a superset and the result is marked inexact;
//! callers then re-check the values themselves.

use regex_syntax::hir::{Class, Hir, HirKind};

/// ES refuses longer patterns by default (`index.max_regex_length`).
const MAX_LUCENE_REGEX_BYTES: usize = 1000;

/// A class with more ranges than this is written as its complement or as `.`.
const MAX_CLASS_RANGES: usize = 64;

/// A Lucene pattern and whether it accepts exactly the RE2 pattern's language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LuceneRegex {
    pub pattern: String,
    pub exact: bool,
}

/// Translates an (implicitly anchored) RE2 pattern. `None` when it cannot be parsed or the
/// translation would be too long: the caller then filters without the regex.
pub(crate) fn translate(pattern: &str) -> Option<LuceneRegex> {
    let hir = regex_syntax::Parser::new().parse(pattern).ok()?;
    let mut out = String::new();
    let mut exact = true;
    write_hir(&hir, &mut out, &mut exact);
    (out.len() <= MAX_LUCENE_REGEX_BYTES).then_some(LuceneRegex {
        pattern: out,
        exact,
    })
}

/// Escapes a literal for use inside a Lucene pattern.
pub(crate) fn escape_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for character in text.chars() {
        push_literal_char(character, &mut out);
    }
    out
}

fn push_literal_char(character: char, out: &mut String) {
    // Lucene treats `\` + any character as that character, but some servers read `\a`-style
    // escapes of letters differently: escape only what is not alphanumeric.
    if character.is_ascii() && !character.is_ascii_alphanumeric() {
        out.push('\\');
    }
    out.push(character);
}

fn write_hir(hir: &Hir, out: &mut String, exact: &mut bool) {
    match hir.kind() {
        HirKind::Empty => out.push_str("()"),
        HirKind::Literal(literal) => match std::str::from_utf8(&literal.0) {
            Ok(text) => out.push_str(&escape_literal(text)),
            Err(_) => {
                *exact = false;
                out.push_str(".*");
            }
        },
        HirKind::Class(class) => write_class(class, out, exact),
        HirKind::Look(_) => {
            // Anchors and word boundaries: dropping an assertion widens the language.
            *exact = false;
            out.push_str("()");
        }
        HirKind::Repetition(repetition) => {
            out.push('(');
            write_hir(&repetition.sub, out, exact);
            out.push(')');
            match (repetition.min, repetition.max) {
                (0, None) => out.push('*'),
                (1, None) => out.push('+'),
                (min, None) => out.push_str(&format!("{{{min},}}")),
                (0, Some(1)) => out.push('?'),
                (min, Some(max)) if min == max => out.push_str(&format!("{{{min}}}")),
                (min, Some(max)) => out.push_str(&format!("{{{min},{max}}}")),
            }
        }
        HirKind::Capture(capture) => {
            out.push('(');
            write_hir(&capture.sub, out, exact);
            out.push(')');
        }
        HirKind::Concat(parts) => {
            for part in parts {
                write_hir(part, out, exact);
            }
        }
        HirKind::Alternation(branches) => {
            out.push('(');
            for (index, branch) in branches.iter().enumerate() {
                if index > 0 {
                    out.push('|');
                }
                write_hir(branch, out, exact);
            }
            out.push(')');
        }
    }
}

fn write_class(class: &Class, out: &mut String, exact: &mut bool) {
    let Class::Unicode(unicode) = class else {
        *exact = false;
        out.push('.');
        return;
    };
    let ranges: Vec<(char, char)> = unicode
        .ranges()
        .iter()
        .map(|range| (range.start(), range.end()))
        .collect();
    let mut negated = unicode.clone();
    negated.negate();
    let complement: Vec<(char, char)> = negated
        .ranges()
        .iter()
        .map(|range| (range.start(), range.end()))
        .collect();
    if complement.is_empty() {
        out.push('.');
    } else if complement.len() < ranges.len() && complement.len() <= MAX_CLASS_RANGES {
        write_ranges(&complement, true, out);
    } else if ranges.len() <= MAX_CLASS_RANGES {
        write_ranges(&ranges, false, out);
    } else {
        *exact = false;
        out.push('.');
    }
}

fn write_ranges(ranges: &[(char, char)], negated: bool, out: &mut String) {
    out.push('[');
    if negated {
        out.push('^');
    }
    for &(start, end) in ranges {
        push_literal_char(start, out);
        if end != start {
            out.push('-');
            push_literal_char(end, out);
        }
    }
    out.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lucene(pattern: &str) -> LuceneRegex {
        translate(pattern).expect("translates")
    }

    #[test]
    fn literals_are_escaped_and_structure_kept() {
        assert_eq!(lucene("api").pattern, "api");
        assert_eq!(lucene("http\\..*").pattern, "http\\.([^\\\n])*");
        assert_eq!(lucene("db|apiserver").pattern, "(db|apiserver)");
        assert_eq!(lucene("eu|").pattern, "(eu|())");
        assert_eq!(lucene("a{2,3}").pattern, "(a){2,3}");
        assert_eq!(lucene("[ab]:[0-9]").pattern, "[a-b]\\:[0-9]");
        assert!(lucene("(?i)API").exact);
        assert_eq!(escape_literal("a=b@c"), "a\\=b\\@c");
    }

    #[test]
    fn assertions_widen_and_mark_inexact() {
        let translated = lucene("\\bfoo");
        assert!(!translated.exact);
        assert_eq!(translated.pattern, "()foo");
        assert!(translate("(").is_none());
    }
}
