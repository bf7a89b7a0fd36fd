//! Image garbage collection, as the kubelet does it: when usage goes above
//! `high_threshold_percent`, remove unused images, least recently used
//! first, until usage is at most `low_threshold_percent`. Images with a
//! lease (see [`super::leases`]) are never removed.
//!
//! Usage is that of the filesystem holding the store, or — with
//! `capacity_bytes` — the store's own size against that budget.

use std::collections::BTreeMap;

use super::digest::Digest;
use super::store::{Store, StoreLock};
use super::{ImageError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcPolicy {
    pub high_threshold_percent: u8,
    pub low_threshold_percent: u8,
    /// A byte budget for the store; `None` measures the whole filesystem.
    pub capacity_bytes: Option<u64>,
}

impl Default for GcPolicy {
    /// The kubelet's defaults: 85 % / 80 % of the disk.
    fn default() -> Self {
        GcPolicy {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
            capacity_bytes: None,
        }
    }
}

impl GcPolicy {
    /// Refuses thresholds that cannot work (low above high, above 100).
    pub fn validate(&self) -> Result<()> {
        if self.high_threshold_percent > 100
            || self.low_threshold_percent > self.high_threshold_percent
        {
            return Err(ImageError::Invalid(format!(
                "image GC thresholds: need low ({}) <= high ({}) <= 100",
                self.low_threshold_percent, self.high_threshold_percent
            )));
        }
        Ok(())
    }
}

/// (used, capacity) in bytes under `policy`.
pub fn usage(store: &Store, policy: &GcPolicy) -> Result<(u64, u64)> {
    if let Some(cap) = policy.capacity_bytes {
        let mut used = 0;
        for d in store.installed()? {
            used += store.record(&d)?.size_bytes;
        }
        return Ok((used, cap));
    }
    let path = std::ffi::CString::new(store.root().as_os_str().as_encoded_bytes())
        .map_err(|_| ImageError::Invalid("store path contains NUL".into()))?;
    // SAFETY: statvfs writes into the zeroed struct we own; path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return Err(ImageError::io(
            "statvfs image store",
            std::io::Error::last_os_error(),
        ));
    }
    let frsize = st.f_frsize as u64;
    let total = st.f_blocks as u64 * frsize;
    let free = st.f_bfree as u64 * frsize;
    Ok((total.saturating_sub(free), total))
}

/// Runs one collection; returns the digests removed. `users` maps digests
/// in use to their users (see [`super::leases::in_use`]), read under `lock`.
pub fn collect(
    store: &Store,
    lock: &StoreLock,
    policy: &GcPolicy,
    users: &BTreeMap<String, Vec<String>>,
) -> Result<Vec<Digest>> {
    policy.validate()?;
    let (used, capacity) = usage(store, policy)?;
    let high = capacity as u128 * policy.high_threshold_percent as u128 / 100;
    if (used as u128) <= high {
        return Ok(Vec::new());
    }
    let low = (capacity as u128 * policy.low_threshold_percent as u128 / 100) as u64;
    let mut need = used.saturating_sub(low);
    let mut candidates: Vec<(std::time::SystemTime, Digest, u64)> = Vec::new();
    for d in store.installed()? {
        if users.contains_key(d.as_str()) {
            continue;
        }
        let size = store.record(&d)?.size_bytes;
        candidates.push((store.last_used(&d), d, size));
    }
    candidates.sort();
    let mut removed = Vec::new();
    for (_, d, size) in candidates {
        if need == 0 {
            break;
        }
        need = need.saturating_sub(size);
        removed.push(d);
    }
    store.delete_images(lock, &removed)?;
    Ok(removed)
}
