//! Paged lists (`Req::List`): every page fits in one frame, and a cursor
//! says where the next one starts.
//!
//! Directory lists (pools, machines, users, keys, grants, offline licenses,
//! orgs, caps) live in memory and are bounded by quotas and org sizes: each
//! page builds its list, sorts it by the list's key and starts after the
//! cursor's key, so a page is right however the directory changed between
//! pages. Sessions and the audit trail run to millions: they are walked
//! from the cursor's position (the session table's order, the store's key
//! order), so a page costs what it returns, and a million sessions page
//! through in linear time.
//!
//! The unpaged requests of versions 1 to 3 (`ListSessions`, `Audit`) keep
//! working for everything that fits a frame, and cost at most a frame's
//! worth of work when it does not (`legacy`).

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::handler::{Call, Reply};
use super::wire::list;
use crate::core::{Millis, SessionId};
use crate::proto::{
    AuditEntry, Cursor, EndedSession, ErrorCode, GrantInfo, KeyInfo, LabelLimitInfo, ListOf, MachineInfo,
    MachineUseInfo, OfflineInfo, OrgInfo, PageItems, PoolState, ReservationInfo, Resp, SessionView, UsagePoint,
    UserInfo, UserLimitInfo, WireError, MAX_FRAME,
};

/// Most items on one page, whatever the client asks (`limit` 0 asks for this).
pub const MAX_PAGE: usize = 10_000;

/// Bytes a page's items may take: a frame less room for the response's own
/// fields (ids, variant tags, the list's length) and the next cursor.
const ITEM_BUDGET: usize = MAX_FRAME - 1024;

/// Items an unpaged answer reads before it knows it cannot fit: no item
/// encodes in fewer than 16 bytes, so more than this never fits a frame.
pub const LEGACY_MAX: usize = MAX_FRAME / 16;

/// A page's items and the cursor of the next one.
type Page = Result<(PageItems, Option<Cursor>), WireError>;

/// One page of `of`, after `after`, of at most `limit` items.
pub(super) async fn list_page(call: &Call<'_>, of: ListOf, after: Option<Cursor>, limit: u32) -> Reply {
    let limit = match limit as usize {
        0 => MAX_PAGE,
        n => n.min(MAX_PAGE),
    };
    let after = after.as_ref();
    let (items, next) = match of {
        ListOf::Sessions { org } => sessions(call, &org, after, limit)?,
        ListOf::Audit { org } => {
            let from = after.map(open::<(Millis, u64)>).transpose()?;
            let (found, more) = audit(call, org, from, limit).await?;
            let (v, next) = cut(found.into_iter(), more, limit, |e: &AuditEntry| (e.at, e.seq))?;
            (PageItems::Audit(v), next)
        }
        of @ (ListOf::Usage { .. } | ListOf::Ended { .. }) => return report_page(call, of, after, limit).await,
        of => directory(call, of, after, limit)?,
    };
    Ok(Resp::Page { items, next })
}

/// A page of a report (`Usage`, `Ended`), naming the nodes whose part is
/// missing on a version 5 stream (`reports::partial`), for which its items
/// leave room in the frame.
async fn report_page(call: &Call<'_>, of: ListOf, after: Option<&Cursor>, limit: usize) -> Reply {
    let budget = ITEM_BUDGET - super::reports::MISSING_ROOM;
    let (items, next, missing) = match of {
        ListOf::Usage { org, pool, from_ms, to_ms, step_ms } => {
            let (points, missing) = super::reports::usage(call, org, pool, (from_ms, to_ms), step_ms).await?;
            let (v, next) = sorted_in(budget, points, |u: &UsagePoint| (u.pool, u.start_ms), after, limit)?;
            (PageItems::Usage(v), next, missing)
        }
        ListOf::Ended { org, from_ms, to_ms } => {
            let from = after.map(open::<(u64, u64)>).transpose()?;
            let (found, more, missing) = super::reports::ended(call, org, (from_ms, to_ms), from, limit).await?;
            let key = |e: &EndedSession| (e.end_ms, e.session.0);
            let (v, next) = cut_in(budget, found.into_iter(), more, limit, key)?;
            (PageItems::Ended(v), next, missing)
        }
        other => return Err(WireError::new(ErrorCode::Internal, format!("{other:?} is not a report"))),
    };
    Ok(super::reports::partial(call, Resp::Page { items, next }, missing))
}

/// Live sessions, walked from the cursor in the session table's order.
fn sessions(call: &Call<'_>, org: &crate::core::OrgName, after: Option<&Cursor>, limit: usize) -> Page {
    let from = after.map(open::<SessionId>).transpose()?;
    let (found, more) = call.shared.ops.core().sessions_page(call.p, org, from, limit)?;
    let views = found.into_iter().map(|s| SessionView { labels: s.labels.clone(), info: s.into() });
    let (v, next) = cut(views, more, limit, |s: &SessionView| s.info.session)?;
    Ok((PageItems::Sessions(v), next))
}

/// A page of one of the directory's lists, in memory.
fn directory(call: &Call<'_>, of: ListOf, after: Option<&Cursor>, limit: usize) -> Page {
    let (core, p) = (call.shared.ops.core(), call.p);
    Ok(match of {
        ListOf::Status { org } => {
            let pools = core.status(p, org.as_ref())?;
            let pools = pools.into_iter().map(|s| PoolState { waiting: s.waiting, status: s.into() }).collect();
            let (v, next) = sorted(pools, |s: &PoolState| (s.status.org.clone(), s.status.pool), after, limit)?;
            (PageItems::Pools(v), next)
        }
        ListOf::Machines { org } => {
            let all = list(core.machines(p, &org)?);
            let (v, next) = sorted(all, |m: &MachineInfo| (m.pool, m.machine.clone()), after, limit)?;
            (PageItems::Machines(v), next)
        }
        ListOf::Users { org } => {
            let (v, next) = sorted(list(core.users(p, &org)?), |u: &UserInfo| u.email.clone(), after, limit)?;
            (PageItems::Users(v), next)
        }
        ListOf::Keys { org } => {
            let (v, next) = sorted(list(core.keys(p, &org)?), |k: &KeyInfo| (k.created, k.id.clone()), after, limit)?;
            (PageItems::Keys(v), next)
        }
        ListOf::Grants { org, pool } => {
            let all = list(core.grants(p, &org, pool)?);
            let (v, next) = sorted(all, |g: &GrantInfo| (g.pool, g.email.clone()), after, limit)?;
            (PageItems::Grants(v), next)
        }
        ListOf::Offline { org } => {
            let all = list(core.offline_licenses(p, &org)?);
            let (v, next) = sorted(all, |o: &OfflineInfo| (o.pool, o.id.clone()), after, limit)?;
            (PageItems::Offline(v), next)
        }
        ListOf::Orgs => {
            let (v, next) = sorted(list(core.orgs(p)?), |o: &OrgInfo| o.name.clone(), after, limit)?;
            (PageItems::Orgs(v), next)
        }
        of @ (ListOf::MachineUses { .. }
        | ListOf::UserLimits { .. }
        | ListOf::LabelLimits { .. }
        | ListOf::Reservations { .. }) => return per_pool(call, of, after, limit),
        // The lists above are all the directory's; the others are paged by `list_page`.
        other => return Err(WireError::new(ErrorCode::Internal, format!("{other:?} is not a directory list"))),
    })
}

/// A page of one of the directory's lists about what pools keep of their
/// machines and sessions: machines' last uses, user caps, label caps.
fn per_pool(call: &Call<'_>, of: ListOf, after: Option<&Cursor>, limit: usize) -> Page {
    let (core, p) = (call.shared.ops.core(), call.p);
    Ok(match of {
        ListOf::MachineUses { org } => {
            let all = core.machine_uses(p, &org)?.into_iter().map(|(pool, u)| MachineUseInfo {
                pool,
                machine: u.machine,
                registered: u.registered,
                last_use: u.last_use,
                holds: u.holds,
                ephemeral: u.ephemeral,
            });
            let (v, next) = sorted(all.collect(), |m: &MachineUseInfo| (m.pool, m.machine.clone()), after, limit)?;
            (PageItems::MachineUses(v), next)
        }
        ListOf::UserLimits { org, pool } => {
            let caps = core.user_limits(p, &org, pool)?;
            let caps = caps.into_iter().map(|(email, max, sessions)| UserLimitInfo { email, max, sessions }).collect();
            let (v, next) = sorted(caps, |c: &UserLimitInfo| c.email.clone(), after, limit)?;
            (PageItems::UserLimits(v), next)
        }
        ListOf::LabelLimits { org, pool } => {
            let caps = core.label_limits(p, &org, pool)?.into_iter();
            let caps = caps.map(|(key, value, max, sessions)| LabelLimitInfo { key, value, max, sessions }).collect();
            let (v, next) = sorted(caps, |c: &LabelLimitInfo| (c.key.clone(), c.value.clone()), after, limit)?;
            (PageItems::LabelLimits(v), next)
        }
        ListOf::Reservations { org } => {
            let all = core.reservations(p, &org)?.into_iter().map(|(pool, r)| ReservationInfo {
                pool,
                key: r.key,
                value: r.value,
                seats: r.seats,
                in_use: r.in_use,
                held: r.held,
            });
            let by = |r: &ReservationInfo| (r.pool, r.key.clone(), r.value.clone());
            let (v, next) = sorted(all.collect(), by, after, limit)?;
            (PageItems::Reservations(v), next)
        }
        other => return Err(WireError::new(ErrorCode::Internal, format!("{other:?} is not a per-pool list"))),
    })
}

/// Reads up to `limit` audit entries after `after` (off the async threads),
/// in their wire form for the caller's version; and whether more follow.
pub(super) async fn audit(
    call: &Call<'_>,
    org: crate::core::OrgName,
    after: Option<(Millis, u64)>,
    limit: usize,
) -> Result<(Vec<AuditEntry>, bool), WireError> {
    let (entries, more) = call.shared.ops.audit(call.c(), &org, after, limit).await?;
    let mut entries: Vec<AuditEntry> = list(entries);
    // Actions appended after the stream's version was published reach it
    // as the nearest older one, the detail starting with the real one.
    for e in &mut entries {
        if let Some(older) = call.proto.audit_action(e.action) {
            e.detail = format!("{}: {}", e.action.name(), e.detail);
            e.action = older;
        }
    }
    Ok((entries, more))
}

/// The refusal of an unpaged list that does not fit one frame.
pub(super) fn too_large(what: &str) -> WireError {
    WireError::new(
        ErrorCode::ResponseTooLarge,
        format!(
            "the {what} do not fit in one {MAX_FRAME}-byte frame; page with `List` (protocol \
             version 4; the CLI does), or ask for less (one org, one pool)"
        ),
    )
}

/// A page of a whole in-memory list: sorted by `key`, from after the
/// cursor's key.
fn sorted<T: Serialize, K: Ord + Serialize + DeserializeOwned>(
    all: Vec<T>,
    key: impl Fn(&T) -> K,
    after: Option<&Cursor>,
    limit: usize,
) -> Result<(Vec<T>, Option<Cursor>), WireError> {
    sorted_in(ITEM_BUDGET, all, key, after, limit)
}

/// `sorted`, its items within `budget` bytes.
fn sorted_in<T: Serialize, K: Ord + Serialize + DeserializeOwned>(
    budget: usize,
    mut all: Vec<T>,
    key: impl Fn(&T) -> K,
    after: Option<&Cursor>,
    limit: usize,
) -> Result<(Vec<T>, Option<Cursor>), WireError> {
    all.sort_by_key(&key);
    let start = match after {
        None => 0,
        Some(c) => {
            let last: K = open(c)?;
            all.partition_point(|t| key(t) <= last)
        }
    };
    let more = all.len() > start + limit;
    let rest = all.into_iter().skip(start).take(limit);
    cut_in(budget, rest, more, limit, key)
}

/// Takes items while they fit the page (`limit` and the frame's byte
/// budget); the next cursor is the key of the last one taken, if anything
/// is left (`more`: the source had more than it gave).
fn cut<T: Serialize, K: Serialize>(
    items: impl Iterator<Item = T>,
    more: bool,
    limit: usize,
    key: impl Fn(&T) -> K,
) -> Result<(Vec<T>, Option<Cursor>), WireError> {
    cut_in(ITEM_BUDGET, items, more, limit, key)
}

/// `cut`, its items within `budget` bytes.
fn cut_in<T: Serialize, K: Serialize>(
    budget: usize,
    items: impl Iterator<Item = T>,
    more: bool,
    limit: usize,
    key: impl Fn(&T) -> K,
) -> Result<(Vec<T>, Option<Cursor>), WireError> {
    let mut items = items.peekable();
    let (mut page, mut bytes) = (Vec::new(), 0);
    while let Some(item) = items.peek() {
        let size = encoded_len(item)?;
        if page.len() == limit || bytes + size > budget {
            break;
        }
        bytes += size;
        page.extend(items.next());
    }
    let left = more || items.peek().is_some();
    if left && page.is_empty() {
        // One item over a frame: impossible with today's bounded fields,
        // refused rather than looped on.
        return Err(too_large("list's items"));
    }
    let next = match (left, page.last()) {
        (true, Some(last)) => Some(seal(&key(last))?),
        _ => None,
    };
    Ok((page, next))
}

fn encoded_len<T: Serialize>(item: &T) -> Result<usize, WireError> {
    postcard::experimental::serialized_size(item).map_err(|e| WireError::new(ErrorCode::Internal, e.to_string()))
}

/// A cursor naming `key`: its postcard encoding.
fn seal<K: Serialize>(key: &K) -> Result<Cursor, WireError> {
    postcard::to_allocvec(key).map(Cursor).map_err(|e| WireError::new(ErrorCode::Internal, e.to_string()))
}

/// The key a cursor names, if it is one this list issues.
fn open<K: DeserializeOwned>(c: &Cursor) -> Result<K, WireError> {
    postcard::from_bytes(&c.0).map_err(|_| {
        WireError::new(ErrorCode::InvalidArgument, "the cursor was not issued by this broker for this list")
    })
}
