//! `callpipe search`: hybrid keyword + semantic search over indexed calls.

use std::io::Write as _;
use std::process::ExitCode;

use callpipe_common::config::limits;
use callpipe_common::ids::CallId;
use callpipe_common::store::SearchFilter;
use callpipe_common::Role;
use callpipe_index::HybridSearch;

use super::data::{clock, date_time, parse_date, Bound};
use super::Context;

/// Filters shared by `search` and `calls list`.
#[derive(Debug, Clone, clap::Args)]
pub struct FilterArgs {
    /// Calls recorded on or after this date (YYYY-MM-DD, YYYY-MM-DDTHH:MM or RFC 3339; UTC).
    #[arg(long, value_name = "DATE")]
    from: Option<String>,

    /// Calls recorded up to this date; a bare date includes that whole day.
    #[arg(long, value_name = "DATE")]
    to: Option<String>,

    /// Only calls whose source starts with this (a path prefix such as `/data/2024/`, or a URI).
    #[arg(long, value_name = "PREFIX")]
    source: Option<String>,

    /// Only calls at least this long (seconds).
    #[arg(long, value_name = "SECONDS", value_parser = super::seconds)]
    min_duration: Option<f64>,

    /// Only calls at most this long (seconds).
    #[arg(long, value_name = "SECONDS", value_parser = super::seconds)]
    max_duration: Option<f64>,
}

impl FilterArgs {
    pub fn to_filter(&self) -> anyhow::Result<SearchFilter> {
        let source_prefix = self.source.as_ref().map(|p| {
            if p.contains("://") {
                p.clone()
            } else {
                // A path: match the file:// URIs `run` records, absolute as they are.
                let path = std::path::Path::new(p);
                let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
                let mut uri = format!("file://{}", abs.display());
                if p.ends_with('/') && !uri.ends_with('/') {
                    uri.push('/');
                }
                uri
            }
        });
        Ok(SearchFilter {
            from_ms: self
                .from
                .as_deref()
                .map(|d| parse_date(d, Bound::From))
                .transpose()?,
            to_ms: self
                .to
                .as_deref()
                .map(|d| parse_date(d, Bound::To))
                .transpose()?,
            role: None,
            call_id: None,
            source_prefix,
            min_duration_s: self.min_duration,
            max_duration_s: self.max_duration,
        })
    }
}

#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    /// What to look for: words or a paraphrase of what was said; "a quoted phrase" must occur;
    /// -word or -"a phrase" leaves segments holding it out; a call id searches that call (alone,
    /// it lists the call); a phone number (7+ digits, any separators) matches digit for digit.
    #[arg(required = true, value_name = "QUERY")]
    query: Vec<String>,

    /// Only segments spoken by this party: agent, customer, mixed or other.
    #[arg(long, value_name = "ROLE")]
    role: Option<Role>,

    /// Only this call (its id, as `calls list` shows it).
    #[arg(long, value_name = "ID")]
    call: Option<String>,

    /// Results to return, 1 to 1000 [config: search.limit, default 10].
    #[arg(long, value_name = "N", value_parser = super::within(limits::SEARCH_LIMIT))]
    limit: Option<usize>,

    /// One JSON object per result, one per line.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    filter: FilterArgs,
}

pub async fn run(ctx: &Context, args: SearchArgs) -> anyhow::Result<ExitCode> {
    let mut filter = args.filter.to_filter()?;
    filter.role = args.role;
    filter.call_id = args.call.map(CallId::from_stored);
    let limit = args.limit.unwrap_or(ctx.config.search.limit);
    let query = args.query.join(" ");
    let chars = query.chars().count();
    if chars > limits::QUERY_CHARS {
        anyhow::bail!(
            "the query is {chars} characters long; at most {} are searched",
            limits::QUERY_CHARS
        );
    }

    ctx.require_indexed()?;
    let embedder = ctx.load_embedder()?;
    let (stores, _) = ctx.open_stores(embedder.as_ref(), false).await?;
    let search = HybridSearch::new(
        embedder,
        stores.metadata,
        stores.vectors,
        stores.keyword,
        ctx.search_settings(),
    );
    let hits = search.search(&query, &filter, limit).await?;

    let mut out = std::io::stdout().lock();
    if args.json {
        for hit in &hits {
            serde_json::to_writer(&mut out, hit)?;
            writeln!(out)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if hits.is_empty() {
        writeln!(out, "no results for \"{query}\"")?;
        return Ok(ExitCode::SUCCESS);
    }
    for (n, hit) in hits.iter().enumerate() {
        let call = &hit.call;
        let name = call.source.rsplit('/').next().unwrap_or(&call.source);
        let ranks = [("keyword", hit.keyword_rank), ("semantic", hit.vector_rank)]
            .iter()
            .filter_map(|(what, rank)| rank.map(|r| format!("{what} #{r}")))
            .collect::<Vec<_>>()
            .join(", ");
        writeln!(
            out,
            "{}. {}  {}  call {}  [{} → {}] {}   ({ranks})",
            n + 1,
            date_time(call.recorded_at_ms),
            name,
            call.call_id,
            clock(hit.segment.start_s),
            clock(hit.segment.end_s),
            hit.segment.role,
        )?;
        for s in &hit.before {
            writeln!(out, "     {:<8} {}", s.role.as_str(), s.text)?;
        }
        writeln!(
            out,
            "   > {:<8} {}",
            hit.segment.role.as_str(),
            hit.segment.text
        )?;
        for s in &hit.after {
            writeln!(out, "     {:<8} {}", s.role.as_str(), s.text)?;
        }
        writeln!(out)?;
    }
    Ok(ExitCode::SUCCESS)
}
