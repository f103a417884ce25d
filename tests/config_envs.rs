//! The contract between the infrastructure and the binary: every environment's
//! `callpipe.toml`, with the `CALLPIPE_*` overrides each task of `terraform/modules/compute`
//! sets, passes `callpipe config check` (with `--stage` for the worker tasks).
//!
//! The overrides are read from `main.tf` itself: the `task_env` map and the maps it merges
//! (`redis_env`, `mongodb_env`, ...), plus `extra_environment` from each environment's
//! `terraform.tfvars`. Literal values are kept as they are; `var.*` references become typed
//! dummies (a queue URL, a bucket, an ARN, ...), and a variable this file has no dummy for fails
//! the test, so a new one gets a deliberate value. A key the binary does not know fails
//! `config check` (every section denies unknown fields), and finding no task fails here, so a
//! parse regression cannot pass silently.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn callpipe() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_callpipe"));
    // Nothing from the caller's environment may decide the result.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CALLPIPE_") {
            cmd.env_remove(name);
        }
    }
    cmd.env("NO_COLOR", "1");
    cmd
}

// --- A small reader for the HCL that main.tf uses in these maps. ---

/// The text of the balanced `{...}`, `(...)` or `[...]` that opens at `open` (exclusive of the
/// delimiters), skipping strings (with `${...}` inside them) and comments.
fn balanced(text: &str, open: usize) -> &str {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = open;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => i = string_end(text, i),
            b'#' => i = text[i..].find('\n').map_or(bytes.len(), |n| i + n),
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                i = text[i..].find('\n').map_or(bytes.len(), |n| i + n)
            }
            b'{' | b'(' | b'[' => depth += 1,
            b'}' | b')' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return &text[open + 1..i];
                }
            }
            _ => {}
        }
        i += 1;
    }
    panic!("unbalanced delimiters from byte {open}");
}

/// The index of the quote that closes the string opening at `start`.
fn string_end(text: &str, start: usize) -> usize {
    let bytes = text.as_bytes();
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'"' => return i,
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                i += 1 + balanced(text, i + 1).len() + 1;
            }
            _ => {}
        }
        i += 1;
    }
    panic!("unterminated string at byte {start}");
}

/// Where the expression that starts at `start` ends: the end of its line, or further while a
/// bracket it opened is still open; a `,` or a comment ends it too.
fn expr_end(text: &str, start: usize) -> usize {
    let bytes = text.as_bytes();
    let mut j = start;
    loop {
        match bytes.get(j) {
            None | Some(b'\n' | b',' | b'#') => return j,
            Some(b'"') => j = string_end(text, j) + 1,
            Some(b'{' | b'(' | b'[') => j += balanced(text, j).len() + 2,
            Some(_) => j += 1,
        }
    }
}

/// `NAME = EXPR` entries at the top level of a block body, in order.
fn entries(body: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        // Blanks, commas and comments between entries.
        match bytes[i] {
            b' ' | b'\t' | b'\r' | b'\n' | b',' => {
                i += 1;
                continue;
            }
            b'#' => {
                i = body[i..].find('\n').map_or(bytes.len(), |n| i + n);
                continue;
            }
            _ => {}
        }
        let eq = i + body[i..].find('=').expect("an entry has `=`");
        let name = body[i..eq].trim().trim_matches('"').to_owned();
        let end = expr_end(body, eq + 1);
        out.push((name, body[eq + 1..end].trim().to_owned()));
        i = end;
    }
    out
}

/// The expression of the first `NAME = ...` line in `text` (a `locals` entry, a tfvars value).
fn find_definition<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix(name) {
            let after = rest.trim_start();
            let is_assignment = after.starts_with('=') && !after.starts_with("==");
            if rest.starts_with([' ', '\t', '=']) && is_assignment {
                let eq = offset + line.len() - after.len();
                return Some(text[eq + 1..expr_end(text, eq + 1)].trim());
            }
        }
        offset += line.len();
    }
    None
}

fn definition<'a>(text: &'a str, name: &str) -> &'a str {
    find_definition(text, name).unwrap_or_else(|| panic!("no definition of {name} in main.tf"))
}

/// A dummy value of the right shape for a Terraform variable.
fn dummy(var: &str) -> String {
    let v = var.trim();
    if let Some(stage) = v
        .strip_prefix("var.queue_urls[\"")
        .and_then(|s| s.strip_suffix("\"]"))
    {
        return format!("https://sqs.us-east-1.amazonaws.com/123456789012/callpipe-dev-{stage}");
    }
    if v.starts_with("var.visibility_timeouts[") {
        return "900".into();
    }
    let name = v
        .strip_prefix("var.")
        .unwrap_or_else(|| panic!("not a variable: {v}"));
    match name {
        "redis_endpoint" => "master.callpipe-dev.abc123.use1.cache.amazonaws.com".into(),
        "collection_endpoint" => "https://abc.us-east-1.aoss.amazonaws.com".into(),
        "mongodb_database" => "callpipe".into(),
        n if n.ends_with("_bucket_name") => {
            format!(
                "callpipe-dev-{}",
                n.trim_end_matches("_bucket_name").replace('_', "-")
            )
        }
        n if n.ends_with("_arn") => "arn:aws:secretsmanager:us-east-1:123456789012:secret:x".into(),
        n if n.ends_with("port") => "6379".into(),
        n if n.contains("timeout") => "900".into(),
        n => panic!("no dummy for var.{n}: add one to tests/config_envs.rs"),
    }
}

/// The value of one map entry: a string literal (with `${var.*}` interpolated), `var.*` or
/// `tostring(var.*)`.
fn value(expr: &str) -> String {
    let expr = expr.trim();
    if let Some(inner) = expr
        .strip_prefix("tostring(")
        .and_then(|e| e.strip_suffix(')'))
    {
        return value(inner);
    }
    if expr.starts_with("var.") {
        return dummy(expr);
    }
    if expr.starts_with('"') && expr.ends_with('"') {
        let mut out = String::new();
        let mut rest = &expr[1..expr.len() - 1];
        while let Some(open) = rest.find("${") {
            out.push_str(&rest[..open]);
            let close = open + rest[open..].find('}').expect("`${` closes");
            out.push_str(&dummy(&rest[open + 2..close]));
            rest = &rest[close + 1..];
        }
        out.push_str(rest);
        return out;
    }
    panic!("unsupported value expression: {expr}");
}

/// A map expression: `{ K = V ... }`, `merge(MAP, ...)`, `local.NAME`, or `COND ? MAP : {}`
/// (taken as true: the conditional maps add keys, and every key must be known).
fn map(main_tf: &str, expr: &str) -> BTreeMap<String, String> {
    let expr = expr.trim();
    if let Some(q) = top_level(expr, '?') {
        let branches = &expr[q + 1..];
        let colon = top_level(branches, ':').expect("a conditional has `:`");
        return map(main_tf, &branches[..colon]);
    }
    if let Some(name) = expr.strip_prefix("local.") {
        return map(main_tf, definition(main_tf, name));
    }
    let mut out = BTreeMap::new();
    if let Some(args) = expr.strip_prefix("merge") {
        let args = args.trim_start();
        for arg in call_args(balanced(args, 0)) {
            out.extend(map(main_tf, arg));
        }
        return out;
    }
    assert!(expr.starts_with('{'), "unsupported map expression: {expr}");
    for (key, v) in entries(balanced(expr, 0)) {
        out.insert(key, value(&v));
    }
    out
}

/// The position of `c` outside any string or bracket.
fn top_level(text: &str, c: char) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => i = string_end(text, i),
            b'{' | b'(' | b'[' => i += balanced(text, i).len() + 1,
            b if b == c as u8 => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// The comma-separated arguments of a call.
fn call_args(args: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = args;
    while !rest.trim().is_empty() {
        let end = top_level(rest, ',').unwrap_or(rest.len());
        out.push(rest[..end].trim());
        rest = &rest[(end + 1).min(rest.len())..];
    }
    out
}

/// Each task's environment overrides, by task name.
fn task_envs(main_tf: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let body = definition(main_tf, "task_env");
    let body = balanced(body, body.find('{').expect("task_env is a map"));
    entries(body)
        .into_iter()
        .map(|(task, expr)| (task, map(main_tf, &expr)))
        .collect()
}

/// The `--stage` of each task whose command is `worker`, from the `commands` map.
fn worker_stages(main_tf: &str) -> BTreeMap<String, String> {
    let body = definition(main_tf, "commands");
    let body = balanced(body, body.find('{').expect("commands is a map"));
    entries(body)
        .into_iter()
        .filter_map(|(task, command)| {
            let words: Vec<&str> = command
                .split([',', '[', ']'])
                .map(|w| w.trim().trim_matches('"'))
                .collect();
            let stage = words.iter().position(|w| *w == "--stage")?;
            assert_eq!(words.get(1), Some(&"worker"), "{task}: {command}");
            Some((task, words[stage + 1].to_owned()))
        })
        .collect()
}

/// `extra_environment` of an environment's terraform.tfvars: only CALLPIPE_ keys matter.
fn extra_environment(env_dir: &Path) -> BTreeMap<String, String> {
    let tfvars = std::fs::read_to_string(env_dir.join("terraform.tfvars")).unwrap_or_default();
    let Some(expr) = find_definition(&tfvars, "extra_environment") else {
        return BTreeMap::new();
    };
    assert!(expr.starts_with('{'), "extra_environment is a map: {expr}");
    entries(balanced(expr, 0))
        .into_iter()
        .map(|(k, v)| (k, value(&v)))
        .filter(|(k, _)| k.starts_with("CALLPIPE_"))
        .collect()
}

#[test]
fn the_reader_understands_main_tf_shapes() {
    let tf = r#"
  locals {
    a_env = {
      CALLPIPE_A__X = var.redis_endpoint   # a comment
      CALLPIPE_A__Y = tostring(var.redis_port)
    }
    b_env = local.on ? {
      CALLPIPE_B__Z = "cuda"
    } : {}
    task_env = {
      one = merge({
        CALLPIPE_C__URL = var.queue_urls["ingest"]
      }, local.a_env, local.b_env)
      two = {
        CALLPIPE_D__LISTEN = "0.0.0.0:${var.container_port}"
      }
    }
    commands = {
      one = ["worker", "--stage", "ingest", "--config", var.config_path]
      two = ["serve", "--config", var.config_path]
    }
  }
"#;
    let envs = task_envs(tf);
    assert_eq!(envs.len(), 2);
    assert_eq!(
        envs["one"]["CALLPIPE_C__URL"],
        "https://sqs.us-east-1.amazonaws.com/123456789012/callpipe-dev-ingest"
    );
    assert_eq!(envs["one"]["CALLPIPE_A__Y"], "6379");
    assert_eq!(envs["one"]["CALLPIPE_B__Z"], "cuda");
    assert_eq!(envs["one"].len(), 4);
    assert_eq!(envs["two"]["CALLPIPE_D__LISTEN"], "0.0.0.0:6379");
    let stages = worker_stages(tf);
    assert_eq!(stages.len(), 1);
    assert_eq!(stages["one"], "ingest");
}

#[test]
fn every_environment_passes_config_check_with_every_tasks_overrides() {
    let main_tf =
        std::fs::read_to_string(root().join("terraform/modules/compute/main.tf")).unwrap();
    let envs = task_envs(&main_tf);
    let stages = worker_stages(&main_tf);
    assert!(!envs.is_empty(), "no task found in task_env of main.tf");
    for stage in ["ingest", "transcribe", "index"] {
        assert!(
            stages.values().any(|s| s == stage),
            "no worker task runs --stage {stage}: {stages:?}"
        );
    }
    for task in stages.keys() {
        assert!(envs.contains_key(task), "task {task} has no task_env entry");
    }
    // `Config::read` takes only CALLPIPE_SECTION__KEY variables: a name without `__` would be
    // ignored, not refused.
    for (task, vars) in &envs {
        assert!(!vars.is_empty(), "task {task} sets no override");
        for name in vars.keys() {
            assert!(
                name.starts_with("CALLPIPE_") && name.contains("__"),
                "task {task}: {name} is not a CALLPIPE_SECTION__KEY override"
            );
        }
    }

    let mut env_dirs: Vec<PathBuf> = std::fs::read_dir(root().join("environments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("callpipe.toml").is_file())
        .collect();
    env_dirs.sort();
    assert!(!env_dirs.is_empty(), "no environments/*/callpipe.toml");

    let mut failures = Vec::new();
    let mut checked = 0;
    for env_dir in &env_dirs {
        let extra = extra_environment(env_dir);
        for (task, vars) in &envs {
            let mut cmd = callpipe();
            cmd.arg("config")
                .arg("check")
                .arg("--config")
                .arg(env_dir.join("callpipe.toml"));
            if let Some(stage) = stages.get(task) {
                cmd.args(["--stage", stage]);
            }
            cmd.envs(vars).envs(&extra);
            let output = cmd.output().unwrap();
            checked += 1;
            if !output.status.success() {
                failures.push(format!(
                    "{} / {task} (stage {:?}, {vars:?}):\n{}{}",
                    env_dir.display(),
                    stages.get(task),
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert_eq!(checked, env_dirs.len() * envs.len());
}

#[test]
fn config_check_names_the_keys_it_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("callpipe.toml");
    std::fs::write(
        &file,
        "[storage]\nobject_store = \"s3\"\n\n[queue]\n\
         ingest_url = \"https://sqs.us-east-1.amazonaws.com/123456789012/in\"\n",
    )
    .unwrap();
    let output = callpipe()
        .args(["config", "check", "--stage", "ingest", "--config"])
        .arg(&file)
        .env("CALLPIPE_WORKER__POLL_WAIT_S", "30")
        .env("CALLPIPE_REDIS__URL", "redis://:hunter2@127.0.0.1:6379")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    for key in [
        "storage.artifacts_bucket",
        "worker.poll_wait_s",
        "queue.transcribe_url",
        "queue.index_url",
    ] {
        assert_eq!(
            stderr
                .lines()
                .filter(|l| l.contains(&format!("`{key}`")))
                .count(),
            1,
            "{key}:\n{stderr}"
        );
    }
    assert_eq!(stderr.lines().count(), 4, "{stderr}");
    assert!(
        !stdout.contains("hunter2") && stdout.contains("redis://:***@"),
        "{stdout}"
    );

    // An unknown key fails loading, naming it; JSON says the same.
    let output = callpipe()
        .args(["config", "check", "--json"])
        .env("CALLPIPE_QUEUE__INGEST", "x")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let message = report["problems"][0]["message"].as_str().unwrap();
    assert!(message.contains("ingest"), "{message}");

    // The defaults are ready for every stage in one process.
    let output = callpipe()
        .args(["config", "check", "--stage", "all", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["stages"]["transcribe"]["queues"], "in_process");
    assert_eq!(report["config"]["queue"]["capacity"], 64);
}
