//! The data model shared by every Lookout crate: [`Labels`], [`Matcher`], [`Sample`],
//! [`TimestampMs`], the Prometheus stale marker and the error classification ([`ErrorClass`]).
//!
//! This crate does no I/O and depends on no other Lookout crate. Storage backends, the PromQL
//! engine and the gateways all speak these types, so they must stay small, cheap to copy and
//! free of engine-specific details.

mod error;
mod labels;
mod matcher;
mod sample;
pub mod time;

pub use error::{Classify, ErrorClass, ModelError};
pub use labels::{
    secret_digest, Label, LabelLimits, Labels, LabelsBuilder, NameValidation, SeriesIdentity,
    METRIC_NAME_LABEL,
};
pub use matcher::{MatchKind, Matcher, RegexFastPath};
pub use sample::{is_stale_nan, Sample, TimestampMs, STALE_NAN, STALE_NAN_BITS};
