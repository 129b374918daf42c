//! License Utilization, at the vendor's dashboard's level and past it:
//! filters by user, machine, license type (pool) and job label over the
//! vendor's presets (today, 7 days, this month, 60 and 90 days, this
//! year) or any range up to a year; total session time per license type
//! per day, as lines or stacked bars; the ended sessions as a paged
//! table; Export, the same sessions as CSV named as the vendor names it.
//!
//! Who may read what is `history::report`'s rule (the API's and the
//! CLI's), asked here with the same filter (`history::filter`). On a
//! cluster node every read covers every node's history, as the API's do,
//! and a node that did not answer is named on the page.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::chart::{self, Bars};
use super::extract::OrgPage;
use super::form::Q;
use super::{at, refused, render, Fields, Shell, When};
use crate::core::{format_end_date, Millis, OrgName, Principal, DAY_MS};
use crate::history::filter::SessionFilter;
use crate::history::report::{self, ReportError, Series};
use crate::history::{export, EndedRow};
use crate::http::Web;
use crate::operations::gathered::{Gathered, Missing};

/// The presets, as the vendor's dashboard offers them.
const PRESETS: [(&str, &str); 7] = [
    ("today", "Today"),
    ("7d", "7 days"),
    ("month", "This month"),
    ("60d", "60 days"),
    ("90d", "90 days"),
    ("year", "This year"),
    ("custom", "Custom"),
];

/// Longest range a question may span.
const MAX_DAYS: u64 = 366;

/// Sessions per page of the table.
const PAGE: usize = 50;

/// Most ended sessions one export holds, and one page of a filtered chart's sum.
const MAX_ROWS: usize = report::MAX_SESSIONS;

/// Most pages a filtered chart or an export reads (each reads at most
/// `SCAN_MAX` stored rows, kept or not).
const MAX_PAGES: usize = 3;

#[derive(Template)]
#[template(path = "usage.html")]
struct Page {
    shell: Shell,
    org: String,
    q: Query,
    presets: Vec<(&'static str, &'static str, bool)>,
    pools: Vec<String>,
    /// Total hours per pool over the range.
    totals: Vec<(String, String)>,
    chart: String,
    /// KSE licenses assigned and activated per day, if the org has KSE.
    licensed: Option<String>,
    /// Where the chart's numbers come from, in words.
    source: String,
    /// Whether the caller may see who held the sessions (the table, Export).
    readers: bool,
    rows: Vec<Row>,
    /// The query of the next page of the table, if any.
    next: Option<String>,
    /// The query of the export and of the views (the filters, the range).
    query: String,
}

/// A question as the form asks it.
struct Query {
    preset: String,
    from_day: String,
    to_day: String,
    range: (Millis, Millis),
    filter: SessionFilter,
    user: String,
    machine: String,
    pool: String,
    label: String,
    stacked: bool,
    after: Option<(u64, u64)>,
}

/// One ended session in the table.
struct Row {
    user: String,
    session: String,
    machine: String,
    pool: String,
    start: When,
    duration: String,
    reason: String,
    labels: String,
}

impl Query {
    /// The question in `q`, at `now`; a range that is malformed or longer
    /// than a year is said in words, and the last 7 days asked instead.
    fn of(q: &Fields, now: Millis) -> (Query, Option<String>) {
        let mut preset = q.one("preset").unwrap_or("7d").to_string();
        let asked = match preset.as_str() {
            "custom" => custom(q, now),
            p => preset_range(p, now).ok_or_else(|| format!("unknown range `{p}`")),
        };
        let (range, error) = match asked {
            Ok(range) => (range, None),
            Err(why) => {
                preset = "7d".into();
                ((Millis(now.0.saturating_sub(7 * DAY_MS)), now), Some(why))
            }
        };
        let text = |k: &str| q.one(k).unwrap_or("").to_string();
        let after = q.one("after").and_then(|a| {
            let (end, id) = a.split_once('.')?;
            Some((end.parse().ok()?, id.parse::<crate::core::SessionId>().ok()?.0))
        });
        let query = Query {
            from_day: format_end_date(Millis(range.0 .0 + 1)),
            to_day: format_end_date(range.1),
            preset,
            range,
            user: text("user"),
            machine: text("machine"),
            pool: text("pool"),
            label: text("label"),
            filter: SessionFilter::of(|k| q.one(k).map(str::to_string)),
            stacked: q.one("view") == Some("stacked"),
            after,
        };
        (query, error)
    }

    /// The query string of this question, without the page cursor.
    fn pairs(&self) -> String {
        let mut pairs: Vec<(&str, String)> = vec![("preset", self.preset.clone())];
        if self.preset == "custom" {
            pairs.extend([("from", self.from_day.clone()), ("to", self.to_day.clone())]);
        }
        pairs.extend(self.filter.pairs());
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        super::form::encode(&pairs)
    }
}

/// A preset's range ending `now`.
fn preset_range(preset: &str, now: Millis) -> Option<(Millis, Millis)> {
    let today = now.0 / DAY_MS * DAY_MS;
    let (y, m, _) = now.civil_date();
    let from = match preset {
        "today" => today,
        "7d" => now.0.saturating_sub(7 * DAY_MS),
        "month" => Millis::from_civil_date(y, m, 1)?.0,
        "60d" => now.0.saturating_sub(60 * DAY_MS),
        "90d" => now.0.saturating_sub(90 * DAY_MS),
        "year" => Millis::from_civil_date(y, 1, 1)?.0,
        _ => return None,
    };
    Some((Millis(from), now))
}

/// A custom range of whole days (UTC), `from` to `to` inclusive, at most a year.
fn custom(q: &Fields, now: Millis) -> Result<(Millis, Millis), String> {
    let day = |k: &str| {
        let text = q.one(k).ok_or_else(|| format!("a custom range needs `{k}` (YYYY-MM-DD)"))?;
        crate::core::parse_end_of_date(text).map_err(|e| format!("{k}: {e}"))
    };
    let (from, to) = (Millis(day("from")?.0 - DAY_MS), day("to")?.min(now));
    if from >= to {
        return Err("the range ends before it starts".into());
    }
    if to.0 - from.0 > MAX_DAYS * DAY_MS {
        return Err(format!("a range may span at most {MAX_DAYS} days"));
    }
    Ok((from, to))
}

/// `GET /org/ORG/usage`.
pub(super) async fn page(State(web): State<Arc<Web>>, OrgPage { s, org }: OrgPage, Q(q): Q) -> Response {
    let now = web.ops.clock().now();
    let mut shell = s.shell("License utilization", Some(&org), "usage");
    let (query, error) = Query::of(&q, now);
    shell.error = error.map(|why| format!("{why} (INVALID_ARGUMENT)"));
    match gather(web, &s.p, &org, query, shell).await {
        Ok(page) => render(StatusCode::OK, &page),
        Err(e) => report_refused(e),
    }
}

fn report_refused(e: ReportError) -> Response {
    refused(crate::proto::WireError::from(e))
}

/// Everything the page shows, as `p` may see it; on a cluster node over
/// every node's history (`Operations::usage_gathered`, `sessions_gathered`).
async fn gather(web: Arc<Web>, p: &Principal, org: &OrgName, q: Query, mut shell: Shell) -> Result<Page, ReportError> {
    let core = web.ops.core();
    let kept = web.ops.history().ok_or(ReportError::Off)?.retention().minutes.as_secs() / 86_400;
    let pools: Vec<String> = core.status(p, Some(org))?.iter().map(|st| st.pool.to_string()).collect();
    // Who held the sessions is for the org's Owners and Admins (the core's
    // rule); anyone else reads the totals and the chart.
    let readers = core.require_session_reader(p, org).is_ok();
    let by_who = q.filter.user.is_some() || q.filter.machine.is_some() || q.filter.label.is_some();
    let mut missing = Missing::default();
    let days = day_aligned(q.range);
    let ask = report::usage(core, web.ops.history(), p, org, pool_of(&q)?, days, DAY_MS)?;
    let series = gathered(web.ops.usage_gathered(ask).await?, &mut missing);
    let (bars, source) = if by_who && readers {
        let (bars, whole) = from_sessions(&web, p, org, &q, &mut missing).await?;
        let cut = if whole { "" } else { "; only the range's first sessions were read: narrow the range for all" };
        (bars, format!("from the ended sessions the broker keeps ({kept} days){cut}"))
    } else {
        if by_who {
            shell.error = Some("Only the org's Owners and Admins filter by user, machine or job (FORBIDDEN).".into());
        }
        (from_rollups(&series, days), "from the per-minute history (exact seat time)".to_string())
    };
    let (rows, next) = match readers {
        true => {
            let ask = report::sessions(core, web.ops.history(), p, org, q.range, q.after, PAGE)?;
            gathered(web.ops.sessions_gathered(ask.filtered(q.filter.clone())).await?, &mut missing)
        }
        false => (Vec::new(), None),
    };
    if let Some(words) = missing.warning() {
        shell.error = Some(words);
    }
    let licensed = super::licensed::chart(&series, days);
    let now = web.ops.clock().now();
    let query = q.pairs();
    let next = next.map(|(end, id)| format!("{query}&after={end}.{}", crate::core::SessionId(id)));
    Ok(Page {
        shell,
        org: org.to_string(),
        presets: PRESETS.iter().map(|(k, name)| (*k, *name, *k == q.preset)).collect(),
        pools,
        totals: bars.totals(),
        chart: if q.stacked { chart::stacked(&bars) } else { chart::lines(&bars) },
        licensed,
        source,
        readers,
        rows: rows.into_iter().map(|(id, r)| row(id, r, now)).collect(),
        next,
        query,
        q,
    })
}

/// A gathered answer's value; the nodes missing from it added to `missing`.
fn gathered<T>(g: Gathered<T>, missing: &mut Missing) -> T {
    missing.join(g.missing);
    g.value
}

fn row(id: u64, r: EndedRow, now: Millis) -> Row {
    let secs = r.end.saturating_sub(r.start) / 1000;
    Row {
        session: crate::core::SessionId(id).to_string(),
        start: at(Millis(r.start), now),
        duration: format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60),
        labels: r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "),
        user: r.user,
        machine: r.machine,
        pool: r.pool,
        reason: r.reason,
    }
}

/// Seat time per pool and day from the day rollups (no per-user breakdown).
fn from_rollups(series: &[Series], (from, to): (Millis, Millis)) -> Bars {
    let mut bars = Bars::new(from, to);
    for s in series {
        for pt in &s.points {
            bars.add(&s.pool.to_string(), pt.start, pt.usage.seat_ms);
        }
    }
    bars
}

/// The pool the question names, if any.
fn pool_of(q: &Query) -> Result<Option<crate::core::PoolId>, ReportError> {
    q.filter.pool.as_deref().map(str::parse).transpose().map_err(|e| ReportError::Invalid(format!("{e}")))
}

/// Seat time per pool and day from the ended sessions the filter keeps,
/// each clipped to the range and split over the days it spans; and
/// whether every session of the range was read.
async fn from_sessions(
    web: &Web,
    p: &Principal,
    org: &OrgName,
    q: &Query,
    missing: &mut Missing,
) -> Result<(Bars, bool), ReportError> {
    let (from, to) = day_aligned(q.range);
    let mut bars = Bars::new(from, to);
    let whole = kept_pages(web, p, org, q, missing, |rows| {
        for (_, r) in rows {
            bars.add_span(&r.pool, r.start.max(from.0), r.end.min(to.0));
        }
        true
    })
    .await?;
    Ok((bars, whole))
}

/// Hands `each` the pages of ended sessions the question keeps, at most
/// `MAX_PAGES` of them (each reads at most `SCAN_MAX` stored rows per
/// node), until `each` says stop: whether the range was read to its end.
async fn kept_pages(
    web: &Web,
    p: &Principal,
    org: &OrgName,
    q: &Query,
    missing: &mut Missing,
    mut each: impl FnMut(Vec<(u64, EndedRow)>) -> bool,
) -> Result<bool, ReportError> {
    let mut after = None;
    for _ in 0..MAX_PAGES {
        let ask = report::sessions(web.ops.core(), web.ops.history(), p, org, q.range, after, MAX_ROWS)?;
        let (rows, next) = gathered(web.ops.sessions_gathered(ask.filtered(q.filter.clone())).await?, missing);
        let more = each(rows);
        match next {
            Some(cursor) if more => after = Some(cursor),
            Some(_) => return Ok(false),
            None => return Ok(true),
        }
    }
    Ok(false)
}

/// The range widened to whole UTC days (the chart's step).
fn day_aligned((from, to): (Millis, Millis)) -> (Millis, Millis) {
    (Millis(from.0 / DAY_MS * DAY_MS), Millis(to.0.div_ceil(DAY_MS) * DAY_MS))
}

/// `GET /org/ORG/usage.csv`: the filtered sessions of the range, named as
/// the vendor names its export; on a cluster node from every node's
/// history (a node that did not answer is named in `X-History-Missing`).
pub(super) async fn export(State(web): State<Arc<Web>>, OrgPage { s, org }: OrgPage, Q(q): Q) -> Response {
    let query = match Query::of(&q, web.ops.clock().now()) {
        (query, None) => query,
        (_, Some(why)) => return super::status_page(StatusCode::UNPROCESSABLE_ENTITY, &why, "INVALID_ARGUMENT"),
    };
    let mut missing = Missing::default();
    let (name, body, whole) = match csv(&web, &s.p, &org, &query, &mut missing).await {
        Ok(done) => done,
        Err(e) => return report_refused(e),
    };
    let disposition = format!("attachment; filename=\"{name}\"");
    let csv =
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()), (header::CONTENT_DISPOSITION, disposition)];
    let mut r = (csv, body).into_response();
    if !whole {
        let why = "the range holds more sessions than one export: narrow it, or page /api/v1/sessions";
        r.headers_mut().insert("x-truncated", HeaderValue::from_static(why));
    }
    crate::http::api::missing_header(&mut r, &missing);
    r
}

/// The export's file name and body (at most `MAX_ROWS` sessions), and
/// whether it holds every session of the question.
async fn csv(
    web: &Web,
    p: &Principal,
    org: &OrgName,
    q: &Query,
    missing: &mut Missing,
) -> Result<(String, String, bool), ReportError> {
    web.ops.history().ok_or(ReportError::Off)?;
    let mut body = String::from(export::SESSIONS_CSV_HEADER);
    let mut rows = 0;
    let whole = kept_pages(web, p, org, q, missing, |page| {
        for (id, r) in page.iter().take(MAX_ROWS - rows) {
            body.push_str(&export::session_csv(*id, r));
        }
        rows = (rows + page.len()).min(MAX_ROWS);
        rows < MAX_ROWS
    })
    .await?;
    let name = format!("License Utilization_{org}_{}_{}.csv", q.from_day, q.to_day);
    Ok((name, body, whole))
}
