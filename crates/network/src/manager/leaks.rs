//! Cleanup after a crash: what a daemon finds on start that no live container needs
//! (sandboxes, namespaces, cached attachments, host-local address leases) is removed.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{NetworkManager, SANDBOX_IFNAME};
use crate::cni::Attachment;
use crate::error::{NetworkError, Result};
use crate::netns;
use crate::networks;
use crate::state::{self, SandboxRecord};

/// What [`NetworkManager::cleanup_leaks`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeakReport {
    pub sandboxes: Vec<String>,
    pub namespaces: Vec<String>,
    /// `network/ip` of addresses released from host-local's store without a sandbox record.
    pub addresses: Vec<String>,
    /// Problems met on the way (cleanup goes on after each).
    pub errors: Vec<String>,
}

impl NetworkManager {
    /// Remove every sandbox not in `live` (and not shared by a live one), every namespace file
    /// and cached attachment without a sandbox, and every host-local address held by a container
    /// id that is neither live nor a known sandbox. Call on daemon start with the ids of the
    /// sandboxes whose containers still exist.
    pub fn cleanup_leaks(&self, live: &HashSet<String>) -> Result<LeakReport> {
        let mut report = LeakReport::default();
        let (records, unreadable) = self.records_and_unreadable()?;
        // Their namespaces and attachments go below, like those of any unknown sandbox.
        for path in unreadable {
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
            if stem.is_some_and(|id| !live.contains(&id)) {
                state::remove_file(&path)?;
                report
                    .errors
                    .push(format!("removed unreadable record {}", path.display()));
            }
        }
        // Owners of live sharers stay too.
        let mut keep: BTreeSet<String> = live.iter().cloned().collect();
        for r in &records {
            if live.contains(&r.info.id) {
                if let Some(owner) = &r.info.shares_with {
                    keep.insert(owner.clone());
                }
            }
        }
        // Sharers first, then owners.
        let mut doomed: Vec<&SandboxRecord> = records
            .iter()
            .filter(|r| !keep.contains(&r.info.id))
            .collect();
        doomed.sort_by_key(|r| r.info.shares_with.is_none());
        for r in doomed {
            match self.teardown(&r.info) {
                Ok(()) => {
                    state::remove_file(&self.dirs.sandbox(&r.info.id))?;
                    report.sandboxes.push(r.info.id.clone());
                }
                Err(e) => report.errors.push(format!("sandbox {:?}: {e}", r.info.id)),
            }
        }
        // Cached attachments without a kept sandbox (crash between record removal and DEL, or
        // records lost).
        for net in state::subdirs(&self.dirs.results())? {
            for (id, path) in state::json_files(&self.dirs.results().join(&net))? {
                if keep.contains(&id) {
                    continue;
                }
                if let Err(e) = self.del_cached(&path)? {
                    report.errors.push(format!("attachment {net}/{id}: {e}"));
                }
            }
        }
        // Namespaces without a kept sandbox.
        for name in netns::list(&self.opts.netns_dir)? {
            if !keep.contains(&name) {
                netns::delete(&self.opts.netns_dir.join(&name))?;
                report.namespaces.push(name);
            }
        }
        self.release_orphan_addresses(&keep, &mut report)?;
        Ok(report)
    }

    /// host-local keeps one file per leased address (`<dataDir>/<network>/<ip>`, first line the
    /// container id). Leases of unknown containers are released with a CNI DEL of that network
    /// (without prevResult), which is how host-local frees by container id.
    fn release_orphan_addresses(
        &self,
        keep: &BTreeSet<String>,
        report: &mut LeakReport,
    ) -> Result<()> {
        let ipam = self.dirs.ipam();
        for net in state::subdirs(&ipam)? {
            let dir = ipam.join(&net);
            let entries = fs::read_dir(&dir).map_err(|e| NetworkError::io("listing", &dir, e))?;
            let mut orphans: BTreeSet<String> = BTreeSet::new();
            for entry in entries {
                let entry = entry.map_err(|e| NetworkError::io("listing", &dir, e))?;
                let fname = entry.file_name().to_string_lossy().to_string();
                if fname.parse::<IpAddr>().is_err() {
                    continue;
                }
                let content = fs::read_to_string(entry.path()).unwrap_or_default();
                let owner = content
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                if !owner.is_empty() && !keep.contains(&owner) {
                    orphans.insert(owner.clone());
                    report.addresses.push(format!("{net}/{fname}"));
                }
            }
            if orphans.is_empty() {
                continue;
            }
            let conf_path = networks::conflist_path(&self.opts.config_dir, &net);
            // Only host-local matters for releasing an address.
            let conflist: Option<serde_json::Value> = state::read_json(&conf_path)?
                .map(|c: serde_json::Value| networks::chain_for(&c, false));
            for owner in orphans {
                let released = match &conflist {
                    Some(conflist) => {
                        let att = Attachment {
                            container_id: owner.clone(),
                            netns: String::new(),
                            ifname: SANDBOX_IFNAME.to_string(),
                            port_mappings: Vec::new(),
                        };
                        self.cni
                            .del_list(conflist, &att, None)
                            .map_err(NetworkError::from)
                    }
                    None => Err(NetworkError::NetworkNotFound(net.clone())),
                };
                if let Err(e) = released {
                    report
                        .errors
                        .push(format!("address of {owner:?} on {net}: {e}"));
                }
            }
        }
        Ok(())
    }
}
