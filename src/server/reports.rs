//! The utilization reports over QUIC (`ListOf::Usage`, `ListOf::Ended`,
//! `Req::WhatIf`): `history::report` checks the question on the async
//! thread (it only reads memory), the history is read off it, and the
//! answer is put in its wire form. The HTTP API asks the same functions.
//! On a cluster node, usage, ended sessions and what-if cover every node's
//! history (`Operations::usage_gathered`, `sessions_gathered`, `what_if_gathered`).
//! And the event stream (`Req::Events`), `Operations::events` put in
//! frames.

use super::handler::Call;
use crate::core::{Millis, OrgName, PoolId};
use crate::history::report::{self, ReportError};
use crate::proto::{EndedSession, ErrorCode, UsagePoint, WhatIfOutcome, WhatIfReport, WireError};

impl From<ReportError> for WireError {
    fn from(e: ReportError) -> WireError {
        match e {
            ReportError::Core(e) => e.into(),
            ReportError::Invalid(why) => WireError::new(ErrorCode::InvalidArgument, why),
            ReportError::Off => WireError::new(ErrorCode::NotFound, ReportError::Off.to_string()),
            ReportError::Db(e) => WireError::new(ErrorCode::StoreFailure, e.to_string()),
            ReportError::Task(why) => WireError::new(ErrorCode::Internal, why),
        }
    }
}

/// A report over every node: protocol version 1 has no field to name the
/// nodes whose part is missing, so they are logged here (the web door's
/// API names them in its answer).
fn gathered<T>(g: crate::operations::gathered::Gathered<T>) -> T {
    if let Some(words) = g.missing.warning() {
        tracing::warn!("a report over QUIC: {words}");
    }
    g.value
}

/// Every point of the usage question, by pool then time.
pub(super) async fn usage(
    call: &Call<'_>,
    org: OrgName,
    pool: Option<PoolId>,
    range: (u64, u64),
    step_ms: u64,
) -> Result<Vec<UsagePoint>, WireError> {
    let range = (Millis(range.0), Millis(range.1));
    let ask = report::usage(call.shared.ops.core(), call.shared.ops.history(), call.p, &org, pool, range, step_ms)?;
    let series = gathered(call.shared.ops.usage_gathered(ask).await?);
    let listed = call.proto.denials();
    Ok(series
        .into_iter()
        .flat_map(|s| {
            s.points.into_iter().map(move |p| UsagePoint {
                pool: s.pool,
                quota_now: s.quota,
                start_ms: p.start,
                step_ms: p.step_ms,
                peak: p.usage.peak,
                trough: p.usage.trough,
                quota: p.usage.quota,
                seat_ms: p.usage.seat_ms,
                admitted: p.usage.admitted,
                denied: p.usage.denied.into_iter().take(listed).collect(),
                ends: p.usage.ends,
                queued: p.usage.queued,
            })
        })
        .collect())
}

/// Up to `limit` sessions that ended in the range after the cursor, and whether more follow.
pub(super) async fn ended(
    call: &Call<'_>,
    org: OrgName,
    range: (u64, u64),
    after: Option<(u64, u64)>,
    limit: usize,
) -> Result<(Vec<EndedSession>, bool), WireError> {
    let range = (Millis(range.0), Millis(range.1));
    let ask = report::sessions(call.shared.ops.core(), call.shared.ops.history(), call.p, &org, range, after, limit)?;
    let (rows, next) = gathered(call.shared.ops.sessions_gathered(ask).await?);
    let rows = rows
        .into_iter()
        .map(|(id, r)| EndedSession {
            session: crate::core::SessionId(id),
            pool: r.pool,
            user: r.user,
            machine: r.machine,
            start_ms: r.start,
            end_ms: r.end,
            reason: r.reason,
            labels: r.labels,
        })
        .collect();
    Ok((rows, next.is_some()))
}

/// `Req::WhatIf`.
pub(super) async fn what_if(
    call: &Call<'_>,
    (org, pool): (OrgName, PoolId),
    range: (u64, u64),
    seats: std::ops::RangeInclusive<u32>,
) -> Result<WhatIfReport, WireError> {
    let range = (Millis(range.0), Millis(range.1));
    let ask = report::what_if(call.shared.ops.core(), call.shared.ops.history(), call.p, (&org, pool), range, seats)?;
    let w = gathered(call.shared.ops.what_if_gathered(ask).await?);
    Ok(WhatIfReport {
        sessions: w.sessions,
        refusals: w.refusals,
        median_ms: w.median_ms,
        truncated: w.truncated,
        outcomes: w
            .outcomes
            .iter()
            .map(|o| WhatIfOutcome {
                seats: o.seats,
                admitted: o.admitted,
                denied: o.denied,
                at_capacity_ms: o.at_capacity_ms,
                span_ms: o.span_ms,
            })
            .collect(),
    })
}

/// Room for the events of one answer: a frame, less its envelope.
const EVENTS_ROOM: usize = crate::proto::MAX_FRAME - 1024;

/// `org`'s events after `after` (`Operations::events`), each its JSON
/// document, as many as fit a frame (the first always: an event's JSON is
/// far smaller than a frame).
pub(super) async fn events(
    call: &Call<'_>,
    org: OrgName,
    after: u64,
    wait_ms: u32,
) -> Result<crate::proto::Resp, WireError> {
    let wait = std::time::Duration::from_millis(wait_ms.into());
    let page = call.shared.ops.events(call.c(), &org, after, wait).await?;
    let (mut events, mut next, mut size) = (Vec::new(), after, 0);
    for e in &page.events {
        let doc = crate::events::json::event_json(e).to_string();
        // A string's length prefix takes at most 3 bytes within a frame.
        size += doc.len() + 3;
        if size > EVENTS_ROOM && !events.is_empty() {
            break;
        }
        next = e.seq;
        events.push(doc);
    }
    Ok(crate::proto::Resp::Events { events, next })
}
