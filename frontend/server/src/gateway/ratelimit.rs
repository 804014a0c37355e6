//! Per-app rate limits of the gateway port (spec §4.1 step 4, wired and configurable):
//! `[gateway.rate_limits]` maps an app to the push *requests* per second it may send, `"*"`
//! is the rate of every app not listed, a rate ≤ 0 is unlimited.
//!
//! Each app has a token bucket holding at most `max(rate, 1)` requests (the burst: a sender
//! that was quiet for a second may send a second's worth at once) and refilling at `rate`
//! per second. A request's app is its `app` header, else the app its token is mapped to
//! (`[gateway.token_apps]`), else the `app` tag of its path (spec §4.1 step 5). Requests
//! whose app is unknown (remote write, Metricbeat, the Pushgateway API, ... without an `app`
//! header or a mapped token) are not limited.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The app name of the default rate.
pub const DEFAULT_APP: &str = "*";

/// At most this many buckets are kept; when a new app would exceed it, the buckets that are
/// full again (the same as a fresh one) are forgotten first.
const MAX_BUCKETS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// The per-app limiters.
#[derive(Debug, Default)]
pub struct RateLimits {
    /// Requests per second by app, only rates > 0.
    rates: BTreeMap<String, f64>,
    /// The rate of other apps, if > 0.
    default_rate: Option<f64>,
    buckets: Mutex<HashMap<String, Bucket>>,
    /// The app of each token, for requests without an `app` header.
    token_apps: BTreeMap<String, String>,
}

impl RateLimits {
    /// The limits of `[gateway.rate_limits]` (`"*"`: every other app; ≤ 0: unlimited).
    pub fn new(rates: &BTreeMap<String, f64>) -> RateLimits {
        let positive = |rate: f64| (rate > 0.0 && rate.is_finite()).then_some(rate);
        RateLimits {
            default_rate: rates.get(DEFAULT_APP).copied().and_then(positive),
            rates: rates
                .iter()
                .filter(|(app, _)| app.as_str() != DEFAULT_APP)
                .map(|(app, rate)| (app.clone(), *rate))
                .collect(),
            buckets: Mutex::new(HashMap::new()),
            token_apps: BTreeMap::new(),
        }
    }

    /// Also resolves the app of requests without an `app` header from their token.
    pub fn with_token_apps(mut self, token_apps: BTreeMap<String, String>) -> RateLimits {
        self.token_apps = token_apps;
        self
    }

    /// The app `token` is mapped to.
    pub fn token_app(&self, token: &str) -> Option<&str> {
        self.token_apps.get(token).map(String::as_str)
    }

    /// Whether any app is limited.
    pub fn is_active(&self) -> bool {
        self.default_rate.is_some() || self.rates.values().any(|rate| *rate > 0.0)
    }

    /// The rate of `app`, `None` when unlimited.
    fn rate(&self, app: &str) -> Option<f64> {
        match self.rates.get(app) {
            Some(rate) => (*rate > 0.0 && rate.is_finite()).then_some(*rate),
            None => self.default_rate,
        }
    }

    /// Takes one request of `app` at `now`: `Ok` when it may go on, else how long until the
    /// bucket holds a request again.
    pub fn try_acquire(&self, app: &str, now: Instant) -> Result<(), Duration> {
        let Some(rate) = self.rate(app) else {
            return Ok(());
        };
        let burst = rate.max(1.0);
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if !buckets.contains_key(app) && buckets.len() >= MAX_BUCKETS {
            buckets.retain(|app, bucket| {
                let rate = self.rate(app).unwrap_or(f64::INFINITY);
                let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
                bucket.tokens + elapsed * rate < rate.max(1.0)
            });
            if buckets.len() >= MAX_BUCKETS {
                tracing::warn!(
                    apps = buckets.len(),
                    "too many rate-limited apps at once; their buckets start again full"
                );
                buckets.clear();
            }
        }
        let bucket = buckets.entry(app.to_owned()).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(pairs: &[(&str, f64)]) -> RateLimits {
        RateLimits::new(
            &pairs
                .iter()
                .map(|(app, rate)| (app.to_string(), *rate))
                .collect(),
        )
    }

    #[test]
    fn burst_then_refill_at_the_rate() {
        let limits = limits(&[("a", 2.0)]);
        let start = Instant::now();
        assert!(limits.try_acquire("a", start).is_ok());
        assert!(limits.try_acquire("a", start).is_ok());
        let wait = limits.try_acquire("a", start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Half a second later one request's worth is back, not more.
        let later = start + Duration::from_millis(500);
        assert!(limits.try_acquire("a", later).is_ok());
        assert!(limits.try_acquire("a", later).is_err());
        // Apps not listed and without a default are unlimited.
        for _ in 0..100 {
            assert!(limits.try_acquire("b", start).is_ok());
        }
    }

    #[test]
    fn default_rate_per_app_and_unlimited_overrides() {
        let limits = limits(&[("*", 0.5), ("free", 0.0), ("neg", -1.0)]);
        assert!(limits.is_active());
        let now = Instant::now();
        // A rate below 1 still lets one request through; each app has its own bucket.
        assert!(limits.try_acquire("x", now).is_ok());
        assert_eq!(
            limits.try_acquire("x", now).unwrap_err(),
            Duration::from_secs(2)
        );
        assert!(limits.try_acquire("y", now).is_ok());
        for _ in 0..10 {
            assert!(limits.try_acquire("free", now).is_ok());
            assert!(limits.try_acquire("neg", now).is_ok());
        }
        assert!(!super::RateLimits::new(&BTreeMap::new()).is_active());
        assert!(!self::limits(&[("*", -1.0), ("a", 0.0)]).is_active());
    }

    #[test]
    fn buckets_are_bounded() {
        let limits = limits(&[("*", 1.0)]);
        let now = Instant::now();
        for app in 0..MAX_BUCKETS {
            assert!(limits.try_acquire(&app.to_string(), now).is_ok());
        }
        assert_eq!(limits.buckets.lock().unwrap().len(), MAX_BUCKETS);
        // A second later every bucket is full again: forgotten when room is needed.
        let later = now + Duration::from_secs(1);
        assert!(limits.try_acquire("new", later).is_ok());
        assert_eq!(limits.buckets.lock().unwrap().len(), 1);
        assert!(limits.try_acquire("new", later).is_err(), "still limited");
        // Every bucket busy: they start again rather than grow without bound.
        for app in 0..MAX_BUCKETS + 10 {
            let _ = limits.try_acquire(&app.to_string(), later);
        }
        assert!(limits.buckets.lock().unwrap().len() <= MAX_BUCKETS);
    }
}
