//! `callpipe eval-search` on the project's labelled set: the report is complete, and hybrid
//! search holds the goals it was tuned for (tuning split) and beats the rank-only fusion it
//! replaced on the held-out queries. Quality numbers, not timings: the latencies are reported,
//! never asserted.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn report() -> Value {
    let data = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_callpipe"))
        .env_remove("CALLPIPE_CONFIG")
        .args(["--threads", "2", "--data-dir"])
        .arg(data.path())
        .arg("eval-search")
        .arg(root().join("tests/fixtures/search"))
        .arg("--json")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

fn row<'a>(report: &'a Value, split: &str, mode: &str, kind: &str) -> &'a Value {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["split"] == split && r["mode"] == mode && r["kind"] == kind)
        .unwrap_or_else(|| panic!("no row {split} {mode} {kind}"))
}

#[test]
fn hybrid_search_meets_its_goals_on_the_labelled_set() {
    let r = report();
    assert_eq!(r["calls"], 27, "{r}");
    assert!(r["queries"].as_u64().unwrap() >= 250, "{r}");
    for split in ["tune", "holdout"] {
        for mode in ["keyword", "semantic", "rank_fusion", "hybrid"] {
            for kind in ["paraphrase", "rare", "keyword", "filter", "all"] {
                let row = row(&r, split, mode, kind);
                assert!(row["queries"].as_u64().unwrap() > 0);
                for metric in [
                    "mrr",
                    "recall_at_1",
                    "recall_at_5",
                    "recall_at_10",
                    "ndcg_at_10",
                ] {
                    let v = row[metric].as_f64().unwrap();
                    assert!(
                        (0.0..=1.0).contains(&v),
                        "{split} {mode} {kind} {metric} {v}"
                    );
                }
            }
        }
        let mrr = |mode, kind| row(&r, split, mode, kind)["mrr"].as_f64().unwrap();
        // Better than either list alone and than rank fusion, over all queries.
        for other in ["keyword", "semantic", "rank_fusion"] {
            assert!(
                mrr("hybrid", "all") > mrr(other, "all"),
                "{split}: hybrid {} vs {other} {}",
                mrr("hybrid", "all"),
                mrr(other, "all")
            );
        }
        // The exact rare word comes first when asked for.
        let rare = row(&r, split, "hybrid", "rare");
        assert!(
            rare["recall_at_1"].as_f64().unwrap() >= 0.9,
            "{split}: {rare}"
        );
    }
    // On the split the weights were chosen on, hybrid is at least the better list for every
    // kind of query.
    for kind in ["paraphrase", "rare", "keyword", "filter"] {
        let mrr = |mode| row(&r, "tune", mode, kind)["mrr"].as_f64().unwrap();
        let best = mrr("keyword").max(mrr("semantic"));
        assert!(
            mrr("hybrid") + 1e-9 >= best,
            "{kind}: hybrid {} < {best}",
            mrr("hybrid")
        );
    }
}
