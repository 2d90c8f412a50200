//! Resolving docker's `-u user[:group]` against the image's `/etc/passwd` and `/etc/group`.
//!
//! The lookup reads the files of the container's rootfs (confined with `RESOLVE_IN_ROOT`),
//! never the host's, because names mean whatever the image says they mean.

use std::path::Path;

use super::validate::{numeric_id, InvalidOption, MAX_ID};
use crate::safe_path::{read_in_root, MAX_ROOTFS_FILE};

/// A resolved process identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: every group of /etc/group listing the user by name.
    pub additional_gids: Vec<u32>,
    /// Home directory from /etc/passwd (docker sets HOME from it), `/` when unknown.
    pub home: String,
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("unable to find user {0}: no matching entries in the image's /etc/passwd")]
    UnknownUser(String),
    #[error("unable to find group {0}: no matching entries in the image's /etc/group")]
    UnknownGroup(String),
    #[error("invalid user specification {0:?}: expected NAME|UID[:GROUP|GID]")]
    Invalid(String),
    /// A numeric id outside 0..=2^31-1 (`(uid_t)-1` would mean "unchanged", i.e. root).
    #[error(transparent)]
    OutOfRange(InvalidOption),
    #[error("reading the image's {path}: {source}")]
    Io {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].trim().parse().ok().filter(|id| *id <= MAX_ID)?,
                gid: f[3].trim().parse().ok().filter(|id| *id <= MAX_ID)?,
                home: f.get(5).map(|s| s.to_string()).unwrap_or_default(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].trim().parse().ok().filter(|id| *id <= MAX_ID)?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(|s| s.trim().to_string())
                            .filter(|s| !s.is_empty())
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

fn read_text(rootfs: &Path, path: &'static str) -> Result<String, UserError> {
    match read_in_root(rootfs, Path::new(path), MAX_ROOTFS_FILE) {
        Ok(Some(b)) => Ok(String::from_utf8_lossy(&b).into_owned()),
        Ok(None) => Ok(String::new()),
        Err(source) => Err(UserError::Io { path, source }),
    }
}

/// Resolves `spec` (`""`, `name`, `uid`, `name:group`, `uid:gid`, ...) inside `rootfs`.
pub fn resolve_user(rootfs: &Path, spec: &str) -> Result<ResolvedUser, UserError> {
    ImageUsers::read(rootfs)?.resolve(spec)
}

/// The image's user database: the text of its `/etc/passwd` and `/etc/group` (empty when
/// a file is missing). Read once by [`ImageUsers::read`]; resolving is pure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageUsers {
    pub passwd: String,
    pub group: String,
}

impl ImageUsers {
    /// Reads both files of `rootfs`, confined to it.
    pub fn read(rootfs: &Path) -> Result<ImageUsers, UserError> {
        Ok(ImageUsers {
            passwd: read_text(rootfs, "/etc/passwd")?,
            group: read_text(rootfs, "/etc/group")?,
        })
    }

    /// Resolves `spec` (`""`, `name`, `uid`, `name:group`, `uid:gid`, ...) against them.
    pub fn resolve(&self, spec: &str) -> Result<ResolvedUser, UserError> {
        resolve_in(&parse_passwd(&self.passwd), &parse_group(&self.group), spec)
    }
}

fn resolve_in(
    passwd: &[PasswdEntry],
    groups: &[GroupEntry],
    spec: &str,
) -> Result<ResolvedUser, UserError> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if group_part.is_some_and(|g| g.is_empty() || g.contains(':')) {
        return Err(UserError::Invalid(spec.to_string()));
    }
    let user_part = if user_part.is_empty() { "0" } else { user_part };

    let (uid, mut gid, name, home) = match numeric_id(user_part) {
        Some(Err(e)) => return Err(UserError::OutOfRange(e)),
        Some(Ok(uid)) => match passwd.iter().find(|p| p.uid == uid) {
            Some(p) => (uid, p.gid, Some(p.name.clone()), p.home.clone()),
            None => (uid, 0, None, "/".to_string()),
        },
        None => {
            if user_part.chars().any(|c| c.is_whitespace() || c == '/') {
                return Err(UserError::Invalid(spec.to_string()));
            }
            let p = passwd
                .iter()
                .find(|p| p.name == user_part)
                .ok_or_else(|| UserError::UnknownUser(user_part.to_string()))?;
            (p.uid, p.gid, Some(p.name.clone()), p.home.clone())
        }
    };

    if let Some(g) = group_part {
        gid = match numeric_id(g) {
            Some(Err(e)) => return Err(UserError::OutOfRange(e)),
            Some(Ok(gid)) => gid,
            None => {
                groups
                    .iter()
                    .find(|e| e.name == g)
                    .ok_or_else(|| UserError::UnknownGroup(g.to_string()))?
                    .gid
            }
        };
    }

    let mut additional_gids = Vec::new();
    // docker: an explicit group replaces the supplementary set only for that group; the
    // user's memberships from /etc/group still apply (runc's GetExecUser does the same).
    if let Some(name) = &name {
        for g in groups {
            if g.members.iter().any(|m| m == name) && !additional_gids.contains(&g.gid) {
                additional_gids.push(g.gid);
            }
        }
    }
    let home = if home.is_empty() {
        "/".to_string()
    } else {
        home
    };
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        daemon:x:1:1:daemon:/usr/sbin:/bin/false\n\
        app:x:1000:1000:App:/home/app:/bin/sh\n\
        broken line\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:app,root\naudio:x:29:app\napp:x:1000:\n";

    fn res(spec: &str) -> Result<ResolvedUser, UserError> {
        resolve_in(&parse_passwd(PASSWD), &parse_group(GROUP), spec)
    }

    #[test]
    fn default_is_root_with_its_groups() {
        let u = res("").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (0, 0, "/root"));
        assert_eq!(u.additional_gids, vec![10]);
    }

    #[test]
    fn name_gives_uid_gid_and_supplementary_groups() {
        let u = res("app").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.additional_gids, vec![10, 29]);
        assert_eq!(u.home, "/home/app");
    }

    #[test]
    fn numeric_uid_known_and_unknown() {
        assert_eq!(res("1000").unwrap().gid, 1000);
        let u = res("4242").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 0, "/"));
        assert!(u.additional_gids.is_empty());
    }

    #[test]
    fn explicit_group_by_name_or_id() {
        assert_eq!(res("app:audio").unwrap().gid, 29);
        assert_eq!(res("1000:5").unwrap().gid, 5);
        assert_eq!(res("4242:4343").unwrap().gid, 4343);
    }

    #[test]
    fn unknown_names_are_clear_errors() {
        let e = res("nobody").unwrap_err().to_string();
        assert!(e.contains("unable to find user nobody"), "{e}");
        let e = res("app:nogroup").unwrap_err().to_string();
        assert!(e.contains("unable to find group nogroup"), "{e}");
        assert!(matches!(res("app:"), Err(UserError::Invalid(_))));
    }

    #[test]
    fn ids_outside_docker_range_are_errors_not_root() {
        for spec in ["4294967295", "-1", "0:4294967295", "app:-5", "2147483648"] {
            let e = res(spec).unwrap_err();
            assert!(matches!(e, UserError::OutOfRange(_)), "{spec}: {e}");
            assert!(e.to_string().contains("0-2147483647"), "{spec}: {e}");
        }
        assert_eq!(res("2147483647").unwrap().uid, 2147483647);
    }
}
