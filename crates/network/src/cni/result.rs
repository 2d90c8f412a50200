//! Typed view of a CNI ADD result (spec 1.0.0 "Success"; 0.4.0 differs only by an extra
//! `version` field per IP, which we ignore).

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::CniError;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CniResult {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default)]
    pub interfaces: Vec<CniInterface>,
    #[serde(default)]
    pub ips: Vec<CniIpConfig>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CniInterface {
    pub name: String,
    #[serde(default)]
    pub mac: String,
    /// Set for interfaces inside the container's namespace.
    #[serde(default)]
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CniIpConfig {
    /// CIDR notation: the address and its prefix, e.g. `10.210.0.2/16`.
    pub address: IpNet,
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default)]
    pub interface: Option<usize>,
}

impl CniResult {
    pub fn parse(plugin: &str, value: &Value) -> Result<Self, CniError> {
        serde_json::from_value(value.clone()).map_err(|e| CniError::BadResult {
            plugin: plugin.to_string(),
            reason: format!("{e}: {value}"),
        })
    }

    /// Addresses assigned to interfaces inside the sandbox (or all, if the plugin did not say
    /// which interface an address belongs to).
    pub fn sandbox_ips(&self) -> Vec<&CniIpConfig> {
        self.ips
            .iter()
            .filter(
                |ip| match ip.interface.and_then(|i| self.interfaces.get(i)) {
                    Some(iface) => iface.sandbox.as_deref().is_some_and(|s| !s.is_empty()),
                    None => true,
                },
            )
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bridge_result_and_picks_sandbox_ips() {
        let v: Value = serde_json::from_str(
            r#"{"cniVersion":"1.0.0","interfaces":[{"name":"zl0","mac":"aa"},{"name":"veth1","mac":"bb"},
            {"name":"eth0","mac":"cc","sandbox":"/run/x"}],"ips":[{"interface":2,"address":"10.210.0.2/16",
            "gateway":"10.210.0.1"}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{}}"#,
        )
        .unwrap();
        let r = CniResult::parse("bridge", &v).unwrap();
        let ips = r.sandbox_ips();
        assert_eq!(ips.len(), 1);
        assert_eq!(ips[0].address.to_string(), "10.210.0.2/16");
        assert_eq!(ips[0].gateway.unwrap().to_string(), "10.210.0.1");
    }

    #[test]
    fn bad_result_names_the_plugin() {
        let v: Value = serde_json::from_str(r#"{"ips":[{"address":"not-an-ip"}]}"#).unwrap();
        let err = CniResult::parse("bridge", &v).unwrap_err().to_string();
        assert!(err.contains("bridge"), "{err}");
    }
}
