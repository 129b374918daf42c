//! The etcd client against a real 3-member etcd cluster on loopback
//! (Debian's `etcd-server`, which the test command installs): reads and
//! writes, create-if-absent and revision-fenced transactions, leases that
//! delete their keys when they lapse, failover when the member it talks
//! to is killed, calls over kept-alive connections, and what a node taking
//! an org over writes under its claim before it serves the org.

use std::time::{Duration, Instant};

use license_broker::cluster::etcd::{Compare, Etcd, Op};

mod cut;
mod etcd_members;
use etcd_members::start_cluster;

/// Retries `f` until it succeeds, for at most `limit`.
async fn eventually<T, E: std::fmt::Display, F: std::future::Future<Output = Result<T, E>>>(
    limit: Duration,
    mut f: impl FnMut() -> F,
) -> T {
    let started = Instant::now();
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if started.elapsed() > limit => panic!("not within {limit:?}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_writes_fences_leases_and_fails_over() {
    let mut cluster = start_cluster();
    let etcd = Etcd::new(&cluster.clients, Duration::from_secs(2)).unwrap();
    // A fresh cluster elects a leader within a few seconds.
    eventually(Duration::from_secs(20), || etcd.put(b"lb/ready", b"1", None)).await;

    // Create-if-absent: the first claim wins, the second sees the winner.
    let claim = |who: &'static [u8]| {
        let etcd = &etcd;
        async move {
            etcd.txn(
                &[Compare::CreateRevision(b"lb/owner/acme".to_vec(), 0)],
                &[Op::Put(b"lb/owner/acme".to_vec(), who.to_vec(), None)],
                &[Op::Get(b"lb/owner/acme".to_vec())],
            )
            .await
            .unwrap()
        }
    };
    let first = claim(b"node-a").await;
    assert!(first.succeeded, "{first:?}");
    let second = claim(b"node-b").await;
    assert!(!second.succeeded);
    assert_eq!(second.reads[0][0].value, b"node-a");
    let fence = second.reads[0][0].create_revision;
    assert_eq!(fence, first.revision, "the claim's revision is its fencing token");

    // A write fenced by the owner's revision passes; after the key is
    // re-created (a new owner), the old fence fails.
    let fenced = |rev: i64| {
        let etcd = &etcd;
        async move {
            etcd.txn(
                &[Compare::CreateRevision(b"lb/owner/acme".to_vec(), rev)],
                &[Op::Put(b"lb/records/acme/pool".to_vec(), b"quota=5".to_vec(), None)],
                &[],
            )
            .await
            .unwrap()
            .succeeded
        }
    };
    assert!(fenced(fence).await);
    etcd.txn(&[], &[Op::Delete(b"lb/owner/acme".to_vec())], &[]).await.unwrap();
    assert!(claim(b"node-b").await.succeeded);
    assert!(!fenced(fence).await, "a stale owner's write fails");
    let (records, _) = etcd.range(b"lb/records/", true).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].value, b"quota=5");

    // A lease: kept alive it holds its key; revoked, the key is gone.
    let (lease, ttl) = etcd.grant(Duration::from_secs(5)).await.unwrap();
    assert!(ttl >= Duration::from_secs(1));
    etcd.put(b"lb/nodes/a", b"alive", Some(lease)).await.unwrap();
    assert!(etcd.keep_alive(lease).await.unwrap().is_some());
    etcd.revoke(lease).await.unwrap();
    assert_eq!(etcd.keep_alive(lease).await.unwrap(), None, "a revoked lease is gone");
    assert!(etcd.range(b"lb/nodes/a", false).await.unwrap().0.is_empty(), "its key went with it");

    // Kill the member the client talks to: the others answer (after a
    // new leader is elected, if it was the leader).
    let _ = cluster.members[0].kill();
    let _ = cluster.members[0].wait();
    eventually(Duration::from_secs(20), || etcd.put(b"lb/after-kill", b"1", None)).await;
    let (after, _) = etcd.range(b"lb/after-kill", false).await.unwrap();
    assert_eq!(after.len(), 1);

    // Nothing answering: a clear error naming every endpoint tried.
    for m in &mut cluster.members {
        let _ = m.kill();
        let _ = m.wait();
    }
    let e = etcd.range(b"x", false).await.unwrap_err().to_string();
    assert!(cluster.clients.iter().all(|c| e.contains(c.trim_start_matches("http://"))), "{e}");
}

/// The records' store in etcd, as cluster nodes use it: a node loads the
/// broker's own records at start and each org's when it takes the org over
/// (parents first, page by page, only that org's, with its keys), removals
/// stick, a commit larger than one etcd transaction goes through, the audit
/// trail pages forwards and reads backwards, a key is found by its hash;
/// and each org's writes are fenced on its own claim: once another node's
/// claim replaces this node's for one org, that org's writes are refused
/// (`Fenced`) and change nothing, while another org's still go through.
#[test]
fn the_etcd_store_keeps_records_per_org_and_fences_each_org() {
    use license_broker::cluster::store::{EtcdStore, Fences, Layout, LOAD_PAGE, MAX_TXN_OPS};
    use license_broker::core::{
        AuditAction, AuditEntry, Change, Email, KeyHash, MachineId, Millis, OrgName, PoolId, Record,
    };
    use license_broker::store::{Store, StoreError};
    use std::sync::Arc;

    let _cluster = start_cluster();
    let clients = _cluster.clients.clone();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let etcd = Arc::new(Etcd::new(&clients, Duration::from_secs(2)).unwrap());
    let layout = Layout::new("/lb-test/");
    // An org's claim, (re)made by `who`: its create revision is the fence.
    let claim = |org: &str, who: &'static [u8]| {
        let (etcd, key) = (etcd.clone(), layout.claim(org));
        rt.block_on(async move {
            eventually(Duration::from_secs(20), || etcd.put(b"/lb-test/ready", b"1", None)).await;
            etcd.txn(&[], &[Op::Delete(key.clone())], &[]).await.unwrap();
            let done = etcd.txn(&[], &[Op::Put(key.clone(), who.to_vec(), None), Op::Get(key)], &[]).await.unwrap();
            done.reads[0][0].create_revision
        })
    };
    let fences = Arc::new(Fences::default());
    let store = EtcdStore::new(etcd.clone(), layout.clone(), fences.clone()).unwrap();
    let (org, other) = (OrgName::new("acme").unwrap(), OrgName::new("acme2").unwrap());
    let org_record = |name: &OrgName| {
        Change::Put(Record::Org { name: name.clone(), subscription_end: Millis(9), created: Millis(1) })
    };
    assert!(matches!(store.commit(&[org_record(&org)]), Err(StoreError::Fenced)), "no claim, no write");
    fences.set(&org, claim("acme", b"a"));
    fences.set(&other, claim("acme2", b"a"));

    let machine = |i: usize| MachineId::new(format!("m{i}")).unwrap();
    // Children first in the commit: a load must still give parents first.
    // More than one transaction's ops, and more than one page of a load.
    let machines = LOAD_PAGE.max(MAX_TXN_OPS) + 50;
    let mut changes: Vec<Change> = (0..machines)
        .map(|i| {
            Change::Put(Record::Machine {
                org: org.clone(),
                pool: PoolId::KRE_DEFAULT,
                machine: machine(i),
                registered: Millis(2),
            })
        })
        .collect();
    changes.push(Change::Put(Record::Pool { org: org.clone(), pool: PoolId::KRE_DEFAULT, quota: 500 }));
    changes.push(org_record(&org));
    let key = |n: u8, org: Option<&OrgName>| Record::Key {
        hash: KeyHash([n; 32]),
        org: org.cloned(),
        email: Email::new("owner@acme").unwrap(),
        created: Millis(1),
        revoked: false,
    };
    changes.push(Change::Put(key(1, Some(&org))));
    // The other org, and the broker's own records (no fence needed).
    changes.push(org_record(&other));
    changes.push(Change::Put(key(2, Some(&other))));
    changes.push(Change::Put(key(3, None)));
    changes.push(Change::Put(Record::Clock { high_water: Millis(5) }));
    store.commit(&changes).unwrap();
    store
        .commit(&[Change::RemoveMachine { org: org.clone(), pool: PoolId::KRE_DEFAULT, machine: machine(0) }])
        .unwrap();

    // At start: the broker's own records only.
    assert_eq!(store.load().unwrap(), vec![key(3, None), Record::Clock { high_water: Millis(5) }]);
    // Taking the orgs over: each org's own records, parents first.
    let loaded = store.load_orgs(&[org.clone(), other.clone()]).unwrap();
    let (acme, acme2) = (&loaded[0].1, &loaded[1].1);
    assert_eq!(acme.len(), 3 + machines - 1, "org, pool, key and every machine but the removed one");
    assert!(matches!(acme[0], Record::Org { .. }) && matches!(acme[1], Record::Pool { .. }), "parents first");
    assert!(acme.contains(&key(1, Some(&org))) && !acme.contains(&key(2, Some(&other))));
    assert_eq!(
        acme2,
        &vec![
            match org_record(&other) {
                Change::Put(r) => r,
                _ => unreachable!(),
            },
            key(2, Some(&other))
        ]
    );
    // One org alone is read by ranges of its own (its machines are two
    // pages of the table: more calls than one org's range), the same records.
    assert_eq!(&store.load_orgs(std::slice::from_ref(&org)).unwrap()[0].1, acme);
    assert_eq!(store.org_names().unwrap().into_iter().collect::<Vec<_>>(), vec![org.clone(), other.clone()]);
    assert!(store.has_org(&org).unwrap() && !store.has_org(&OrgName::new("acm").unwrap()).unwrap());
    assert_eq!(store.key(&KeyHash([2; 32])).unwrap(), Some(key(2, Some(&other))));
    assert_eq!(store.key(&KeyHash([9; 32])).unwrap(), None);

    // The audit trail: oldest first by pages, newest first for the latest.
    let entry = |at: u64| {
        Change::Put(Record::Audit(AuditEntry {
            org: org.clone(),
            at: Millis(at),
            seq: at,
            actor: Email::new("owner@acme").unwrap(),
            action: AuditAction::QuotaChanged,
            detail: format!("entry {at}"),
        }))
    };
    store.commit(&(1..=25).map(entry).collect::<Vec<_>>()).unwrap();
    let (first, more) = store.audit_page(&org, None, 10).unwrap();
    assert!(more);
    assert_eq!(first.iter().map(|e| e.at.0).collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>());
    let last = first.last().unwrap();
    let (next, _) = store.audit_page(&org, Some((last.at, last.seq)), 10).unwrap();
    assert_eq!(next[0].at.0, 11, "the next page starts after the last entry read");
    let latest = store.audit_latest(&org, 3).unwrap();
    assert_eq!(latest.iter().map(|e| e.at.0).collect::<Vec<_>>(), vec![25, 24, 23]);
    assert!(store.audit_latest(&OrgName::new("other").unwrap(), 3).unwrap().is_empty());

    // The outbox: an event per audit entry, numbered and written in the
    // same fenced commit, read after a cursor a page at a time; trimmed.
    let outbox = license_broker::events::Outbox::default();
    let fence = |o: &OrgName| fences.get(o);
    outbox.commit(&store, (26..=30).map(entry).collect(), fence).unwrap();
    assert_eq!(store.events_last(&org).unwrap(), 5);
    let (events, more) = store.events_after(&org, 2, 2).unwrap();
    assert!(more);
    assert_eq!(events.iter().map(|e| (e.seq, e.at.0)).collect::<Vec<_>>(), vec![(3, 28), (4, 29)]);
    assert_eq!(store.events_last(&other).unwrap(), 0, "acme2's outbox is its own");
    store.commit(&[Change::RemoveEvent { org: org.clone(), seq: 1 }]).unwrap();
    assert_eq!(store.events_after(&org, 0, 10).unwrap().0[0].seq, 2);

    // Another node's claim replaces this one's on acme: acme's writes fail
    // and change nothing (nor does a commit touching both orgs), acme2's go on.
    claim("acme", b"b");
    let quota = |o: &OrgName, q| Change::Put(Record::Pool { org: o.clone(), pool: PoolId::KRE_DEFAULT, quota: q });
    assert!(matches!(store.commit(&[quota(&org, 7)]), Err(StoreError::Fenced)));
    assert!(matches!(store.commit(&[quota(&other, 7), quota(&org, 7)]), Err(StoreError::Fenced)));
    store.commit(&[quota(&other, 8)]).unwrap();
    assert!(matches!(outbox.commit(&store, vec![entry(31)], fence), Err(StoreError::Fenced)));
    assert_eq!(store.events_last(&org).unwrap(), 5, "a fenced commit writes no event either");
    let loaded = store.load_orgs(&[org.clone(), other.clone()]).unwrap();
    assert!(loaded[0].1.contains(&Record::Pool { org: org.clone(), pool: PoolId::KRE_DEFAULT, quota: 500 }));
    assert!(loaded[1].1.contains(&Record::Pool { org: other.clone(), pool: PoolId::KRE_DEFAULT, quota: 8 }));
}

/// etcd over TLS with client certificates (`etcd --client-cert-auth`): a
/// client that trusts etcd's CA and presents a certificate that CA signed
/// reads and writes; one without a certificate, or speaking plain HTTP, is
/// turned away, and its error says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_tls_with_client_certificates() {
    use license_broker::cluster::etcd::EtcdTls;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

    let dir = tempfile::tempdir().unwrap();
    let path = |f: &str| dir.path().join(f);
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "lb test etcd CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(path("ca.pem"), ca.pem()).unwrap();
    let leaf = |name: &str, san: &str| {
        let mut params = CertificateParams::new(vec![san.to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        std::fs::write(path(&format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(path(&format!("{name}-key.pem")), key.serialize_pem()).unwrap();
    };
    leaf("server", "127.0.0.1");
    leaf("client", "client.local");

    let (client_port, peer_port) = (etcd_members::port(), etcd_members::port());
    let url = format!("https://127.0.0.1:{client_port}");
    let mut member = std::process::Command::new("etcd")
        .args(["--name", "tls0", "--data-dir"])
        .arg(path("data"))
        .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer_port}")])
        .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer_port}")])
        .args(["--initial-cluster", &format!("tls0=http://127.0.0.1:{peer_port}")])
        .arg("--cert-file")
        .arg(path("server.pem"))
        .arg("--key-file")
        .arg(path("server-key.pem"))
        .arg("--trusted-ca-file")
        .arg(path("ca.pem"))
        .arg("--client-cert-auth")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("etcd is not installed: the test command installs Debian's etcd-server");
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _member = Kill(&mut member);

    let trusted = EtcdTls { ca: Some(path("ca.pem")), identity: Some((path("client.pem"), path("client-key.pem"))) };
    let etcd = Etcd::with_tls(std::slice::from_ref(&url), Duration::from_secs(2), Some(&trusted)).unwrap();
    eventually(Duration::from_secs(20), || etcd.put(b"lb/tls", b"yes", None)).await;
    let (kvs, _) = etcd.range(b"lb/tls", false).await.unwrap();
    assert_eq!(kvs[0].value, b"yes");

    let no_identity = EtcdTls { ca: Some(path("ca.pem")), identity: None };
    let anonymous = Etcd::with_tls(std::slice::from_ref(&url), Duration::from_secs(2), Some(&no_identity)).unwrap();
    let e = anonymous.range(b"lb/tls", false).await.unwrap_err().to_string();
    assert!(e.contains(&format!("127.0.0.1:{client_port}")), "names the endpoint: {e}");

    let plain = Etcd::new(&[format!("http://127.0.0.1:{client_port}")], Duration::from_secs(2)).unwrap();
    assert!(plain.range(b"lb/tls", false).await.is_err(), "plain HTTP to a TLS member fails");
}

/// Nodes joining at once share one set of secrets, all from the same node:
/// a certificate from one node with another's key would match nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_joining_at_once_adopt_one_consistent_set_of_secrets() {
    use license_broker::cluster::secrets::share;
    use license_broker::cluster::store::Layout;
    use std::sync::Arc;

    let cluster = start_cluster();
    let etcd = Arc::new(Etcd::new(&cluster.clients, Duration::from_secs(2)).unwrap());
    eventually(Duration::from_secs(20), || etcd.put(b"/lb-secrets/ready", b"1", None)).await;
    let layout = Layout::new("/lb-secrets/");
    let files = ["tls/cert.pem", "tls/key.pem", "session-token.key"];
    let dirs: Vec<tempfile::TempDir> = (0..6).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut joins = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let (etcd, layout, path) = (etcd.clone(), layout.clone(), dir.path().to_path_buf());
        joins.push(tokio::spawn(async move {
            share(&etcd, &layout, &path, &files, || {
                // Each node's own pair, marked with who made it.
                std::fs::create_dir_all(path.join("tls")).unwrap();
                for f in files {
                    std::fs::write(path.join(f), format!("{f} made by node {i}")).unwrap();
                }
                Ok(())
            })
            .await
        }));
    }
    for j in joins {
        j.await.unwrap().unwrap();
    }
    let read = |d: &tempfile::TempDir, f: &str| std::fs::read_to_string(d.path().join(f)).unwrap();
    let maker = read(&dirs[0], files[0]).rsplit(' ').next().unwrap().to_string();
    for d in &dirs {
        for f in files {
            assert_eq!(read(d, f), format!("{f} made by node {maker}"), "every file from the same node, on every node");
        }
    }
}

/// A node taking over many orgs at once (its peer died) loads them in one
/// batch: each org gets exactly its own records, and the time it took is
/// printed (a failover waits for it: docs/CLUSTER.md).
#[test]
fn a_batch_of_orgs_is_loaded_each_with_its_own_records() {
    use license_broker::cluster::store::{EtcdStore, Fences, Layout};
    use license_broker::core::{Email, KeyHash, Millis, OrgName, PoolId, Record, Role};
    use std::sync::Arc;

    const ORGS: usize = 200;
    let _cluster = start_cluster();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let etcd = Arc::new(Etcd::new(&_cluster.clients, Duration::from_secs(2)).unwrap());
    rt.block_on(eventually(Duration::from_secs(20), || etcd.put(b"/lb-batch/ready", b"1", None)));
    let store = EtcdStore::new(etcd.clone(), Layout::new("/lb-batch/"), Arc::new(Fences::default())).unwrap();
    let orgs: Vec<OrgName> = (0..ORGS).map(|i| OrgName::new(format!("org-{i}")).unwrap()).collect();
    // Written straight to etcd (no claims in this test), 100 puts a transaction.
    let mut puts = Vec::new();
    for (i, org) in orgs.iter().enumerate() {
        let email = Email::new(format!("owner@{org}")).unwrap();
        let records = [
            Record::Org { name: org.clone(), subscription_end: Millis(9), created: Millis(1) },
            Record::Pool { org: org.clone(), pool: PoolId::KRE_DEFAULT, quota: 5 },
            Record::User { org: org.clone(), email: email.clone(), role: Role::Owner, created: Millis(1) },
            Record::Key {
                hash: KeyHash([i as u8; 32]),
                org: Some(org.clone()),
                email,
                created: Millis(1),
                revoked: false,
            },
            Record::Ceiling { org: org.clone(), pool: PoolId::KRE_DEFAULT, seats: 3 },
        ];
        for r in records {
            let (table, key) = r.key();
            let k = format!("/lb-batch/r/{}/{key}", table.name()).into_bytes();
            puts.push(Op::Put(k, postcard::to_allocvec(&r).unwrap(), None));
        }
    }
    rt.block_on(async {
        for chunk in puts.chunks(100) {
            assert!(etcd.txn(&[], chunk, &[]).await.unwrap().succeeded);
        }
    });
    let started = Instant::now();
    let loaded = store.load_orgs(&orgs).unwrap();
    eprintln!("{ORGS} orgs (5 records each) loaded in {:?}", started.elapsed());
    assert_eq!(loaded.len(), ORGS);
    for (org, records) in &loaded {
        assert_eq!(records.len(), 5, "{org}: {records:?}");
        assert!(records.iter().all(|r| r.org() == Some(org)), "{org}: {records:?}");
        assert!(matches!(records[0], Record::Org { .. }), "parents first: {records:?}");
    }
}

#[test]
fn calls_go_over_kept_alive_connections_and_a_reset_one_is_replaced() {
    let cluster = start_cluster();
    let proxy = cut::Cut::start(&cluster.clients[..1]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let etcd = Etcd::new(&proxy.urls, Duration::from_secs(2)).unwrap();
    rt.block_on(eventually(Duration::from_secs(20), || etcd.put(b"lb/ready", b"1", None)));
    let before = proxy.accepted();
    rt.block_on(async {
        for i in 0..50u32 {
            etcd.put(b"lb/kept", &i.to_be_bytes(), None).await.unwrap();
            assert_eq!(etcd.range(b"lb/kept", false).await.unwrap().0[0].value, i.to_be_bytes());
        }
    });
    assert!(proxy.accepted() - before <= 1, "100 calls opened {} connections", proxy.accepted() - before);
    // The member's end resets it: the next call fails, the one after opens a new one.
    proxy.set(cut::Mode::Refuse);
    assert!(rt.block_on(etcd.range(b"lb/kept", false)).is_err(), "the link is cut");
    proxy.set(cut::Mode::Open);
    let (kvs, _) = rt.block_on(etcd.range(b"lb/kept", false)).unwrap();
    assert_eq!(kvs[0].value, 49u32.to_be_bytes());
}

#[test]
fn a_takeovers_hold_is_written_under_the_new_claim_alone_before_any_fence_is_set() {
    use license_broker::cluster::store::{EtcdStore, Fences, Layout};
    use license_broker::core::{Change, Millis, OrgName, PoolId, Record};
    use std::sync::Arc;

    let _cluster = start_cluster();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let etcd = Arc::new(Etcd::new(&_cluster.clients, Duration::from_secs(2)).unwrap());
    rt.block_on(eventually(Duration::from_secs(20), || etcd.put(b"/lb-stop/ready", b"1", None)));
    let layout = Layout::new("/lb-stop/");
    // No fence: the taking node sets it only once this is written.
    let store = EtcdStore::new(etcd.clone(), layout.clone(), Arc::new(Fences::default())).unwrap();
    let org = OrgName::new("acme").unwrap();
    let pool = PoolId::KRE_DEFAULT;
    let stopped =
        Record::Stopped { org: org.clone(), pool, reserved: 1, labels: vec![], users: vec![], stamp: Millis(1) };
    let ceiling = |seats| Record::Ceiling { org: org.clone(), pool, seats };
    let claim = rt.block_on(async {
        let put = |r: &Record| {
            let (table, key) = r.key();
            Op::Put(format!("/lb-stop/r/{}/{key}", table.name()).into_bytes(), postcard::to_allocvec(r).unwrap(), None)
        };
        let claimed = Op::Put(layout.claim("acme"), b"node-b".to_vec(), None);
        etcd.txn(&[], &[put(&stopped), put(&ceiling(3)), claimed], &[]).await.unwrap().revision
    });
    let stored = || store.load_orgs(std::slice::from_ref(&org)).unwrap().remove(0).1;
    assert!(stored().contains(&stopped), "the taking node reads the counts");
    // What its hold must have durable: the ceiling raised for the runner
    // back from a reserved seat, the counts it read removed.
    let hold = [Change::Put(ceiling(4)), Change::RemoveStopped { org: org.clone(), pool }];
    assert!(!store.commit_claimed(&org, claim - 1, &hold).unwrap(), "not under another claim");
    let before = stored();
    assert!(before.len() == 2 && before.contains(&ceiling(3)), "a node without the claim writes nothing: {before:?}");
    assert!(store.commit_claimed(&org, claim, &hold).unwrap());
    assert_eq!(stored(), [ceiling(4)], "written before the node serves the org: a later owner holds as many");
    let other = Change::Put(Record::Ceiling { org: OrgName::new("other").unwrap(), pool, seats: 9 });
    assert!(store.commit_claimed(&org, claim, &[other]).is_err(), "the claim guards its own org's records only");
}

#[test]
fn a_takeovers_hold_larger_than_a_transaction_is_written_in_chunks_each_under_the_claim() {
    use license_broker::cluster::store::{EtcdStore, Fences, Layout, MAX_TXN_OPS};
    use license_broker::core::{Change, MachineId, Millis, OrgName, PoolId, Record};
    use std::sync::Arc;

    let _cluster = start_cluster();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let etcd = Arc::new(Etcd::new(&_cluster.clients, Duration::from_secs(2)).unwrap());
    rt.block_on(eventually(Duration::from_secs(20), || etcd.put(b"/lb-big/ready", b"1", None)));
    let layout = Layout::new("/lb-big/");
    let store = EtcdStore::new(etcd.clone(), layout.clone(), Arc::new(Fences::default())).unwrap();
    let org = OrgName::new("acme").unwrap();
    let machine = |i: usize| Record::Machine {
        org: org.clone(),
        pool: PoolId::KRE_DEFAULT,
        machine: MachineId::new(format!("m{i:04}")).unwrap(),
        registered: Millis(1),
    };
    let many: Vec<Change> = (0..2 * MAX_TXN_OPS + 7).map(|i| Change::Put(machine(i))).collect();
    let claim = rt.block_on(etcd.txn(&[], &[Op::Put(layout.claim("acme"), b"node-b".to_vec(), None)], &[]));
    let claim = claim.unwrap().revision;
    let stored = || store.load_orgs(std::slice::from_ref(&org)).unwrap().remove(0).1.len();
    assert!(!store.commit_claimed(&org, claim + 1, &many).unwrap());
    assert_eq!(stored(), 0, "nothing under a claim that is not the org's");
    assert!(store.commit_claimed(&org, claim, &many).unwrap(), "more than etcd takes in one transaction");
    assert_eq!(stored(), many.len());
}
