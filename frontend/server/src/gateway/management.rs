//! The management port (spec §3.7; default: loopback, gateway port − 1000, so 6200):
//!
//! | route | effect | answer |
//! |---|---|---|
//! | `GET /ok` | none | 200 `online` |
//! | `GET /cmd/down` | enter refuse mode | 200 `ok` |
//! | `GET /cmd/up` | leave refuse mode | 200 `ok` |
//! | `GET /cmd/<other>` | none | 200 `ok` |
//!
//! In refuse mode every push to the gateway port (every protocol, remote write included)
//! is answered 400 with `Err: lookout gateway is in refuse requests mode` and the same body,
//! as is the SDK's `GET /datas` probe (so SDKs move to another gateway); telnet `put` lines
//! are answered with that message and not stored. Scraping, the query API and its
//! remote-write receiver keep working. The mode is not persisted: a restart leaves it.
//!
//! SOFALookout listened on every interface; the routes have no authentication and
//! `/cmd/down` stops ingestion, so the port listens on loopback unless configured otherwise.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::Router;

use super::GatewayStats;

/// The management routes over the gateway's state.
pub fn router(stats: Arc<GatewayStats>) -> Router {
    Router::new()
        .route("/ok", get(|| async { "online" }))
        .route("/cmd/{command}", get(command))
        .with_state(stats)
}

async fn command(
    State(stats): State<Arc<GatewayStats>>,
    Path(command): Path<String>,
) -> &'static str {
    let refusing = match command.as_str() {
        "down" => true,
        "up" => false,
        _ => return "ok",
    };
    if stats.set_refusing(refusing) {
        if refusing {
            tracing::warn!("refuse mode on (management /cmd/down): every push is refused");
        } else {
            tracing::info!("refuse mode off (management /cmd/up): pushes are accepted");
        }
    }
    "ok"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commands_switch_refuse_mode() {
        let stats = Arc::new(GatewayStats::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = router(stats.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::new();
        let get = |path: &str| client.get(format!("{base}{path}")).send();
        let ok = get("/ok").await.unwrap();
        assert_eq!(ok.status(), 200);
        assert_eq!(ok.text().await.unwrap(), "online");
        for (path, refusing) in [
            ("/cmd/down", true),
            ("/cmd/other", true),
            ("/cmd/down", true),
            ("/cmd/up", false),
            ("/cmd/whatever", false),
        ] {
            let answer = get(path).await.unwrap();
            assert_eq!(answer.status(), 200, "{path}");
            assert_eq!(answer.text().await.unwrap(), "ok");
            assert_eq!(stats.refusing(), refusing, "after {path}");
        }
        assert_eq!(get("/nothing").await.unwrap().status(), 404);
    }
}
