//! The data dir: the store and the secrets a broker keeps between runs,
//! owner-only. Opening it replays the store into a new core, checks the
//! clock against the last run's, records this start (with the hold of the
//! previous run's seats), and on a fresh store writes the first keys.

use std::sync::Arc;
use std::time::Duration;

use super::options::{BootstrapKeys, Options, CLUSTER_CLOCK_SKEW};
use super::{tickets, token};
use crate::clock::Clock;
use crate::core::{Broker, Change, Config, Email, Millis, Record};
use crate::error::SetupError;
use crate::store::{RedbStore, Store};
use crate::tls::{self, TlsFiles};

/// A data dir opened: its store, the core rebuilt from it, and the keys of
/// a first start (to show once).
type Opened = (Arc<dyn Store>, Broker, Option<BootstrapKeys>);

/// Opens the store in the data dir, replays it into a new core, and
/// initialises it (with keys to show once) if it was empty.
pub(super) fn open(
    options: &Options,
    clock: Clock,
    cluster: Option<Arc<dyn Store>>,
    may_bootstrap: bool,
) -> Result<Opened, SetupError> {
    std::fs::create_dir_all(&options.data_dir)
        .map_err(SetupError::io(format!("creating data dir {}", options.data_dir.display())))?;
    // Owner-only before anything is written into it, whatever the umask.
    restrict(&options.data_dir, 0o700)?;
    let clustered = cluster.is_some();
    let store: Arc<dyn Store> = match cluster {
        Some(store) => store,
        None => {
            Arc::new(RedbStore::open(&options.data_dir.join(STORE_FILE)).map_err(store_error("opening the store"))?)
        }
    };
    let core = new_core(options)?;
    // (In a cluster, only the broker's own records: each org's are loaded
    // when this node takes it over.)
    let records = store.load().map_err(store_error("loading the store"))?;
    let recorded_ttl = records.iter().find_map(|r| match r {
        Record::Leases { ttl_ms, .. } => Some(*ttl_ms),
        _ => None,
    });
    // Bootstrap writes every first record in one commit: no key, no bootstrap yet.
    let fresh = may_bootstrap && !records.iter().any(|r| matches!(r, Record::Key { .. }));
    core.apply(&records.into_iter().map(Change::Put).collect::<Vec<_>>(), clock.now());
    let now = clock.now();
    check_clock(options, &core, now, clustered)?;
    let mut marks = start_marks(&core, now, clustered.then_some(recorded_ttl.unwrap_or(0)));
    let bootstrap = match fresh {
        true => {
            let (keys, changes) = bootstrap(&core, clock)?;
            marks.extend(changes.iter().cloned());
            Some((keys, changes))
        }
        false => None,
    };
    store.commit(&marks).map_err(store_error("initialising the store"))?;
    let bootstrap = bootstrap.map(|(keys, changes)| {
        core.apply(&changes, now);
        keys
    });
    Ok((store, core, bootstrap))
}

/// A store failure while opening, saying what was being done.
fn store_error(what: &'static str) -> impl Fn(crate::store::StoreError) -> SetupError {
    move |source| SetupError::Store { what, source }
}

/// A new, empty core with this run's options and secrets.
fn new_core(options: &Options) -> Result<Broker, SetupError> {
    let audit_base = crate::keys::random_u128().map_err(|_| SetupError::Random)? as u64 >> 1;
    Ok(Broker::new(Config {
        lease_ttl: options.lease_ttl,
        audit_seq_base: audit_base,
        ceilings: true,
        restart_grace: options.restart_grace,
        max_waiters: options.max_waiters,
        session_id_key: crate::keys::random_u128().map_err(|_| SetupError::Random)?,
        ..Config::default()
    }))
}

/// Refuses to start on a clock behind the latest time a previous run
/// recorded (a cluster node allows `CLUSTER_CLOCK_SKEW`: the run before was
/// most likely another node's), or further ahead of it than the broker can
/// plausibly have been down (`max_clock_leap`: a leap forward would free
/// offline seats early), unless the operator has checked it.
fn check_clock(options: &Options, core: &Broker, now: Millis, clustered: bool) -> Result<(), SetupError> {
    let skew = if clustered { CLUSTER_CLOCK_SKEW } else { Duration::ZERO };
    let high_water = core.high_water();
    if now.after(skew) < high_water && !options.allow_clock_rollback {
        return Err(SetupError::ClockBehind { now, high_water });
    }
    // A store no run has marked yet (high water 0) has nothing to free.
    let max = options.max_clock_leap;
    if high_water.0 > 0 && now > high_water.after(max) && !options.allow_clock_leap {
        return Err(SetupError::ClockAhead { now, high_water, max });
    }
    Ok(())
}

/// This start's marks. Its time, at once: a crash from here on still
/// leaves a mark. With it, before anything is admitted, the hold of the
/// previous run's seats, so that a crash during the hold still honours
/// it; a fresh store's first records join them in the same commit: if it
/// fails, the next start is fresh again and shows its own keys (keys
/// committed but never shown would be lost to everyone). `cluster_ttl`:
/// in a cluster, the longest TTL recorded by any node.
fn start_marks(core: &Broker, now: Millis, cluster_ttl: Option<u64>) -> Vec<Change> {
    let mut marks = vec![Change::Put(Record::Clock { high_water: now })];
    if let Some(mut hold) = core.hold_reserves(now) {
        if hold.seats > 0 {
            let until = crate::core::format_utc(hold.until);
            tracing::info!(seats = hold.seats, %until, "holding seats for the previous run's runners to re-attach");
        }
        // In a cluster, the longest TTL any node has run with: a node taking
        // over an org holds its seats for that long (`Broker::adopt_org`),
        // whichever node admitted its runners.
        if let (Some(recorded), Record::Leases { ttl_ms, .. }) = (cluster_ttl, &mut hold.record) {
            *ttl_ms = (*ttl_ms).max(recorded);
        }
        marks.push(Change::Put(hold.record));
        marks.extend(hold.ceilings.into_iter().map(Change::Put));
        marks.extend(hold.cleared);
    }
    marks
}

/// Mints a new operator key straight into a data dir, for an operator who
/// lost theirs: whoever can read and write the data dir owns the broker
/// anyway. Refused while a broker has the store open (its file is locked).
pub fn mint_operator_key(data_dir: &std::path::Path) -> Result<String, SetupError> {
    let path = data_dir.join(STORE_FILE);
    if !path.exists() {
        let source = std::io::Error::new(std::io::ErrorKind::NotFound, "no broker store here");
        return Err(SetupError::Io { what: format!("opening {}", path.display()), source });
    }
    let store = RedbStore::open(&path).map_err(store_error("opening the store"))?;
    let (key, hash) = crate::keys::generate().map_err(|_| SetupError::Random)?;
    let change = Broker::new(Config::default()).plan_operator_key(hash, Clock::new().now());
    store.commit(&[change]).map_err(store_error("writing the key"))?;
    Ok(key)
}

/// Sets `path`'s permission bits to `mode`.
fn restrict(path: &std::path::Path, mode: u32) -> Result<(), SetupError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(SetupError::io(format!("restricting {}", path.display())))
}

/// Makes the data dir owner-only: every directory 0700, every file 0600
/// (the store, the TLS key, the signing key: secrets or what guards them).
pub(super) fn restrict_tree(dir: &std::path::Path) -> Result<(), SetupError> {
    let entries = std::fs::read_dir(dir).map_err(SetupError::io(format!("reading {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(SetupError::io(format!("reading {}", dir.display())))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(SetupError::io(format!("reading {}", path.display())))?;
        if kind.is_dir() {
            restrict(&path, 0o700)?;
            restrict_tree(&path)?;
        } else if kind.is_file() {
            restrict(&path, 0o600)?;
        }
    }
    Ok(())
}

/// The store's file inside the data dir.
pub const STORE_FILE: &str = "broker.redb";

/// The TLS ticket secret inside the data dir (see `tickets`).
pub const TICKET_KEY_FILE: &str = "tls/ticket.key";

/// The session-token key inside the data dir (32 bytes; whoever has it can
/// forge leases for a restarted broker, so owner-only like the rest).
pub const TOKEN_KEY_FILE: &str = "session-token.key";

/// Makes every secret of the data dir a broker needs (TLS files unless
/// given, session-token key, offline signing key, TLS ticket key) that is
/// not there yet. A cluster node calls it between adopting the cluster's
/// secrets and publishing its own (`cluster::secrets`).
pub(crate) fn ensure_secrets(options: &Options) -> Result<(), SetupError> {
    std::fs::create_dir_all(&options.data_dir)
        .map_err(SetupError::io(format!("creating data dir {}", options.data_dir.display())))?;
    restrict(&options.data_dir, 0o700)?;
    if options.tls.is_none() {
        tls::ensure_self_signed(&TlsFiles::in_data_dir(&options.data_dir))?;
    }
    tickets::Ticketer::load_or_generate(&options.data_dir.join(TICKET_KEY_FILE))?;
    crate::offline::SigningKey::load_or_generate(&options.data_dir.join(SIGNING_KEY_FILE))?;
    token::Tokens::load_or_generate(&options.data_dir.join(TOKEN_KEY_FILE), 0)?;
    Ok(())
}

/// The files `ensure_secrets` makes, as paths inside the data dir; the TLS
/// pair only when the broker generates its own.
pub(crate) fn secret_files(options: &Options) -> Vec<&'static str> {
    let mut files = vec![TOKEN_KEY_FILE, SIGNING_KEY_FILE, TICKET_KEY_FILE];
    if options.tls.is_none() {
        files.extend(["tls/cert.pem", "tls/key.pem"]);
    }
    files
}

/// The offline-license signing key inside the data dir.
pub const SIGNING_KEY_FILE: &str = "offline/signing-key.pem";

/// The first records of a fresh store (an operator key, the `default`
/// org and its Owner's key) and the keys to show once; committed by the
/// caller with the start's marks.
fn bootstrap(core: &Broker, clock: Clock) -> Result<(BootstrapKeys, Vec<Change>), SetupError> {
    let random = |_: crate::keys::RandomUnavailable| SetupError::Random;
    let (operator, operator_hash) = crate::keys::generate().map_err(random)?;
    let (owner, owner_hash) = crate::keys::generate().map_err(random)?;
    // Invariant: a literal that satisfies the email rules (core tests use it too).
    let owner_email = Email::new("owner@default").expect("valid email");
    let changes = core.plan_bootstrap(operator_hash, &owner_email, owner_hash, clock.now());
    Ok((BootstrapKeys { operator, owner }, changes))
}
