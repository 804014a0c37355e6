//! Request-level rules shared by SOFALookout's push endpoints (spec §3.0): tags from the URL
//! path, the `require_app_step` check and the token. Errors carry the original's exact texts,
//! which the HTTP edge sends as `Err: <text>` with status 400.

use super::Tags;

/// A request refused before its body is read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The path after the protocol prefix is not `key/value` pairs.
    #[error("url path tags must be key/value pairs, got {count} segments")]
    OddPathSegments { count: usize },
    /// No `app` tag.
    #[error("app tag in url is required")]
    AppRequired,
    /// No `step` tag.
    #[error("step tag in url is required")]
    StepRequired,
    /// `step` is not a 32-bit integer.
    #[error("step tag in url is invalid")]
    StepInvalid,
    /// Neither `X-Lookout-Token` nor basic auth gave a token.
    #[error("token is empty")]
    TokenEmpty,
    /// The `Authorization` header is not decodable basic auth.
    #[error("TOKEN_IS_INVALID")]
    TokenInvalid,
}

/// Tags from the path after a protocol prefix (e.g. `app/demo/step/30` after
/// `/lookout/metrics/`): split on `/`, empty segments dropped, an even number of segments
/// read as `key/value` pairs, each percent-decoded (`+` stays `+`, as in a URL path; bytes
/// that are not UTF-8 become U+FFFD). A key given twice keeps its last value. Keys and values
/// are not normalised.
pub fn path_tags(rest: &str) -> Result<Tags, RequestError> {
    let segments: Vec<&str> = rest
        .split('/')
        .filter(|segment| !segment.is_empty())
        .collect();
    if !segments.len().is_multiple_of(2) {
        return Err(RequestError::OddPathSegments {
            count: segments.len(),
        });
    }
    Ok(segments
        .chunks_exact(2)
        .map(|pair| (percent_decode(pair[0]), percent_decode(pair[1])))
        .collect())
}

/// `require_app_step`: `app` present, `step` present and a 32-bit integer.
pub fn require_app_step(tags: &Tags) -> Result<(), RequestError> {
    if tags.get("app").is_none_or(|app| app.is_empty()) {
        return Err(RequestError::AppRequired);
    }
    let step = tags.get("step").ok_or(RequestError::StepRequired)?;
    step.parse::<i32>()
        .map(|_| ())
        .map_err(|_| RequestError::StepInvalid)
}

/// The request's token: `X-Lookout-Token` when non-empty, else basic auth
/// (`Authorization: Basic base64(user:pass)`; the token is `pass` when `user` is `lookout`,
/// else `user`). Base64 is read in the URL-safe and the standard alphabet, padded or not
/// (the original only reads URL-safe and fails with a 500 on `+` or `/`).
pub fn token(
    x_lookout_token: Option<&str>,
    authorization: Option<&str>,
) -> Result<String, RequestError> {
    if let Some(token) = x_lookout_token
        .map(str::trim)
        .filter(|token| !token.is_empty())
    {
        return Ok(token.to_owned());
    }
    let Some(credentials) = authorization
        .map(str::trim)
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, credentials)| credentials.trim())
    else {
        return Err(RequestError::TokenEmpty);
    };
    let decoded = decode_base64(credentials).ok_or(RequestError::TokenInvalid)?;
    let decoded = String::from_utf8(decoded).map_err(|_| RequestError::TokenInvalid)?;
    let token = match decoded.split_once(':') {
        Some(("lookout", password)) => password,
        Some((user, _)) => user,
        None => decoded.as_str(),
    };
    if token.is_empty() {
        return Err(RequestError::TokenEmpty);
    }
    Ok(token.to_owned())
}

/// The token service (spec §4.1 step 3): which tokens are valid. SOFALookout's default
/// accepts every non-empty token; configured tokens make every other one
/// `TOKEN_IS_INVALID`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    /// `None`: any non-empty token.
    allowed: Option<std::collections::BTreeSet<String>>,
}

impl Tokens {
    /// Every non-empty token is valid (SOFALookout's default token service).
    pub fn any() -> Tokens {
        Tokens::default()
    }

    /// Only these tokens are valid; none given is the same as [`Tokens::any`].
    pub fn only(tokens: impl IntoIterator<Item = String>) -> Tokens {
        let allowed: std::collections::BTreeSet<String> = tokens.into_iter().collect();
        Tokens {
            allowed: (!allowed.is_empty()).then_some(allowed),
        }
    }

    /// The request's token ([`token`]) when it is valid.
    pub fn check(
        &self,
        x_lookout_token: Option<&str>,
        authorization: Option<&str>,
    ) -> Result<String, RequestError> {
        let token = token(x_lookout_token, authorization)?;
        match &self.allowed {
            Some(allowed) if !allowed.contains(&token) => Err(RequestError::TokenInvalid),
            _ => Ok(token),
        }
    }
}

/// Base64 in either alphabet (`+/` or `-_`), with or without `=` padding.
pub(crate) fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let digits = text.trim_end_matches('=');
    if text.len() - digits.len() > 2 {
        return None;
    }
    let mut decoded = Vec::with_capacity(digits.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for byte in digits.bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            decoded.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    // A single leftover digit cannot encode a byte.
    (bits < 6).then_some(decoded)
}

/// `%XX` sequences decoded; a `%` not followed by two hex digits is kept as written.
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = (bytes[index] == b'%')
            .then(|| segment.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                index += 3;
            }
            None => {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn path_tags_are_decoded_pairs() {
        assert_eq!(
            path_tags("app/demo/step/30/zone/gz00").unwrap(),
            tags(&[("app", "demo"), ("step", "30"), ("zone", "gz00")])
        );
        assert_eq!(
            path_tags("/job//a%20b/k/x%2Fy+z%/").unwrap(),
            tags(&[("job", "a b"), ("k", "x/y+z%")])
        );
        assert_eq!(path_tags("").unwrap(), Tags::new());
        assert_eq!(path_tags("k/v1/k/v2").unwrap(), tags(&[("k", "v2")]));
        assert_eq!(
            path_tags("app/demo/step").unwrap_err(),
            RequestError::OddPathSegments { count: 3 }
        );
    }

    #[test]
    fn require_app_step_uses_the_original_texts() {
        let check = |pairs: &[(&str, &str)]| {
            require_app_step(&tags(pairs)).map_err(|error| error.to_string())
        };
        assert_eq!(
            check(&[("job", "j")]).unwrap_err(),
            "app tag in url is required"
        );
        assert_eq!(
            check(&[("app", "a")]).unwrap_err(),
            "step tag in url is required"
        );
        assert_eq!(
            check(&[("app", "a"), ("step", "ten")]).unwrap_err(),
            "step tag in url is invalid"
        );
        assert_eq!(
            check(&[("app", "a"), ("step", "99999999999")]).unwrap_err(),
            "step tag in url is invalid"
        );
        assert!(check(&[("app", "a"), ("step", "-1")]).is_ok());
    }

    #[test]
    fn tokens_from_header_or_basic_auth() {
        assert_eq!(token(Some("t1"), Some("Basic eDp5")).unwrap(), "t1");
        // lookout:secret
        assert_eq!(
            token(None, Some("Basic bG9va291dDpzZWNyZXQ=")).unwrap(),
            "secret"
        );
        assert_eq!(
            token(Some(""), Some("basic bG9va291dDpzZWNyZXQ")).unwrap(),
            "secret"
        );
        // app:x -> the user is the token
        assert_eq!(token(None, Some("Basic YXBwOng=")).unwrap(), "app");
        // lookout:>??~ in both alphabets: standard has '+', URL-safe '-'.
        assert_eq!(token(None, Some("Basic bG9va291dDo+Pz9+")).unwrap(), ">??~");
        assert_eq!(token(None, Some("Basic bG9va291dDo-Pz9-")).unwrap(), ">??~");
        assert_eq!(token(None, None).unwrap_err(), RequestError::TokenEmpty);
        assert_eq!(
            token(None, Some("Bearer x")).unwrap_err(),
            RequestError::TokenEmpty
        );
        // lookout: (empty password)
        assert_eq!(
            token(None, Some("Basic bG9va291dDo=")).unwrap_err(),
            RequestError::TokenEmpty
        );
        assert_eq!(
            token(None, Some("Basic !!!")).unwrap_err(),
            RequestError::TokenInvalid
        );
        // Decodes (standard '/') but is not UTF-8.
        assert_eq!(
            token(None, Some("Basic bG9va291dDr7/w==")).unwrap_err(),
            RequestError::TokenInvalid
        );
    }

    #[test]
    fn configured_tokens_refuse_every_other_one() {
        let any = Tokens::any();
        assert_eq!(any.check(Some("whatever"), None).unwrap(), "whatever");
        assert_eq!(any.check(None, None).unwrap_err(), RequestError::TokenEmpty);
        let only = Tokens::only(["t1".to_owned(), "secret".to_owned()]);
        assert_eq!(only.check(Some("t1"), None).unwrap(), "t1");
        // lookout:secret
        assert_eq!(
            only.check(None, Some("Basic bG9va291dDpzZWNyZXQ="))
                .unwrap(),
            "secret"
        );
        assert_eq!(
            only.check(Some("t2"), None).unwrap_err(),
            RequestError::TokenInvalid
        );
        assert_eq!(
            only.check(None, None).unwrap_err(),
            RequestError::TokenEmpty
        );
        assert_eq!(Tokens::only(Vec::new()), Tokens::any());
    }

    #[test]
    fn base64_round_trips_every_length() {
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for length in 0..10 {
            let data: Vec<u8> = (0..length).map(|index| (index * 37 + 200) as u8).collect();
            let mut encoded = String::new();
            for chunk in data.chunks(3) {
                let group = (u32::from(chunk[0]) << 16)
                    | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
                    | u32::from(*chunk.get(2).unwrap_or(&0));
                for digit in 0..=chunk.len() {
                    encoded.push(alphabet[(group >> (18 - 6 * digit) & 63) as usize] as char);
                }
            }
            assert_eq!(decode_base64(&encoded).unwrap(), data, "{encoded}");
        }
        assert_eq!(decode_base64("A"), None);
    }
}
