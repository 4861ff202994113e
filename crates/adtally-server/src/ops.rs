//! Operations routes: health, Prometheus metrics, the OpenAPI document, and the JSON
//! 404 for everything else.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use adtally_core::event::{EventKind, Verdict};

use crate::error::ApiError;
use crate::pipeline::Health;
use crate::state::AppState;

/// Healthy only while events can be recorded: a server that answers but cannot count
/// must be taken out of the load balancer, not kept serving ads.
pub async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let (code, message) = match state.pipeline.health() {
        Health::Ok => return axum::Json(serde_json::json!({"status": "ok"})).into_response(),
        Health::Stopped => {
            ("event_writer_stopped", "the event writer has stopped; events cannot be recorded".to_owned())
        }
        // Why stays in the server's log: a database error names paths and SQL, and this
        // answer is public.
        Health::Failing(_) => {
            ("event_store_failing", "the last event batch failed to commit; the server's log says why".to_owned())
        }
        Health::Stalled { seconds } => {
            ("event_writer_stalled", format!("the event writer has been committing one batch for {seconds} s"))
        }
    };
    let body = serde_json::json!({"status": "unavailable", "error": {"code": code, "message": message}});
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// Prometheus text format, written by hand: a few counters do not need a metrics crate.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut out = String::new();
    let counters = state.pipeline.counters();
    out.push_str(
        "# HELP adtally_events_total Events stored, by type and verdict.\n# TYPE adtally_events_total counter\n",
    );
    for kind in EventKind::ALL {
        for verdict in Verdict::ALL {
            let n = counters.get(kind, verdict);
            let _ = writeln!(
                out,
                "adtally_events_total{{type=\"{}\",verdict=\"{}\"}} {n}",
                kind.as_str(),
                verdict.as_str()
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP adtally_decisions_total Ad decisions, by result.\n# TYPE adtally_decisions_total counter"
    );
    let _ = writeln!(
        out,
        "adtally_decisions_total{{result=\"filled\"}} {}",
        state.decisions_served.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "adtally_decisions_total{{result=\"unfilled\"}} {}",
        state.decisions_unfilled.load(Ordering::Relaxed)
    );
    let _ =
        writeln!(out, "# HELP adtally_write_batches_total Group commits.\n# TYPE adtally_write_batches_total counter");
    let _ = writeln!(out, "adtally_write_batches_total {}", counters.batches.load(Ordering::Relaxed));
    let _ = writeln!(out, "# HELP adtally_write_batch_events_total Events in group commits.\n# TYPE adtally_write_batch_events_total counter");
    let _ = writeln!(out, "adtally_write_batch_events_total {}", counters.batch_events.load(Ordering::Relaxed));
    let _ = writeln!(
        out,
        "# HELP adtally_event_writer_up 1 while events can be recorded (see /healthz).\n# TYPE adtally_event_writer_up gauge"
    );
    let _ = writeln!(out, "adtally_event_writer_up {}", u8::from(state.pipeline.health() == Health::Ok));
    let pairs = state.pipeline.delivery().capped_pairs();
    let _ = writeln!(out, "# HELP adtally_frequency_cap_pairs (user, campaign) pairs in frequency-cap state.\n# TYPE adtally_frequency_cap_pairs gauge");
    let _ = writeln!(out, "adtally_frequency_cap_pairs {pairs}");
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], include_str!("openapi.json")).into_response()
}
