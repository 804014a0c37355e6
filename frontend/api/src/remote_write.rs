//! `POST /api/v1/write`: the remote-write receiver, 1.0 and 2.0 on one path.
//!
//! The version comes from `Content-Type`, as the 2.0 specification negotiates it: no header,
//! `application/x-protobuf` or `application/x-protobuf;proto=prometheus.WriteRequest` is 1.0,
//! `application/x-protobuf;proto=io.prometheus.write.v2.Request` is 2.0; another media type or
//! proto message is 415 Unsupported Media Type, as is a `Content-Encoding` other than `snappy`
//! (none means snappy, for 1.0 senders that leave it out).
//!
//! Answers: 204 when everything was written; 400 in plain text for a malformed body, and for a
//! partial write (invalid series, samples the store refused, and in 2.0 native histograms, which
//! are not stored yet), with what was accepted stored. Exemplars are dropped silently in both
//! versions. A 2.0 answer carries `X-Prometheus-Remote-Write-{Samples,Histograms,Exemplars}-
//! Written`, the counts actually stored, whatever the status.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use lookout_gateway::remote_write::Decoded;
use lookout_gateway::{remote_write, remote_write2};
use lookout_storage::{StorageError, WriteOutcome};

use crate::{ApiError, AppState, RemoteWriteRefusal};

/// The 1.0 message's fully qualified name.
const PROTO_V1: &str = "prometheus.WriteRequest";
/// The 2.0 message's fully qualified name.
const PROTO_V2: &str = "io.prometheus.write.v2.Request";
const PROTOBUF_MEDIA_TYPE: &str = "application/x-protobuf";

const SAMPLES_WRITTEN: HeaderName =
    HeaderName::from_static("x-prometheus-remote-write-samples-written");
const HISTOGRAMS_WRITTEN: HeaderName =
    HeaderName::from_static("x-prometheus-remote-write-histograms-written");
const EXEMPLARS_WRITTEN: HeaderName =
    HeaderName::from_static("x-prometheus-remote-write-exemplars-written");

/// The message a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    /// `prometheus.WriteRequest`.
    V1,
    /// `io.prometheus.write.v2.Request`.
    V2,
}

/// The version from `Content-Type` and a check of `Content-Encoding`; the error is the 415
/// message.
fn negotiate(headers: &HeaderMap) -> Result<Version, String> {
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING) {
        let is_snappy = encoding
            .to_str()
            .is_ok_and(|encoding| encoding.trim().eq_ignore_ascii_case("snappy"));
        if !is_snappy {
            return Err(format!(
                "{encoding:?} encoding (compression) is not accepted by this server; only snappy is"
            ));
        }
    }
    let Some(content_type) = headers.get(header::CONTENT_TYPE) else {
        return Ok(Version::V1);
    };
    let content_type = content_type
        .to_str()
        .map_err(|_| "Content-Type is not visible ASCII".to_owned())?;
    let mut parts = content_type.split(';');
    let media_type = parts.next().unwrap_or_default().trim();
    if !media_type.eq_ignore_ascii_case(PROTOBUF_MEDIA_TYPE) {
        return Err(format!(
            "unsupported content type {content_type:?}: expected {PROTOBUF_MEDIA_TYPE} with \
             proto={PROTO_V1} or proto={PROTO_V2}"
        ));
    }
    let proto = parts
        .filter_map(|parameter| parameter.split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("proto"))
        .map(|(_, value)| value.trim().trim_matches('"'));
    match proto {
        None | Some(PROTO_V1) => Ok(Version::V1),
        Some(PROTO_V2) => Ok(Version::V2),
        Some(other) => Err(format!(
            "unsupported proto message {other:?}: this server accepts {PROTO_V1} and {PROTO_V2}"
        )),
    }
}

/// Adds the 2.0 written-count headers; histograms and exemplars are not stored yet.
fn with_written_headers(
    version: Version,
    samples_written: u64,
    mut response: Response,
) -> Response {
    if version == Version::V2 {
        let headers = response.headers_mut();
        headers.insert(SAMPLES_WRITTEN, HeaderValue::from(samples_written));
        headers.insert(HISTOGRAMS_WRITTEN, HeaderValue::from(0u64));
        headers.insert(EXEMPLARS_WRITTEN, HeaderValue::from(0u64));
    }
    response
}

/// Writes a decoded request; series sent by identity that the store does not hold (new to
/// it, or dropped since they were last sent) are decoded again with their labels and written
/// in a second batch.
async fn write_resolving(
    state: &AppState,
    decoded: &mut Decoded,
) -> Result<WriteOutcome, StorageError> {
    let mut outcome = state
        .storage
        .write(std::mem::take(&mut decoded.batch))
        .await?;
    if outcome.unresolved.is_empty() {
        return Ok(outcome);
    }
    let positions = std::mem::take(&mut outcome.unresolved);
    let again = decoded
        .unresolved(&positions)
        .map_err(|error| StorageError::Internal {
            reason: format!("decoding series again: {error}"),
        })?;
    decoded.invalid_series.extend(again.invalid_series);
    decoded.invalid_series_samples += again.invalid_series_samples;
    outcome.merge(state.storage.write(again.batch).await?);
    Ok(outcome)
}

pub(crate) async fn write(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.remote_write_requests.fetch_add(1, Relaxed);
    let observe = |refusal: RemoteWriteRefusal| {
        if let Some(observer) = &state.options.remote_write_observer {
            observer(refusal);
        }
    };
    let version = match negotiate(&headers) {
        Ok(version) => version,
        Err(message) => {
            state.remote_write_unsupported.fetch_add(1, Relaxed);
            observe(RemoteWriteRefusal::Request("unsupported_media_type"));
            return (StatusCode::UNSUPPORTED_MEDIA_TYPE, message + "\n").into_response();
        }
    };
    let limits = &state.options.decode_limits;
    let decoded = match version {
        Version::V1 => remote_write::decode_with_cache(&body, limits, state.known_series.as_ref()),
        Version::V2 => remote_write2::decode(&body, limits),
    };
    let mut decoded = match decoded {
        Ok(decoded) => decoded,
        Err(error) => {
            state.remote_write_refused.fetch_add(1, Relaxed);
            observe(RemoteWriteRefusal::Request("malformed_body"));
            // Plain text, as Prometheus' receiver answers.
            let message = format!("malformed remote write request: {error}\n");
            let response = (StatusCode::BAD_REQUEST, message).into_response();
            return with_written_headers(version, 0, response);
        }
    };
    state
        .options
        .metadata
        .record(std::mem::take(&mut decoded.metadata));
    let invalid_samples = decoded.invalid_series_samples;
    if invalid_samples > 0 {
        observe(RemoteWriteRefusal::Samples(
            "invalid_labels",
            invalid_samples,
        ));
    }
    if version == Version::V2 && decoded.skipped_histograms > 0 {
        observe(RemoteWriteRefusal::Samples(
            "native_histogram_unsupported",
            decoded.skipped_histograms as u64,
        ));
    }
    let outcome = match write_resolving(&state, &mut decoded).await {
        Ok(outcome) => outcome,
        Err(error) => {
            return with_written_headers(version, 0, ApiError::from(error).into_response());
        }
    };
    let mut problems: Vec<String> = decoded
        .invalid_series
        .iter()
        .map(|reason| format!("invalid series: {reason}"))
        .collect();
    problems.extend(outcome.messages.iter().cloned());
    if version == Version::V2 && decoded.skipped_histograms > 0 {
        // 2.0 forbids a 2xx when any sample was not written; 1.0 receivers have always
        // dropped what they do not support.
        problems.push(format!(
            "{} native histogram samples not written: native histograms are not supported yet",
            decoded.skipped_histograms
        ));
    }
    let response = if problems.is_empty() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        // As Prometheus: a 400 tells the sender not to retry what was refused; the accepted
        // samples are stored.
        tracing::debug!(
            accepted = outcome.accepted,
            rejected = outcome.rejected_total(),
            "remote write partly refused"
        );
        (StatusCode::BAD_REQUEST, problems.join("\n")).into_response()
    };
    with_written_headers(version, outcome.accepted, response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                )
            })
            .collect()
    }

    #[test]
    fn content_type_chooses_the_version() {
        let cases = [
            (vec![], Some(Version::V1)),
            (
                vec![("content-type", "application/x-protobuf")],
                Some(Version::V1),
            ),
            (
                vec![(
                    "content-type",
                    "application/x-protobuf;proto=prometheus.WriteRequest",
                )],
                Some(Version::V1),
            ),
            (
                vec![(
                    "content-type",
                    "application/x-protobuf;proto=io.prometheus.write.v2.Request",
                )],
                Some(Version::V2),
            ),
            (
                vec![
                    (
                        "content-type",
                        "Application/X-Protobuf; Proto=\"io.prometheus.write.v2.Request\"",
                    ),
                    ("content-encoding", "Snappy"),
                ],
                Some(Version::V2),
            ),
            (
                vec![(
                    "content-type",
                    "application/x-protobuf;proto=io.prometheus.write.v3.Request",
                )],
                None,
            ),
            (vec![("content-type", "application/json")], None),
            (
                vec![
                    ("content-type", "application/x-protobuf"),
                    ("content-encoding", "zstd"),
                ],
                None,
            ),
        ];
        for (pairs, expected) in cases {
            assert_eq!(negotiate(&headers(&pairs)).ok(), expected, "{pairs:?}");
        }
    }
}
