//! The error type of the parser.

use lookout_model::{Classify, ErrorClass};

/// A query that does not parse or does not type-check.
///
/// `position` is the byte offset into the query where the problem was found (the start of the
/// offending token or sub-expression; the query length for "unexpected end of input").
/// `message` follows the wording of the Prometheus parser so that clients see familiar text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{position}: {message}")]
pub struct ParseError {
    /// Byte offset into the input.
    pub position: usize,
    /// What went wrong, in Prometheus' wording where one exists.
    pub message: String,
}

impl ParseError {
    /// An error at `position`.
    pub fn new(position: usize, message: impl Into<String>) -> ParseError {
        ParseError {
            position,
            message: message.into(),
        }
    }
}

impl Classify for ParseError {
    fn class(&self) -> ErrorClass {
        ErrorClass::BadData
    }
}

/// A duration expression that depends on the query (`step()`, `range()`) evaluated to an
/// unusable value, e.g. `foo[step() - 1h]` for a one-minute step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DurationError {
    /// What went wrong, in Prometheus' wording.
    pub message: String,
}

impl Classify for DurationError {
    fn class(&self) -> ErrorClass {
        ErrorClass::BadData
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_class() {
        let error = ParseError::new(4, "unexpected end of input");
        assert_eq!(error.to_string(), "4: unexpected end of input");
        assert_eq!(error.class(), ErrorClass::BadData);
    }
}
