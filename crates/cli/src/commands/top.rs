//! `top CONTAINER [ps OPTIONS]`: the container's processes as a table, aligned as docker's
//! CLI prints it; any refusal exits 1.

use std::process::ExitCode;

use clap::Args;
use zlayer_agent::containers::top::TopResult;
use zlayer_api::client::encode_query;
use zlayer_api::Client;

use super::CmdResult;

#[derive(Args, Debug)]
pub struct TopArgs {
    /// The container (name, id or id prefix).
    pub container: String,
    /// Options for ps (default -ef).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

/// Columns padded to their widest cell plus 3 (at least 20), the last one not padded.
fn table(top: &TopResult) -> String {
    let rows: Vec<&Vec<String>> = std::iter::once(&top.titles)
        .chain(top.processes.iter())
        .collect();
    let cols = top.titles.len();
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count() + 3)
                .max()
                .unwrap_or(0)
                .max(20)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub async fn top(client: &Client, args: TopArgs) -> CmdResult {
    let mut path = format!("/v1/containers/{}/top", encode_query(&args.container));
    if !args.ps_args.is_empty() {
        path.push_str(&format!(
            "?ps_args={}",
            encode_query(&args.ps_args.join(" "))
        ));
    }
    match client.get::<TopResult>(&path).await {
        Ok(top) => {
            out!("{}", table(&top));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("Error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
