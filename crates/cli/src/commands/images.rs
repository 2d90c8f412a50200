//! `pull`, `images`, `rmi`, `load`, `image inspect|unpack|prune|ls`.

use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use zlayer_agent::images::ProgressRenderer;
use zlayer_agent::images::{ImageDetails, ImageSummary, PruneReport, RemoveReport};
use zlayer_api::client::encode_query;
use zlayer_api::routes::images::{LoadRequest, LoadResponse, PullLine, PullRequest, UnpackRequest};
use zlayer_api::Client;

use super::listing::{filter_pair, filters_query, image_rows, repo_and_tag, IMAGE_FIELDS};
use super::CmdResult;
use crate::output::{human_size, print_json, print_table};
use crate::template::ListFormat;

#[derive(Args, Debug)]
pub struct PullArgs {
    /// Image reference, e.g. 127.0.0.1:5000/app:1.0 or busybox@sha256:…
    pub reference: String,
    /// Platform to pull from a multi-platform image: os/arch[/variant].
    #[arg(long)]
    pub platform: Option<String>,
    /// No progress output.
    #[arg(short, long)]
    pub quiet: bool,
}

/// How the daemon's pull stream ended.
enum PullOutcome {
    Pulled {
        digest: String,
    },
    /// The daemon's error, already naming the image and what went wrong.
    Failed {
        error: String,
    },
}

pub async fn pull(client: &Client, args: PullArgs) -> CmdResult {
    let req = PullRequest {
        reference: args.reference.clone(),
        platform: args.platform,
    };
    let mut renderer = (!args.quiet).then(ProgressRenderer::auto);
    let mut outcome: Option<PullOutcome> = None;
    client
        .stream(
            hyper::Method::POST,
            "/v1/images/pull",
            Some(&req),
            |line: PullLine| {
                match line {
                    PullLine::Progress(ev) => {
                        if let Some(r) = renderer.as_mut() {
                            r.handle(&ev);
                        }
                    }
                    PullLine::Done { done } => {
                        outcome = Some(PullOutcome::Pulled {
                            digest: done.digest,
                        })
                    }
                    PullLine::Failed { error, .. } => outcome = Some(PullOutcome::Failed { error }),
                }
                Ok(())
            },
        )
        .await?;
    if let Some(r) = renderer.as_mut() {
        r.finish();
    }
    match outcome {
        Some(PullOutcome::Pulled { digest }) => {
            outln!("Digest: {digest}");
            outln!("Pulled {}", args.reference);
            Ok(ExitCode::SUCCESS)
        }
        Some(PullOutcome::Failed { error }) => bail!("pulling {}: {error}", args.reference),
        None => bail!(
            "pulling {}: the daemon ended the stream without a result",
            args.reference
        ),
    }
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// `table`, `json`, or a Go template: '{{.Repository}}:{{.Tag}}', 'table {{.ID}}\t{{.Size}}',
    /// '{{json .}}'. Fields: ID Repository Tag Digest CreatedSince CreatedAt Size.
    #[arg(long, default_value = "table")]
    pub format: ListFormat,
    /// Only image ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// KEY=VALUE, repeatable: reference (a glob: busy*, busybox:1*), dangling=true|false,
    /// label=KEY[=VALUE] (same key ORs, keys AND).
    #[arg(short, long = "filter", value_parser = filter_pair)]
    pub filter: Vec<(String, String)>,
}

pub async fn list(client: &Client, args: ListArgs) -> CmdResult {
    if let ListFormat::Template(t) = &args.format {
        t.check(IMAGE_FIELDS)?;
    }
    let query = filters_query(&args.filter).replacen('&', "?", 1);
    let images: Vec<ImageSummary> = client.get(&format!("/v1/images{query}")).await?;
    // As docker: -q shortens the default table; a json or template format wins over it.
    if args.quiet && args.format == ListFormat::Table {
        for i in &images {
            outln!("{}", i.id.short());
        }
        return Ok(ExitCode::SUCCESS);
    }
    match &args.format {
        ListFormat::Json => print_json(&images)?,
        ListFormat::Template(t) => {
            let rows: Vec<_> = images.iter().flat_map(image_rows).collect();
            for line in t.lines(IMAGE_FIELDS, &rows) {
                outln!("{line}");
            }
        }
        ListFormat::Table => {
            let mut rows = Vec::new();
            for i in &images {
                let created = i.created.clone().unwrap_or_default();
                let names = if i.names.is_empty() {
                    vec!["<none>:<none>".to_string()]
                } else {
                    i.names.clone()
                };
                for n in names {
                    let (repo, tag) = repo_and_tag(&n);
                    rows.push(vec![
                        repo,
                        tag,
                        i.id.short().to_string(),
                        created.clone(),
                        human_size(i.size),
                    ]);
                }
            }
            print_table(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], &rows);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct RmiArgs {
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Remove even when containers use the image.
    #[arg(short, long)]
    pub force: bool,
}

pub async fn rmi(client: &Client, args: RmiArgs) -> CmdResult {
    super::each(&args.images, |image| {
        let path = format!(
            "/v1/images?ref={}&force={}",
            encode_query(&image),
            args.force
        );
        async move {
            let report = client.delete::<RemoveReport>(&path).await?;
            let mut lines: Vec<String> = report
                .untagged
                .iter()
                .map(|u| format!("Untagged: {u}"))
                .collect();
            lines.extend(report.deleted.iter().map(|d| format!("Deleted: {d}")));
            Ok(lines.join("\n"))
        }
    })
    .await
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// An OCI image layout directory, an OCI archive (.tar) or a `docker save` tarball.
    #[arg(short = 'i', long = "input")]
    pub input: std::path::PathBuf,
}

pub async fn load(client: &Client, args: LoadArgs) -> CmdResult {
    let path = std::fs::canonicalize(&args.input)
        .with_context(|| format!("cannot open {}", args.input.display()))?;
    let resp: LoadResponse = client
        .post(
            "/v1/images/load",
            &LoadRequest {
                path: path.display().to_string(),
            },
        )
        .await?;
    for r in resp.loaded {
        outln!("Loaded image: {r}");
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Show an image's configuration and layers as JSON.
    Inspect {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Write an image's flattened root filesystem into DIR.
    Unpack {
        image: String,
        dir: std::path::PathBuf,
    },
    /// Remove dangling images and every blob and snapshot nothing uses.
    Prune,
    /// List images (same as `images`).
    Ls(ListArgs),
    /// Remove images (same as `rmi`).
    Rm(RmiArgs),
    /// Pull an image (same as `pull`).
    Pull(PullArgs),
    /// Load images (same as `load`).
    Load(LoadArgs),
}

pub async fn image(client: &Client, cmd: ImageCommand) -> CmdResult {
    match cmd {
        ImageCommand::Inspect { images } => {
            let mut all = Vec::new();
            for i in &images {
                let d: ImageDetails = client
                    .get(&format!("/v1/images/inspect?ref={}", encode_query(i)))
                    .await?;
                all.push(d);
            }
            print_json(&all)?;
            Ok(ExitCode::SUCCESS)
        }
        ImageCommand::Unpack { image, dir } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let dir = std::fs::canonicalize(&dir)?;
            let _: serde_json::Value = client
                .post(
                    "/v1/images/unpack",
                    &UnpackRequest {
                        reference: image.clone(),
                        dir: dir.display().to_string(),
                    },
                )
                .await?;
            outln!("Unpacked {image} into {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        ImageCommand::Prune => {
            let r: PruneReport = client
                .post("/v1/images/prune", &serde_json::json!({}))
                .await?;
            for i in &r.images_removed {
                outln!("Deleted image: {i}");
            }
            outln!(
                "Removed {} blobs and {} snapshots; reclaimed {}",
                r.blobs_removed.len(),
                r.snapshots_removed.len(),
                human_size(r.bytes_freed)
            );
            Ok(ExitCode::SUCCESS)
        }
        ImageCommand::Ls(a) => list(client, a).await,
        ImageCommand::Rm(a) => rmi(client, a).await,
        ImageCommand::Pull(a) => pull(client, a).await,
        ImageCommand::Load(a) => load(client, a).await,
    }
}

#[cfg(test)]
mod tests {
    use super::repo_and_tag;

    #[test]
    fn repository_and_tag_as_docker_shows_them() {
        assert_eq!(
            repo_and_tag("docker.io/library/busybox:latest"),
            ("busybox".into(), "latest".into())
        );
        assert_eq!(
            repo_and_tag("127.0.0.1:5000/a/b:t"),
            ("127.0.0.1:5000/a/b".into(), "t".into())
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            repo_and_tag(&format!("docker.io/x/y@{d}")),
            ("x/y".into(), "<none>".into())
        );
    }
}
