//! Three etcd members on loopback (Debian's `etcd-server`, which the test
//! command installs), for the etcd client and cluster tests.
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

/// Three etcd members on loopback, killed on drop.
pub struct Cluster {
    pub members: Vec<Child>,
    pub clients: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            let _ = m.kill();
            let _ = m.wait();
        }
    }
}

pub fn port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn start_cluster() -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (port(), port())).collect();
    let initial: Vec<String> =
        ports.iter().enumerate().map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}")).collect();
    let mut members = Vec::new();
    for (i, (client, peer)) in ports.iter().enumerate() {
        let child = Command::new("etcd")
            .args(["--name", &format!("m{i}")])
            .arg("--data-dir")
            .arg(dir.path().join(format!("m{i}")))
            .args(["--listen-client-urls", &format!("http://127.0.0.1:{client}")])
            .args(["--advertise-client-urls", &format!("http://127.0.0.1:{client}")])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-state", "new", "--initial-cluster-token", "lb-test"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "etcd is not installed: the test command installs Debian's etcd-server (apt-get install etcd-server)",
            );
        members.push(child);
    }
    let clients = ports.iter().map(|(c, _)| format!("http://127.0.0.1:{c}")).collect();
    Cluster { members, clients, _dir: dir }
}
