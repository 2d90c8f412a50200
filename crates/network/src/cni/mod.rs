//! Invoking CNI plugins per the CNI specification (1.0.0, with 0.4.0 as fallback).
//!
//! A plugin is an executable found by `type` in the plugin directories. The runtime passes the
//! operation in `CNI_*` environment variables and the network configuration as JSON on stdin; the
//! plugin answers with a result (ADD) or an error object on stdout. A network configuration *list*
//! (conflist) chains plugins: each ADD gets the previous plugin's result as `prevResult`; DEL runs
//! in reverse order with the cached ADD result.

mod exec;
mod result;

pub use exec::{CniError, CniInvoker, PluginFailure};
pub use result::{CniInterface, CniIpConfig, CniResult};

use serde_json::{json, Map, Value};

use crate::ports::PortMapping;

/// The CNI operations we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CniCommand {
    Add,
    Del,
    Check,
    Version,
}

impl CniCommand {
    pub fn as_str(self) -> &'static str {
        match self {
            CniCommand::Add => "ADD",
            CniCommand::Del => "DEL",
            CniCommand::Check => "CHECK",
            CniCommand::Version => "VERSION",
        }
    }
}

/// Per-attachment arguments: who is being attached where.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub container_id: String,
    /// Empty when the namespace is already gone (DEL during cleanup); the spec allows that.
    pub netns: String,
    pub ifname: String,
    pub port_mappings: Vec<PortMapping>,
}

impl Attachment {
    /// `runtimeConfig` for one plugin: only the capabilities that plugin declares (spec §
    /// "Dynamic plugin specific fields").
    fn runtime_config(&self, plugin: &Map<String, Value>) -> Option<Value> {
        let caps = plugin.get("capabilities")?.as_object()?;
        let mut rc = Map::new();
        if caps.get("portMappings").and_then(Value::as_bool) == Some(true) {
            let maps: Vec<Value> = self
                .port_mappings
                .iter()
                .map(|p| {
                    json!({
                        "hostPort": p.host_port,
                        "containerPort": p.container_port,
                        "protocol": p.protocol.as_str(),
                        "hostIP": p.host_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                    })
                })
                .collect();
            rc.insert("portMappings".into(), Value::Array(maps));
        }
        if rc.is_empty() {
            None
        } else {
            Some(Value::Object(rc))
        }
    }
}

/// Build the stdin JSON for one plugin of a conflist.
fn plugin_stdin(
    list_name: &str,
    cni_version: &str,
    plugin: &Map<String, Value>,
    attachment: &Attachment,
    prev_result: Option<&Value>,
) -> Value {
    let mut conf = plugin.clone();
    conf.insert("cniVersion".into(), Value::String(cni_version.to_string()));
    conf.insert("name".into(), Value::String(list_name.to_string()));
    if let Some(rc) = attachment.runtime_config(plugin) {
        conf.insert("runtimeConfig".into(), rc);
    }
    if let Some(prev) = prev_result {
        conf.insert("prevResult".into(), prev.clone());
    }
    Value::Object(conf)
}

/// The parsed parts of a conflist we need to run it.
struct ConfList<'a> {
    name: &'a str,
    version: &'a str,
    plugins: Vec<&'a Map<String, Value>>,
}

fn parse_conflist(conflist: &Value) -> Result<ConfList<'_>, CniError> {
    let bad = |reason: &str| CniError::BadConfig(reason.to_string());
    let name = conflist
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("conflist has no \"name\""))?;
    let version = conflist
        .get("cniVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("conflist has no \"cniVersion\""))?;
    let plugins = conflist
        .get("plugins")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("conflist has no \"plugins\" array"))?
        .iter()
        .map(|p| {
            p.as_object()
                .filter(|o| o.get("type").and_then(Value::as_str).is_some())
                .ok_or_else(|| bad("a plugin entry is not an object with a \"type\""))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ConfList {
        name,
        version,
        plugins,
    })
}

fn plugin_type(plugin: &Map<String, Value>) -> &str {
    plugin
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

impl CniInvoker {
    /// ADD the attachment to every plugin of the conflist in order; returns the final result.
    /// If a plugin fails, the chain is DEL'd (best effort) so no IP or rule is left behind.
    pub fn add_list(&self, conflist: &Value, att: &Attachment) -> Result<Value, CniError> {
        let _one_at_a_time = self.chain_lock();
        self.add_list_unlocked(conflist, att)
    }

    /// DEL the attachment from every plugin in reverse order. All plugins are called even if one
    /// fails (so the IPAM plugin still releases the address); the first error is returned.
    pub fn del_list(
        &self,
        conflist: &Value,
        att: &Attachment,
        cached: Option<&Value>,
    ) -> Result<(), CniError> {
        let _one_at_a_time = self.chain_lock();
        self.del_list_unlocked(conflist, att, cached)
    }

    /// CHECK every plugin in order against the cached ADD result.
    pub fn check_list(
        &self,
        conflist: &Value,
        att: &Attachment,
        cached: &Value,
    ) -> Result<(), CniError> {
        let _one_at_a_time = self.chain_lock();
        self.check_list_unlocked(conflist, att, cached)
    }

    fn add_list_unlocked(&self, conflist: &Value, att: &Attachment) -> Result<Value, CniError> {
        let list = parse_conflist(conflist)?;
        let mut prev: Option<Value> = None;
        for plugin in &list.plugins {
            let stdin = plugin_stdin(list.name, list.version, plugin, att, prev.as_ref());
            match self.exec(plugin_type(plugin), CniCommand::Add, att, list.name, &stdin) {
                Ok(Some(result)) => prev = Some(result),
                Ok(None) => {
                    return Err(CniError::BadResult {
                        plugin: plugin_type(plugin).to_string(),
                        reason: "ADD succeeded but printed no result".into(),
                    })
                }
                Err(err) => {
                    if let Err(del_err) = self.del_list_unlocked(conflist, att, prev.as_ref()) {
                        tracing::warn!(%del_err, "cleaning up after a failed CNI ADD");
                    }
                    return Err(err);
                }
            }
        }
        prev.ok_or_else(|| CniError::BadConfig("conflist has no plugins".into()))
    }

    fn del_list_unlocked(
        &self,
        conflist: &Value,
        att: &Attachment,
        cached: Option<&Value>,
    ) -> Result<(), CniError> {
        let list = parse_conflist(conflist)?;
        let mut first_err = None;
        for plugin in list.plugins.iter().rev() {
            let stdin = plugin_stdin(list.name, list.version, plugin, att, cached);
            if let Err(err) =
                self.exec(plugin_type(plugin), CniCommand::Del, att, list.name, &stdin)
            {
                tracing::warn!(%err, "CNI DEL");
                first_err.get_or_insert(err);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn check_list_unlocked(
        &self,
        conflist: &Value,
        att: &Attachment,
        cached: &Value,
    ) -> Result<(), CniError> {
        let list = parse_conflist(conflist)?;
        for plugin in &list.plugins {
            let stdin = plugin_stdin(list.name, list.version, plugin, att, Some(cached));
            match self.exec(
                plugin_type(plugin),
                CniCommand::Check,
                att,
                list.name,
                &stdin,
            ) {
                Err(CniError::Plugin(f)) if portmap_ipv6_check_bug(&f, cached) => {
                    tracing::debug!(msg = %f.msg, "ignoring portmap's IPv6 CHECK of an IPv4-only sandbox");
                }
                other => {
                    other?;
                }
            }
        }
        Ok(())
    }
}

/// portmap up to v1.1.x always checks its IPv6 DNAT chain on CHECK, even when the container has
/// no IPv6 address and ADD therefore made no IPv6 rules, so CHECK of every IPv4-only sandbox with
/// published ports fails (containernetworking/plugins#819, fixed in later releases; Debian 12
/// ships 1.1.1). Such a failure says nothing about the sandbox and is ignored.
fn portmap_ipv6_check_bug(failure: &PluginFailure, cached: &Value) -> bool {
    let has_ipv6 = cached
        .get("ips")
        .and_then(Value::as_array)
        .is_some_and(|ips| {
            ips.iter()
                .filter_map(|ip| ip.get("address").and_then(Value::as_str))
                .any(|a| a.contains(':'))
        });
    failure.plugin == "portmap" && failure.msg.contains("ipv6") && !has_ipv6
}
