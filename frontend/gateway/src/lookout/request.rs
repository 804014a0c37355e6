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

/// Base64 of `data` in the standard (`+/`) or URL-safe (`-_`) alphabet, padded or not: the
/// encoder the property tests check [`decode_base64`] against.
#[cfg(test)]
pub(crate) fn encode_base64(data: &[u8], url_safe: bool, padded: bool) -> String {
    let alphabet: &[u8; 64] = if url_safe {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut encoded = String::new();
    for chunk in data.chunks(3) {
        let group = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for digit in 0..=chunk.len() {
            encoded.push(alphabet[(group >> (18 - 6 * digit) & 63) as usize] as char);
        }
        if padded {
            encoded.extend(std::iter::repeat_n('=', 3 - chunk.len()));
        }
    }
    encoded
}

/// `%XX` for every byte outside `[A-Za-z0-9+~._-]`, in either case of hex digit: the
/// encoder the property tests check [`path_tags`] against.
#[cfg(test)]
pub(crate) fn percent_encode(text: &str, upper: bool) -> String {
    let mut encoded = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"+~._-".contains(&byte) {
            encoded.push(byte as char);
        } else if upper {
            encoded.push_str(&format!("%{byte:02X}"));
        } else {
            encoded.push_str(&format!("%{byte:02x}"));
        }
    }
    encoded
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

    /// How a generated `step` tag is written.
    #[derive(Debug, Clone)]
    enum Step {
        Missing,
        Int(i32),
        OutOfRange(i64),
        Text(String),
    }

    fn step_strategy() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            Just(Step::Missing),
            any::<i32>().prop_map(Step::Int),
            prop_oneof![
                (i64::from(i32::MAX) + 1)..=i64::MAX,
                i64::MIN..i64::from(i32::MIN)
            ]
            .prop_map(Step::OutOfRange),
            "[a-z .]{1,4}".prop_map(Step::Text),
        ]
    }

    proptest::proptest! {
        #[test]
        fn base64_round_trips_in_both_alphabets(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..48),
            url_safe: bool,
            padded: bool,
        ) {
            let encoded = encode_base64(&data, url_safe, padded);
            proptest::prop_assert_eq!(decode_base64(&encoded), Some(data));
        }

        #[test]
        fn arbitrary_base64_text_never_panics(text in "[A-Za-z0-9+/_=!é -]{0,24}|\\PC{0,12}") {
            let _ = decode_base64(&text);
        }

        /// Any pairs, percent-encoded and joined with stray slashes, come back as written
        /// (the last value of a key twice); one more segment is an odd count.
        #[test]
        fn path_tags_round_trip(
            pairs in proptest::collection::vec(("\\PC{1,8}", "\\PC{1,8}"), 0..6),
            upper: bool,
            leading_slash: bool,
            doubled in proptest::collection::vec(proptest::prelude::any::<bool>(), 12),
            extra in "[a-z%]{1,4}",
        ) {
            let mut path = String::new();
            if leading_slash {
                path.push('/');
            }
            let mut expected = Tags::new();
            let mut segments = Vec::new();
            for (key, value) in &pairs {
                expected.insert(key.clone(), value.clone());
                segments.push(percent_encode(key, upper));
                segments.push(percent_encode(value, upper));
            }
            for (index, segment) in segments.iter().enumerate() {
                if index > 0 {
                    path.push_str(if doubled[index % doubled.len()] { "//" } else { "/" });
                }
                path.push_str(segment);
            }
            proptest::prop_assert_eq!(path_tags(&path).unwrap(), expected);
            let odd = format!("{path}/{extra}/");
            proptest::prop_assert_eq!(
                path_tags(&odd).unwrap_err(),
                RequestError::OddPathSegments { count: segments.len() + 1 }
            );
        }

        /// Arbitrary paths (`%` escapes cut short, split UTF-8 among them) never panic; what
        /// parses has non-empty keys and values, and what does not says why.
        #[test]
        fn arbitrary_paths_never_panic(path in "[a-z/%0-9A-Fé+]{0,40}|\\PC{0,24}") {
            match path_tags(&path) {
                Ok(tags) => {
                    for (key, value) in &tags {
                        proptest::prop_assert!(!key.is_empty() && !value.is_empty());
                    }
                }
                Err(error) => proptest::prop_assert!(!error.to_string().is_empty()),
            }
        }

        #[test]
        fn require_app_step_follows_the_generated_tags(
            app in proptest::option::of("[a-z]{0,3}"),
            step in step_strategy(),
            others in proptest::collection::btree_map("[c-z]{1,3}", "\\PC{0,3}", 0..3),
        ) {
            let mut tags: Tags = others
                .into_iter()
                .filter(|(key, _)| key != "step")
                .collect();
            if let Some(app) = &app {
                tags.insert("app".into(), app.clone());
            }
            match &step {
                Step::Missing => None,
                Step::Int(step) => tags.insert("step".into(), step.to_string()),
                Step::OutOfRange(step) => tags.insert("step".into(), step.to_string()),
                Step::Text(text) => tags.insert("step".into(), text.clone()),
            };
            let expected = match (&app, &step) {
                (None, _) => Err(RequestError::AppRequired),
                (Some(app), _) if app.is_empty() => Err(RequestError::AppRequired),
                (_, Step::Missing) => Err(RequestError::StepRequired),
                (_, Step::OutOfRange(_) | Step::Text(_)) => Err(RequestError::StepInvalid),
                (_, Step::Int(_)) => Ok(()),
            };
            proptest::prop_assert_eq!(require_app_step(&tags), expected);
        }

        /// Arbitrary header values never panic; a refusal always has a text for `Err:`.
        #[test]
        fn arbitrary_token_headers_never_panic(
            header in proptest::option::of("\\PC{0,12}"),
            authorization in proptest::option::of("(Basic|basic|Bearer)? ?[A-Za-z0-9+/=_ -]{0,16}|\\PC{0,16}"),
        ) {
            match token(header.as_deref(), authorization.as_deref()) {
                Ok(token) => proptest::prop_assert!(!token.is_empty()),
                Err(error) => proptest::prop_assert!(!error.to_string().is_empty()),
            }
        }

        /// `X-Lookout-Token` wins whenever it has more than blanks.
        #[test]
        fn the_header_token_wins(
            header in "[ \t]{0,2}[!-~][ -~]{0,10}",
            authorization in proptest::option::of("\\PC{0,16}"),
        ) {
            proptest::prop_assert_eq!(
                token(Some(&header), authorization.as_deref()).unwrap(),
                header.trim()
            );
        }

        /// Basic auth in either alphabet, padded or not, any scheme case: the password of
        /// user `lookout` (empty: refused), else the user.
        #[test]
        fn basic_auth_round_trips(
            lookout_user: bool,
            user in "[A-Za-z0-9._-]{1,10}",
            password in "\\PC{0,10}",
            scheme in proptest::sample::select(vec!["Basic", "basic", "BASIC"]),
            url_safe: bool,
            padded: bool,
            blank_header: bool,
        ) {
            let user = if lookout_user { "lookout".to_owned() } else { user };
            let credentials = encode_base64(format!("{user}:{password}").as_bytes(), url_safe, padded);
            let authorization = format!(" {scheme} {credentials} ");
            let header = blank_header.then_some("  ");
            let expected = if user != "lookout" {
                Ok(user)
            } else if password.is_empty() {
                Err(RequestError::TokenEmpty)
            } else {
                Ok(password)
            };
            proptest::prop_assert_eq!(token(header, Some(&authorization)), expected);
        }

        /// Configured tokens: exactly those are valid.
        #[test]
        fn configured_tokens_are_exactly_those_allowed(
            allowed in proptest::collection::btree_set("[a-c]{1,2}", 0..4),
            sent in "[a-c]{1,2}",
        ) {
            let tokens = Tokens::only(allowed.iter().cloned());
            let result = tokens.check(Some(&sent), None);
            if allowed.is_empty() || allowed.contains(&sent) {
                proptest::prop_assert_eq!(result, Ok(sent));
            } else {
                proptest::prop_assert_eq!(result, Err(RequestError::TokenInvalid));
            }
        }
    }
}
