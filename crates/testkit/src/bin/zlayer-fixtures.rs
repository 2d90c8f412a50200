//! `zlayer-fixtures`: builds and pushes the project's fixture images, and runs a throwaway
//! local registry — for the README demo and the bench scripts.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use zlayer_testkit::fixtures::{self, Layout};
use zlayer_testkit::{push, LocalRegistry};

#[derive(Parser)]
#[command(
    name = "zlayer-fixtures",
    about = "Build and push zlayer-agent's reproducible fixture images"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build fixture NAME (busybox, rules, big, big-<MiB>) as an OCI layout.
    Build {
        name: String,
        /// Output directory (absent or empty). Without it, the shared cache is used.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the layout description as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Build (cached) and push fixture NAME to a registry.
    Push {
        name: String,
        /// Registry host:port (plain HTTP).
        #[arg(long)]
        registry: String,
        /// Destination REPO:TAG.
        #[arg(long = "as")]
        dest: String,
        /// Push the multi-platform index (busybox only) instead of the amd64 image.
        #[arg(long)]
        multiarch: bool,
        /// Push with the testkit's own HTTP code instead of skopeo (needed for
        /// busybox-docker).
        #[arg(long)]
        http: bool,
    },
    /// Package fixture NAME (cached build) as an OCI archive or a `docker save` tarball.
    Archive {
        name: String,
        /// Output tar file.
        #[arg(long)]
        out: PathBuf,
        /// Write a `docker save` tarball tagged REPO:TAG instead of an OCI archive.
        #[arg(long, value_name = "REPO:TAG")]
        docker_save: Option<String>,
    },
    /// Check that DIR holds exactly the flattened tree of the `rules` fixture.
    VerifyRules {
        dir: PathBuf,
        /// Do not require the cross-layer hardlink pair to share an inode.
        #[arg(long)]
        no_cross_layer_hardlinks: bool,
        /// Skip xattr checks (filesystems without user xattrs).
        #[arg(long)]
        no_xattrs: bool,
    },
    /// Registry helpers.
    Registry {
        #[command(subcommand)]
        cmd: RegistryCmd,
    },
}

#[derive(Subcommand)]
enum RegistryCmd {
    /// Start docker-registry on a free loopback port, print its host:port, and keep it
    /// running until stdin is closed or a line is entered.
    Start,
}

fn print_layout(l: &Layout, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(l)?);
    } else {
        println!("layout   {}", l.dir.display());
        println!("manifest {}", l.manifest_digest);
        println!("config   {}", l.config_digest);
        if let Some(i) = &l.index_digest {
            println!("index    {i}");
        }
        for layer in &l.layers {
            println!(
                "layer    {} {} bytes ({})",
                layer.digest, layer.size, layer.media_type
            );
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Build { name, out, json } => {
            let layout = match out {
                Some(dir) => fixtures::build(&name, &dir)?,
                None => fixtures::cached(&name)?,
            };
            print_layout(&layout, json)?;
        }
        Cmd::Push {
            name,
            registry,
            dest,
            multiarch,
            http,
        } => {
            let layout = fixtures::cached(&name)?;
            let tag = if multiarch {
                fixtures::MULTIARCH_TAG
            } else {
                layout.tag.as_str()
            };
            let digest = match (http, multiarch) {
                (true, _) => push::push_tag_http(&layout.dir, tag, &registry, &dest, None)?,
                (false, true) => push::push_multiarch(&layout, &registry, &dest)?,
                (false, false) => push::push_layout(&layout, &registry, &dest)?,
            };
            println!("{registry}/{dest}@{digest}");
        }
        Cmd::Archive {
            name,
            out,
            docker_save,
        } => {
            let layout = fixtures::cached(&name)?;
            match docker_save {
                Some(tag) => fixtures::archive::write_docker_save(&layout, &tag, &out)?,
                None => fixtures::archive::write_oci_archive(&layout, &out)?,
            }
            println!("{}", out.display());
        }
        Cmd::VerifyRules {
            dir,
            no_cross_layer_hardlinks,
            no_xattrs,
        } => {
            let opts = fixtures::rules::VerifyOptions {
                cross_layer_hardlinks: !no_cross_layer_hardlinks,
                xattrs: !no_xattrs,
                ..Default::default()
            };
            fixtures::rules::verify_tree(&dir, &opts)?;
            println!("{}: matches the rules fixture", dir.display());
        }
        Cmd::Registry {
            cmd: RegistryCmd::Start,
        } => {
            let reg = LocalRegistry::start()?;
            println!("{}", reg.host());
            eprintln!(
                "registry pid {} storage {} log {}; press Enter or close stdin to stop",
                reg.pid().unwrap_or(0),
                reg.dir().display(),
                reg.log_path().display()
            );
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading stdin")?;
            drop(reg);
        }
    }
    Ok(())
}
