//! The history's task: harvests the core at every minute boundary, writes
//! ended sessions every second and prunes once an hour, each write on a
//! blocking thread. Apart from `History` because the rows and queries
//! work without a runtime (tests and tools use them so); only this needs one.

use std::sync::Arc;
use std::time::Duration;

use super::{History, SESSIONS_PER_SECOND};
use crate::core::usage::minute_of;
use crate::core::Ended;

/// The history's task: harvests the core at every minute boundary and
/// writes the rows, writes ended sessions every second, prunes once an
/// hour, until `stop` fires.
pub(crate) async fn run(
    core: Arc<crate::core::Broker>,
    clock: crate::clock::Clock,
    history: Arc<History>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let shared = Source { core, clock };
    let Some(mut rx) = history.take_receiver() else { return };
    // The first harvest seeds the extremes and the refusal counts.
    harvest(&shared, &history, Vec::new()).await;
    let mut pruned_hour = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => {
                // Sessions ended while draining are kept (the minute in
                // progress is not: see the module docs).
                write_sessions(&history, drain(&mut rx, usize::MAX), " at shutdown").await;
                return;
            }
        }
        let sessions = drain(&mut rx, SESSIONS_PER_SECOND);
        let now = shared.clock.now();
        let due = history.state.lock().harvested_to.is_none_or(|to| minute_of(now) > to);
        if due {
            harvest(&shared, &history, sessions).await;
            let hour = minute_of(now) / 60;
            if pruned_hour != Some(hour) {
                pruned_hour = Some(hour);
                prune(&shared, &history).await;
            }
        } else if !sessions.is_empty() {
            write_sessions(&history, sessions, "").await;
        }
    }
}

/// Up to `most` ended sessions waiting in the channel, without waiting.
fn drain(rx: &mut tokio::sync::mpsc::Receiver<Ended>, most: usize) -> Vec<Ended> {
    let mut sessions = Vec::new();
    while sessions.len() < most {
        match rx.try_recv() {
            Ok(e) => sessions.push(e),
            Err(_) => break,
        }
    }
    sessions
}

/// Writes ended sessions on a blocking thread; a failure is logged
/// (`when` says which write it was).
async fn write_sessions(history: &Arc<History>, sessions: Vec<Ended>, when: &str) {
    let h = history.clone();
    match tokio::task::spawn_blocking(move || h.record_sessions(sessions)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("ended sessions not written{when}: {e}"),
        Err(e) => tracing::warn!("ended sessions not written{when}: {e}"),
    }
}

/// What the history's task reads: the core it harvests, and the clock.
#[derive(Clone)]
struct Source {
    core: Arc<crate::core::Broker>,
    clock: crate::clock::Clock,
}

async fn harvest(shared: &Source, history: &Arc<History>, sessions: Vec<Ended>) {
    let (s, h) = (shared.clone(), history.clone());
    let done = tokio::task::spawn_blocking(move || {
        let now = s.clock.now();
        let harvest = s.core.harvest(now);
        h.record(harvest, now, sessions, true)
    });
    match done.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("history not written: {e}"),
        Err(e) => tracing::warn!("history not written: {e}"),
    }
}

async fn prune(shared: &Source, history: &Arc<History>) {
    let (s, h) = (shared.clone(), history.clone());
    let done = tokio::task::spawn_blocking(move || {
        let (pools, _) = s.core.census();
        let pools: Vec<(String, String)> = pools.iter().map(|p| (p.org.to_string(), p.pool.to_string())).collect();
        h.prune(s.clock.now(), &pools)
    });
    if let Ok(Err(e)) = done.await {
        tracing::warn!("history not pruned: {e}");
    }
}
