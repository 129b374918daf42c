//! The secrets every node of a cluster must share, kept in etcd and
//! copied into each node's data dir before it serves anything: the
//! session-token key (a runner re-attaches to whichever node took over
//! with the token another node signed), the offline-license signing key
//! (one public key verifies every node's licenses), the TLS ticket key
//! (resumption survives a failover), and the generated TLS certificate and
//! key unless the operator gives their own (clients trust one certificate).
//!
//! The first node to start publishes its own (generated on the spot if
//! missing); every later one adopts what etcd holds, overwriting its own.
//! etcd must therefore be reachable only by the brokers (docs/CLUSTER.md).

use std::path::Path;

use super::etcd::{Compare, Etcd, EtcdError, Op};
use super::store::Layout;
use crate::error::SetupError;

/// Copies each of `files` (paths inside `data_dir`) from etcd where it is
/// there, generates the missing ones with `generate`, then publishes them
/// all at once if none is there yet (create-if-absent, one transaction)
/// and otherwise adopts the cluster's.
pub async fn share(
    etcd: &Etcd,
    layout: &Layout,
    data_dir: &Path,
    files: &[&str],
    generate: impl FnOnce() -> Result<(), SetupError>,
) -> Result<(), SetupError> {
    let unreachable = |e: EtcdError| SetupError::Cluster(format!("sharing the cluster's secrets: {e}"));
    for file in files {
        let (kvs, _) = etcd.range(&layout.secret(file), false).await.map_err(unreachable)?;
        if let Some(kv) = kvs.first() {
            write(data_dir, file, &kv.value)?;
        }
    }
    generate()?;
    // All published in one transaction, or none: a certificate from one
    // node with the key of another would match nothing.
    let mut mine = Vec::with_capacity(files.len());
    for file in files {
        let path = data_dir.join(file);
        mine.push(std::fs::read(&path).map_err(SetupError::io(format!("reading {}", path.display())))?);
    }
    let keys: Vec<Vec<u8>> = files.iter().map(|f| layout.secret(f)).collect();
    let done = etcd
        .txn(
            &keys.iter().map(|k| Compare::CreateRevision(k.clone(), 0)).collect::<Vec<_>>(),
            &keys.iter().zip(&mine).map(|(k, v)| Op::Put(k.clone(), v.clone(), None)).collect::<Vec<_>>(),
            &keys.iter().map(|k| Op::Get(k.clone())).collect::<Vec<_>>(),
        )
        .await
        .map_err(unreachable)?;
    if !done.succeeded {
        for ((file, theirs), mine) in files.iter().zip(&done.reads).zip(&mine) {
            match theirs.first() {
                Some(kv) if &kv.value != mine => write(data_dir, file, &kv.value)?,
                Some(_) => {}
                None => {
                    return Err(SetupError::Cluster(format!(
                        "the cluster's secrets in etcd are incomplete ({file} is missing): restore them from a backup"
                    )))
                }
            }
        }
    }
    Ok(())
}

fn write(data_dir: &Path, file: &str, bytes: &[u8]) -> Result<(), SetupError> {
    let path = data_dir.join(file);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(SetupError::io(format!("creating {}", dir.display())))?;
    }
    crate::tls::write_private(&path, bytes)
}
