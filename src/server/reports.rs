//! The utilization reports over QUIC (`ListOf::Usage`, `ListOf::Ended`,
//! `Req::WhatIf`): `history::report` checks the question on the async
//! thread (it only reads memory), the history is read off it, and the
//! answer is put in its wire form. The HTTP API asks the same functions.
//! On a cluster node, usage, ended sessions and what-if cover every node's
//! history (`Operations::usage_gathered`, `sessions_gathered`, `what_if_gathered`),
//! and a version 6 stream is told which nodes' part is missing (`partial`).
//! And the event stream (`Req::Events`), `Operations::events` put in
//! frames.

use super::handler::Call;
use crate::core::{Millis, OrgName, PoolId};
use crate::history::report::{self, ReportError};
use crate::operations::gathered::Missing;
use crate::proto::{
    EndedSession, ErrorCode, MissingNode, Resp, UsagePoint, WhatIfOutcome, WhatIfReport, WireError, MAX_MISSING,
};

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

/// A report over every node: the answer, and the nodes whose part is
/// missing, which the log names too (a stream older than version 6 has no
/// field for them: `partial`).
fn gathered<T>(g: crate::operations::gathered::Gathered<T>) -> (T, Missing) {
    if let Some(words) = g.missing.warning() {
        tracing::warn!("a report over QUIC: {words}");
    }
    (g.value, g.missing)
}

/// Room a report's page leaves in its frame for the nodes it names
/// missing: `MAX_MISSING` of them, each of bounded fields.
pub(super) const MISSING_ROOM: usize = 2048;

/// `answer`, naming the nodes whose history is not in it: on a version 6
/// stream as `Resp::Partial` (at most `MAX_MISSING`, each field clipped);
/// older versions' documents have no place for them, only the log does.
pub(super) fn partial(call: &Call<'_>, answer: Resp, missing: Missing) -> Resp {
    if missing.is_empty() || !call.proto.partial() {
        return answer;
    }
    let each =
        |a: &crate::operations::gathered::Absent| MissingNode { node: clip(&a.node, 64), why: clip(&a.why, 160) };
    let missing = missing.nodes().iter().take(MAX_MISSING).map(each).collect();
    Resp::Partial { answer: Box::new(answer), missing }
}

/// At most `most` bytes of `s`, cut at a character's boundary.
fn clip(s: &str, most: usize) -> String {
    let mut end = most.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Every point of the usage question, by pool then time.
pub(super) async fn usage(
    call: &Call<'_>,
    org: OrgName,
    pool: Option<PoolId>,
    range: (u64, u64),
    step_ms: u64,
) -> Result<(Vec<UsagePoint>, Missing), WireError> {
    let range = (Millis(range.0), Millis(range.1));
    let ask = report::usage(call.shared.ops.core(), call.shared.ops.history(), call.p, &org, pool, range, step_ms)?;
    let (series, missing) = gathered(call.shared.ops.usage_gathered(ask).await?);
    let listed = call.proto.denials();
    let points = series
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
        .collect();
    Ok((points, missing))
}

/// Up to `limit` sessions that ended in the range after the cursor,
/// whether more follow, and the nodes whose part is missing.
pub(super) async fn ended(
    call: &Call<'_>,
    org: OrgName,
    range: (u64, u64),
    after: Option<(u64, u64)>,
    limit: usize,
) -> Result<(Vec<EndedSession>, bool, Missing), WireError> {
    let range = (Millis(range.0), Millis(range.1));
    let ask = report::sessions(call.shared.ops.core(), call.shared.ops.history(), call.p, &org, range, after, limit)?;
    let ((rows, next), missing) = gathered(call.shared.ops.sessions_gathered(ask).await?);
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
    Ok((rows, next.is_some(), missing))
}

/// `Req::WhatIf`, as `Resp::WhatIf` (in a `Resp::Partial` naming the
/// nodes whose demand is missing, on a version 6 stream).
pub(super) async fn what_if(
    call: &Call<'_>,
    (org, pool): (OrgName, PoolId),
    range: (u64, u64),
    seats: std::ops::RangeInclusive<u32>,
) -> Result<Resp, WireError> {
    let range = (Millis(range.0), Millis(range.1));
    let ask = report::what_if(call.shared.ops.core(), call.shared.ops.history(), call.p, (&org, pool), range, seats)?;
    let (w, missing) = gathered(call.shared.ops.what_if_gathered(ask).await?);
    let report = WhatIfReport {
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
    };
    Ok(partial(call, Resp::WhatIf(report), missing))
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
