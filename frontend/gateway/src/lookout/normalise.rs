//! The three name and tag normalisers of SOFALookout's gateway (spec §2.1, Java
//! `MetricUtils`). Which protocol applies which one is decided by the protocol modules.

/// `norm_name`: characters outside `[A-Za-z0-9_:.]` become `_` one for one; a name whose first
/// character is not a letter gets the prefix `m_`.
pub fn norm_name(name: &str) -> String {
    normalise_identifier(name, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '.')
    })
}

/// `norm_tag_key`: characters outside `[A-Za-z0-9_]` become `_` one for one; a key whose first
/// character is not a letter gets the prefix `m_`. The SDK's bucket key `_bucket` is kept.
pub fn norm_tag_key(key: &str) -> String {
    if key == "_bucket" {
        return key.to_owned();
    }
    normalise_identifier(key, |c| c.is_ascii_alphanumeric() || c == '_')
}

/// `norm_tag_value`: every run of TAB, LF, CR, `"`, `\`, `=`, space and `,` becomes one `_`;
/// everything else (`/`, `+`, non-ASCII) is kept.
pub fn norm_tag_value(value: &str) -> String {
    let is_special = |c: char| matches!(c, '\t' | '\n' | '\r' | '"' | '\\' | '=' | ' ' | ',');
    let mut normalised = String::with_capacity(value.len());
    let mut in_run = false;
    for c in value.chars() {
        if is_special(c) {
            if !in_run {
                normalised.push('_');
            }
            in_run = true;
        } else {
            normalised.push(c);
            in_run = false;
        }
    }
    normalised
}

fn normalise_identifier(text: &str, allowed: impl Fn(char) -> bool) -> String {
    let Some(first) = text.chars().next() else {
        return String::new();
    };
    let mut normalised = String::with_capacity(text.len() + 2);
    // Java's `Character.isLetter`, asked of the original first character.
    if !first.is_alphabetic() {
        normalised.push_str("m_");
    }
    normalised.extend(text.chars().map(|c| if allowed(c) { c } else { '_' }));
    normalised
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_dots_and_colons() {
        assert_eq!(norm_name("rpc.latency.max"), "rpc.latency.max");
        assert_eq!(norm_name("a:b-c d"), "a:b_c_d");
        assert_eq!(norm_name("9lives"), "m_9lives");
        assert_eq!(norm_name("_x"), "m__x");
        assert_eq!(norm_name(""), "");
        // One `_` per character, not per byte.
        assert_eq!(norm_name("aé"), "a_");
    }

    #[test]
    fn tag_keys_follow_the_spec_examples() {
        assert_eq!(norm_tag_key("9zone"), "m_9zone");
        assert_eq!(norm_tag_key("user.name"), "user_name");
        assert_eq!(norm_tag_key("disk path"), "disk_path");
        assert_eq!(norm_tag_key("_bucket"), "_bucket");
        assert_eq!(norm_tag_key("_other"), "m__other");
        assert_eq!(norm_tag_key("host"), "host");
    }

    #[test]
    fn tag_values_collapse_runs_of_special_characters() {
        assert_eq!(norm_tag_value("gz 00"), "gz_00");
        assert_eq!(norm_tag_value("a=b"), "a_b");
        assert_eq!(norm_tag_value("a , b"), "a_b");
        assert_eq!(norm_tag_value("x "), "x_");
        assert_eq!(norm_tag_value("a/b+c"), "a/b+c");
        assert_eq!(norm_tag_value("\"\t\\\r\n"), "_");
        assert_eq!(norm_tag_value("héllo wörld"), "héllo_wörld");
    }
}
