//! `callpipe calls`: what has been processed, and any one call's transcript.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use callpipe_common::config::limits;
use callpipe_common::ids::CallId;
use callpipe_common::store::{CallRecord, CallStatus, MetadataStore};

use super::data::{clock, date_time};
use super::search::FilterArgs;
use super::Context;

#[derive(Debug, clap::Args)]
pub struct CallsArgs {
    #[command(subcommand)]
    command: CallsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum CallsCommand {
    /// Calls, most recently recorded first, with status, duration and any failure's reason.
    List {
        /// Only calls with this status: pending, indexed or failed.
        #[arg(long, value_name = "STATUS", value_parser = parse_status)]
        status: Option<CallStatus>,

        /// At most this many calls.
        #[arg(long, default_value_t = 100, value_name = "N",
              value_parser = super::within(limits::LIST_LIMIT))]
        limit: usize,

        /// One JSON object per call, one per line.
        #[arg(long)]
        json: bool,

        #[command(flatten)]
        filter: FilterArgs,
    },
    /// A call's metadata and its transcript, both parties interleaved by time.
    Show {
        /// The call's id (or a unique prefix of it), or the recording's path.
        id: String,

        /// The record and its segments as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn parse_status(s: &str) -> Result<CallStatus, String> {
    CallStatus::parse(s).ok_or_else(|| format!("`{s}` is not a status (pending, indexed, failed)"))
}

pub async fn run(ctx: &Context, args: CallsArgs) -> anyhow::Result<ExitCode> {
    let metadata = ctx.open_existing_metadata().await?;
    match args.command {
        CallsCommand::List {
            status,
            limit,
            json,
            filter,
        } => {
            let calls = metadata
                .list_calls(status, &filter.to_filter()?, limit)
                .await?;
            let mut out = std::io::stdout().lock();
            for call in &calls {
                if json {
                    serde_json::to_writer(&mut out, call)?;
                    writeln!(out)?;
                } else {
                    let name = call.source.rsplit('/').next().unwrap_or(&call.source);
                    write!(
                        out,
                        "{}  {}  {:<7}  {:>8}  {:>4} seg  {}",
                        call.call_id,
                        date_time(call.recorded_at_ms),
                        call.status.as_str(),
                        clock(call.duration_s),
                        call.segments,
                        name
                    )?;
                    if let Some(e) = &call.error {
                        write!(out, "  [{} failed: {}]", e.stage, e.reason)?;
                    }
                    writeln!(out)?;
                }
            }
            if calls.is_empty() && !json {
                writeln!(out, "no calls")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        CallsCommand::Show { id, json } => {
            let Some(call) = find_call(metadata.as_ref(), &id).await? else {
                eprintln!("error: no call `{id}` (see `callpipe calls list`)");
                return Ok(ExitCode::FAILURE);
            };
            let segments = metadata.segments(&call.call_id).await?;
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer(
                    &mut out,
                    &serde_json::json!({ "call": call, "segments": segments }),
                )?;
                writeln!(out)?;
                return Ok(ExitCode::SUCCESS);
            }
            print_call(&mut out, &call)?;
            writeln!(out)?;
            for s in &segments {
                writeln!(
                    out,
                    "[{} → {}] {:<8} {}",
                    clock(s.start_s),
                    clock(s.end_s),
                    s.role.as_str(),
                    s.text
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_call(out: &mut impl std::io::Write, call: &CallRecord) -> std::io::Result<()> {
    writeln!(out, "call      {}", call.call_id)?;
    writeln!(out, "source    {}", call.source)?;
    writeln!(out, "recorded  {} UTC", date_time(call.recorded_at_ms))?;
    writeln!(out, "status    {}", call.status)?;
    if let Some(e) = &call.error {
        writeln!(out, "error     {} stage: {}", e.stage, e.reason)?;
    }
    writeln!(out, "revision  {}", call.revision)?;
    match &call.indexed_revision {
        Some(r) if r != &call.revision => writeln!(out, "searchable revision {r} (the one below)")?,
        Some(_) => {}
        None => writeln!(out, "searchable no revision yet")?,
    }
    let roles: Vec<&str> = call.channels.iter().map(|r| r.as_str()).collect();
    writeln!(
        out,
        "duration  {} ({:.1} s of speech), channels: {}",
        clock(call.duration_s),
        call.speech_s,
        roles.join(", ")
    )?;
    if let (Some(lang), Some(asr)) = (&call.language, &call.asr_model) {
        writeln!(
            out,
            "models    {asr} ({lang}), {}",
            call.embedding_model.as_deref().unwrap_or("-")
        )?;
    }
    let t = &call.stage_times;
    writeln!(
        out,
        "segments  {}; stages took ingest {:.2} s, transcribe {:.2} s, index {:.2} s",
        call.segments, t.ingest_s, t.transcribe_s, t.index_s
    )
}

/// A call by full id, by the path of its recording, or by a unique id prefix.
async fn find_call(metadata: &dyn MetadataStore, id: &str) -> anyhow::Result<Option<CallRecord>> {
    if let Some(call) = metadata.get_call(&CallId::from_stored(id)).await? {
        return Ok(Some(call));
    }
    if id.contains("://") {
        if let Some(call) = metadata.get_call(&CallId::from_source(id)).await? {
            return Ok(Some(call));
        }
    }
    if let Ok(path) = Path::new(id).canonicalize() {
        let uri = format!("file://{}", path.display());
        if let Some(call) = metadata.get_call(&CallId::from_source(&uri)).await? {
            return Ok(Some(call));
        }
    }
    if id.len() >= 4 {
        // Two are enough to tell a unique prefix from an ambiguous one.
        let matches = metadata.calls_by_id_prefix(id, 2).await?;
        match matches.len() {
            0 => {}
            1 => return Ok(matches.into_iter().next()),
            _ => anyhow::bail!("`{id}` matches several calls; give more of the id"),
        }
    }
    Ok(None)
}
