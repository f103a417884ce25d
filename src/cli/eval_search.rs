//! `callpipe eval-search`: search relevance and latency on a labelled set, for keyword only,
//! semantic only, rank fusion and hybrid, per query kind; `--tune` chooses the fusion weight.
//!
//! The set's transcripts are indexed into a fresh embedded data directory through the index
//! stage itself (units, MiniLM, SQLite + the vector file), so what is measured is what
//! `callpipe search` does. See `callpipe_index::relevance` for the set's layout and the
//! metrics.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use callpipe_common::ids::{CallId, Revision};
use callpipe_common::store::{CallRecord, Guard, LocalDirStore, SearchFilter, SegmentDoc};
use callpipe_index::fusion::FusionWeights;
use callpipe_index::relevance::{
    QueryKind, QueryScore, Retrieved, SearchSet, SetQuery, Split, Summary, DEPTH,
};
use callpipe_index::search::{Candidates, HybridSearch, SearchMode};
use callpipe_index::store::{DiskVectorIndex, SqliteMetadata};
use callpipe_index::Indexer;

use super::data::{parse_date, Bound};
use super::Context;

#[derive(Debug, clap::Args)]
pub struct EvalSearchArgs {
    /// The set: a directory with transcripts/, truth/ and queries/ (the project's is
    /// tests/fixtures/search).
    #[arg(value_name = "SET")]
    set: PathBuf,

    /// Only the queries of this split: `tune` (used to choose the weights) or `holdout`
    /// (never used to choose anything). Default: both, reported apart.
    #[arg(long, value_enum)]
    split: Option<SplitArg>,

    /// One JSON object with every number instead of tables.
    #[arg(long)]
    json: bool,

    /// Also rank the tuning split under keyword weights 0 to 2 and BM25 weights 0 to 1, and
    /// report the best.
    #[arg(long)]
    tune: bool,

    /// Print each hybrid query whose first result is wrong, with what came first.
    #[arg(long)]
    misses: bool,

    /// Exit with status 1 unless hybrid meets the goals: MRR at least the better of keyword
    /// and semantic for every query kind, and recall@1 of 0.9 on paraphrase and rare queries.
    #[arg(long)]
    check: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SplitArg {
    Tune,
    Holdout,
}

impl SplitArg {
    fn split(self) -> Split {
        match self {
            SplitArg::Tune => Split::Tune,
            SplitArg::Holdout => Split::Holdout,
        }
    }
}

/// The recall@1 goal on paraphrase and rare-term queries.
const RECALL_AT_1_GOAL: f64 = 0.9;

#[derive(Debug, Serialize)]
struct Row {
    split: &'static str,
    mode: &'static str,
    kind: &'static str,
    #[serde(flatten)]
    summary: Summary,
}

#[derive(Debug, Serialize)]
struct Latency {
    mode: &'static str,
    p50_ms: f64,
    p95_ms: f64,
}

#[derive(Debug, Serialize)]
struct Goal {
    split: &'static str,
    goal: String,
    met: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    set: String,
    calls: usize,
    units: u64,
    queries: usize,
    keyword_weight: f32,
    bm25_weight: f32,
    results: Vec<Row>,
    latency: Vec<Latency>,
    goals: Vec<Goal>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tuning: Vec<TuneRow>,
}

#[derive(Debug, Clone, Serialize)]
struct TuneRow {
    keyword_weight: f32,
    bm25_weight: f32,
    coverage_power: f32,
    /// MRR per kind on the tuning split.
    mrr: BTreeMap<&'static str, f64>,
    mean_mrr: f64,
    /// Whether hybrid's MRR is at least the better single list's for every kind.
    beats_both: bool,
}

fn split_name(split: Split) -> &'static str {
    match split {
        Split::Tune => "tune",
        Split::Holdout => "holdout",
    }
}

fn to_filter(q: &SetQuery) -> anyhow::Result<SearchFilter> {
    let Some(f) = &q.filter else {
        return Ok(SearchFilter::default());
    };
    let date = |d: &Option<String>, bound| {
        d.as_deref()
            .map(|d| parse_date(d, bound))
            .transpose()
            .with_context(|| format!("query {}", q.id))
    };
    Ok(SearchFilter {
        from_ms: date(&f.from, Bound::From)?,
        to_ms: date(&f.to, Bound::To)?,
        role: f.role,
        min_duration_s: f.min_duration_s,
        max_duration_s: f.max_duration_s,
        ..Default::default()
    })
}

fn percentile_ms(samples: &mut [Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i].as_secs_f64() * 1000.0
}

pub async fn run(ctx: &Context, args: EvalSearchArgs) -> anyhow::Result<ExitCode> {
    let set = SearchSet::load(&args.set)
        .with_context(|| format!("loading the search set {}", args.set.display()))?;
    let splits: Vec<Split> = match args.split {
        Some(s) => vec![s.split()],
        None => vec![Split::Tune, Split::Holdout],
    };

    // A fresh embedded data directory, removed at the end.
    let dir = tempfile::Builder::new()
        .prefix("callpipe-eval-search-")
        .tempdir()
        .context("creating a directory for the evaluation index")?;
    let embedder = ctx.load_embedder()?;
    let metadata = Arc::new(SqliteMetadata::open(&dir.path().join("metadata.db"))?);
    let vectors = Arc::new(DiskVectorIndex::open(
        &dir.path().join("vectors.db"),
        embedder.dim(),
        &ctx.config.index.embedding_model,
    )?);
    let objects = Arc::new(LocalDirStore::open(dir.path().join("objects"))?);
    let indexer = Indexer::new(
        embedder.clone(),
        metadata.clone(),
        vectors.clone(),
        objects,
        ctx.unit_rules(),
    );
    let started = Instant::now();
    let mut names: HashMap<CallId, String> = HashMap::new();
    for call in set.calls.values() {
        let source = format!("search-set://{}", call.name);
        let call_id = CallId::from_source(&source);
        let bytes = serde_json::to_vec(&call.transcript)?;
        let recorded_at_ms =
            callpipe_ingest::source::timestamp_in_name(&call.name).unwrap_or_default();
        let mut record = CallRecord::pending(
            call_id.clone(),
            Revision::from_content(&bytes),
            source,
            recorded_at_ms,
        );
        record.duration_s = call.duration_s;
        indexer
            .index(&mut record, &call.transcript, &Guard::none())
            .await
            .with_context(|| format!("indexing call {}", call.name))?;
        names.insert(call_id, call.name.clone());
    }
    let units = {
        use callpipe_common::store::MetadataStore as _;
        metadata.count_segments(None).await?
    };
    if !args.json {
        eprintln!(
            "indexed {} calls ({units} units) in {:.1} s",
            set.calls.len(),
            started.elapsed().as_secs_f64()
        );
    }
    let search = HybridSearch::new(
        embedder,
        metadata.clone(),
        vectors,
        metadata,
        ctx.search_settings(),
    );
    let retrieved = |segment: &SegmentDoc| Retrieved {
        call: names.get(&segment.key.call_id).cloned().unwrap_or_default(),
        channel: segment.key.channel,
        start_s: segment.start_s,
        end_s: segment.end_s,
    };

    let queries: Vec<&SetQuery> = set
        .queries
        .iter()
        .filter(|q| splits.contains(&q.split))
        .collect();
    let mut scores: HashMap<(SearchMode, Split, QueryKind), Vec<QueryScore>> = HashMap::new();
    let mut latency: HashMap<SearchMode, Vec<Duration>> = HashMap::new();
    let mut misses = Vec::new();
    for q in &queries {
        let filter = to_filter(q)?;
        for mode in SearchMode::ALL {
            let t = Instant::now();
            let hits = search
                .search_as(mode, &q.query, &filter, DEPTH)
                .await
                .with_context(|| format!("query {}", q.id))?;
            latency.entry(mode).or_default().push(t.elapsed());
            let ranked: Vec<Retrieved> = hits.iter().map(|h| retrieved(&h.segment)).collect();
            let score = set.score(q, &ranked);
            if mode == SearchMode::Hybrid && score.recall_at_1 < 1.0 {
                let first = hits.first().map(|h| {
                    format!(
                        "{} [{:.1}-{:.1}] {}: {}",
                        ranked[0].call,
                        h.segment.start_s,
                        h.segment.end_s,
                        h.segment.role,
                        h.segment.text
                    )
                });
                misses.push((q.id.clone(), q.query.clone(), score.reciprocal_rank, first));
            }
            scores
                .entry((mode, q.split, q.kind))
                .or_default()
                .push(score);
        }
    }

    let mut rows = Vec::new();
    let mut goals = Vec::new();
    for &split in &splits {
        let summary = |mode: SearchMode, kind: Option<QueryKind>| {
            let all: Vec<&QueryScore> = scores
                .iter()
                .filter(|((m, s, k), _)| *m == mode && *s == split && kind.is_none_or(|x| x == *k))
                .flat_map(|(_, v)| v)
                .collect();
            Summary::of(all)
        };
        for mode in SearchMode::ALL {
            for kind in QueryKind::ALL.map(Some).into_iter().chain([None]) {
                let s = summary(mode, kind);
                if s.queries == 0 {
                    continue;
                }
                rows.push(Row {
                    split: split_name(split),
                    mode: mode.as_str(),
                    kind: kind.map_or("all", QueryKind::as_str),
                    summary: s,
                });
            }
        }
        for kind in QueryKind::ALL {
            let hybrid = summary(SearchMode::Hybrid, Some(kind));
            if hybrid.queries == 0 {
                continue;
            }
            let best = summary(SearchMode::Keyword, Some(kind))
                .mrr
                .max(summary(SearchMode::Semantic, Some(kind)).mrr);
            goals.push(Goal {
                split: split_name(split),
                goal: format!(
                    "{}: hybrid MRR {:.3} >= best single list {best:.3}",
                    kind.as_str(),
                    hybrid.mrr
                ),
                met: hybrid.mrr + 1e-9 >= best,
            });
            if matches!(kind, QueryKind::Paraphrase | QueryKind::Rare) {
                goals.push(Goal {
                    split: split_name(split),
                    goal: format!(
                        "{}: hybrid recall@1 {:.3} >= {RECALL_AT_1_GOAL}",
                        kind.as_str(),
                        hybrid.recall_at_1
                    ),
                    met: hybrid.recall_at_1 >= RECALL_AT_1_GOAL,
                });
            }
        }
    }

    let latency: Vec<Latency> = SearchMode::ALL
        .iter()
        .map(|mode| {
            let samples = latency.entry(*mode).or_default();
            Latency {
                mode: mode.as_str(),
                p50_ms: percentile_ms(samples, 0.5),
                p95_ms: percentile_ms(samples, 0.95),
            }
        })
        .collect();

    let tuning = if args.tune {
        tune(&search, &set, &retrieved).await?
    } else {
        Vec::new()
    };

    let report = Report {
        set: args.set.display().to_string(),
        calls: set.calls.len(),
        units,
        queries: queries.len(),
        keyword_weight: search.settings().weights.keyword_weight,
        bm25_weight: search.settings().weights.bm25_weight,
        results: rows,
        latency,
        goals,
        tuning,
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else {
        print_report(&mut out, &report)?;
        if args.misses {
            writeln!(out, "\nhybrid queries whose first result is wrong:")?;
            for (id, query, rr, first) in &misses {
                writeln!(out, "  {id} (RR {rr:.2}) \"{query}\"")?;
                writeln!(
                    out,
                    "      first: {}",
                    first.as_deref().unwrap_or("(nothing)")
                )?;
            }
        }
    }
    let met = report.goals.iter().all(|g| g.met);
    Ok(if args.check && !met {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The BM25 weights `--tune` tries with each keyword weight.
const BM25_WEIGHTS: [f32; 7] = [0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0];

/// The coverage powers `--tune` tries.
const COVERAGE_POWERS: [f32; 3] = [1.0, 2.0, 3.0];

/// Ranks the tuning split's candidates again under keyword weights 0, 0.05, …, 2, each with
/// every [`BM25_WEIGHTS`], and reports MRR per kind for each pair.
async fn tune(
    search: &HybridSearch,
    set: &SearchSet,
    retrieved: &impl Fn(&SegmentDoc) -> Retrieved,
) -> anyhow::Result<Vec<TuneRow>> {
    let mut gathered: Vec<(&SetQuery, Candidates)> = Vec::new();
    for q in set.queries.iter().filter(|q| q.split == Split::Tune) {
        let candidates = search.candidates(&q.query, &to_filter(q)?, DEPTH).await?;
        gathered.push((q, candidates));
    }
    let mrr_of = |mode: SearchMode, weights: &FusionWeights| {
        let mut per_kind: BTreeMap<&'static str, Vec<QueryScore>> = BTreeMap::new();
        for (q, candidates) in &gathered {
            let ranked: Vec<Retrieved> = candidates
                .rank(mode, weights)
                .iter()
                .take(DEPTH)
                .map(|(i, _)| retrieved(&candidates.items[*i].0))
                .collect();
            per_kind
                .entry(q.kind.as_str())
                .or_default()
                .push(set.score(q, &ranked));
        }
        per_kind
            .into_iter()
            .map(|(k, v)| (k, Summary::of(&v).mrr))
            .collect::<BTreeMap<_, _>>()
    };
    let keyword = mrr_of(SearchMode::Keyword, &FusionWeights::default());
    let semantic = mrr_of(SearchMode::Semantic, &FusionWeights::default());
    let mut rows = Vec::new();
    let grid = (0..=40).flat_map(|k| {
        BM25_WEIGHTS
            .into_iter()
            .flat_map(move |b| COVERAGE_POWERS.map(|p| (k, b, p)))
    });
    for (step, bm25_weight, coverage_power) in grid {
        let weights = FusionWeights {
            keyword_weight: step as f32 * 0.05,
            bm25_weight,
            coverage_power,
        };
        let mrr = mrr_of(SearchMode::Hybrid, &weights);
        let beats_both = mrr
            .iter()
            .all(|(k, v)| *v + 1e-9 >= keyword[k].max(semantic[k]));
        let mean_mrr = mrr.values().sum::<f64>() / mrr.len().max(1) as f64;
        rows.push(TuneRow {
            keyword_weight: weights.keyword_weight,
            bm25_weight,
            coverage_power,
            mrr,
            mean_mrr,
            beats_both,
        });
    }
    Ok(rows)
}

fn print_report(out: &mut impl std::io::Write, r: &Report) -> std::io::Result<()> {
    writeln!(
        out,
        "{}: {} calls, {} units, {} queries, keyword weight {}, bm25 weight {}",
        r.set, r.calls, r.units, r.queries, r.keyword_weight, r.bm25_weight
    )?;
    let mut split = "";
    for row in &r.results {
        if row.split != split {
            split = row.split;
            writeln!(out, "\nsplit: {split}")?;
            writeln!(
                out,
                "{:<12} {:<11} {:>7} {:>6} {:>6} {:>6} {:>6} {:>8} {:>7}",
                "mode", "kind", "queries", "MRR", "R@1", "R@5", "R@10", "nDCG@10", "call@1"
            )?;
        }
        let s = &row.summary;
        writeln!(
            out,
            "{:<12} {:<11} {:>7} {:>6.3} {:>6.3} {:>6.3} {:>6.3} {:>8.3} {:>7.3}",
            row.mode,
            row.kind,
            s.queries,
            s.mrr,
            s.recall_at_1,
            s.recall_at_5,
            s.recall_at_10,
            s.ndcg_at_10,
            s.call_at_1
        )?;
    }
    writeln!(out, "\nlatency per query (top {DEPTH}):")?;
    for l in &r.latency {
        writeln!(
            out,
            "  {:<12} p50 {:>6.1} ms   p95 {:>6.1} ms",
            l.mode, l.p50_ms, l.p95_ms
        )?;
    }
    writeln!(out, "\ngoals:")?;
    for g in &r.goals {
        let mark = if g.met { "met" } else { "NOT MET" };
        writeln!(out, "  [{}] {:<7} {}", g.split, mark, g.goal)?;
    }
    if !r.tuning.is_empty() {
        writeln!(
            out,
            "\ntuning split, hybrid MRR by fusion weights (the best 20 of {}):",
            r.tuning.len()
        )?;
        let kinds: Vec<&str> = r.tuning[0].mrr.keys().copied().collect();
        write!(out, "  {:>7} {:>5} {:>5}", "keyword", "bm25", "power")?;
        for k in &kinds {
            write!(out, " {k:>10}")?;
        }
        writeln!(out, " {:>10}  beats both", "mean")?;
        let mut sorted: Vec<&TuneRow> = r.tuning.iter().collect();
        sorted.sort_by(|a, b| {
            (b.beats_both, b.mean_mrr)
                .partial_cmp(&(a.beats_both, a.mean_mrr))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        for t in sorted.iter().take(20) {
            write!(
                out,
                "  {:>7.2} {:>5.2} {:>5.1}",
                t.keyword_weight, t.bm25_weight, t.coverage_power
            )?;
            for k in &kinds {
                write!(out, " {:>10.3}", t.mrr[k])?;
            }
            writeln!(
                out,
                " {:>10.3}  {}",
                t.mean_mrr,
                if t.beats_both { "yes" } else { "" }
            )?;
        }
        let best = sorted.first();
        if let Some(b) = best {
            writeln!(
                out,
                "  best: keyword weight {:.2}, bm25 weight {:.2}, coverage power {} (mean MRR {:.3}{})",
                b.keyword_weight,
                b.bm25_weight,
                b.coverage_power,
                b.mean_mrr,
                if b.beats_both {
                    ", beats both lists on every kind"
                } else {
                    ""
                }
            )?;
        }
    }
    Ok(())
}
