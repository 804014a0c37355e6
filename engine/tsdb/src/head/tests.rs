//! Head tests.
