//! `pool set --queue-alert`, `--busy-alert`: a pool's alerts (docs/EVENTS.md),
//! one `SetPoolAlerts` request (protocol version 5), set whole: a flag not
//! given is off. The busy alert is a whole number of minutes.

use std::time::Duration;

use anyhow::Result;
use license_broker::client::Client;
use license_broker::value::{OrgName, PoolId};

/// Sets `org`/`pool`'s alerts and says what they are now.
pub async fn set(
    c: &Client,
    org: &OrgName,
    pool: PoolId,
    queue: Option<Duration>,
    busy: Option<Duration>,
) -> Result<()> {
    let minutes = busy.map(whole_minutes).transpose()?;
    c.set_pool_alerts(org, pool, queue, minutes).await?;
    let shown = |d: Option<Duration>| d.map_or("off".to_string(), |d| humantime::format_duration(d).to_string());
    println!("pool {org}/{pool}: queue alert {}, busy alert {}", shown(queue), shown(busy));
    Ok(())
}

/// `d` in whole minutes, at least one.
fn whole_minutes(d: Duration) -> Result<u32> {
    let secs = d.as_secs();
    if secs < 60 || !secs.is_multiple_of(60) || d.subsec_nanos() != 0 {
        anyhow::bail!("--busy-alert takes whole minutes (e.g. 10m), not {}", humantime::format_duration(d));
    }
    u32::try_from(secs / 60).map_err(|_| anyhow::anyhow!("--busy-alert is too long"))
}
