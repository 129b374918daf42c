//! What the broker shows: live sessions, machines, each pool's status and
//! the census `/metrics` reads, each checked against who asks.

use crate::core::directory::Principal;
use crate::core::error::{Error, Result};
use crate::core::id::{MachineId, OrgName, SessionId};
use crate::core::pool::{Pool, PoolId, PoolStatus};
use crate::core::session::SessionInfo;
use crate::core::time::Millis;

use super::Broker;

/// A registered machine, for `machine list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineInfo {
    /// The pool it is registered in.
    pub pool: PoolId,
    /// The machine.
    pub machine: MachineId,
    /// When it registered.
    pub registered: Millis,
}

impl Broker {
    /// Live sessions of an org (Owner/Admin).
    pub fn sessions(&self, p: &Principal, org: &OrgName) -> Result<Vec<SessionInfo>> {
        self.require_session_reader(p, org)?;
        Ok(self.sessions.list(|pool| &pool.org == org))
    }

    /// Refuses unless `p` may see `org`'s sessions, live or ended, with who
    /// held them (user, machine, labels): the org's Owners and Admins. The
    /// one rule for every door (QUIC lists, the API, the CLI, the page);
    /// Users and the operator read the numbers and charts, not who.
    pub fn require_session_reader(&self, p: &Principal, org: &OrgName) -> Result<()> {
        p.require_admin(org)?;
        self.dir.read().org(org).map(|_| ())
    }

    /// When each live session of `org`'s `pool` started, for replaying
    /// demand (no identities, so any member may read it).
    pub fn live_starts(&self, p: &Principal, org: &OrgName, pool: PoolId) -> Result<Vec<Millis>> {
        p.require_reader(org)?;
        let uid = self.dir.read().pool(org, pool)?.uid;
        Ok(self.sessions.starts_of(uid))
    }

    /// Owner/Admin: one page of the org's live sessions (see `SessionTable::page`).
    pub fn sessions_page(
        &self,
        p: &Principal,
        org: &OrgName,
        after: Option<SessionId>,
        limit: usize,
    ) -> Result<(Vec<SessionInfo>, bool)> {
        self.require_session_reader(p, org)?;
        Ok(self.sessions.page(after, limit, |pool| &pool.org == org))
    }

    /// Registered machines of an org (Owner/Admin).
    pub fn machines(&self, p: &Principal, org: &OrgName) -> Result<Vec<MachineInfo>> {
        p.require_admin(org)?;
        let dir = self.dir.read();
        let mut pools: Vec<_> = dir.org(org)?.pools.values().cloned().collect();
        pools.sort_by_key(|p| p.id);
        Ok(pools
            .iter()
            .flat_map(|pool| {
                pool.machines().into_iter().map(|(machine, registered)| MachineInfo {
                    pool: pool.id,
                    machine,
                    registered,
                })
            })
            .collect())
    }

    /// Every pool's numbers and every org's subscription end, for the ops
    /// views (whoever serves them decides who may read them).
    pub fn census(&self) -> (Vec<PoolStatus>, Vec<(OrgName, Millis)>) {
        let counts = self.sessions.all_counts();
        let dir = self.dir.read();
        let subscriptions = dir.orgs.iter().map(|(name, e)| (name.clone(), e.subscription_end)).collect();
        let this_run = |p: &Pool| counts.get(&p.uid).copied().unwrap_or_default();
        let pools = dir.orgs.values().flat_map(|e| e.pools.values()).map(|p| p.status(this_run(p))).collect();
        (pools, subscriptions)
    }

    /// When `org`'s subscription ends (midnight UTC after its last day):
    /// the operator and the org's members may read it.
    pub fn subscription_end(&self, p: &Principal, org: &OrgName) -> Result<Millis> {
        p.require_reader(org)?;
        self.dir.read().org(org).map(|o| o.subscription_end)
    }

    /// Pool numbers: the operator sees every org, members see their own.
    pub fn status(&self, p: &Principal, org: Option<&OrgName>) -> Result<Vec<PoolStatus>> {
        let dir = self.dir.read();
        let wanted: Vec<&OrgName> = match (org, &p.org) {
            (Some(o), _) => {
                if p.role != crate::core::id::Role::Operator {
                    p.require_member(o)?;
                }
                vec![dir.orgs.get_key_value(o).ok_or_else(|| Error::not_found("org", o))?.0]
            }
            (None, Some(mine)) => vec![mine],
            (None, None) => dir.orgs.keys().collect(),
        };
        let mut out: Vec<PoolStatus> = wanted
            .into_iter()
            .filter_map(|o| dir.orgs.get(o))
            .flat_map(|e| e.pools.values().map(|p| p.status(self.sessions.counts(p.uid))))
            .collect();
        out.sort_by(|a, b| (&a.org, a.pool).cmp(&(&b.org, b.pool)));
        Ok(out)
    }
}
