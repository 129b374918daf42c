//! A one-thread runtime that runs etcd's async calls for the store's
//! synchronous callers, so a blocking caller never waits on the runtime
//! that called it. Apart from the store because it knows nothing of
//! records: only how to wait for a future from a blocking thread.

use crate::store::StoreError;

/// A one-thread runtime that runs etcd calls for synchronous callers.
pub(super) struct Bridge {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Bridge {
    pub(super) fn new() -> std::io::Result<Bridge> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("etcd-store")
            .enable_all()
            .build()?;
        Ok(Bridge { runtime: Some(runtime) })
    }

    /// Runs `f` on the bridge's runtime and waits for it.
    pub(super) fn run<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let Some(runtime) = &self.runtime else {
            return Err(StoreError::Backend("the etcd store is closed".into()));
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        runtime.spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv().unwrap_or_else(|_| Err(StoreError::Backend("the etcd store's runtime stopped".into())))
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        // Not `drop(runtime)`: that blocks, and may run inside an async task.
        if let Some(r) = self.runtime.take() {
            r.shutdown_background();
        }
    }
}
