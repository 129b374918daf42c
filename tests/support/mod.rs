//! What the integration tests share: a real broker on 127.0.0.1 (port 0)
//! with a temporary data dir, clients for it, and (`http`) the one HTTP
//! client for its web door. Tests that run the built binary instead find it
//! in `tests/process`.
#![allow(dead_code)] // each test crate uses its own subset

pub mod http;
pub mod receiver;

use std::path::PathBuf;
use std::time::Duration;

use license_broker::client::{Client, ClientOptions};
use license_broker::server::{self, Options, Running};
use license_broker::value::{MachineId, OrgName, PoolId};

pub struct TestBroker {
    pub running: Option<Running>,
    pub dir: tempfile::TempDir,
    pub server: String,
    pub ca: PathBuf,
    pub operator: String,
    pub owner: String,
}

pub fn org() -> OrgName {
    OrgName::new("default").unwrap()
}

pub fn machine(s: &str) -> MachineId {
    MachineId::new(s).unwrap()
}

pub const POOL: PoolId = PoolId::KRE_DEFAULT;

pub async fn start(lease_ttl: Duration) -> TestBroker {
    let dir = tempfile::tempdir().unwrap();
    start_in(dir, lease_ttl).await
}

pub async fn start_in(dir: tempfile::TempDir, lease_ttl: Duration) -> TestBroker {
    start_with(dir, lease_ttl, |_| {}).await
}

/// A broker whose options `tune` adjusts first.
pub async fn start_with(dir: tempfile::TempDir, lease_ttl: Duration, tune: impl FnOnce(&mut Options)) -> TestBroker {
    let mut opts = Options::new(dir.path().to_path_buf(), "127.0.0.1:0".parse().unwrap());
    opts.lease_ttl = lease_ttl;
    opts.drain_grace = Duration::from_millis(50);
    tune(&mut opts);
    let running = server::start(opts).await.unwrap();
    let keys = running.bootstrap.clone();
    let server = running.local_addr().to_string();
    let ca = running.cert_path.clone();
    let (operator, owner) = keys.map(|k| (k.operator, k.owner)).unwrap_or_default();
    TestBroker { running: Some(running), dir, server, ca, operator, owner }
}

impl TestBroker {
    pub fn options(&self, key: &str) -> ClientOptions {
        ClientOptions::new(self.server.clone(), Some(self.ca.clone()), key)
    }

    pub async fn client(&self, key: &str) -> Client {
        Client::connect(&self.options(key)).await.unwrap()
    }

    /// The broker's web door (TLS trusting its certificate, unless plain).
    pub fn web(&self) -> http::Web {
        let running = self.running.as_ref().expect("running");
        let addr = running.http_addr().expect("the web door is on (Options::http)");
        match running.http_url().is_some_and(|u| u.starts_with("https:")) {
            true => http::Web::tls(addr, &self.ca),
            false => http::Web::plain(addr),
        }
    }

    pub async fn operator(&self) -> Client {
        self.client(&self.operator).await
    }

    pub async fn owner(&self) -> Client {
        self.client(&self.owner).await
    }

    /// Sets the default org's KRE quota.
    pub async fn quota(&self, quota: u32) {
        let op = self.operator().await;
        op.set_pool(&org(), POOL, quota).await.unwrap();
        op.close().await;
    }

    /// Stops the broker, keeping the data dir.
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}
