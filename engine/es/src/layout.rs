//! SOFALookout's index layout (spec §6) with the §6.4 corrections, and its automated
//! operations: set-up at start, rollover and retention on a timer.
//!
//! Names for the default base `metrics`: physical indices `metrics-YYYY.MM.DD-N`, write alias
//! `lookout-active-metrics`, search alias `lookout-search-metrics` (attached by the template),
//! composable index template `lookout-active-metrics-t` over `metrics-*` carrying the mapping.
//! Reads go through the pattern `metrics-*`, which covers every index, including ones created
//! before a rollover or by SOFALookout itself.

use lookout_model::time::civil_from_days;
use lookout_storage::{StorageError, StorageResult};
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::Client;
use crate::EsOptions;

/// The names derived from the base index name.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub base: String,
    pub write_alias: String,
    pub search_alias: String,
    pub template: String,
    pub pattern: String,
}

impl Names {
    pub fn new(base: &str) -> Names {
        Names {
            base: base.to_owned(),
            write_alias: format!("lookout-active-{base}"),
            search_alias: format!("lookout-search-{base}"),
            template: format!("lookout-active-{base}-t"),
            pattern: format!("{base}-*"),
        }
    }

    /// `metrics-YYYY.MM.DD-N` for a day given as days since the epoch.
    pub fn index_name(&self, day: i64, counter: u32) -> String {
        let (year, month, day) = civil_from_days(day);
        if counter == 1 {
            format!("{}-{year:04}.{month:02}.{day:02}-1", self.base)
        } else {
            format!("{}-{year:04}.{month:02}.{day:02}-{counter:06}", self.base)
        }
    }

    /// The day (days since the epoch) and counter of a physical index name, if it is one.
    pub fn parse_index_name(&self, name: &str) -> Option<(i64, u32)> {
        let rest = name.strip_prefix(&self.base)?.strip_prefix('-')?;
        let (date, counter) = rest.split_once('-')?;
        let mut parts = date.split('.');
        let year: i64 = parts.next()?.parse().ok()?;
        let month: i64 = parts.next()?.parse().ok()?;
        let day: i64 = parts.next()?.parse().ok()?;
        if parts.next().is_some() || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
            return None;
        }
        let counter: u32 = counter.parse().ok()?;
        Some((
            lookout_model::time::days_from_civil(year, month, day),
            counter,
        ))
    }
}

/// The composable index template: settings, the search alias and the explicit mapping
/// (§6.4: without it rolled-over indices would map `id`/`tags` as text).
pub(crate) fn template_body(names: &Names, options: &EsOptions) -> Value {
    json!({
        "index_patterns": [names.pattern],
        "priority": 200,
        "template": {
            "settings": {
                "number_of_shards": options.shards,
                "number_of_replicas": options.replicas,
            },
            "aliases": { names.search_alias.clone(): {} },
            "mappings": {
                "properties": {
                    "id": {"type": "keyword"},
                    "tags": {"type": "keyword"},
                    "series": {"type": "keyword"},
                    "time": {"type": "date"},
                    "value": {"type": "double"},
                    "vbits": {"type": "keyword", "index": false, "doc_values": false}
                }
            }
        }
    })
}

/// Milliseconds since the epoch now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// Creates the template, and the first index with the write alias when there is none.
/// Idempotent, and safe against a gateway and a server initialising at once.
pub(crate) async fn ensure(
    client: &Client,
    names: &Names,
    options: &EsOptions,
) -> StorageResult<()> {
    let existing = client
        .send(Method::GET, &format!("/_alias/{}", names.write_alias), None)
        .await?;
    let alias_exists = existing.is_success();
    if !alias_exists {
        // An index (not an alias) under the alias name is a configuration error (§6.2-2).
        let clash = client
            .send(Method::HEAD, &format!("/{}", names.write_alias), None)
            .await?;
        if clash.is_success() {
            return Err(StorageError::BadRequest {
                reason: format!(
                    "an index named {} exists; that name must be the write alias",
                    names.write_alias
                ),
            });
        }
    }
    client
        .json(
            Method::PUT,
            &format!("/_index_template/{}", names.template),
            Some(template_body(names, options)),
            "creating the index template",
        )
        .await?;
    if alias_exists {
        // A write index made by an older version lacks the `series` field: add it before
        // dynamic mapping would type it as text (which cannot be aggregated on).
        let mapping = json!({"properties": {"series": {"type": "keyword"}}});
        let added = client
            .send(
                Method::PUT,
                &format!("/{}/_mapping", names.write_alias),
                Some(crate::client::Body::Json(mapping)),
            )
            .await?;
        if !added.is_success() {
            tracing::warn!(
                alias = %names.write_alias,
                error = %added.error_text(),
                "could not add the series field to the write index; aggregations over its \
                 documents are not pushed down"
            );
        }
        return Ok(());
    }
    let today = now_ms().div_euclid(86_400_000);
    for counter in 1..=50 {
        let index = names.index_name(today, counter);
        let body = json!({"aliases": {names.write_alias.clone(): {"is_write_index": true}}});
        let created = client
            .send(
                Method::PUT,
                &format!("/{index}"),
                Some(crate::client::Body::Json(body)),
            )
            .await?;
        if created.is_success() {
            tracing::info!(index, alias = %names.write_alias, "created the first index");
            return Ok(());
        }
        if created.error_type() != "resource_already_exists_exception" {
            return created.into_result("creating the first index").map(drop);
        }
        // Someone else may have just created it with the alias.
        let again = client
            .send(Method::GET, &format!("/_alias/{}", names.write_alias), None)
            .await?;
        if again.is_success() {
            return Ok(());
        }
    }
    Err(StorageError::Internal {
        reason: format!("no free index name for {} today", names.base),
    })
}

/// The index the write alias points at.
async fn write_index(client: &Client, names: &Names) -> StorageResult<String> {
    let body = client
        .json(
            Method::GET,
            &format!("/_alias/{}", names.write_alias),
            None,
            "reading the write alias",
        )
        .await?;
    let indices = body.as_object().ok_or_else(|| StorageError::Internal {
        reason: "alias answer is not an object".into(),
    })?;
    let mut fallback = None;
    for (index, entry) in indices {
        let is_write = entry
            .pointer(&format!("/aliases/{}/is_write_index", names.write_alias))
            .and_then(Value::as_bool);
        if is_write == Some(true) {
            return Ok(index.clone());
        }
        fallback = Some(index.clone());
    }
    fallback.ok_or_else(|| StorageError::Internal {
        reason: format!("alias {} points at no index", names.write_alias),
    })
}

/// Rolls the write alias over to `<base>-<today>-<next>` when the configured age, document
/// count or primary size of its index is reached. Returns the new index when it rolled over.
///
/// Done by hand rather than with `_rollover`: a new index, then one atomic `_aliases` call
/// moving the write alias to it. That names the new index after the current day (so
/// retention by name is right), and works the same on servers without the rollover API or
/// that mishandle `is_write_index`.
pub(crate) async fn rollover(
    client: &Client,
    names: &Names,
    options: &EsOptions,
) -> StorageResult<Option<String>> {
    let max_age_ms = match &options.rollover_max_age {
        Some(text) => Some(parse_age_ms(text).ok_or_else(|| StorageError::BadRequest {
            reason: format!("invalid rollover max age {text:?} (use e.g. 1d, 12h, 30m)"),
        })?),
        None => None,
    };
    let max_bytes = match &options.rollover_max_size {
        Some(text) => Some(
            parse_size_bytes(text).ok_or_else(|| StorageError::BadRequest {
                reason: format!("invalid rollover max size {text:?} (use e.g. 50gb, 500mb)"),
            })?,
        ),
        None => None,
    };
    if max_age_ms.is_none() && max_bytes.is_none() && options.rollover_max_docs.is_none() {
        return Ok(None);
    }
    let current = write_index(client, names).await?;
    let stats = client
        .json(
            Method::GET,
            &format!(
                "/_cat/indices/{current}?format=json&bytes=b&h=index,creation.date,pri.store.size"
            ),
            None,
            "reading the write index' figures",
        )
        .await?;
    let entry = stats
        .as_array()
        .and_then(|rows| rows.first())
        .cloned()
        .unwrap_or_default();
    let number = |field: &str| -> Option<u64> {
        match entry.get(field)? {
            Value::String(text) => text.parse().ok(),
            other => other.as_u64(),
        }
    };
    let count = client
        .json(
            Method::GET,
            &format!("/{current}/_count"),
            None,
            "counting the write index",
        )
        .await?;
    let docs = count.get("count").and_then(Value::as_u64).unwrap_or(0);
    // The creation time, or else the start of the day the index is named after.
    let created_ms = number("creation.date")
        .map(|created| created as i64)
        .or_else(|| {
            names
                .parse_index_name(&current)
                .map(|(day, _)| day * 86_400_000)
        });
    let age_ms = created_ms.map(|created| now_ms() - created);
    let due_to_docs = options.rollover_max_docs.is_some_and(|max| docs >= max);
    let due_to_age = matches!((max_age_ms, age_ms), (Some(max), Some(age)) if age >= max);
    let due_to_size =
        matches!((max_bytes, number("pri.store.size")), (Some(max), Some(size)) if size >= max);
    if !(due_to_docs || due_to_age || due_to_size) {
        return Ok(None);
    }
    let counter = names
        .parse_index_name(&current)
        .map_or(1, |(_, counter)| counter);
    let today = now_ms().div_euclid(86_400_000);
    for next_counter in counter + 1..counter + 50 {
        let next = names.index_name(today, next_counter);
        let created = client.send(Method::PUT, &format!("/{next}"), None).await?;
        if !created.is_success() {
            if created.error_type() == "resource_already_exists_exception" {
                continue;
            }
            return created.into_result("creating the next index").map(|_| None);
        }
        let actions = json!({"actions": [
            {"remove": {"index": current, "alias": names.write_alias}},
            {"add": {"index": next, "alias": names.write_alias, "is_write_index": true}}
        ]});
        client
            .json(
                Method::POST,
                "/_aliases",
                Some(actions),
                "moving the write alias",
            )
            .await?;
        tracing::info!(from = %current, to = %next, docs, due_to_docs, due_to_age, due_to_size, "rolled over");
        return Ok(Some(next));
    }
    Err(StorageError::Internal {
        reason: format!("no free index name to roll {current} over to"),
    })
}

/// `1d`, `12h`, `30m`, `45s`, `500ms` in milliseconds.
fn parse_age_ms(text: &str) -> Option<i64> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: i64 = number.parse().ok()?;
    let unit_ms = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    number.checked_mul(unit_ms)
}

/// `50gb`, `500mb`, `1024kb`, `100b` (case-insensitive) in bytes.
fn parse_size_bytes(text: &str) -> Option<u64> {
    let lower = text.to_ascii_lowercase();
    let split = lower.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = lower.split_at(split);
    let number: u64 = number.parse().ok()?;
    let unit_bytes: u64 = match unit {
        "b" => 1,
        "kb" => 1 << 10,
        "mb" => 1 << 20,
        "gb" => 1 << 30,
        "tb" => 1 << 40,
        _ => return None,
    };
    number.checked_mul(unit_bytes)
}

/// Deletes every physical index whose day is before today (in the configured time zone)
/// minus the retention days, except the write index. Returns the deleted names.
pub(crate) async fn apply_retention(
    client: &Client,
    names: &Names,
    options: &EsOptions,
) -> StorageResult<Vec<String>> {
    let Some(valid_days) = options.retention_days else {
        return Ok(Vec::new());
    };
    let local_today = (now_ms() + options.time_zone_offset_minutes * 60_000).div_euclid(86_400_000);
    let cutoff = local_today - i64::from(valid_days);
    let current = write_index(client, names).await.ok();
    let listing = client
        .json(
            Method::GET,
            &format!("/_cat/indices/{}?format=json&h=index", names.pattern),
            None,
            "listing indices",
        )
        .await?;
    let mut deleted = Vec::new();
    for entry in listing.as_array().map(Vec::as_slice).unwrap_or_default() {
        let Some(index) = entry.get("index").and_then(Value::as_str) else {
            continue;
        };
        let Some((day, _)) = names.parse_index_name(index) else {
            continue;
        };
        if day >= cutoff || current.as_deref() == Some(index) {
            continue;
        }
        client
            .json(
                Method::DELETE,
                &format!("/{index}"),
                None,
                "deleting an expired index",
            )
            .await?;
        tracing::info!(index, "deleted an expired index");
        deleted.push(index.to_owned());
    }
    Ok(deleted)
}

/// Parses a time zone for retention: `UTC`, `Z`, `+08:00`, `-0530`, or `Asia/Shanghai`
/// (SOFALookout's default). Returns minutes east of UTC.
pub fn parse_time_zone(text: &str) -> Option<i64> {
    match text {
        "UTC" | "Z" | "GMT" => return Some(0),
        "Asia/Shanghai" => return Some(480),
        _ => {}
    }
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours: i64 = digits[..2].parse().ok()?;
    let minutes: i64 = digits[2..].parse().ok()?;
    (hours <= 14 && minutes < 60).then_some(sign * (hours * 60 + minutes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_names_round_trip() {
        let names = Names::new("metrics");
        let day = lookout_model::time::days_from_civil(2019, 5, 30);
        assert_eq!(names.index_name(day, 1), "metrics-2019.05.30-1");
        assert_eq!(names.index_name(day, 2), "metrics-2019.05.30-000002");
        assert_eq!(
            names.parse_index_name("metrics-2019.05.30-000002"),
            Some((day, 2))
        );
        assert_eq!(
            names.parse_index_name("metrics-2019.05.30-1"),
            Some((day, 1))
        );
        assert_eq!(names.parse_index_name("metricsx-2019.05.30-1"), None);
        assert_eq!(names.parse_index_name("metrics-foo"), None);
        assert_eq!(names.write_alias, "lookout-active-metrics");
    }

    #[test]
    fn time_zones() {
        assert_eq!(parse_time_zone("Asia/Shanghai"), Some(480));
        assert_eq!(parse_time_zone("-05:30"), Some(-330));
        assert_eq!(parse_time_zone("+0800"), Some(480));
        assert_eq!(parse_time_zone("Mars/Base"), None);
    }

    #[test]
    fn rollover_conditions_parse() {
        assert_eq!(parse_age_ms("1d"), Some(86_400_000));
        assert_eq!(parse_age_ms("30m"), Some(1_800_000));
        assert_eq!(parse_age_ms("1y"), None);
        assert_eq!(parse_size_bytes("50GB"), Some(50 << 30));
        assert_eq!(parse_size_bytes("12"), None);
    }
}
