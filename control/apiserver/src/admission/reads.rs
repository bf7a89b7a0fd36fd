//! How admission reads what it decides by (a namespace's LimitRanges and
//! ResourceQuotas, the objects a quota counts).
//!
//! A create is first admitted from this replica's applied state (no
//! read-index round through Raft) and written with a [`Guard`] per prefix
//! read: the write commits only if each prefix still holds exactly what
//! was read, so the decision is one a linearizable read at commit time
//! would have made. When a guard fails (this replica lagged, or something
//! changed meanwhile), admission runs again from linearizable reads, as it
//! did before guards existed. A refusal is never decided from a local
//! read alone: it is confirmed linearizably first, so a lagging replica
//! cannot refuse what the cluster would admit.

use crate::status::ApiResult;
use crate::storage::{Guard, Objects, Page};

/// Which state admission reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// This replica's applied state; the write must carry the guards.
    Local,
    /// A linearizable read (a read-index round).
    Linearizable,
}

/// Every object under `prefix`, read as `reads` says, with its guard.
pub async fn list(objects: &Objects, prefix: &str, reads: Reads) -> ApiResult<(Page, Guard)> {
    let page = match reads {
        Reads::Local => objects.list_local_page(prefix).await?,
        Reads::Linearizable => objects.list(prefix, None, 0, 0).await?,
    };
    let guard = Guard::of(prefix, &page);
    Ok((page, guard))
}

/// Whether each of `guards` still reads the same keys at the same mod
/// revisions, read linearizably; on Ok(true) each guard's revision is
/// moved to that read (the guard then also holds for it), so a retry is
/// not failed again by the revision of a stale read.
pub async fn still_hold(objects: &Objects, guards: &mut [Guard]) -> ApiResult<bool> {
    for g in guards.iter_mut() {
        let (_, now) = list(objects, &g.prefix, Reads::Linearizable).await?;
        if !g.same_keys(&now) {
            return Ok(false);
        }
        g.revision = now.revision;
    }
    Ok(true)
}
