//! Registry credentials: from the daemon's configuration and from `~/.docker/config.json`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::RegistryError;

/// How to authenticate to one registry. Bearer-token registries (Docker Hub, GHCR, …) are
/// reached with `Basic` credentials too: the token endpoint named in the registry's challenge
/// is asked for a token with them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Credentials {
    Basic {
        username: String,
        password: String,
    },
    /// A ready-made registry bearer token (e.g. from a CI system).
    Token {
        token: String,
    },
}

impl fmt::Debug for Credentials {
    // Never print secrets into logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Basic { username, .. } => {
                write!(f, "Basic({username}, <redacted>)")
            }
            Credentials::Token { .. } => write!(f, "Token(<redacted>)"),
        }
    }
}

/// Normalises the ways a registry is named in credential files (`https://index.docker.io/v1/`,
/// `http://host:5000`, `host:5000/`) to the host form a [`crate::Reference`] uses.
pub fn normalize_registry_host(key: &str) -> String {
    let s = key.trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or(s);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            crate::reference::DEFAULT_REGISTRY.to_string()
        }
        h => h.to_string(),
    }
}

/// `~/.docker/config.json` of the user running us, honouring `$DOCKER_CONFIG` like docker does.
pub fn default_docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

#[derive(Deserialize)]
struct DockerConfigFile {
    #[serde(default)]
    auths: HashMap<String, DockerAuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
}

#[derive(Deserialize)]
struct DockerAuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "registrytoken")]
    registry_token: Option<String>,
}

/// Reads the `auths` of a docker config file: host -> credentials. A missing file is no
/// credentials; a malformed one is an error naming the file and entry. Credential helpers are
/// not run (that would execute arbitrary programs from the daemon): they are reported with a
/// warning and ignored.
pub fn load_docker_config(path: &Path) -> Result<HashMap<String, Credentials>, RegistryError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => {
            return Err(RegistryError::DockerConfig {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        }
    };
    parse_docker_config(&text).map_err(|e| RegistryError::DockerConfig {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Why a docker config file's contents are unusable; each names the entry.
#[derive(Debug, thiserror::Error)]
pub enum DockerConfigError {
    #[error("{0}")]
    Json(#[source] serde_json::Error),
    #[error("auths.{key:?}.auth is not valid base64: {source}")]
    Base64 {
        key: String,
        #[source]
        source: base64::DecodeError,
    },
    #[error("auths.{key:?}.auth does not decode to UTF-8 text")]
    NotUtf8 { key: String },
    #[error("auths.{key:?}.auth does not decode to \"user:password\"")]
    NoColon { key: String },
}

fn parse_docker_config(text: &str) -> Result<HashMap<String, Credentials>, DockerConfigError> {
    let file: DockerConfigFile = serde_json::from_str(text).map_err(DockerConfigError::Json)?;
    if let Some(store) = &file.creds_store {
        tracing::warn!(
            creds_store = %store,
            "docker config names a credential store; credential helpers are not supported, ignoring it"
        );
    }
    for (host, helper) in &file.cred_helpers {
        tracing::warn!(%host, %helper, "docker config names a credential helper; not supported, ignoring it");
    }
    let mut out = HashMap::new();
    for (key, entry) in file.auths {
        let host = normalize_registry_host(&key);
        let creds = if let Some(token) = entry.registry_token.filter(|t| !t.is_empty()) {
            Credentials::Token { token }
        } else if let Some(auth) = entry.auth.filter(|a| !a.is_empty()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|source| DockerConfigError::Base64 {
                    key: key.clone(),
                    source,
                })?;
            let decoded = String::from_utf8(decoded)
                .map_err(|_| DockerConfigError::NotUtf8 { key: key.clone() })?;
            let Some((username, password)) = decoded.split_once(':') else {
                return Err(DockerConfigError::NoColon { key });
            };
            Credentials::Basic {
                username: username.to_string(),
                password: password.to_string(),
            }
        } else if let (Some(username), Some(password)) = (entry.username, entry.password) {
            Credentials::Basic { username, password }
        } else {
            // e.g. an entry kept only for a credential helper, or an identity token we cannot use.
            tracing::warn!(registry = %key, "docker config entry has no usable credentials, ignoring it");
            continue;
        };
        out.insert(host, creds);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_hosts() {
        assert_eq!(
            normalize_registry_host("https://index.docker.io/v1/"),
            "docker.io"
        );
        assert_eq!(
            normalize_registry_host("http://127.0.0.1:5000"),
            "127.0.0.1:5000"
        );
        assert_eq!(normalize_registry_host("quay.io/"), "quay.io");
    }

    #[test]
    fn parses_docker_config() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3:cret");
        let text = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{auth}"}},
                "127.0.0.1:5000": {{"username": "bob", "password": "pw"}},
                "ghcr.io": {{}}
            }}, "credsStore": "desktop", "credHelpers": {{"gcr.io": "gcloud"}}}}"#
        );
        let m = parse_docker_config(&text).unwrap();
        assert_eq!(
            m["docker.io"],
            Credentials::Basic {
                username: "alice".into(),
                password: "s3:cret".into()
            }
        );
        assert_eq!(
            m["127.0.0.1:5000"],
            Credentials::Basic {
                username: "bob".into(),
                password: "pw".into()
            }
        );
        assert!(!m.contains_key("ghcr.io"));
        assert!(!format!("{:?}", m["docker.io"]).contains("s3:cret"));
    }

    #[test]
    fn bad_docker_config_names_entry() {
        let err = parse_docker_config(r#"{"auths": {"h:1": {"auth": "!!!"}}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"h:1\""), "{err}");
        let no_colon = base64::engine::general_purpose::STANDARD.encode("nocolon");
        let err = parse_docker_config(&format!(
            r#"{{"auths": {{"h:1": {{"auth": "{no_colon}"}}}}}}"#
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("user:password"), "{err}");
        assert!(parse_docker_config("{").is_err());
    }

    #[test]
    fn missing_file_is_no_credentials() {
        let m = load_docker_config(Path::new("/nonexistent/zlayer/config.json")).unwrap();
        assert!(m.is_empty());
    }
}
