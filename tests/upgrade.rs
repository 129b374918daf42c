//! A data dir written by an older broker opens in this one, with nothing
//! lost.
//!
//! `fixtures/redb2-data-dir.tar.gz` is a whole data dir written by the
//! broker at 4324a5f (redb 2, file format v2, which redb 3 and later cannot
//! read): two pools, three members, a key, a KSE grant, a per-user cap, a
//! registered machine, an offline license and its audit trail, stopped
//! cleanly. `fixtures/redb2-data-dir.keys` holds the API keys it printed.
//! This build upgrades the file in place on start and must serve all of it.
//! The dir's TLS certificate and key were made by rcgen 0.13 (this build
//! has 0.14): connecting to the broker over them checks those too.

mod support;

use std::time::Duration;

use license_broker::value::PoolId;

use support::{org, start_in, start_with};

fn fixture_keys() -> (String, String, String) {
    let text = include_str!("fixtures/redb2-data-dir.keys");
    let key = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} key in the fixture"))
            .to_string()
    };
    (key("operator"), key("owner"), key("bob"))
}

/// Unpacks the fixture into a fresh temporary dir; returns it and the data dir.
fn unpack() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let archive = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/redb2-data-dir.tar.gz");
    let status = std::process::Command::new("tar").args(["xzf", archive, "-C"]).arg(dir.path()).status().unwrap();
    assert!(status.success(), "tar could not unpack {archive}");
    let data = dir.path().join("data");
    (dir, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_written_with_redb_2_opens_with_every_record() {
    let (operator, owner, bob) = fixture_keys();
    let (_holder, data) = unpack();
    let before = std::fs::read(data.join("broker.redb")).unwrap();
    // The fixture is what it claims: a redb file this redb cannot open as is.
    assert!(matches!(redb::Database::open(data.join("broker.redb")), Err(redb::DatabaseError::UpgradeRequired(_))));

    // Start on it: keep the dir (start_in takes a TempDir, so move the data into one).
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&data).unwrap() {
        let entry = entry.unwrap();
        std::fs::rename(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    // The fixture was written days ago: the operator restoring it confirms the time.
    let mut b = start_with(dir, Duration::from_secs(30), |o| o.allow_clock_leap = true).await;
    assert!(b.running.as_ref().unwrap().bootstrap.is_none(), "an existing data dir mints no new keys");
    b.operator = operator;
    b.owner = owner;
    assert_ne!(std::fs::read(b.dir.path().join("broker.redb")).unwrap(), before, "the file was upgraded in place");

    let op = b.operator().await;
    let pools = op.status(None).await.unwrap();
    let kse: PoolId = "kse-node-locked-annual".parse().unwrap();
    let quota = |p: PoolId| pools.iter().find(|s| s.pool == p).map(|s| (s.quota, s.admitted, s.offline));
    assert_eq!(quota(PoolId::KRE_DEFAULT), Some((5, 1, 0)), "KRE pool: quota and its admission counter");
    assert_eq!(quota(kse), Some((3, 0, 1)), "KSE pool: quota and the live offline license");

    let o = b.owner().await;
    let users: Vec<String> = o.list_users(&org()).await.unwrap().iter().map(|u| u.email.to_string()).collect();
    assert_eq!(users, ["alice@default", "bob@default", "owner@default"]);
    let machines = o.list_machines(&org()).await.unwrap();
    assert_eq!(machines.iter().map(|m| m.machine.as_str()).collect::<Vec<_>>(), ["ci-runner-1"]);
    let grants = o.list_grants(&org(), Some(kse)).await.unwrap();
    assert_eq!(grants.iter().map(|g| g.email.as_str()).collect::<Vec<_>>(), ["bob@default"]);
    let caps = o.user_limits(&org(), PoolId::KRE_DEFAULT).await.unwrap();
    assert_eq!(caps.iter().map(|c| (c.email.as_str(), c.max)).collect::<Vec<_>>(), [("bob@default", 2)]);
    assert_eq!(o.list_offline(&org()).await.unwrap().len(), 1);
    let actions: Vec<&str> = o.audit(&org()).await.unwrap().iter().map(|e| e.action.name()).collect();
    assert_eq!(
        actions,
        [
            "quota_changed",
            "quota_changed",
            "user_added",
            "user_added",
            "key_created",
            "granted",
            "user_limit_set",
            "offline_created"
        ]
    );

    // Keys made by the old broker still authenticate, and what is written
    // now lands in the upgraded file and survives a restart.
    let bob_client = b.client(&bob).await;
    assert_eq!(bob_client.welcome().email, "bob@default");
    o.add_user(&org(), "carol@default", license_broker::value::Role::User).await.unwrap();
    o.close().await;
    op.close().await;
    bob_client.close().await;
    b.stop().await;
    let dir = std::mem::replace(&mut b.dir, tempfile::tempdir().unwrap());
    let mut again = start_in(dir, Duration::from_secs(30)).await;
    again.owner = b.owner.clone();
    let users = again.owner().await.list_users(&org()).await.unwrap();
    assert!(users.iter().any(|u| u.email.as_str() == "carol@default"));
}
