//! `cp`: files between a container and the host, with docker's path rules applied here, on
//! the client, as docker's CLI does: the daemon archives one path (`GET .../archive`) or
//! unpacks a tar into one existing directory (`PUT .../archive`); which directory, and under
//! what name the copied file or directory lands there, is decided below.
//!
//! The rules (docker's): a file copied to an existing directory lands inside it under its own
//! name, to anything else it becomes DEST (the parent must exist, a trailing `/` demands an
//! existing directory); a directory copied to an existing directory lands inside it, unless
//! SRC ends in `/.`, whose contents are copied instead; a directory copied to a missing DEST
//! becomes DEST; a directory never replaces a file. `-` is a tar on stdout / stdin.

use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use clap::Args;
use hyper::body::Body as _;
use tokio::sync::mpsc;
use zlayer_agent::chunk_io::{ChunkReader, ChunkWriter};
use zlayer_agent::containers::{CopyResult, PathStat};
use zlayer_api::client::{encode_query, ClientError};
use zlayer_api::Client;

use super::CmdResult;

/// Chunks in flight between the tar reader/writer thread and the connection.
const CHUNKS: usize = 16;

#[derive(Args, Debug)]
pub struct CpArgs {
    /// Archive mode: keep the files' uid/gid when copying into a container.
    #[arg(short = 'a', long)]
    pub archive: bool,
    /// Always follow a symlink given as SRC_PATH.
    #[arg(short = 'L', long = "follow-link")]
    pub follow_link: bool,
    /// Print nothing but errors (cp prints no progress; accepted as docker does).
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// CONTAINER:SRC_PATH, a host path, or `-` (a tar on stdin).
    pub src: String,
    /// CONTAINER:DEST_PATH, a host path, or `-` (a tar on stdout).
    pub dest: String,
}

/// One side of a copy.
#[derive(Debug, PartialEq, Eq)]
enum Endpoint {
    Container { container: String, path: String },
    Local(String),
}

/// `CONTAINER:PATH` or a local path, as docker tells them apart: a local path is `-`, starts
/// with `/` or `.`, or has a `/` before its first `:`.
fn endpoint(arg: &str) -> Endpoint {
    if arg == "-" || arg.starts_with('/') || arg.starts_with('.') {
        return Endpoint::Local(arg.to_string());
    }
    match arg.split_once(':') {
        Some((c, p)) if !c.is_empty() && !c.contains('/') => Endpoint::Container {
            container: c.to_string(),
            // Inside the container a relative path is relative to its `/`.
            path: if p.starts_with('/') {
                p.to_string()
            } else {
                format!("/{p}")
            },
        },
        _ => Endpoint::Local(arg.to_string()),
    }
}

/// Where the copied tree goes: unpacked into `dir`, its top entry renamed to `top` (empty: the
/// top entry is dropped and its contents land in `dir` itself).
#[derive(Debug, PartialEq, Eq)]
struct Placement {
    dir: String,
    top: String,
}

/// What the destination is, as far as the rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dest {
    Missing,
    Dir,
    NotDir,
}

fn ends_with_dot(p: &str) -> bool {
    p == "." || p.ends_with("/.")
}

fn ends_with_sep(p: &str) -> bool {
    p.ends_with('/') || ends_with_dot(p)
}

/// The last component of `p` ignoring trailing `/` and `/.`; empty for `/`.
fn base_name(p: &str) -> String {
    Path::new(p)
        .components()
        .rfind(|c| !matches!(c, Component::CurDir))
        .and_then(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            _ => None,
        })
        .unwrap_or_default()
}

/// The parent of `p` (`.` or `/` when it has none).
fn parent_of(p: &str) -> String {
    let trimmed = p.trim_end_matches('/');
    match Path::new(trimmed).parent() {
        Some(pp) if pp.as_os_str().is_empty() => ".".to_string(),
        Some(pp) => pp.to_string_lossy().into_owned(),
        None => "/".to_string(),
    }
}

/// docker's rules: where SRC (a directory or not; `src` as the user typed it) goes for `dest`.
fn place(src: &str, src_is_dir: bool, dest: &str, dest_is: Dest) -> anyhow::Result<Placement> {
    let src_name = base_name(src);
    match dest_is {
        Dest::Dir => Ok(Placement {
            dir: dest.to_string(),
            top: if src_is_dir && (ends_with_dot(src) || src_name.is_empty()) {
                String::new()
            } else {
                src_name
            },
        }),
        Dest::NotDir if src_is_dir => {
            bail!("cannot overwrite non-directory {dest:?} with directory {src:?}")
        }
        Dest::NotDir if ends_with_sep(dest) => bail!("not a directory: {dest:?}"),
        Dest::Missing if !src_is_dir && ends_with_sep(dest) => {
            bail!("no such directory: {dest:?} (a file is copied into an existing directory only)")
        }
        Dest::NotDir | Dest::Missing => {
            let name = base_name(dest);
            if name.is_empty() {
                bail!("invalid destination {dest:?}");
            }
            Ok(Placement {
                dir: parent_of(dest),
                top: name,
            })
        }
    }
}

/// The entry `name` (as archived: top component first) renamed for `top`; `None` for the top
/// entry itself when only its contents are copied. Only plain names are accepted.
fn rebase(name: &Path, top: &str) -> anyhow::Result<Option<PathBuf>> {
    let mut parts = Vec::new();
    for c in name.components() {
        match c {
            Component::Normal(n) => parts.push(n),
            Component::CurDir => {}
            _ => bail!("refusing archive entry {:?}", name.display()),
        }
    }
    // The top entry ("name" or "." for a root) and the rest below it.
    let rest: PathBuf = if name
        .components()
        .next()
        .is_some_and(|c| matches!(c, Component::CurDir))
    {
        parts.iter().collect()
    } else {
        parts.iter().skip(1).collect()
    };
    if top.is_empty() {
        return Ok((!rest.as_os_str().is_empty()).then_some(rest));
    }
    if rest.as_os_str().is_empty() {
        // Not `join("")`, which would add a trailing `/`.
        return Ok(Some(PathBuf::from(top)));
    }
    Ok(Some(Path::new(top).join(rest)))
}

fn local_dest(p: &str) -> Dest {
    match std::fs::metadata(p) {
        Ok(m) if m.is_dir() => Dest::Dir,
        Ok(_) => Dest::NotDir,
        Err(_) => Dest::Missing,
    }
}

/// docker exits 1 for every failed `cp`: the error is kept as text, not as an API error.
fn plain(e: ClientError) -> anyhow::Error {
    anyhow!("{e}")
}

pub async fn cp(client: &Client, args: CpArgs) -> CmdResult {
    match (endpoint(&args.src), endpoint(&args.dest)) {
        (Endpoint::Container { container, path }, Endpoint::Local(dest)) => {
            copy_from(client, &container, &path, &dest, &args).await
        }
        (Endpoint::Local(src), Endpoint::Container { container, path }) => {
            copy_to(client, &src, &container, &path, &args).await
        }
        (Endpoint::Container { .. }, Endpoint::Container { .. }) => {
            bail!("copying between containers is not supported")
        }
        (Endpoint::Local(_), Endpoint::Local(_)) => {
            bail!("must specify at least one container source (CONTAINER:PATH)")
        }
    }?;
    Ok(ExitCode::SUCCESS)
}

/// `cp CONTAINER:SRC DEST`.
async fn copy_from(
    client: &Client,
    container: &str,
    src: &str,
    dest: &str,
    args: &CpArgs,
) -> anyhow::Result<()> {
    let url = format!(
        "/v1/containers/{}/archive?path={}&follow_link={}",
        encode_query(container),
        encode_query(src),
        args.follow_link
    );
    let mut resp = client.get_raw(&url).await.map_err(plain)?;
    let header: Option<PathStat> = resp
        .headers()
        .get(zlayer_api::routes::archive::PATH_STAT_HEADER)
        .and_then(|v| serde_json::from_slice(v.as_bytes()).ok());
    let stat = match header {
        Some(s) => s,
        // A name that cannot travel in a header (not ASCII): asked for separately.
        None => client
            .get::<PathStat>(&format!(
                "/v1/containers/{}/archive/stat?path={}&follow_link={}",
                encode_query(container),
                encode_query(src),
                args.follow_link
            ))
            .await
            .map_err(plain)?,
    };
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHUNKS);
    let placement = if dest == "-" {
        None
    } else {
        Some(place(src, stat.is_dir, dest, local_dest(dest))?)
    };
    let dest = dest.to_string();
    let writer = tokio::task::spawn_blocking(move || {
        let mut reader = ChunkReader::new(rx);
        match placement {
            None => {
                let mut out = io::stdout().lock();
                io::copy(&mut reader, &mut out)?;
                out.flush()?;
                Ok(())
            }
            Some(p) => unpack_local(&mut reader, &p).with_context(|| format!("copying to {dest}")),
        }
    });
    let body = resp.body_mut();
    let mut failed = None;
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await;
        match frame {
            None => break,
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    if tx.send(Ok(data)).await.is_err() {
                        break; // the writer failed; its error is reported below
                    }
                }
            }
            Some(Err(e)) => {
                failed = Some(format!(
                    "the daemon could not finish the archive of {src} in container \
                     {container} (its log says why): {e}"
                ));
                let _ = tx
                    .send(Err(io::Error::other("the archive was cut short")))
                    .await;
                break;
            }
        }
    }
    drop(tx);
    let written = writer.await.context("the copy task failed")?;
    if let Some(f) = failed {
        bail!("{f}");
    }
    written
}

/// Unpacks the daemon's archive on the host at `p`. The entry names come from the daemon
/// (plain names); still, nothing is written through a symlink below `p.dir`, so a symlink the
/// archive itself brings (the container's `x -> /etc`) can never redirect a later entry.
fn unpack_local(reader: &mut impl Read, p: &Placement) -> anyhow::Result<()> {
    let dir = Path::new(&p.dir);
    if !dir.is_dir() {
        bail!("no such directory: {}", p.dir);
    }
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.into_owned();
        let Some(rel) = rebase(&name, &p.top)? else {
            continue;
        };
        let target = dir.join(&rel);
        refuse_symlinked_parents(dir, &rel)?;
        if entry.header().entry_type().is_dir() && target.is_dir() {
            continue; // merging into an existing directory keeps it
        }
        entry
            .unpack(&target)
            .with_context(|| format!("writing {}", target.display()))?;
    }
    Ok(())
}

/// Fails when a directory between `dir` and `dir/rel`'s final name is a symlink.
fn refuse_symlinked_parents(dir: &Path, rel: &Path) -> anyhow::Result<()> {
    let mut at = dir.to_path_buf();
    let parents: Vec<_> = rel.components().collect();
    for c in &parents[..parents.len().saturating_sub(1)] {
        at.push(c);
        if std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
            bail!("refusing to write through the symlink {}", at.display());
        }
    }
    Ok(())
}

/// `cp SRC CONTAINER:DEST`.
async fn copy_to(
    client: &Client,
    src: &str,
    container: &str,
    dest: &str,
    args: &CpArgs,
) -> anyhow::Result<()> {
    let stat_of = |path: &str| {
        format!(
            "/v1/containers/{}/archive/stat?path={}&follow_link=true",
            encode_query(container),
            encode_query(path)
        )
    };
    let dest_is = match client.get::<PathStat>(&stat_of(dest)).await {
        Ok(s) if s.is_dir => Dest::Dir,
        Ok(_) => Dest::NotDir,
        Err(e) if e.kind() == zlayer_agent::ErrorKind::NotFound => {
            // The container itself, or the path's parent, missing: that error is the answer.
            client
                .get::<PathStat>(&stat_of(&parent_of(dest)))
                .await
                .map_err(plain)?;
            Dest::Missing
        }
        Err(e) => return Err(plain(e)),
    };
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHUNKS);
    let (put_dir, builder) = if src == "-" {
        if dest_is != Dest::Dir {
            bail!("destination {container}:{dest} must be an existing directory when copying a tar from stdin");
        }
        let task = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let mut w = ChunkWriter::new(tx, "the daemon stopped reading");
            io::copy(&mut io::stdin().lock(), &mut w).context("reading stdin")?;
            w.flush()?;
            Ok(())
        });
        (dest.to_string(), task)
    } else {
        let meta = if args.follow_link {
            std::fs::metadata(src)
        } else {
            std::fs::symlink_metadata(src)
        }
        .with_context(|| format!("cannot read {src}"))?;
        if ends_with_sep(src) && !meta.is_dir() {
            bail!("not a directory: {src}");
        }
        let p = place(src, meta.is_dir(), dest, dest_is)?;
        // -L: the link's target is copied under the link's name.
        let real = if args.follow_link {
            std::fs::canonicalize(src).with_context(|| format!("following {src}"))?
        } else {
            PathBuf::from(src)
        };
        let top = p.top.clone();
        let task = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let mut w = ChunkWriter::new(tx, "the daemon stopped reading");
            write_local_tar(&real, meta.is_dir(), &top, &mut w)?;
            w.flush()?;
            Ok(())
        });
        (p.dir, task)
    };
    let url = format!(
        "/v1/containers/{}/archive?path={}&copy_uid_gid={}",
        encode_query(container),
        encode_query(&put_dir),
        args.archive
    );
    let sent = client.put_stream::<CopyResult>(&url, rx).await;
    let built = builder.await.context("the archive task failed")?;
    // A local failure (unreadable file, bad stdin) explains the daemon's cut-short archive.
    built?;
    sent.map_err(plain)?;
    Ok(())
}

/// Archives the host path `src` with its top entry named `top` (empty: only the contents of
/// the directory `src`). Symlinks are archived as symlinks.
fn write_local_tar(src: &Path, is_dir: bool, top: &str, out: impl Write) -> anyhow::Result<()> {
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    let res = if !is_dir {
        b.append_path_with_name(src, top)
    } else if top.is_empty() {
        let mut names: Vec<_> = std::fs::read_dir(src)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort();
        names.iter().try_for_each(|n| {
            let path = src.join(n);
            if std::fs::symlink_metadata(&path)?.is_dir() {
                b.append_dir_all(n, &path)
            } else {
                b.append_path_with_name(&path, n)
            }
        })
    } else {
        b.append_dir_all(top, src)
    };
    res.with_context(|| format!("archiving {}", src.display()))?;
    b.into_inner()?.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_told_apart_as_docker_does() {
        assert_eq!(
            endpoint("web:/etc/hosts"),
            Endpoint::Container {
                container: "web".into(),
                path: "/etc/hosts".into()
            }
        );
        assert_eq!(
            endpoint("web:tmp"),
            Endpoint::Container {
                container: "web".into(),
                path: "/tmp".into()
            }
        );
        assert_eq!(endpoint("-"), Endpoint::Local("-".into()));
        assert_eq!(endpoint("./a:b"), Endpoint::Local("./a:b".into()));
        assert_eq!(endpoint("/x:y"), Endpoint::Local("/x:y".into()));
        assert_eq!(endpoint("dir/a:b"), Endpoint::Local("dir/a:b".into()));
    }

    fn pl(dir: &str, top: &str) -> Placement {
        Placement {
            dir: dir.into(),
            top: top.into(),
        }
    }

    #[test]
    fn placement_follows_dockers_rules() {
        // A file: into an existing dir, over a file, or as a new name.
        assert_eq!(
            place("/etc/hosts", false, "out", Dest::Dir).unwrap(),
            pl("out", "hosts")
        );
        assert_eq!(
            place("/etc/hosts", false, "out/f", Dest::NotDir).unwrap(),
            pl("out", "f")
        );
        assert_eq!(
            place("/etc/hosts", false, "out/new", Dest::Missing).unwrap(),
            pl("out", "new")
        );
        assert!(place("/etc/hosts", false, "out/new/", Dest::Missing).is_err());
        // A directory: inside an existing dir, its contents with `/.`, or as a new name.
        assert_eq!(
            place("/etc", true, "out", Dest::Dir).unwrap(),
            pl("out", "etc")
        );
        assert_eq!(
            place("/etc/", true, "out", Dest::Dir).unwrap(),
            pl("out", "etc")
        );
        assert_eq!(
            place("/etc/.", true, "out", Dest::Dir).unwrap(),
            pl("out", "")
        );
        assert_eq!(
            place("/etc", true, "new", Dest::Missing).unwrap(),
            pl(".", "new")
        );
        assert_eq!(
            place("/etc/.", true, "a/new/", Dest::Missing).unwrap(),
            pl("a", "new")
        );
        assert!(place("/etc", true, "out/f", Dest::NotDir).is_err());
    }

    #[test]
    fn entries_are_renamed_below_the_new_top() {
        let r = |n: &str, t: &str| rebase(Path::new(n), t).unwrap();
        assert_eq!(r("etc", "new"), Some(PathBuf::from("new")));
        assert_eq!(r("etc/passwd", "new"), Some(PathBuf::from("new/passwd")));
        assert_eq!(r("etc", ""), None);
        assert_eq!(r("etc/a/b", ""), Some(PathBuf::from("a/b")));
        assert_eq!(r("./a", ""), Some(PathBuf::from("a")));
        assert!(rebase(Path::new("etc/../../x"), "new").is_err());
        assert!(rebase(Path::new("/etc"), "new").is_err());
    }
}
