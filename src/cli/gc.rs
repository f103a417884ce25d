//! `callpipe gc`: deletes vector garbage. OpenSearch Serverless vector collections cannot
//! delete by query, so the documents of a replaced revision, a deleted call or an attempt that
//! died before its commit are deleted by id from what the metadata store recorded (or found by
//! their batch tag). The index workers run the same sweep now and then; this runs it now.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use callpipe_index::indexer::ORPHAN_GRACE;

use super::Context;

#[derive(Debug, Args)]
pub struct GcArgs {
    /// How old an uncommitted batch must be before its documents count as orphans, in
    /// seconds. Keep it above the longest index job and OpenSearch's refresh interval.
    #[arg(long, value_name = "S", default_value_t = ORPHAN_GRACE.as_secs())]
    grace_s: u64,
    /// Print the counts as one JSON object.
    #[arg(long)]
    json: bool,
}

pub async fn run(ctx: &Context, args: GcArgs) -> anyhow::Result<ExitCode> {
    let writer = ctx.open_writer().await?;
    let swept = writer
        .indexer
        .sweep(Duration::from_secs(args.grace_s))
        .await?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "batches": swept.batches,
                "vectors": swept.vectors,
                "left": swept.left,
            })
        );
    } else {
        println!(
            "deleted {} vectors of {} garbage batches{}",
            swept.vectors,
            swept.batches,
            if swept.left > 0 {
                format!("; {} batches have more (run again)", swept.left)
            } else {
                String::new()
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
