//! The dashboard's pages as HTML, from plain data (`OrgView`): no I/O, so
//! the benchmark times exactly the rendering, and the page is the same
//! whoever gathered the data.

use std::fmt::Write;

use super::svg::{self, Line};
use crate::core::{format_utc, Millis};
use crate::history::replay::Outcome;
use crate::history::report::Series;

pub(crate) use super::frame::STYLE;
pub use super::frame::{esc, page, sign_in};

/// The ranges the dashboard offers.
pub const RANGES: [(&str, u64, u64); 4] = [
    ("day", 86_400_000, 5 * 60_000),
    ("week", 7 * 86_400_000, 3_600_000),
    ("month", 30 * 86_400_000, 4 * 3_600_000),
    ("year", 365 * 86_400_000, 86_400_000),
];

/// One pool's part of an org page.
pub struct PoolView {
    /// The pool's name.
    pub pool: String,
    /// Whether it is a KRE pool (sessions) or KSE (licensed users).
    pub kre: bool,
    /// Quota, seats in use, machines, waiting, grants, activations, offline.
    pub quota: u32,
    /// Seats in use now.
    pub in_use: u32,
    /// Registered machines.
    pub machines: u32,
    /// Runners waiting.
    pub waiting: u32,
    /// Seats reserved by job label, and of those the free ones (not in use).
    pub reserved: (u32, u32),
    /// KSE: licensed users.
    pub grants: u32,
    /// KSE: node-locked activations.
    pub activations: u32,
    /// Offline licenses holding a seat.
    pub offline: u32,
    /// The chart's series over the range.
    pub series: Option<Series>,
    /// Peak seats in use by weekday and hour, as a share of the quota.
    pub heat: [[Option<f64>; 24]; 7],
    /// Minutes at each level of average seats in use (level, minutes).
    pub levels: Vec<(u32, u64)>,
    /// What-if outcomes for seat counts around the quota.
    pub what_if: Vec<Outcome>,
}

/// A live session as the page lists it.
pub struct LiveView {
    /// Its id.
    pub session: String,
    /// Its pool.
    pub pool: String,
    /// The user.
    pub user: String,
    /// The machine.
    pub machine: String,
    /// When it started.
    pub started: Millis,
    /// Its last heartbeat (its deadline less the lease TTL).
    pub heartbeat: Millis,
    /// The job's labels (`pipeline=web job=e2e`).
    pub job: String,
}

/// A KSE licensed user: (pool, email, granted, bound machine, last active use).
pub type Licensed = (String, String, Millis, Option<String>, Option<Millis>);

/// An offline license: (pool, id, machine, last day, holds a seat).
pub type Offline = (String, String, String, String, bool);

/// What an org's page shows.
pub struct OrgView {
    /// The org.
    pub org: String,
    /// Its subscription's last day.
    pub subscription_ends: String,
    /// Who is signed in (email and role).
    pub who: String,
    /// The range's name and bounds.
    pub range: (&'static str, Millis, Millis),
    /// Its pools.
    pub pools: Vec<PoolView>,
    /// Live sessions (`None`: the role may not list them).
    pub live: Option<Vec<LiveView>>,
    /// The CSRF token for the kill forms (`None`: no kill button for this role).
    pub kill_token: Option<String>,
    /// KSE licensed users.
    pub licensed: Option<Vec<Licensed>>,
    /// Offline licenses.
    pub offline: Option<Vec<Offline>>,
    /// Registered machines: (pool, machine, registered).
    pub machines: Option<Vec<(String, String, Millis)>>,
    /// The audit trail's latest entries: (time, actor, action).
    pub audit: Option<Vec<(Millis, String, String)>>,
    /// A message after an action (a kill), if any.
    pub flash: Option<String>,
    /// On a cluster node: the nodes whose part of the charts is missing, in words.
    pub missing: Option<String>,
    /// How many live sessions, licensed users, offline licenses and
    /// machines there were before `cut` kept the first few of each.
    pub totals: [usize; 4],
}

/// Most rows of each list the overview shows (the console's License
/// management lists, and finds in, all of them).
pub const OVERVIEW_ROWS: usize = 100;

impl OrgView {
    /// Keeps the first `OVERVIEW_ROWS` of each list, counting them all.
    pub fn cut(&mut self) {
        fn keep<T>(list: &mut Option<Vec<T>>) -> usize {
            let n = list.as_ref().map_or(0, Vec::len);
            if let Some(v) = list {
                v.truncate(OVERVIEW_ROWS);
            }
            n
        }
        self.totals =
            [keep(&mut self.live), keep(&mut self.licensed), keep(&mut self.offline), keep(&mut self.machines)];
    }
}

/// Says that a list of the overview was cut, and where the whole list is.
fn more(b: &mut String, org: &str, total: usize) {
    if total > OVERVIEW_ROWS {
        let _ = write!(
            b,
            r#"<p class="note">Showing {OVERVIEW_ROWS} of {total}: <a href="/org/{}/licenses">License management</a> lists and finds them all.</p>"#,
            esc(org)
        );
    }
}

fn when(t: Millis) -> String {
    format_utc(t)
}

fn admins_only() -> &'static str {
    r#"<p class="note">Listed for the org's Owners and Admins.</p>"#
}

/// Renders an org's page.
pub fn org(v: &OrgView) -> String {
    let mut b = String::with_capacity(64 * 1024);
    let (range, from, to) = v.range;
    let org = esc(&v.org);
    // The console's tabs (src/http/console), this page being the first.
    let _ = write!(
        b,
        r#"<nav class="tabs" aria-label="{org}"><a class="on" aria-current="page" href="/org/{org}">Overview</a><a href="/org/{org}/licenses">License management</a><a href="/org/{org}/usage">Utilization</a><a href="/org/{org}/members">Members and API keys</a></nav>"#
    );
    let _ = write!(b, r#"<section><h2>{}</h2><p>Subscription through {} · "#, org, esc(&v.subscription_ends));
    b.push_str(r#"<span class="ranges">"#);
    for (name, _, _) in RANGES {
        let on = if name == range { r#" class="on""# } else { "" };
        let _ = write!(b, r#"<a{on} href="?range={name}">{name}</a>"#);
    }
    let _ = write!(b, "</span></p>");
    if let Some(f) = &v.flash {
        let _ = write!(b, r#"<p class="note" id="flash">{}</p>"#, esc(f));
    }
    if let Some(m) = &v.missing {
        let _ = write!(b, r#"<p class="err" id="missing">{}</p>"#, esc(m));
    }
    b.push_str("</section>");
    for p in &v.pools {
        pool(&mut b, p, (from, to));
    }
    live(&mut b, v);
    lists(&mut b, v);
    page(&v.org, Some(&v.who), &b)
}

fn pool(b: &mut String, p: &PoolView, (from, to): (Millis, Millis)) {
    let _ = write!(b, r#"<section class="pool" data-pool="{0}"><h2>{0}</h2><div class="stats">"#, esc(&p.pool));
    stat(b, "quota", "purchased", p.quota.to_string());
    stat(b, "in_use", "in use now", p.in_use.to_string());
    if p.kre {
        stat(b, "machines", &format!("machines of {}", p.quota), p.machines.to_string());
        stat(b, "waiting", "waiting", p.waiting.to_string());
        if p.reserved.0 > 0 {
            let (seats, free) = p.reserved;
            stat(b, "reserved", "reserved by label (free)", format!("{seats} ({free})"));
        }
    } else {
        stat(b, "grants", "assigned", p.grants.to_string());
        stat(b, "activations", "activated", p.activations.to_string());
    }
    stat(b, "offline", "offline", p.offline.to_string());
    let Some(series) = &p.series else {
        b.push_str(r#"</div><p class="note">No history (the broker runs with --no-history).</p></section>"#);
        return;
    };
    let points = &series.points;
    summary(b, p, points, (from, to));
    b.push_str("</div>");
    chart(b, p, points, (from, to));
    b.push_str("<h3>Peak by weekday and hour (share of capacity)</h3>");
    b.push_str(&svg::heatmap(&format!("{} peak by weekday and hour", p.pool), &p.heat));
    let total: u64 = p.levels.iter().map(|l| l.1).sum();
    if total > 0 {
        b.push_str("<h3>Time at each level of average seats in use</h3>");
        let rows: Vec<(String, f64)> =
            p.levels.iter().map(|(level, n)| (format!("{level} seats"), *n as f64 / total as f64)).collect();
        b.push_str(&svg::bars(&format!("{} time at level", p.pool), &rows));
    }
    what_if(b, p);
    b.push_str("</section>");
}

/// One number of a pool's box.
fn stat(b: &mut String, id: &str, name: &str, value: String) {
    let _ = write!(b, r#"<div class="stat"><b data-stat="{id}">{}</b>{name}</div>"#, esc(&value));
}

/// The range's numbers: peak, average daily peak, utilization, refusals, waits.
fn summary(b: &mut String, p: &PoolView, points: &[crate::history::Point], (from, to): (Millis, Millis)) {
    let peak = points.iter().map(|x| x.usage.peak).max().unwrap_or(0);
    let denials: u64 = points.iter().map(|x| x.usage.denials()).sum();
    let seat_ms: u64 = points.iter().map(|x| x.usage.seat_ms).sum();
    let span = to.0.saturating_sub(from.0).max(1);
    let utilization = if p.quota == 0 { 0.0 } else { seat_ms as f64 / span as f64 / f64::from(p.quota) };
    let daily = daily_peaks(points);
    let avg_daily_peak = if daily.is_empty() { 0.0 } else { daily.iter().sum::<u32>() as f64 / daily.len() as f64 };
    stat(b, "peak", "peak concurrent", peak.to_string());
    stat(b, "avg_daily_peak", "average daily peak", format!("{avg_daily_peak:.1}"));
    stat(b, "utilization", "utilization", format!("{:.1}%", utilization * 100.0));
    stat(b, "denials", "refused", denials.to_string());
    if p.kre {
        let queued: u64 = points.iter().map(|x| x.usage.queued).sum();
        stat(b, "queued", "waited for a seat", queued.to_string());
    }
}

/// Seats in use over the range: capacity, peak, average, refusals marked.
fn chart(b: &mut String, p: &PoolView, points: &[crate::history::Point], (from, to): (Millis, Millis)) {
    let lines = [
        Line {
            class: "quota",
            name: "capacity",
            points: points.iter().map(|x| (x.start, f64::from(x.usage.quota.max(p.quota)))).collect(),
            steps: true,
        },
        Line {
            class: "peak",
            name: "peak",
            points: points.iter().map(|x| (x.start, f64::from(x.usage.peak))).collect(),
            steps: true,
        },
        Line {
            class: "average",
            name: "average",
            points: points.iter().map(|x| (x.start + x.step_ms / 2, x.average())).collect(),
            steps: false,
        },
    ];
    let marks: Vec<(u64, u64)> =
        points.iter().filter(|x| x.usage.denials() > 0).map(|x| (x.start + x.step_ms / 2, x.usage.denials())).collect();
    b.push_str(&svg::time_chart(&format!("{} seats in use", p.pool), (from.0, to.0), &lines, &marks));
    b.push_str(r##"<p class="legend"><span><i style="background:#111"></i>capacity</span><span><i style="background:#c2410c"></i>peak</span><span><i style="background:#2563eb"></i>average</span><span><i style="background:#dc2626;height:8px;border-radius:4px;width:8px"></i>refused</span></p>"##);
}

/// The what-if replay's table, if there is one.
fn what_if(b: &mut String, p: &PoolView) {
    if p.what_if.is_empty() {
        return;
    }
    b.push_str(r#"<h3>What if the pool had…</h3><table class="what-if"><tr><th class="n">Seats</th><th class="n">Refused</th><th class="n">Time at capacity</th></tr>"#);
    for o in &p.what_if {
        let mark = if o.seats == p.quota { " (now)" } else { "" };
        let _ = write!(
            b,
            r#"<tr><td class="n">{}{mark}</td><td class="n">{}</td><td class="n">{:.1}%</td></tr>"#,
            o.seats,
            o.denied,
            o.at_capacity() * 100.0
        );
    }
    b.push_str("</table>");
}

/// Each UTC day's highest peak.
fn daily_peaks(points: &[crate::history::Point]) -> Vec<u32> {
    let mut days: std::collections::BTreeMap<u64, u32> = Default::default();
    for p in points {
        let d = days.entry(p.start / 86_400_000).or_default();
        *d = (*d).max(p.usage.peak);
    }
    days.into_values().collect()
}

fn live(b: &mut String, v: &OrgView) {
    b.push_str("<section><h2>Live sessions</h2>");
    let Some(live) = &v.live else {
        b.push_str(admins_only());
        b.push_str("</section>");
        return;
    };
    let kill = v.kill_token.is_some();
    let _ = write!(
        b,
        r#"<table id="live"><tr><th>Session</th><th>Pool</th><th>User</th><th>Machine</th><th>Job</th><th>Started</th><th>Last heartbeat</th>{}</tr>"#,
        if kill { "<th></th>" } else { "" }
    );
    for s in live {
        let _ = write!(
            b,
            r#"<tr class="session" data-session="{0}"><td>{0}</td><td>{1}</td><td>{2}</td><td>{3}</td><td>{6}</td><td>{4}</td><td>{5}</td>"#,
            esc(&s.session),
            esc(&s.pool),
            esc(&s.user),
            esc(&s.machine),
            when(s.started),
            when(s.heartbeat),
            esc(&s.job)
        );
        if let Some(token) = &v.kill_token {
            let _ = write!(
                b,
                r#"<td><form method="post" action="/org/{}/kill"><input type="hidden" name="session" value="{}"><input type="hidden" name="csrf" value="{}"><button class="kill">Kill</button></form></td>"#,
                esc(&v.org),
                esc(&s.session),
                esc(token)
            );
        }
        b.push_str("</tr>");
    }
    b.push_str("</table>");
    if live.is_empty() {
        b.push_str(r#"<p class="note">No session is live.</p>"#);
    }
    more(b, &v.org, v.totals[0]);
    b.push_str("</section>");
}

fn lists(b: &mut String, v: &OrgView) {
    let licensed = v.licensed.as_ref().map(|rows| {
        rows.iter()
            .map(|(pool, user, granted, machine, last)| {
                let machine = esc(machine.as_deref().unwrap_or("—"));
                vec![esc(pool), esc(user), when(*granted), machine, last.map(when).unwrap_or_else(|| "—".into())]
            })
            .collect()
    });
    let head = ["Pool", "User", "Granted", "Node-locked to", "Last active use"];
    section(b, "Licensed users", &head, licensed);
    more(b, &v.org, v.totals[1]);
    let offline = v.offline.as_ref().map(|rows| {
        rows.iter()
            .map(|(pool, id, machine, last_day, active)| {
                let state = if *active { "holds a seat" } else { "ended" };
                vec![esc(pool), esc(id), esc(machine), esc(last_day), state.to_string()]
            })
            .collect()
    });
    section(b, "Offline licenses", &["Pool", "License", "Machine", "Last day", "State"], offline);
    more(b, &v.org, v.totals[2]);
    let machines = v
        .machines
        .as_ref()
        .map(|rows| rows.iter().map(|(pool, machine, at)| vec![esc(pool), esc(machine), when(*at)]).collect());
    section(b, "Machines", &["Pool", "Machine", "Registered"], machines);
    more(b, &v.org, v.totals[3]);
    let audit = v
        .audit
        .as_ref()
        .map(|rows| rows.iter().map(|(at, actor, action)| vec![when(*at), esc(actor), esc(action)]).collect());
    section(b, "Audit trail (latest)", &["When", "Who", "What"], audit);
}

/// A section with a table of `rows` (their cells already escaped), or,
/// when the role may not list them (`None`), a note saying who may.
fn section(b: &mut String, title: &str, head: &[&str], rows: Option<Vec<Vec<String>>>) {
    let _ = write!(b, "<section><h2>{title}</h2>");
    match rows {
        None => b.push_str(admins_only()),
        Some(rows) => {
            b.push_str("<table><tr>");
            for h in head {
                let _ = write!(b, "<th>{h}</th>");
            }
            b.push_str("</tr>");
            for row in rows {
                b.push_str("<tr>");
                for cell in row {
                    let _ = write!(b, "<td>{cell}</td>");
                }
                b.push_str("</tr>");
            }
            b.push_str("</table>");
        }
    }
    b.push_str("</section>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(esc(r#"<a href="x">&'"#), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}
