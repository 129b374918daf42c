//! Reads that need more than the core's memory: the audit trail (the
//! store), the history's reports (its file), and on a cluster node where a
//! key's org is served (etcd). Everything else a door reads, it asks the
//! core directly (`Operations::core`): every core read checks the caller.

use std::sync::Arc;

use super::{store_failure, Caller, Operations};
use crate::cluster::Route;
use crate::core::{AuditEntry, Change, KeyHash, Millis, OrgName, Principal};
use crate::history::report::ReportError;
use crate::history::History;
use crate::proto::{ErrorCode, NodeInfo, WireError};

/// Who a key is, for a door signing it in (a `Hello`, a web sign-in, a
/// bearer request). The routing of a key this node does not serve is
/// written once (`routed`) for both doors.
#[derive(Debug)]
pub enum SignIn {
    /// Known here: serve them.
    Here(Principal),
    /// A member of an org another node serves: `HOST:PORT` of that node.
    Elsewhere(String),
    /// A member of an org no node serves this instant (it is moving), or
    /// etcd is out of reach: try again shortly.
    Moving,
    /// No such key, or it is revoked. Counted as a failed authentication.
    Unknown,
}

impl Operations {
    /// Who `key` is, for a QUIC `Hello`. A single broker knows every key.
    /// A cluster node welcomes here only the members of the orgs it
    /// serves; an operator's key is read again from etcd (another node may
    /// have made or revoked it), and any other key's org is looked up to
    /// say where it is served (`routed`).
    pub async fn hello(&self, key: &KeyHash) -> SignIn {
        let known = self.core.authenticate(key);
        let Some(seat) = &self.cluster else {
            return known.map_or_else(|_| self.unknown(), SignIn::Here);
        };
        if let Ok(p) = known {
            if p.org.as_ref().is_some_and(|o| seat.serves(o)) {
                return SignIn::Here(p);
            }
        }
        self.routed(key).await
    }

    /// Who `key` is, for the web door: any key this node knows (a member
    /// of an org served elsewhere is then told where by `owning`), else
    /// what etcd says of it, as for a `Hello`. Only a key nobody knows
    /// counts as a failed authentication: a valid key of an org another
    /// node serves is sent there, as a `Hello` is.
    pub async fn sign_in(&self, key: &KeyHash) -> SignIn {
        if let Ok(p) = self.core.authenticate(key) {
            return SignIn::Here(p);
        }
        if self.cluster.is_none() {
            return self.unknown();
        }
        self.routed(key).await
    }

    /// A cluster node's answer for a key it does not serve, from etcd: an
    /// operator's key is taken in (it authenticates from then on), a
    /// member's is sent to the node serving their org.
    async fn routed(&self, key: &KeyHash) -> SignIn {
        let Some(seat) = &self.cluster else { return self.unknown() };
        match seat.route(*key).await {
            Route::Operator(record) => {
                self.core.apply(&[Change::Put(record)], self.clock.now());
                self.core.authenticate(key).map_or_else(|_| self.unknown(), SignIn::Here)
            }
            Route::Elsewhere(server) => SignIn::Elsewhere(server),
            Route::Busy => SignIn::Moving,
            Route::Unknown => self.unknown(),
        }
    }

    fn unknown(&self) -> SignIn {
        self.core.note_auth_failure();
        SignIn::Unknown
    }

    /// Up to `limit` audit entries of `org` after `after` (Owners and
    /// Admins only), read off the async threads; and whether more follow.
    pub async fn audit(
        &self,
        c: Caller<'_>,
        org: &OrgName,
        after: Option<(Millis, u64)>,
        limit: usize,
    ) -> Result<(Vec<AuditEntry>, bool), WireError> {
        self.core.require_org_admin(c.p, org)?;
        let (store, org) = (self.store.clone(), org.clone());
        tokio::task::spawn_blocking(move || store.audit_page(&org, after, limit))
            .await
            .map_err(|e| WireError::new(ErrorCode::Internal, e.to_string()))?
            .map_err(store_failure)
    }

    /// The latest `n` audit entries of `org`, newest first (Owners and
    /// Admins only); read on the calling thread (a page's own blocking task).
    pub fn audit_latest(&self, c: Caller<'_>, org: &OrgName, n: usize) -> Result<Vec<AuditEntry>, WireError> {
        self.core.require_org_admin(c.p, org)?;
        self.store.audit_latest(org, n).map_err(store_failure)
    }

    /// Waits for a turn to read the history (bounded memory:
    /// `history::READERS` at once); `None` when the history is off.
    pub async fn report_turn(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        match &self.history {
            Some(h) => h.reading().await,
            None => None,
        }
    }

    /// Runs `read` on the history off the async threads, in its turn.
    pub async fn read_history<T: Send + 'static>(
        &self,
        read: impl FnOnce(&History) -> Result<T, ReportError> + Send + 'static,
    ) -> Result<T, ReportError> {
        let h: Arc<History> = self.history.clone().ok_or(ReportError::Off)?;
        let turn = h.reading().await;
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            read(&h)
        })
        .await
        .map_err(|e| ReportError::Task(e.to_string()))?
    }

    /// The cluster's nodes (empty on a single broker).
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.cluster.as_ref().map(|c| c.nodes()).unwrap_or_default()
    }

    /// Where `org` is served if not here (empty: here, or nowhere known).
    pub fn route(&self, org: &OrgName) -> String {
        let elsewhere = self.cluster.as_ref().filter(|c| !c.serves(org)).and_then(|c| c.served_at(org.as_str()));
        elsewhere.map(|o| o.advertise).unwrap_or_default()
    }
}
