//! Turns PromQL text into tokens.
//!
//! The lexer is context sensitive in the same three places as Prometheus' lexer:
//! - inside `{...}` every word is a label name, `=~|`/`!~|` (SOFALookout in-list matchers)
//!   are recognised, and keywords lose their meaning;
//! - inside `[...]` only durations, numbers, arithmetic, `:` and the duration functions
//!   `step()`, `range()`, `min_of()`, `max_of()` may appear (so `foo[5m:1m]` is not read as a
//!   metric name with a colon);
//! - everywhere else words are keywords (case-insensitive), identifiers or metric
//!   identifiers (words with `:`).
//!
//! SOFALookout extension: outside braces a word may contain dots (`jvm.memory.heap.used`)
//! when each dot is followed by a letter, digit or underscore. Such words are metric names.
//! A keyword directly followed by `.` and a digit still ends before the dot, so valid
//! Prometheus such as `x > bool.5` or `x offset.5m` keeps its meaning.
//!
//! Lexing stops at the first error, which becomes an [`TokenKind::Error`] token; the parser
//! reports it when (and only if) it reaches that token, as Prometheus' lazy lexer does.

use crate::duration::parse_duration;

/// Words with a meaning outside braces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Keyword {
    And,
    Or,
    Unless,
    Atan2,
    Sum,
    Avg,
    Count,
    Min,
    Max,
    Group,
    Stddev,
    Stdvar,
    Topk,
    Bottomk,
    CountValues,
    Quantile,
    Limitk,
    LimitRatio,
    Offset,
    Smoothed,
    Anchored,
    By,
    Without,
    On,
    Ignoring,
    GroupLeft,
    GroupRight,
    Fill,
    FillLeft,
    FillRight,
    Bool,
    Start,
    End,
    Step,
    Range,
    MaxOf,
    MinOf,
}

impl Keyword {
    fn from_lowercase(word: &str) -> Option<Keyword> {
        Some(match word {
            "and" => Keyword::And,
            "or" => Keyword::Or,
            "unless" => Keyword::Unless,
            "atan2" => Keyword::Atan2,
            "sum" => Keyword::Sum,
            "avg" => Keyword::Avg,
            "count" => Keyword::Count,
            "min" => Keyword::Min,
            "max" => Keyword::Max,
            "group" => Keyword::Group,
            "stddev" => Keyword::Stddev,
            "stdvar" => Keyword::Stdvar,
            "topk" => Keyword::Topk,
            "bottomk" => Keyword::Bottomk,
            "count_values" => Keyword::CountValues,
            "quantile" => Keyword::Quantile,
            "limitk" => Keyword::Limitk,
            "limit_ratio" => Keyword::LimitRatio,
            "offset" => Keyword::Offset,
            "smoothed" => Keyword::Smoothed,
            "anchored" => Keyword::Anchored,
            "by" => Keyword::By,
            "without" => Keyword::Without,
            "on" => Keyword::On,
            "ignoring" => Keyword::Ignoring,
            "group_left" => Keyword::GroupLeft,
            "group_right" => Keyword::GroupRight,
            "fill" => Keyword::Fill,
            "fill_left" => Keyword::FillLeft,
            "fill_right" => Keyword::FillRight,
            "bool" => Keyword::Bool,
            "start" => Keyword::Start,
            "end" => Keyword::End,
            "step" => Keyword::Step,
            "range" => Keyword::Range,
            "max_of" => Keyword::MaxOf,
            "min_of" => Keyword::MinOf,
            _ => return None,
        })
    }

    /// How Prometheus names the token in "unexpected ..." messages.
    fn describe(self, text: &str) -> String {
        let lower = text.to_ascii_lowercase();
        match self {
            Keyword::And | Keyword::Or | Keyword::Unless | Keyword::Atan2 => {
                format!("<op:{lower}>")
            }
            Keyword::Sum
            | Keyword::Avg
            | Keyword::Count
            | Keyword::Min
            | Keyword::Max
            | Keyword::Group
            | Keyword::Stddev
            | Keyword::Stdvar
            | Keyword::Topk
            | Keyword::Bottomk
            | Keyword::CountValues
            | Keyword::Quantile
            | Keyword::Limitk
            | Keyword::LimitRatio => format!("<aggr:{lower}>"),
            Keyword::Start
            | Keyword::End
            | Keyword::Step
            | Keyword::Range
            | Keyword::MaxOf
            | Keyword::MinOf => format!("{text:?}"),
            _ => format!("<{lower}>"),
        }
    }
}

/// The kinds of token.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TokenKind {
    /// End of input.
    Eof,
    /// A lexical error; lexing stopped here.
    Error(String),
    /// A word without `:` or `.` that is not a keyword (or any word inside braces).
    Identifier,
    /// A word containing `:` or `.`: only usable as a metric name.
    MetricIdentifier,
    /// A keyword (outside braces).
    Keyword(Keyword),
    /// A number (including `Inf` and `NaN`).
    Number(f64),
    /// A duration literal, in milliseconds.
    Duration(i64),
    /// A quoted string, unescaped.
    String(String),
    LeftParen,
    RightParen,
    LeftBrace,
    RightBrace,
    LeftBracket,
    RightBracket,
    Comma,
    Colon,
    /// `=`
    Assign,
    /// `=~`
    RegexMatch,
    /// `!~`
    RegexNoMatch,
    /// `=~|`
    InList,
    /// `!~|`
    NotInList,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    /// `==`
    EqlC,
    /// `!=`
    Neq,
    Lss,
    Lte,
    Gtr,
    Gte,
    /// `</`
    TrimUpper,
    /// `>/`
    TrimLower,
    /// `@`
    At,
}

/// One token: kind and byte range in the input.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub kind: TokenKind,
    pub start: usize,
    pub end: usize,
}

impl Token {
    /// The token as Prometheus names it in "unexpected ..." messages.
    pub fn describe(&self, input: &str) -> String {
        let text = &input[self.start..self.end.min(input.len())];
        match &self.kind {
            TokenKind::Eof => "end of input".to_owned(),
            TokenKind::Error(message) => message.clone(),
            TokenKind::Identifier => format!("identifier {text:?}"),
            TokenKind::MetricIdentifier => format!("metric identifier {text:?}"),
            TokenKind::Keyword(keyword) => keyword.describe(text),
            TokenKind::Number(_) => format!("number {text:?}"),
            TokenKind::Duration(_) => format!("duration {text:?}"),
            TokenKind::String(_) => {
                let shown: String = text.chars().take(10).collect();
                if shown.len() < text.len() {
                    format!("string {shown:?}...")
                } else {
                    format!("string {text:?}")
                }
            }
            TokenKind::Add
            | TokenKind::Sub
            | TokenKind::Mul
            | TokenKind::Div
            | TokenKind::Mod
            | TokenKind::Pow
            | TokenKind::EqlC
            | TokenKind::Neq
            | TokenKind::Lss
            | TokenKind::Lte
            | TokenKind::Gtr
            | TokenKind::Gte
            | TokenKind::TrimUpper
            | TokenKind::TrimLower
            | TokenKind::At
            | TokenKind::RegexMatch
            | TokenKind::RegexNoMatch
            | TokenKind::InList
            | TokenKind::NotInList => format!("<op:{text}>"),
            _ => format!("{text:?}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Normal,
    Braces,
    Brackets,
}

/// Splits `input` into tokens. The result always ends with an `Eof` or an `Error` token.
pub(crate) fn tokenize(input: &str) -> Vec<Token> {
    let mut lexer = Lexer {
        input,
        pos: 0,
        mode: Mode::Normal,
        paren_depth: 0,
        bracket_empty: false,
        tokens: Vec::new(),
    };
    lexer.run();
    lexer.tokens
}

struct Lexer<'a> {
    input: &'a str,
    pos: usize,
    mode: Mode,
    paren_depth: i32,
    /// No token yet since the last `[`.
    bracket_empty: bool,
    tokens: Vec<Token>,
}

fn is_word_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.input[self.pos..].chars().next()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.input.get(self.pos + offset..)?.chars().next()
    }

    fn push(&mut self, kind: TokenKind, start: usize) {
        self.tokens.push(Token {
            kind,
            start,
            end: self.pos,
        });
        if self.mode == Mode::Brackets {
            self.bracket_empty = false;
        }
    }

    /// Records an error token and stops.
    fn error(&mut self, start: usize, message: String) -> bool {
        self.tokens.push(Token {
            kind: TokenKind::Error(message),
            start,
            end: self.input.len(),
        });
        false
    }

    fn run(&mut self) {
        loop {
            let before = self.pos;
            let keep_going = match self.mode {
                Mode::Normal => self.lex_normal(),
                Mode::Braces => self.lex_braces(),
                Mode::Brackets => self.lex_brackets(),
            };
            if !keep_going {
                return;
            }
            debug_assert!(self.pos > before, "lexer made no progress");
        }
    }

    fn skip_comment(&mut self) {
        while let Some(c) = self.peek() {
            if c == '\n' || c == '\r' {
                break;
            }
            self.pos += c.len_utf8();
        }
    }

    fn lex_normal(&mut self) -> bool {
        let start = self.pos;
        let Some(c) = self.peek() else {
            if self.paren_depth != 0 {
                return self.error(start, "unclosed left parenthesis".to_owned());
            }
            self.tokens.push(Token {
                kind: TokenKind::Eof,
                start,
                end: start,
            });
            return false;
        };
        if is_space(c) {
            self.pos += 1;
            return true;
        }
        if c == '#' {
            self.skip_comment();
            // An empty comment at the very end still makes progress through `#`.
            return true;
        }
        if c.is_ascii_digit() || (c == '.' && self.peek_at(1).is_some_and(|d| d.is_ascii_digit())) {
            return self.lex_number_or_duration();
        }
        if is_word_start(c) || c == ':' {
            return self.lex_word();
        }
        self.pos += c.len_utf8();
        let next = self.peek();
        let kind = match c {
            ',' => TokenKind::Comma,
            '*' => TokenKind::Mul,
            '/' => TokenKind::Div,
            '%' => TokenKind::Mod,
            '+' => TokenKind::Add,
            '-' => TokenKind::Sub,
            '^' => TokenKind::Pow,
            '@' => TokenKind::At,
            '=' => match next {
                Some('=') => {
                    self.pos += 1;
                    TokenKind::EqlC
                }
                Some('~') => {
                    return self.error(start, "unexpected character after '=': '~'".to_owned())
                }
                _ => TokenKind::Assign,
            },
            '!' => match next {
                Some('=') => {
                    self.pos += 1;
                    TokenKind::Neq
                }
                other => {
                    let shown = other.map_or("EOF".to_owned(), |c| format!("{c:?}"));
                    return self.error(start, format!("unexpected character after '!': {shown}"));
                }
            },
            '<' => match next {
                Some('=') => {
                    self.pos += 1;
                    TokenKind::Lte
                }
                Some('/') => {
                    self.pos += 1;
                    TokenKind::TrimUpper
                }
                _ => TokenKind::Lss,
            },
            '>' => match next {
                Some('=') => {
                    self.pos += 1;
                    TokenKind::Gte
                }
                Some('/') => {
                    self.pos += 1;
                    TokenKind::TrimLower
                }
                _ => TokenKind::Gtr,
            },
            '"' | '\'' => return self.lex_string(start, c),
            '`' => return self.lex_raw_string(start),
            '(' => {
                self.paren_depth += 1;
                TokenKind::LeftParen
            }
            ')' => {
                self.paren_depth -= 1;
                if self.paren_depth < 0 {
                    return self.error(start, "unexpected right parenthesis ')'".to_owned());
                }
                TokenKind::RightParen
            }
            '{' => {
                self.push(TokenKind::LeftBrace, start);
                self.mode = Mode::Braces;
                return true;
            }
            '[' => {
                self.push(TokenKind::LeftBracket, start);
                self.mode = Mode::Brackets;
                self.bracket_empty = true;
                return true;
            }
            ']' => return self.error(start, "unexpected right bracket ']'".to_owned()),
            other => return self.error(start, format!("unexpected character: {other:?}")),
        };
        self.push(kind, start);
        true
    }

    fn lex_braces(&mut self) -> bool {
        let start = self.pos;
        let Some(c) = self.peek() else {
            return self.error(start, "unexpected end of input inside braces".to_owned());
        };
        if is_space(c) {
            self.pos += 1;
            return true;
        }
        if c == '#' {
            self.skip_comment();
            return true;
        }
        if is_word_start(c) {
            while self.peek().is_some_and(is_word_char) {
                self.pos += 1;
            }
            self.push(TokenKind::Identifier, start);
            return true;
        }
        self.pos += c.len_utf8();
        let kind = match c {
            ',' => TokenKind::Comma,
            '"' | '\'' => return self.lex_string(start, c),
            '`' => return self.lex_raw_string(start),
            '=' => {
                if self.peek() == Some('~') {
                    self.pos += 1;
                    if self.peek() == Some('|') {
                        self.pos += 1;
                        TokenKind::InList
                    } else {
                        TokenKind::RegexMatch
                    }
                } else {
                    TokenKind::Assign
                }
            }
            '!' => match self.peek() {
                Some('~') => {
                    self.pos += 1;
                    if self.peek() == Some('|') {
                        self.pos += 1;
                        TokenKind::NotInList
                    } else {
                        TokenKind::RegexNoMatch
                    }
                }
                Some('=') => {
                    self.pos += 1;
                    TokenKind::Neq
                }
                other => {
                    let shown = other.map_or("EOF".to_owned(), |c| format!("{c:?}"));
                    return self.error(
                        start,
                        format!("unexpected character after '!' inside braces: {shown}"),
                    );
                }
            },
            '{' => return self.error(start, "unexpected left brace '{'".to_owned()),
            '}' => {
                self.push(TokenKind::RightBrace, start);
                self.mode = Mode::Normal;
                return true;
            }
            other => {
                return self.error(
                    start,
                    format!("unexpected character inside braces: {other:?}"),
                )
            }
        };
        self.push(kind, start);
        true
    }

    fn lex_brackets(&mut self) -> bool {
        let start = self.pos;
        let Some(c) = self.peek() else {
            let message = if self.bracket_empty {
                "unexpected end of input in duration expression"
            } else if self.paren_depth != 0 {
                "unclosed left parenthesis"
            } else {
                "unclosed left bracket"
            };
            return self.error(start, message.to_owned());
        };
        if is_space(c) {
            self.pos += 1;
            return true;
        }
        if c == '#' {
            self.skip_comment();
            return true;
        }
        if c.is_ascii_digit() || (c == '.' && self.peek_at(1).is_some_and(|d| d.is_ascii_digit())) {
            return self.lex_number_or_duration();
        }
        if is_word_start(c) {
            while self.peek().is_some_and(is_word_start) {
                self.pos += 1;
            }
            let word = self.input[start..self.pos].to_ascii_lowercase();
            let keyword = match word.as_str() {
                "step" => Keyword::Step,
                "range" => Keyword::Range,
                "max_of" => Keyword::MaxOf,
                "min_of" => Keyword::MinOf,
                _ => {
                    let message = if self.bracket_empty {
                        format!("unexpected character in duration expression: {c:?}")
                    } else {
                        format!("unexpected character: {c:?}, expected ':'")
                    };
                    return self.error(start, message);
                }
            };
            self.push(TokenKind::Keyword(keyword), start);
            return true;
        }
        self.pos += c.len_utf8();
        let kind = match c {
            ']' => {
                self.push(TokenKind::RightBracket, start);
                self.mode = Mode::Normal;
                return true;
            }
            ':' => TokenKind::Colon,
            ',' => TokenKind::Comma,
            '+' => TokenKind::Add,
            '-' => TokenKind::Sub,
            '*' => TokenKind::Mul,
            '/' => TokenKind::Div,
            '%' => TokenKind::Mod,
            '^' => TokenKind::Pow,
            '(' => {
                self.paren_depth += 1;
                TokenKind::LeftParen
            }
            ')' => {
                self.paren_depth -= 1;
                if self.paren_depth < 0 {
                    return self.error(start, "unexpected right parenthesis ')'".to_owned());
                }
                TokenKind::RightParen
            }
            '[' => return self.error(start, "unexpected left bracket '['".to_owned()),
            other => {
                return self.error(
                    start,
                    format!("unexpected character in duration expression: {other:?}"),
                )
            }
        };
        self.push(kind, start);
        true
    }

    /// A word outside braces: keyword, identifier or metric identifier.
    fn lex_word(&mut self) -> bool {
        let start = self.pos;
        let bytes = self.input.as_bytes();
        let mut has_separator = false;
        while self.pos < bytes.len() {
            let b = bytes[self.pos];
            if b.is_ascii_alphanumeric() || b == b'_' {
                self.pos += 1;
            } else if b == b':' {
                has_separator = true;
                self.pos += 1;
            } else if b == b'.' {
                let Some(&next) = bytes.get(self.pos + 1) else {
                    break;
                };
                if !(next.is_ascii_alphanumeric() || next == b'_') {
                    break;
                }
                let so_far = self.input[start..self.pos].to_ascii_lowercase();
                let special = Keyword::from_lowercase(&so_far).is_some()
                    || so_far == "inf"
                    || so_far == "nan";
                if special && next.is_ascii_digit() {
                    break;
                }
                has_separator = true;
                self.pos += 1;
            } else {
                break;
            }
        }
        let word = &self.input[start..self.pos];
        if has_separator {
            self.push(TokenKind::MetricIdentifier, start);
            return true;
        }
        let lower = word.to_ascii_lowercase();
        if lower == "inf" {
            self.push(TokenKind::Number(f64::INFINITY), start);
            return true;
        }
        if lower == "nan" {
            self.push(TokenKind::Number(f64::NAN), start);
            return true;
        }
        let kind = match Keyword::from_lowercase(&lower) {
            Some(Keyword::Fill | Keyword::FillLeft | Keyword::FillRight)
                if !self.followed_by_left_paren() =>
            {
                TokenKind::Identifier
            }
            Some(keyword) => TokenKind::Keyword(keyword),
            None => TokenKind::Identifier,
        };
        self.push(kind, start);
        true
    }

    fn followed_by_left_paren(&self) -> bool {
        self.input[self.pos..]
            .chars()
            .find(|c| !is_space(*c))
            .is_some_and(|c| c == '(')
    }

    fn lex_number_or_duration(&mut self) -> bool {
        let start = self.pos;
        match scan_number(&self.input[start..]) {
            Scan::Number { len, value } => {
                self.pos += len;
                match value {
                    Ok(value) => {
                        self.push(TokenKind::Number(value), start);
                        true
                    }
                    Err(message) => self.error(start, message),
                }
            }
            Scan::Duration { len } => {
                self.pos += len;
                match parse_duration(&self.input[start..self.pos]) {
                    Ok(ms) => {
                        self.push(TokenKind::Duration(ms), start);
                        true
                    }
                    Err(message) => self.error(start, message),
                }
            }
            Scan::Bad { len } => {
                let text = &self.input[start..start + len];
                self.error(start, format!("bad number or duration syntax: {text:?}"))
            }
        }
    }

    fn lex_string(&mut self, start: usize, quote: char) -> bool {
        let mut bytes: Vec<u8> = Vec::new();
        loop {
            let Some(c) = self.peek() else {
                return self.error(start, "unterminated quoted string".to_owned());
            };
            let char_start = self.pos;
            self.pos += c.len_utf8();
            match c {
                '\n' => return self.error(start, "unterminated quoted string".to_owned()),
                '\\' => {
                    if let Err(message) = self.lex_escape(quote, &mut bytes) {
                        return self.error(char_start, message);
                    }
                }
                c if c == quote => break,
                c => {
                    let mut buffer = [0u8; 4];
                    bytes.extend_from_slice(c.encode_utf8(&mut buffer).as_bytes());
                }
            }
        }
        match String::from_utf8(bytes) {
            Ok(value) => {
                self.push(TokenKind::String(value), start);
                true
            }
            Err(_) => self.error(
                start,
                "string literal is not valid UTF-8 after unescaping".to_owned(),
            ),
        }
    }

    /// Reads one escape sequence (the backslash is consumed) and appends its bytes.
    fn lex_escape(&mut self, quote: char, out: &mut Vec<u8>) -> Result<(), String> {
        let Some(c) = self.peek() else {
            return Err("escape sequence not terminated".to_owned());
        };
        self.pos += c.len_utf8();
        let simple = match c {
            'a' => Some(0x07),
            'b' => Some(0x08),
            'f' => Some(0x0c),
            'n' => Some(b'\n'),
            'r' => Some(b'\r'),
            't' => Some(b'\t'),
            'v' => Some(0x0b),
            '\\' => Some(b'\\'),
            c if c == quote => Some(c as u8),
            _ => None,
        };
        if let Some(byte) = simple {
            out.push(byte);
            return Ok(());
        }
        let (digits, base, max, first_consumed) = match c {
            '0'..='7' => (3, 8, 255, true),
            'x' => (2, 16, 255, false),
            'u' => (4, 16, 0x10ffff, false),
            'U' => (8, 16, 0x10ffff, false),
            other => {
                return Err(format!(
                    "unknown escape sequence U+{:04X} {other:?}",
                    u32::from(other)
                ))
            }
        };
        let mut value: u32 = 0;
        for index in 0..digits {
            let digit_char = if index == 0 && first_consumed {
                c
            } else {
                let Some(d) = self.peek() else {
                    return Err("escape sequence not terminated".to_owned());
                };
                self.pos += d.len_utf8();
                d
            };
            let Some(digit) = digit_char.to_digit(base) else {
                return Err(format!(
                    "illegal character U+{:04X} {digit_char:?} in escape sequence",
                    u32::from(digit_char)
                ));
            };
            value = value * base + digit;
        }
        if value > max || (0xd800..0xe000).contains(&value) {
            return Err("escape sequence is an invalid Unicode code point".to_owned());
        }
        if c == 'u' || c == 'U' {
            let ch = char::from_u32(value)
                .ok_or_else(|| "escape sequence is an invalid Unicode code point".to_owned())?;
            let mut buffer = [0u8; 4];
            out.extend_from_slice(ch.encode_utf8(&mut buffer).as_bytes());
        } else {
            out.push(value as u8);
        }
        Ok(())
    }

    fn lex_raw_string(&mut self, start: usize) -> bool {
        let body_start = self.pos;
        match self.input[body_start..].find('`') {
            Some(offset) => {
                let value = self.input[body_start..body_start + offset].to_owned();
                self.pos = body_start + offset + 1;
                self.push(TokenKind::String(value), start);
                true
            }
            None => self.error(start, "unterminated raw string".to_owned()),
        }
    }
}

enum Scan {
    Number {
        len: usize,
        value: Result<f64, String>,
    },
    Duration {
        len: usize,
    },
    Bad {
        len: usize,
    },
}

/// Length of the run of characters that could belong to a number or duration, used to
/// show the offending text in errors.
fn bad_run(text: &str) -> usize {
    text.bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'.')
        .count()
        .max(1)
}

/// Reads digits (and `_` between two digits) matching `is_digit`; returns the new index.
fn scan_digits(bytes: &[u8], mut index: usize, is_digit: fn(u8) -> bool) -> usize {
    let start = index;
    while index < bytes.len() {
        let b = bytes[index];
        let separator =
            b == b'_' && index > start && bytes.get(index + 1).copied().is_some_and(is_digit);
        if !(is_digit(b) || separator) {
            break;
        }
        index += 1;
    }
    index
}

fn scan_number(text: &str) -> Scan {
    let bytes = text.as_bytes();
    let is_dec = |b: u8| b.is_ascii_digit();
    let is_hex = |b: u8| b.is_ascii_hexdigit();
    let continues_word = |index: usize| {
        bytes
            .get(index)
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
    };

    // Hexadecimal integers.
    if bytes.len() > 2 && bytes[0] == b'0' && (bytes[1] == b'x' || bytes[1] == b'X') {
        let mut digits_start = 2;
        if bytes.get(2) == Some(&b'_') {
            digits_start = 3;
        }
        let end = scan_digits(bytes, digits_start, is_hex);
        if end == digits_start || continues_word(end) || bytes.get(end) == Some(&b'.') {
            return Scan::Bad { len: bad_run(text) };
        }
        let digits: String = text[digits_start..end]
            .chars()
            .filter(|c| *c != '_')
            .collect();
        let value = u64::from_str_radix(&digits, 16)
            .ok()
            .filter(|v| i64::try_from(*v).is_ok())
            .map(|v| v as f64)
            .ok_or_else(|| {
                format!(
                    "error parsing number: parsing {:?}: value out of range",
                    &text[..end]
                )
            });
        return Scan::Number { len: end, value };
    }

    // Decimal: digits [. digits] [e [+-] digits]
    let mut index = scan_digits(bytes, 0, is_dec);
    let integer_end = index;
    let mut is_float = false;
    if bytes.get(index) == Some(&b'.') {
        is_float = true;
        index += 1;
        if bytes.get(index) == Some(&b'_') {
            return Scan::Bad { len: bad_run(text) };
        }
        index = scan_digits(bytes, index, is_dec);
    }
    if matches!(bytes.get(index), Some(b'e' | b'E')) {
        let mut exponent = index + 1;
        if matches!(bytes.get(exponent), Some(b'+' | b'-')) {
            exponent += 1;
        }
        if !bytes.get(exponent).is_some_and(|b| b.is_ascii_digit()) {
            // `1e`, `1e+`: no unit starts with `e`, so this is no duration either.
            return Scan::Bad { len: bad_run(text) };
        }
        is_float = true;
        index = scan_digits(bytes, exponent, is_dec);
    }
    let next = bytes.get(index).copied();
    if !continues_word(index) && next != Some(b'.') {
        return Scan::Number {
            len: index,
            value: parse_decimal(&text[..index], is_float),
        };
    }
    // A duration: (digits unit)+ with units made of the unit letters, e.g. `1h30m`, `250ms`.
    if !is_float && integer_end == index && !text[..index].contains('_') {
        let mut cursor = 0;
        let mut ok = false;
        loop {
            let digits_start = cursor;
            while bytes.get(cursor).is_some_and(|b| b.is_ascii_digit()) {
                cursor += 1;
            }
            if cursor == digits_start {
                break;
            }
            // One unit letter, optionally followed by `s` (for `ms`; misspellings such as
            // `hs` are left for the duration parser to name).
            if !bytes.get(cursor).is_some_and(|b| b"smhdwy".contains(b)) {
                ok = false;
                break;
            }
            cursor += 1;
            if bytes.get(cursor) == Some(&b's') {
                cursor += 1;
            }
            ok = true;
            if !bytes.get(cursor).is_some_and(|b| b.is_ascii_digit()) {
                break;
            }
        }
        if ok && !continues_word(cursor) && bytes.get(cursor) != Some(&b'.') {
            return Scan::Duration { len: cursor };
        }
    }
    Scan::Bad { len: bad_run(text) }
}

/// Parses a decimal literal the way Go's `strconv.ParseInt(s, 0, 64)` then `ParseFloat`
/// would: a leading `0` means octal when all digits are octal.
fn parse_decimal(text: &str, is_float: bool) -> Result<f64, String> {
    let clean: String = text.chars().filter(|c| *c != '_').collect();
    if !is_float {
        let octal = clean.len() > 1 && clean.starts_with('0');
        if octal && clean.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            if let Ok(value) = i64::from_str_radix(&clean[1..], 8) {
                return Ok(value as f64);
            }
        } else if let Ok(value) = clean.parse::<i64>() {
            return Ok(value as f64);
        }
    }
    match clean.parse::<f64>() {
        Ok(value) if value.is_finite() => Ok(value),
        _ => Err(format!(
            "error parsing number: parsing {text:?}: value out of range"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(input: &str) -> Vec<TokenKind> {
        tokenize(input)
            .into_iter()
            .map(|token| token.kind)
            .collect()
    }

    fn error_of(input: &str) -> String {
        match tokenize(input).pop().map(|token| token.kind) {
            Some(TokenKind::Error(message)) => message,
            other => panic!("expected an error for {input:?}, got {other:?}"),
        }
    }

    #[test]
    fn numbers() {
        let number = |input: &str| match kinds(input).as_slice() {
            [TokenKind::Number(value), TokenKind::Eof] => *value,
            other => panic!("{input}: {other:?}"),
        };
        assert_eq!(number("1"), 1.0);
        assert_eq!(number(".5"), 0.5);
        assert_eq!(number("5."), 5.0);
        assert_eq!(number("5e-3"), 0.005);
        assert_eq!(number("5E3"), 5000.0);
        assert_eq!(number("0xc"), 12.0);
        assert_eq!(number("0X1F"), 31.0);
        assert_eq!(number("0755"), 493.0);
        assert_eq!(number("089"), 89.0);
        assert_eq!(number("1_000"), 1000.0);
        assert_eq!(number("Inf"), f64::INFINITY);
        assert!(number("nAn").is_nan());
        assert_eq!(number("123.4567"), 123.4567);
    }

    #[test]
    fn bad_numbers() {
        assert_eq!(error_of("2.5."), "bad number or duration syntax: \"2.5.\"");
        assert!(error_of("100..4").starts_with("bad number or duration syntax"));
        assert!(error_of("0deadbeef").starts_with("bad number or duration syntax"));
        assert!(error_of("1e").starts_with("bad number or duration syntax"));
        assert!(error_of(&"9".repeat(400)).contains("value out of range"));
    }

    #[test]
    fn durations() {
        assert_eq!(
            kinds("5m 1h30m 250ms"),
            vec![
                TokenKind::Duration(300_000),
                TokenKind::Duration(5_400_000),
                TokenKind::Duration(250),
                TokenKind::Eof
            ]
        );
        assert_eq!(
            error_of("foo[5mm]"),
            "bad number or duration syntax: \"5mm\""
        );
        assert_eq!(
            error_of("foo[5y1hs]"),
            "unknown unit \"hs\" in duration \"5y1hs\""
        );
        assert_eq!(
            error_of("foo[5m1]"),
            "bad number or duration syntax: \"5m1\""
        );
        assert_eq!(
            error_of("foo[5m1h]"),
            "not a valid duration string: \"5m1h\""
        );
    }

    #[test]
    fn words_and_keywords() {
        assert_eq!(
            kinds("sum BY foo:bar offset"),
            vec![
                TokenKind::Keyword(Keyword::Sum),
                TokenKind::Keyword(Keyword::By),
                TokenKind::MetricIdentifier,
                TokenKind::Keyword(Keyword::Offset),
                TokenKind::Eof
            ]
        );
        assert_eq!(
            kinds("fill + fill(1)"),
            vec![
                TokenKind::Identifier,
                TokenKind::Add,
                TokenKind::Keyword(Keyword::Fill),
                TokenKind::LeftParen,
                TokenKind::Number(1.0),
                TokenKind::RightParen,
                TokenKind::Eof
            ]
        );
    }

    #[test]
    fn dotted_metric_names() {
        assert_eq!(
            kinds("jvm.memory.heap.used{app=\"x\"}")[0],
            TokenKind::MetricIdentifier
        );
        assert_eq!(kinds("gc.0.count")[0], TokenKind::MetricIdentifier);
        // A keyword followed by `.5` keeps its meaning.
        assert_eq!(
            kinds("bool.5"),
            vec![
                TokenKind::Keyword(Keyword::Bool),
                TokenKind::Number(0.5),
                TokenKind::Eof
            ]
        );
        assert_eq!(
            kinds("offset.5m")[..2],
            [
                TokenKind::Keyword(Keyword::Offset),
                TokenKind::Error("bad number or duration syntax: \".5m\"".into())
            ]
        );
        // A trailing dot is not part of the word.
        assert_eq!(error_of("foo."), "unexpected character: '.'");
    }

    #[test]
    fn braces() {
        assert_eq!(
            kinds("{a=~|\"x|y\", b!~|'z', sum!=\"\"}"),
            vec![
                TokenKind::LeftBrace,
                TokenKind::Identifier,
                TokenKind::InList,
                TokenKind::String("x|y".into()),
                TokenKind::Comma,
                TokenKind::Identifier,
                TokenKind::NotInList,
                TokenKind::String("z".into()),
                TokenKind::Comma,
                TokenKind::Identifier,
                TokenKind::Neq,
                TokenKind::String(String::new()),
                TokenKind::RightBrace,
                TokenKind::Eof
            ]
        );
        assert_eq!(error_of("{"), "unexpected end of input inside braces");
        assert_eq!(
            error_of("foo{a:b=\"b\"}"),
            "unexpected character inside braces: ':'"
        );
        assert_eq!(error_of("}"), "unexpected character: '}'");
    }

    #[test]
    fn brackets() {
        assert_eq!(
            kinds("x[5m:step()]"),
            vec![
                TokenKind::Identifier,
                TokenKind::LeftBracket,
                TokenKind::Duration(300_000),
                TokenKind::Colon,
                TokenKind::Keyword(Keyword::Step),
                TokenKind::LeftParen,
                TokenKind::RightParen,
                TokenKind::RightBracket,
                TokenKind::Eof
            ]
        );
        assert_eq!(
            error_of("foo[\"5m\"]"),
            "unexpected character in duration expression: '\"'"
        );
        assert_eq!(
            error_of("foo[5s x 5s]"),
            "unexpected character: 'x', expected ':'"
        );
        assert_eq!(
            error_of("foo["),
            "unexpected end of input in duration expression"
        );
        assert_eq!(error_of("foo[5m"), "unclosed left bracket");
    }

    #[test]
    fn strings() {
        assert_eq!(
            kinds(r#""a\"b" 'c\'d' `e\f`"#),
            vec![
                TokenKind::String("a\"b".into()),
                TokenKind::String("c'd".into()),
                TokenKind::String("e\\f".into()),
                TokenKind::Eof
            ]
        );
        assert_eq!(
            kinds(r#""\a\b\f\n\r\t\v\\ \u1234\U00010111\101\x41""#)[0],
            TokenKind::String("\u{7}\u{8}\u{c}\n\r\t\u{b}\\ \u{1234}\u{10111}AA".into())
        );
        assert_eq!(error_of(r#""\"#), "escape sequence not terminated");
        assert_eq!(error_of(r#""\c""#), "unknown escape sequence U+0063 'c'");
        assert_eq!(
            error_of(r#""\x.""#),
            "illegal character U+002E '.' in escape sequence"
        );
        assert_eq!(error_of("\"abc"), "unterminated quoted string");
        assert_eq!(error_of("\"a\nb\""), "unterminated quoted string");
        assert_eq!(error_of("`abc"), "unterminated raw string");
        assert_eq!(error_of(r#"'\"'"#), "unknown escape sequence U+0022 '\"'");
        assert!(error_of(r#""\xff""#).contains("UTF-8"));
        assert_eq!(kinds(r#""\xc3\xa9""#)[0], TokenKind::String("é".into()));
    }

    #[test]
    fn operators_and_comments() {
        assert_eq!(
            kinds("a </ b >/ c <= d # comment\n @ e"),
            vec![
                TokenKind::Identifier,
                TokenKind::TrimUpper,
                TokenKind::Identifier,
                TokenKind::TrimLower,
                TokenKind::Identifier,
                TokenKind::Lte,
                TokenKind::Identifier,
                TokenKind::At,
                TokenKind::Identifier,
                TokenKind::Eof
            ]
        );
        assert_eq!(error_of("1 =~ 1"), "unexpected character after '=': '~'");
        assert_eq!(error_of("1 !~ 1"), "unexpected character after '!': '~'");
        assert_eq!(error_of("(1))"), "unexpected right parenthesis ')'");
        assert_eq!(error_of("((1)"), "unclosed left parenthesis");
    }
}
