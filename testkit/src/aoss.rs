//! [`StrictAoss`]: an OpenSearch emulator that behaves like an OpenSearch Serverless
//! *vector collection*, for tests of code that must work against the real one.
//!
//! The engine is `awsim-opensearch` (index mappings, `_bulk`, brute-force kNN with filters,
//! `match`, `term`, `prefix`, `range`, `_count`). On its own it is far more forgiving than
//! Serverless, so a client tested only against it could still fail in the cloud. This wrapper
//! puts Serverless's rules in front of it:
//!
//! - **SigV4.** Every request needs an `Authorization: AWS4-HMAC-SHA256` header whose credential
//!   scope names service `aoss`, a signed `x-amz-date` within 15 minutes of now, and a signed
//!   `x-amz-content-sha256` equal to the SHA-256 of the body. With
//!   [`StrictAossOptions::credentials`] set, the signature itself is recomputed and checked
//!   (an implementation of SigV4 independent of the client's). Otherwise 403.
//! - **No custom ids, upserts or refreshes.** `_bulk` `index`/`create` with an `_id` fail
//!   item by item with the error Serverless sends; `update` items, `PUT/POST _doc/{id}`,
//!   `_create/{id}`, `_update/{id}`, `_update_by_query`, `_delete_by_query`, `_refresh` and any
//!   `refresh` parameter are 400s.
//! - **Late visibility.** A document shows in `_search` and `_count` only
//!   [`StrictAossOptions::visibility_delay`] after it was written (Serverless refreshes about
//!   every 60 s), and a deleted one keeps showing for as long. `GET _doc/{id}` is real time.
//!   Internally a hidden timestamp is stored with each document, every query is wrapped in a
//!   filter on it (inside each `knn` clause too, so the top k are taken among visible
//!   documents), and the field is stripped from every `_source` returned.
//! - **What the engine skips:** each `_bulk` item gets its `status` (201 created, 200 deleted,
//!   404 not found, the error's status otherwise); vectors and kNN queries of the wrong
//!   dimension are refused; an index with a `knn_vector` field needs `index.knn: true`; writes
//!   to an index that does not exist fail instead of creating one; kNN scores follow the
//!   field's space (`innerproduct`: `1 + x·y`, or `1 / (1 - x·y)` below zero; `l2`:
//!   `1 / (1 + d²)`; `cosinesimil`: `(1 + cos) / 2`). The engine computes cosines, so the
//!   `innerproduct` and `l2` scores are exact for unit vectors only.
//!
//! Faults are injected through the handle: the next N requests answer 429 or a 5xx, the next
//! N bulk items are refused item by item, and [`StrictAoss::pause`] takes the collection down
//! (new connections are dropped, requests on open ones get 503) until [`StrictAoss::resume`].
//! [`StrictAoss::counts`] tells how many requests of each kind arrived.
//!
//! The server runs on its own thread and runtime, so it works from sync and async tests alike,
//! and stops when the handle is dropped.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use awsim_opensearch::state::OpenSearchState;
use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tower::ServiceExt;

/// The hidden source field holding when a document becomes visible (ms since the epoch).
const VISIBLE_AT: &str = "__strict_aoss_visible_at_ms";
/// Larger bodies are refused, like Serverless's request size limit.
const MAX_BODY: usize = 100 * 1024 * 1024;
/// OpenSearch's `index.max_result_window` and the k-NN plugin's largest `k`.
const MAX_HITS: u64 = 10_000;
/// The k-NN plugin's largest dimension.
const MAX_DIMENSION: u64 = 16_000;
/// How far a signature's time may be from the server's clock (SigV4's rule).
const MAX_SKEW_S: i64 = 15 * 60;

/// How the emulator behaves.
#[derive(Debug, Clone)]
pub struct StrictAossOptions {
    /// How long after a write documents show in searches and counts (and deleted ones stop
    /// showing).
    pub visibility_delay: Duration,
    /// `(access key id, secret access key)`: when set, signatures are verified with it;
    /// otherwise only their form, scope and payload hash are checked.
    pub credentials: Option<(String, String)>,
    /// The region signatures must name; `None` accepts any.
    pub region: Option<String>,
    /// The port to listen on, on 127.0.0.1; 0 picks a free one.
    pub port: u16,
}

impl Default for StrictAossOptions {
    fn default() -> Self {
        StrictAossOptions {
            visibility_delay: Duration::from_secs(1),
            credentials: None,
            region: None,
            port: 0,
        }
    }
}

/// Requests seen, by kind. Refused and injected ones count under their kind too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub bulk: u64,
    /// Actions in all `_bulk` requests.
    pub bulk_items: u64,
    pub search: u64,
    pub count: u64,
    pub create_index: u64,
    pub get_mapping: u64,
    pub doc: u64,
    pub other: u64,
    /// Refused for their signature (403).
    pub refused_auth: u64,
    /// Refused because Serverless does not allow them (custom ids, updates, refresh, ...).
    pub refused_unsupported: u64,
    /// Answered with an injected request-level fault.
    pub injected: u64,
    /// Bulk items answered with an injected item-level fault.
    pub injected_items: u64,
    /// Answered 503 (or dropped) while paused.
    pub while_paused: u64,
}

/// What the tests steer and read, shared with the server.
#[derive(Debug, Default)]
struct Control {
    paused: AtomicBool,
    /// (remaining, status) for whole requests, and for bulk items.
    request_faults: Mutex<(u32, u16)>,
    item_faults: Mutex<(u32, u16)>,
    counts: Mutex<Counts>,
    ids: AtomicU64,
}

impl Control {
    fn count(&self, f: impl FnOnce(&mut Counts)) {
        f(&mut self.counts.lock().unwrap());
    }

    fn take(faults: &Mutex<(u32, u16)>) -> Option<u16> {
        let mut f = faults.lock().unwrap();
        (f.0 > 0).then(|| {
            f.0 -= 1;
            f.1
        })
    }
}

/// A running emulator; dropping it stops the server.
pub struct StrictAoss {
    addr: SocketAddr,
    control: Arc<Control>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for StrictAoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StrictAoss")
            .field("addr", &self.addr)
            .finish()
    }
}

impl StrictAoss {
    /// Starts the emulator on 127.0.0.1 (a free port unless `options.port` names one).
    pub fn start(options: StrictAossOptions) -> io::Result<StrictAoss> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", options.port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(OpenSearchState::ephemeral().map_err(io::Error::other)?);
        let control = Arc::new(Control::default());
        let app = Arc::new(App {
            inner: awsim_opensearch::router(state.clone()),
            engine: state,
            state_indices: Mutex::new(HashMap::new()),
            pending_deletes: Mutex::new(Vec::new()),
            control: control.clone(),
            options,
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("strict-aoss")
            .enable_all()
            .build()?;
        let listener_control = control.clone();
        let thread = std::thread::Builder::new()
            .name("strict-aoss".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => panic!("strict aoss: cannot listen: {e}"),
                    };
                    let router = Router::new().fallback(handle).with_state(app);
                    let listener = PausableListener {
                        inner: listener,
                        control: listener_control,
                    };
                    tokio::select! {
                        result = axum::serve(listener, router) => {
                            if let Err(e) = result {
                                eprintln!("strict aoss: server stopped: {e}");
                            }
                        }
                        _ = rx => {}
                    }
                });
                // Open keep-alive connections are not waited for.
                runtime.shutdown_timeout(Duration::from_millis(200));
            })?;
        Ok(StrictAoss {
            addr,
            control,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The next `n` requests (any kind) are answered `status` (429, 500, 503, ...) without
    /// reaching the engine.
    pub fn fail_next_requests(&self, n: u32, status: u16) {
        *self.control.request_faults.lock().unwrap() = (n, status);
    }

    /// The next `n` bulk `index`/`create`/`delete` items are refused with `status` (429 for
    /// throttling) and not applied; the other items of the same request are.
    pub fn fail_next_bulk_items(&self, n: u32, status: u16) {
        *self.control.item_faults.lock().unwrap() = (n, status);
    }

    /// Takes the collection down: new connections are closed at once, requests on open ones
    /// are answered 503.
    pub fn pause(&self) {
        self.control.paused.store(true, Ordering::SeqCst);
    }

    pub fn resume(&self) {
        self.control.paused.store(false, Ordering::SeqCst);
    }

    pub fn counts(&self) -> Counts {
        self.control.counts.lock().unwrap().clone()
    }

    pub fn reset_counts(&self) {
        *self.control.counts.lock().unwrap() = Counts::default();
    }
}

impl Drop for StrictAoss {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A listener that drops new connections while the emulator is paused, so a client sees a
/// connection that closes before any response, as when a node goes away.
struct PausableListener {
    inner: tokio::net::TcpListener,
    control: Arc<Control>,
}

impl axum::serve::Listener for PausableListener {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    if self.control.paused.load(Ordering::SeqCst) {
                        self.control.count(|c| c.while_paused += 1);
                        drop(stream);
                        continue;
                    }
                    return (stream, addr);
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A `knn_vector` field of an index: what the engine does not check or score itself.
#[derive(Debug, Clone)]
struct KnnField {
    name: String,
    dimension: u64,
    space: String,
}

struct App {
    /// The engine behind its own REST router, used for searches, counts and index APIs.
    inner: Router,
    /// The same engine, used directly for writes and existence checks.
    engine: Arc<OpenSearchState>,
    /// The `knn_vector` fields of every index created through the wrapper.
    state_indices: Mutex<HashMap<String, Vec<KnnField>>>,
    /// Deleted documents that stay visible until their time: (index, id, at ms).
    pending_deletes: Mutex<Vec<(String, String, i64)>>,
    control: Arc<Control>,
    options: StrictAossOptions,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// An error in OpenSearch's shape.
fn os_error(status: u16, kind: &str, reason: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({
        "error": {
            "root_cause": [{ "type": kind, "reason": reason }],
            "type": kind,
            "reason": reason,
        },
        "status": status.as_u16(),
    });
    (status, axum::Json(body)).into_response()
}

fn fault_kind(status: u16) -> &'static str {
    match status {
        429 => "rejected_execution_exception",
        503 => "unavailable_shards_exception",
        _ => "internal_server_error",
    }
}

fn unsupported(reason: &str) -> Response {
    os_error(400, "illegal_argument_exception", reason)
}

/// Which request this is, from its method and path.
#[derive(Debug)]
enum Route {
    Bulk(Option<String>),
    Search(String),
    Count(String),
    CreateIndex(String),
    DeleteIndex(String),
    GetMapping(String),
    AutoIdDoc(String),
    Doc(String, String),
    Refused(&'static str),
    Forward,
}

fn route(method: &Method, path: &str) -> Route {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let index = |i: usize| segs[i].to_owned();
    match (method.as_str(), segs.as_slice()) {
        ("POST" | "PUT", ["_bulk"]) => Route::Bulk(None),
        (_, [first, ..]) if *first == "_refresh" => {
            Route::Refused("the refresh API is not supported in vector search collections")
        }
        ("PUT", [_]) => Route::CreateIndex(index(0)),
        ("DELETE", [_]) => Route::DeleteIndex(index(0)),
        ("POST" | "PUT", [_, "_bulk"]) => Route::Bulk(Some(index(0))),
        ("GET" | "POST", [_, "_search"]) => Route::Search(index(0)),
        ("GET" | "POST", [_, "_count"]) => Route::Count(index(0)),
        ("GET", [_, "_mapping" | "_mappings"]) => Route::GetMapping(index(0)),
        ("POST", [_, "_doc"]) => Route::AutoIdDoc(index(0)),
        ("PUT" | "POST", [_, "_doc", _]) | (_, [_, "_create", _]) => {
            Route::Refused("Document ID is not supported in create/index operation request")
        }
        ("GET" | "HEAD" | "DELETE", [_, "_doc", id]) => Route::Doc(index(0), (*id).to_owned()),
        (_, [_, "_update", _]) => {
            Route::Refused("update operations are not supported in vector search collections")
        }
        (_, [_, "_update_by_query"]) => {
            Route::Refused("_update_by_query is not supported in vector search collections")
        }
        (_, [_, "_delete_by_query"]) => {
            Route::Refused("_delete_by_query is not supported in vector search collections")
        }
        (_, [_, "_refresh"]) => {
            Route::Refused("the refresh API is not supported in vector search collections")
        }
        _ => Route::Forward,
    }
}

async fn handle(State(app): State<Arc<App>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = to_bytes(body, MAX_BODY).await else {
        return os_error(413, "content_too_long_exception", "request body too large");
    };
    let control = &app.control;
    if control.paused.load(Ordering::SeqCst) {
        control.count(|c| c.while_paused += 1);
        return os_error(503, "unavailable", "the collection is unavailable");
    }
    app.apply_due_deletes();
    let path = parts.uri.path().to_owned();
    let route = route(&parts.method, &path);
    control.count(|c| match &route {
        Route::Bulk(_) => c.bulk += 1,
        Route::Search(_) => c.search += 1,
        Route::Count(_) => c.count += 1,
        Route::CreateIndex(_) => c.create_index += 1,
        Route::GetMapping(_) => c.get_mapping += 1,
        Route::AutoIdDoc(_) | Route::Doc(..) => c.doc += 1,
        _ => c.other += 1,
    });
    if let Err(why) = sigv4::check(
        &parts.method,
        &parts.uri,
        &parts.headers,
        &body,
        &app.options,
    ) {
        control.count(|c| c.refused_auth += 1);
        return os_error(403, "security_exception", &why);
    }
    if let Some(status) = Control::take(&control.request_faults) {
        control.count(|c| c.injected += 1);
        return os_error(status, fault_kind(status), "injected fault");
    }
    let has_refresh = parts.uri.query().is_some_and(|q| {
        q.split('&')
            .any(|kv| kv.split('=').next() == Some("refresh"))
    });
    if has_refresh {
        control.count(|c| c.refused_unsupported += 1);
        return unsupported("the refresh parameter is not supported in vector search collections");
    }
    match route {
        Route::Refused(reason) => {
            control.count(|c| c.refused_unsupported += 1);
            unsupported(reason)
        }
        Route::Bulk(index) => app.bulk(index.as_deref(), &body),
        Route::Search(index) => app.search(&index, &body, false).await,
        Route::Count(index) => app.search(&index, &body, true).await,
        Route::CreateIndex(index) => app.create_index(&index, &body).await,
        Route::DeleteIndex(index) => {
            let response = app.forward(Method::DELETE, &path, Bytes::new()).await;
            app.state_indices.lock().unwrap().remove(&index);
            response
        }
        Route::GetMapping(index) => {
            app.forward(Method::GET, &format!("/{index}/_mapping"), Bytes::new())
                .await
        }
        Route::AutoIdDoc(index) => app.single_insert(&index, &body),
        Route::Doc(index, id) => app.doc(&parts.method, &index, &id).await,
        Route::Forward => app.forward(parts.method.clone(), &path, body).await,
    }
}

impl App {
    async fn forward(&self, method: Method, path: &str, body: Bytes) -> Response {
        let request = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .expect("a valid request");
        match self.inner.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    /// Forwards and reads the JSON answer.
    async fn forward_json(&self, method: Method, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .forward(method, path, Bytes::from(body.to_string()))
            .await;
        let status = response.status().as_u16();
        let bytes = to_bytes(response.into_body(), MAX_BODY)
            .await
            .unwrap_or_default();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn apply_due_deletes(&self) {
        let now = now_ms();
        let due: Vec<(String, String)> = {
            let mut pending = self.pending_deletes.lock().unwrap();
            let (due, keep): (Vec<_>, Vec<_>) =
                pending.drain(..).partition(|(_, _, at)| *at <= now);
            *pending = keep;
            due.into_iter().map(|(i, d, _)| (i, d)).collect()
        };
        for (index, id) in due {
            let _ = self.engine.delete_doc(&index, &id);
        }
    }

    async fn create_index(&self, index: &str, body: &Bytes) -> Response {
        let spec: Value = if body.is_empty() {
            json!({})
        } else {
            match serde_json::from_slice(body) {
                Ok(spec) => spec,
                Err(e) => return os_error(400, "parse_exception", &format!("not JSON: {e}")),
            }
        };
        let fields = match knn_fields(&spec) {
            Ok(fields) => fields,
            Err((kind, reason)) => return os_error(400, kind, &reason),
        };
        let response = self
            .forward(
                Method::PUT,
                &format!("/{index}"),
                Bytes::from(spec.to_string()),
            )
            .await;
        if response.status().is_success() {
            self.state_indices
                .lock()
                .unwrap()
                .insert(index.to_owned(), fields);
        }
        response
    }

    fn knn_fields_of(&self, index: &str) -> Vec<KnnField> {
        self.state_indices
            .lock()
            .unwrap()
            .get(index)
            .cloned()
            .unwrap_or_default()
    }

    fn new_id(&self) -> String {
        // Serverless ids look like OpenSearch's: 20 URL-safe base64 characters.
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let n = self.control.ids.fetch_add(1, Ordering::Relaxed);
        let word = |salt: u64| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(n);
            h.write_u64(salt);
            h.write_i64(now_ms());
            h.finish()
        };
        let (a, b) = (word(1), word(2));
        (0..20)
            .map(|i| {
                let bits = if i < 10 {
                    a >> (i * 6)
                } else {
                    b >> ((i - 10) * 6)
                };
                ALPHABET[(bits & 63) as usize] as char
            })
            .collect()
    }

    /// Stores `doc` under a new id, visible after the delay, or says why not (status, type,
    /// reason).
    fn insert_doc(&self, index: &str, doc: Value) -> Result<String, (u16, &'static str, String)> {
        let Value::Object(mut fields) = doc else {
            return Err((
                400,
                "mapper_parsing_exception",
                "failed to parse: the document is not an object".into(),
            ));
        };
        for knn in self.knn_fields_of(index) {
            let Some(value) = fields.get(&knn.name) else {
                continue;
            };
            let given = value
                .as_array()
                .filter(|a| a.iter().all(Value::is_number))
                .map(Vec::len);
            match given {
                Some(n) if n as u64 == knn.dimension => {}
                Some(n) => {
                    return Err((
                        400,
                        "mapper_parsing_exception",
                        format!(
                            "failed to parse field [{}] of type [knn_vector] in document: \
                             Vector dimension mismatch. Expected: {}, Given: {n}",
                            knn.name, knn.dimension
                        ),
                    ))
                }
                None => {
                    return Err((
                        400,
                        "mapper_parsing_exception",
                        format!(
                        "failed to parse field [{}] of type [knn_vector]: not an array of numbers",
                        knn.name
                    ),
                    ))
                }
            }
        }
        let visible_at = now_ms() + self.options.visibility_delay.as_millis() as i64;
        fields.insert(VISIBLE_AT.into(), json!(visible_at));
        let id = self.new_id();
        self.engine
            .put_doc(index, &id, &Value::Object(fields))
            .map_err(|e| (500, "internal_server_error", e.to_string()))?;
        Ok(id)
    }

    fn is_pending_delete(&self, index: &str, id: &str) -> bool {
        self.pending_deletes
            .lock()
            .unwrap()
            .iter()
            .any(|(i, d, _)| i == index && d == id)
    }

    /// Deletes a document as Serverless does: at once for `GET _doc`, after the delay for
    /// searches. `Ok(true)` if it was there.
    fn delete_doc(&self, index: &str, id: &str) -> Result<bool, String> {
        if self.is_pending_delete(index, id) {
            return Ok(false);
        }
        match self.engine.get_doc(index, id).map_err(|e| e.to_string())? {
            None => Ok(false),
            Some(_) if self.options.visibility_delay.is_zero() => {
                self.engine.delete_doc(index, id).map_err(|e| e.to_string())
            }
            Some(_) => {
                let at = now_ms() + self.options.visibility_delay.as_millis() as i64;
                self.pending_deletes
                    .lock()
                    .unwrap()
                    .push((index.to_owned(), id.to_owned(), at));
                Ok(true)
            }
        }
    }

    fn bulk(&self, path_index: Option<&str>, body: &[u8]) -> Response {
        let Ok(text) = std::str::from_utf8(body) else {
            return os_error(
                400,
                "illegal_argument_exception",
                "the bulk body is not UTF-8",
            );
        };
        if !text.is_empty() && !text.ends_with('\n') {
            return os_error(
                400,
                "illegal_argument_exception",
                "The bulk request must be terminated by a newline [\\n]",
            );
        }
        let lines: Vec<(usize, &str)> = text
            .split('\n')
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .collect();
        if lines.is_empty() {
            return os_error(
                400,
                "action_request_validation_exception",
                "Validation Failed: 1: no requests added;",
            );
        }
        let mut items = Vec::new();
        let mut errors = false;
        let mut next = 0;
        while next < lines.len() {
            let (n, line) = lines[next];
            next += 1;
            let action: Option<(String, Value)> = serde_json::from_str::<Value>(line)
                .ok()
                .and_then(|v| match v {
                    Value::Object(map) if map.len() == 1 => map.into_iter().next(),
                    _ => None,
                });
            let Some((name, meta)) = action else {
                return os_error(
                    400,
                    "illegal_argument_exception",
                    &format!(
                        "Malformed action/metadata line [{}], expected START_OBJECT",
                        n + 1
                    ),
                );
            };
            if !matches!(name.as_str(), "index" | "create" | "update" | "delete") {
                return os_error(
                    400,
                    "illegal_argument_exception",
                    &format!(
                        "Malformed action/metadata line [{}], expected one of [create, delete, \
                         index, update] but found [{name}]",
                        n + 1
                    ),
                );
            }
            let source = if name == "delete" {
                None
            } else {
                let Some(&(_, source)) = lines.get(next) else {
                    return os_error(
                        400,
                        "action_request_validation_exception",
                        &format!(
                            "Validation Failed: 1: the {name} action on line [{}] has no source;",
                            n + 1
                        ),
                    );
                };
                next += 1;
                Some(source)
            };
            let Some(index) = meta["_index"].as_str().or(path_index).map(str::to_owned) else {
                return os_error(
                    400,
                    "action_request_validation_exception",
                    "Validation Failed: 1: index is missing;",
                );
            };
            let id = meta["_id"].as_str().map(str::to_owned);
            self.control.count(|c| c.bulk_items += 1);
            let item = match (name.as_str(), source) {
                ("update", _) => {
                    self.control.count(|c| c.refused_unsupported += 1);
                    item_error(
                        &name,
                        &index,
                        id.as_deref(),
                        400,
                        "illegal_argument_exception",
                        "update operations are not supported in vector search collections",
                    )
                }
                ("delete", _) => {
                    let Some(id) = id else {
                        return os_error(
                            400,
                            "action_request_validation_exception",
                            "Validation Failed: 1: id is missing;",
                        );
                    };
                    self.bulk_delete(&index, &id)
                }
                (_, Some(source)) => self.bulk_insert(&name, &index, id.as_deref(), source),
                (_, None) => unreachable!("index and create actions have a source"),
            };
            errors |= item[&name].get("error").is_some();
            items.push(item);
        }
        let body = json!({ "took": 1, "errors": errors, "items": items });
        (StatusCode::OK, axum::Json(body)).into_response()
    }

    fn bulk_insert(&self, action: &str, index: &str, id: Option<&str>, source: &str) -> Value {
        if id.is_some() {
            self.control.count(|c| c.refused_unsupported += 1);
            // The error a real vector collection sends, item by item.
            return item_error(
                action,
                index,
                id,
                400,
                "illegal_argument_exception",
                "Document ID is not supported in create/index operation request",
            );
        }
        if !self.engine.index_exists(index) {
            return item_error(
                action,
                index,
                None,
                404,
                "index_not_found_exception",
                &format!("no such index [{index}]"),
            );
        }
        if let Some(status) = Control::take(&self.control.item_faults) {
            self.control.count(|c| c.injected_items += 1);
            return item_error(
                action,
                index,
                None,
                status,
                fault_kind(status),
                "injected fault",
            );
        }
        let doc = match serde_json::from_str::<Value>(source) {
            Ok(doc) => doc,
            Err(e) => {
                return item_error(
                    action,
                    index,
                    None,
                    400,
                    "mapper_parsing_exception",
                    &format!("failed to parse: {e}"),
                )
            }
        };
        match self.insert_doc(index, doc) {
            Ok(id) => json!({ action: {
                "_index": index,
                "_id": id,
                "_version": 1,
                "result": "created",
                "_shards": { "total": 2, "successful": 1, "failed": 0 },
                "_seq_no": self.engine.global_seq_no(),
                "_primary_term": 1,
                "status": 201,
            }}),
            Err((status, kind, reason)) => item_error(action, index, None, status, kind, &reason),
        }
    }

    fn bulk_delete(&self, index: &str, id: &str) -> Value {
        if !self.engine.index_exists(index) {
            return item_error(
                "delete",
                index,
                Some(id),
                404,
                "index_not_found_exception",
                &format!("no such index [{index}]"),
            );
        }
        if let Some(status) = Control::take(&self.control.item_faults) {
            self.control.count(|c| c.injected_items += 1);
            return item_error(
                "delete",
                index,
                Some(id),
                status,
                fault_kind(status),
                "injected fault",
            );
        }
        match self.delete_doc(index, id) {
            Ok(found) => json!({ "delete": deleted(index, id, found) }),
            Err(e) => item_error("delete", index, Some(id), 500, "internal_server_error", &e),
        }
    }

    fn single_insert(&self, index: &str, body: &[u8]) -> Response {
        if !self.engine.index_exists(index) {
            return os_error(
                404,
                "index_not_found_exception",
                &format!("no such index [{index}]"),
            );
        }
        let doc = match serde_json::from_slice::<Value>(body) {
            Ok(doc) => doc,
            Err(e) => {
                return os_error(
                    400,
                    "mapper_parsing_exception",
                    &format!("failed to parse: {e}"),
                )
            }
        };
        match self.insert_doc(index, doc) {
            Ok(id) => {
                let body = json!({
                    "_index": index, "_id": id, "_version": 1, "result": "created",
                    "_shards": { "total": 2, "successful": 1, "failed": 0 },
                    "_seq_no": self.engine.global_seq_no(), "_primary_term": 1,
                });
                (StatusCode::CREATED, axum::Json(body)).into_response()
            }
            Err((status, kind, reason)) => os_error(status, kind, &reason),
        }
    }

    async fn doc(&self, method: &Method, index: &str, id: &str) -> Response {
        if !self.engine.index_exists(index) {
            return os_error(
                404,
                "index_not_found_exception",
                &format!("no such index [{index}]"),
            );
        }
        if method == Method::DELETE {
            return match self.delete_doc(index, id) {
                Ok(found) => {
                    let status = if found {
                        StatusCode::OK
                    } else {
                        StatusCode::NOT_FOUND
                    };
                    let mut body = deleted(index, id, found);
                    body.as_object_mut().map(|o| o.remove("status"));
                    (status, axum::Json(body)).into_response()
                }
                Err(e) => os_error(500, "internal_server_error", &e),
            };
        }
        let found = if self.is_pending_delete(index, id) {
            None
        } else {
            self.engine.get_doc(index, id).ok().flatten()
        };
        match found {
            Some(mut source) => {
                strip_hidden(&mut source);
                let body = json!({
                    "_index": index, "_id": id, "_version": 1, "_seq_no": 0,
                    "_primary_term": 1, "found": true, "_source": source,
                });
                (StatusCode::OK, axum::Json(body)).into_response()
            }
            None => {
                let body = json!({ "_index": index, "_id": id, "found": false });
                (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
            }
        }
    }

    /// `_search` (or `_count`) over the documents visible now.
    async fn search(&self, index: &str, body: &[u8], count: bool) -> Response {
        if !self.engine.index_exists(index) {
            return os_error(
                404,
                "index_not_found_exception",
                &format!("no such index [{index}]"),
            );
        }
        let mut request: Value = if body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            match serde_json::from_slice(body) {
                Ok(v @ Value::Object(_)) => v,
                Ok(_) => {
                    return os_error(400, "parse_exception", "the request body must be an object")
                }
                Err(e) => return os_error(400, "parse_exception", &format!("not JSON: {e}")),
            }
        };
        if !count {
            let size = request["size"].as_u64().unwrap_or(10);
            let from = request["from"].as_u64().unwrap_or(0);
            if from + size > MAX_HITS {
                return os_error(
                    400,
                    "illegal_argument_exception",
                    &format!(
                        "Result window is too large, from + size must be less than or equal to: \
                     [{MAX_HITS}] but was [{}].",
                        from + size
                    ),
                );
            }
        }
        let fields = self.knn_fields_of(index);
        let query = request
            .get("query")
            .cloned()
            .unwrap_or_else(|| json!({ "match_all": {} }));
        if let Err(why) = check_knn(&query, &fields) {
            return os_error(400, "illegal_argument_exception", &why);
        }
        // A top-level kNN query scores hits by the field's space alone.
        let space = query
            .get("knn")
            .and_then(Value::as_object)
            .and_then(|knn| knn.keys().next())
            .and_then(|name| fields.iter().find(|f| &f.name == name))
            .map(|f| f.space.clone());
        let visible = json!({ "range": { VISIBLE_AT: { "lte": now_ms() } } });
        let mut query = query;
        add_knn_filter(&mut query, &visible);
        request["query"] = json!({ "bool": { "must": [query], "filter": [visible] } });
        let path = format!("/{index}/{}", if count { "_count" } else { "_search" });
        let (status, mut response) = self.forward_json(Method::POST, &path, &request).await;
        if let Some(hits) = response
            .pointer_mut("/hits/hits")
            .and_then(Value::as_array_mut)
        {
            for hit in hits.iter_mut() {
                if let Some(source) = hit.get_mut("_source") {
                    strip_hidden(source);
                }
                if let (Some(space), Some(score)) = (&space, hit["_score"].as_f64()) {
                    hit["_score"] = json!(space_score(space, score));
                }
            }
            let max = hits
                .iter()
                .filter_map(|h| h["_score"].as_f64())
                .fold(None, |m: Option<f64>, s| Some(m.map_or(s, |m| m.max(s))));
            if let Some(max) = max {
                response["hits"]["max_score"] = json!(max);
            }
        }
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(response)).into_response()
    }
}

/// A failed bulk item.
fn item_error(
    action: &str,
    index: &str,
    id: Option<&str>,
    status: u16,
    kind: &str,
    reason: &str,
) -> Value {
    let mut item = json!({
        "_index": index,
        "status": status,
        "error": { "type": kind, "reason": reason, "index": index },
    });
    if let Some(id) = id {
        item["_id"] = json!(id);
    }
    json!({ action: item })
}

/// The body of a delete's result.
fn deleted(index: &str, id: &str, found: bool) -> Value {
    json!({
        "_index": index,
        "_id": id,
        "_version": if found { 2 } else { 1 },
        "result": if found { "deleted" } else { "not_found" },
        "_shards": { "total": 2, "successful": 1, "failed": 0 },
        "_seq_no": 0,
        "_primary_term": 1,
        "status": if found { 200 } else { 404 },
    })
}

fn strip_hidden(source: &mut Value) {
    if let Some(obj) = source.as_object_mut() {
        obj.remove(VISIBLE_AT);
    }
}

/// Whether an index setting is `true` (as a boolean or a string), under any of the names
/// OpenSearch accepts for it.
fn setting_true(settings: &Value, name: &str) -> bool {
    let truthy = |v: &Value| v.as_bool() == Some(true) || v.as_str() == Some("true");
    [
        settings.get("index").and_then(|i| i.get(name)),
        settings.get(format!("index.{name}")),
        settings.get(name),
    ]
    .into_iter()
    .flatten()
    .any(truthy)
}

/// The `knn_vector` fields of an index creation body, or the type and reason of the 400
/// OpenSearch would answer.
fn knn_fields(spec: &Value) -> Result<Vec<KnnField>, (&'static str, String)> {
    let knn_on = setting_true(&spec["settings"], "knn");
    let empty = Map::new();
    let props = spec
        .pointer("/mappings/properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut fields = Vec::new();
    for (name, field) in props {
        if field["type"].as_str() != Some("knn_vector") {
            continue;
        }
        if !knn_on {
            return Err((
                "illegal_argument_exception",
                format!(
                    "Cannot create a knn_vector field [{name}] in an index without \
                     \"index.knn\": true"
                ),
            ));
        }
        let dimension = field["dimension"]
            .as_u64()
            .filter(|d| (1..=MAX_DIMENSION).contains(d))
            .ok_or_else(|| {
                (
                    "mapper_parsing_exception",
                    format!(
                        "Dimension value missing or not in [1, {MAX_DIMENSION}] for vector: {name}"
                    ),
                )
            })?;
        let method = &field["method"];
        let engine = method["engine"].as_str().unwrap_or("faiss");
        if !matches!(engine, "faiss" | "lucene" | "nmslib") {
            return Err((
                "mapper_parsing_exception",
                format!("Invalid engine [{engine}] for vector: {name}"),
            ));
        }
        let space = method["space_type"]
            .as_str()
            .or(field["space_type"].as_str())
            .unwrap_or("l2");
        if !matches!(space, "l2" | "innerproduct" | "cosinesimil" | "l1" | "linf") {
            return Err((
                "mapper_parsing_exception",
                format!("Invalid space type [{space}] for vector: {name}"),
            ));
        }
        fields.push(KnnField {
            name: name.clone(),
            dimension,
            space: space.to_owned(),
        });
    }
    Ok(fields)
}

/// Checks every `knn` clause in `query` as the k-NN plugin does: a vector field of the
/// index, a query vector of its dimension, `k` in `(0, 10000]`.
fn check_knn(query: &Value, fields: &[KnnField]) -> Result<(), String> {
    match query {
        Value::Object(obj) => {
            if let Some(knn) = obj.get("knn").and_then(Value::as_object) {
                for (name, spec) in knn {
                    let Some(field) = fields.iter().find(|f| &f.name == name) else {
                        return Err(format!("Field '{name}' is not knn_vector type."));
                    };
                    let given = spec["vector"].as_array().map_or(0, Vec::len) as u64;
                    if given != field.dimension {
                        return Err(format!(
                            "Query vector has invalid dimension: {given}. Dimension should be: {}",
                            field.dimension
                        ));
                    }
                    let k = spec["k"].as_u64().unwrap_or(0);
                    if k == 0 || k > MAX_HITS {
                        return Err(format!(
                            "[knn] requires k to be in the range (0, {MAX_HITS}]"
                        ));
                    }
                }
                return Ok(());
            }
            obj.values().try_for_each(|v| check_knn(v, fields))
        }
        Value::Array(values) => values.iter().try_for_each(|v| check_knn(v, fields)),
        _ => Ok(()),
    }
}

/// Adds `clause` to the filter of every `knn` clause in `query`, so each takes its top k
/// among the documents the clause admits.
fn add_knn_filter(query: &mut Value, clause: &Value) {
    match query {
        Value::Object(obj) => {
            if let Some(knn) = obj.get_mut("knn").and_then(Value::as_object_mut) {
                for spec in knn.values_mut() {
                    let Some(spec) = spec.as_object_mut() else {
                        continue;
                    };
                    let filter = match spec.remove("filter") {
                        Some(old) => json!({ "bool": { "filter": [old, clause] } }),
                        None => clause.clone(),
                    };
                    spec.insert("filter".into(), filter);
                }
                return;
            }
            obj.values_mut().for_each(|v| add_knn_filter(v, clause));
        }
        Value::Array(values) => values.iter_mut().for_each(|v| add_knn_filter(v, clause)),
        _ => {}
    }
}

/// The k-NN plugin's score in `space` for a hit the engine scored `(1 + cos) / 2`.
fn space_score(space: &str, engine_score: f64) -> f64 {
    let cos = (2.0 * engine_score - 1.0).clamp(-1.0, 1.0);
    match space {
        // Faiss: d = -x·y; score = 1 - d when d < 0, 1 / (1 + d) otherwise.
        "innerproduct" => {
            if cos > 0.0 {
                1.0 + cos
            } else {
                1.0 / (1.0 - cos)
            }
        }
        // d = |x - y|², which is 2 - 2 cos for unit vectors; score = 1 / (1 + d).
        "l2" => 1.0 / (1.0 + (2.0 - 2.0 * cos)),
        _ => engine_score,
    }
}

/// SigV4 verification, written from the specification (docs.aws.amazon.com, "Create a
/// signed AWS API request"), independently of the clients under test.
mod sigv4 {
    use super::*;

    const ALGORITHM: &str = "AWS4-HMAC-SHA256";
    const SERVICE: &str = "aoss";

    pub(super) fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub(super) fn sha256_hex(data: &[u8]) -> String {
        hex(&Sha256::digest(data))
    }

    pub(super) fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
        const BLOCK: usize = 64;
        let mut block = [0u8; BLOCK];
        if key.len() > BLOCK {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let pad = |byte: u8| block.map(|b| b ^ byte);
        let mut inner = Sha256::new();
        inner.update(pad(0x36));
        inner.update(data);
        let mut outer = Sha256::new();
        outer.update(pad(0x5c));
        outer.update(inner.finalize());
        outer.finalize().into()
    }

    /// The hex signature of `string_to_sign` with the key derived for the scope.
    pub(super) fn signature(
        secret: &str,
        date: &str,
        region: &str,
        service: &str,
        string_to_sign: &str,
    ) -> String {
        let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
        let k = hmac(&k, region.as_bytes());
        let k = hmac(&k, service.as_bytes());
        let k = hmac(&k, b"aws4_request");
        hex(&hmac(&k, string_to_sign.as_bytes()))
    }

    /// RFC 3986 percent-encoding of everything but the unreserved characters (and `/`).
    fn encode(bytes: &[u8], keep_slash: bool) -> String {
        let mut out = String::with_capacity(bytes.len());
        for &b in bytes {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    fn decode(s: &str) -> Vec<u8> {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 3 <= bytes.len() {
                let digits = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                if let Ok(b) = u8::from_str_radix(digits, 16) {
                    out.push(b);
                    i += 3;
                    continue;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        out
    }

    /// The canonical request. The path is encoded once more, as every service but S3
    /// expects; the query is decoded, re-encoded and sorted.
    pub(super) fn canonical_request(
        method: &str,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        signed: &[&str],
        payload_hash: &str,
    ) -> Result<String, String> {
        let path = if path.is_empty() { "/" } else { path };
        let mut pairs: Vec<(String, String)> = query
            .unwrap_or("")
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (encode(&decode(k), false), encode(&decode(v), false))
            })
            .collect();
        pairs.sort();
        let query = pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let mut canonical_headers = String::new();
        for name in signed {
            let values: Vec<String> = headers
                .get_all(*name)
                .iter()
                .map(|v| {
                    String::from_utf8_lossy(v.as_bytes())
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect();
            if values.is_empty() {
                return Err(format!("the signed header `{name}` is not in the request"));
            }
            canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
        }
        Ok(format!(
            "{method}\n{}\n{query}\n{canonical_headers}\n{}\n{payload_hash}",
            encode(path.as_bytes(), true),
            signed.join(";")
        ))
    }

    /// Seconds since the epoch of an `x-amz-date` (`20260102T030405Z`).
    pub(super) fn parse_amz_date(s: &str) -> Option<i64> {
        if s.len() != 16 || &s[8..9] != "T" || !s.ends_with('Z') {
            return None;
        }
        let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
        let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
        let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
        if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
            return None;
        }
        // Days from the civil date (H. Hinnant's algorithm).
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
    }

    /// Why the request's signature is not acceptable to Serverless, if it is not.
    pub(super) fn check(
        method: &Method,
        uri: &axum::http::Uri,
        headers: &HeaderMap,
        body: &[u8],
        options: &StrictAossOptions,
    ) -> Result<(), String> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let auth = header("authorization").ok_or(
            "missing Authorization header: requests must be signed with SigV4 for service aoss",
        )?;
        let fields = auth
            .strip_prefix(ALGORITHM)
            .filter(|rest| rest.starts_with(' '))
            .ok_or_else(|| format!("the Authorization header is not an {ALGORITHM} signature"))?;
        let mut credential = None;
        let mut signed_headers = None;
        let mut provided = None;
        for part in fields.split(',') {
            match part.trim().split_once('=') {
                Some(("Credential", v)) => credential = Some(v),
                Some(("SignedHeaders", v)) => signed_headers = Some(v),
                Some(("Signature", v)) => provided = Some(v),
                _ => {
                    return Err(format!(
                        "malformed Authorization header part `{}`",
                        part.trim()
                    ))
                }
            }
        }
        let (Some(credential), Some(signed_headers), Some(provided)) =
            (credential, signed_headers, provided)
        else {
            return Err(
                "the Authorization header needs Credential, SignedHeaders and Signature".into(),
            );
        };
        let scope: Vec<&str> = credential.split('/').collect();
        let [access_key, date, region, service, terminator] = scope.as_slice() else {
            return Err(format!("malformed credential scope `{credential}`"));
        };
        if *terminator != "aws4_request" {
            return Err(format!("malformed credential scope `{credential}`"));
        }
        if *service != SERVICE {
            return Err(format!(
                "the request is signed for service `{service}`, not `{SERVICE}`"
            ));
        }
        if let Some(want) = &options.region {
            if region != want {
                return Err(format!(
                    "the request is signed for region `{region}`, not `{want}`"
                ));
            }
        }
        let amz_date = header("x-amz-date").ok_or("missing x-amz-date header")?;
        let signed_at =
            parse_amz_date(amz_date).ok_or_else(|| format!("malformed x-amz-date `{amz_date}`"))?;
        if !amz_date.starts_with(date) {
            return Err(format!(
                "x-amz-date `{amz_date}` is not on the scope's date `{date}`"
            ));
        }
        let now = now_ms() / 1000;
        if (now - signed_at).abs() > MAX_SKEW_S {
            return Err(format!("Signature expired or not yet valid: x-amz-date `{amz_date}` is more than 15 minutes from now"));
        }
        let payload_hash = header("x-amz-content-sha256")
            .ok_or("missing x-amz-content-sha256 header: OpenSearch Serverless requires the payload's SHA-256")?;
        let actual = sha256_hex(body);
        if payload_hash != actual {
            return Err(format!(
                "x-amz-content-sha256 `{payload_hash}` is not the SHA-256 of the body ({actual})"
            ));
        }
        let signed: Vec<&str> = signed_headers.split(';').collect();
        let mut sorted = signed.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted != signed
            || signed
                .iter()
                .any(|h| h.is_empty() || h.chars().any(|c| c.is_ascii_uppercase()))
        {
            return Err(format!(
                "SignedHeaders `{signed_headers}` must be lowercase, sorted and unique"
            ));
        }
        for required in ["host", "x-amz-date", "x-amz-content-sha256"] {
            if !signed.contains(&required) {
                return Err(format!("the header `{required}` must be signed"));
            }
        }
        if headers.contains_key("x-amz-security-token") && !signed.contains(&"x-amz-security-token")
        {
            return Err("the header `x-amz-security-token` must be signed".into());
        }
        let Some((want_key, secret)) = &options.credentials else {
            return Ok(());
        };
        if access_key != want_key {
            return Err(format!("The security token included in the request is invalid: unknown access key `{access_key}`"));
        }
        let creq = canonical_request(
            method.as_str(),
            uri.path(),
            uri.query(),
            headers,
            &signed,
            payload_hash,
        )?;
        let string_to_sign = format!(
            "{ALGORITHM}\n{amz_date}\n{date}/{region}/{service}/aws4_request\n{}",
            sha256_hex(creq.as_bytes())
        );
        let expected = signature(secret, date, region, service, &string_to_sign);
        if expected != provided {
            return Err(format!(
                "The request signature we calculated does not match the signature you provided. \
                 The canonical request was:\n{creq}"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCESS: &str = "AKIDTEST";
    const SECRET: &str = "test-secret";

    /// `YYYYMMDDTHHMMSSZ` of seconds since the epoch (the inverse of `parse_amz_date`).
    fn amz_date(secs: i64) -> String {
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        format!(
            "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }

    #[test]
    fn dates_round_trip() {
        assert_eq!(
            sigv4::parse_amz_date("20260102T030405Z"),
            Some(1_767_323_045)
        );
        assert_eq!(amz_date(1_767_323_045), "20260102T030405Z");
        assert_eq!(
            sigv4::parse_amz_date("20240229T000000Z")
                .map(amz_date)
                .as_deref(),
            Some("20240229T000000Z")
        );
        assert_eq!(sigv4::parse_amz_date("2026-01-02T03:04:05Z"), None);
    }

    /// The `get-vanilla` case of AWS's SigV4 test suite.
    #[test]
    fn the_signature_matches_the_aws_test_suite() {
        let mut headers = HeaderMap::new();
        headers.insert("host", "example.amazonaws.com".parse().unwrap());
        headers.insert("x-amz-date", "20150830T123600Z".parse().unwrap());
        let empty = sigv4::sha256_hex(b"");
        let creq =
            sigv4::canonical_request("GET", "/", None, &headers, &["host", "x-amz-date"], &empty)
                .unwrap();
        assert_eq!(
            creq,
            format!("GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n{empty}")
        );
        let sts = format!(
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n{}",
            sigv4::sha256_hex(creq.as_bytes())
        );
        assert_eq!(
            sigv4::signature(
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                "20150830",
                "us-east-1",
                "service",
                &sts
            ),
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    /// HMAC-SHA256 test case 2 of RFC 4231.
    #[test]
    fn hmac_matches_rfc_4231() {
        assert_eq!(
            sigv4::hex(&sigv4::hmac(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    struct Client {
        http: reqwest::Client,
        server: StrictAoss,
    }

    /// A plain HTTP client. The workspace compiles rustls with two providers (the AWS SDK's
    /// aws-lc-rs, the mongodb driver's ring), so reqwest needs one installed before it builds.
    fn http_client() -> reqwest::Client {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        reqwest::Client::new()
    }

    impl Client {
        fn start(delay_ms: u64) -> Client {
            let server = StrictAoss::start(StrictAossOptions {
                visibility_delay: Duration::from_millis(delay_ms),
                credentials: Some((ACCESS.into(), SECRET.into())),
                region: Some("us-east-1".into()),
                port: 0,
            })
            .unwrap();
            Client {
                http: http_client(),
                server,
            }
        }

        /// Sends a request signed by the emulator's own SigV4 code, `service` as given.
        async fn send_as(
            &self,
            service: &str,
            method: &str,
            target: &str,
            body: &str,
        ) -> (u16, Value) {
            let (path, query) = target
                .split_once('?')
                .map_or((target, None), |(p, q)| (p, Some(q)));
            let date = amz_date(now_ms() / 1000);
            let hash = sigv4::sha256_hex(body.as_bytes());
            let mut headers = HeaderMap::new();
            headers.insert("content-type", "application/json".parse().unwrap());
            headers.insert(
                "host",
                format!("127.0.0.1:{}", self.server.port()).parse().unwrap(),
            );
            headers.insert("x-amz-content-sha256", hash.parse().unwrap());
            headers.insert("x-amz-date", date.parse().unwrap());
            let signed = ["content-type", "host", "x-amz-content-sha256", "x-amz-date"];
            let creq =
                sigv4::canonical_request(method, path, query, &headers, &signed, &hash).unwrap();
            let scope = format!("{}/us-east-1/{service}/aws4_request", &date[..8]);
            let sts = format!(
                "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
                sigv4::sha256_hex(creq.as_bytes())
            );
            let sig = sigv4::signature(SECRET, &date[..8], "us-east-1", service, &sts);
            let auth = format!(
                "AWS4-HMAC-SHA256 Credential={ACCESS}/{scope}, SignedHeaders={}, Signature={sig}",
                signed.join(";")
            );
            headers.insert("authorization", auth.parse().unwrap());
            let response = self
                .http
                .request(
                    method.parse().unwrap(),
                    format!("{}{target}", self.server.endpoint()),
                )
                .headers(headers)
                .body(body.to_owned())
                .send()
                .await
                .expect("send");
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            (status, serde_json::from_str(&text).unwrap_or(Value::Null))
        }

        async fn send(&self, method: &str, target: &str, body: &str) -> (u16, Value) {
            self.send_as("aoss", method, target, body).await
        }

        async fn create(&self) {
            let mapping = json!({
                "settings": { "index": { "knn": true } },
                "mappings": { "properties": {
                    "v": { "type": "knn_vector", "dimension": 2,
                           "method": { "name": "hnsw", "engine": "faiss", "space_type": "innerproduct" } },
                    "tag": { "type": "keyword" },
                }},
            });
            let (status, body) = self.send("PUT", "/idx", &mapping.to_string()).await;
            assert_eq!(status, 200, "{body}");
        }

        async fn count(&self) -> u64 {
            let (status, body) = self
                .send("POST", "/idx/_count", r#"{"query":{"match_all":{}}}"#)
                .await;
            assert_eq!(status, 200, "{body}");
            body["count"].as_u64().unwrap()
        }
    }

    #[tokio::test]
    async fn requests_must_be_signed_for_aoss_with_the_payload_hash() {
        let c = Client::start(0);
        let (status, body) = c.send_as("es", "GET", "/idx/_mapping", "").await;
        assert_eq!(status, 403);
        assert!(
            body["error"]["reason"]
                .as_str()
                .unwrap()
                .contains("`es`, not `aoss`"),
            "{body}"
        );
        let response = c
            .http
            .get(format!("{}/idx/_mapping", c.server.endpoint()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 403);
        // A body other than the one hashed.
        let date = amz_date(now_ms() / 1000);
        let response = c
            .http
            .post(format!("{}/idx/_count", c.server.endpoint()))
            .header("x-amz-date", &date)
            .header("x-amz-content-sha256", sigv4::sha256_hex(b"{}"))
            .header(
                "authorization",
                format!("AWS4-HMAC-SHA256 Credential={ACCESS}/{}/us-east-1/aoss/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=00", &date[..8]),
            )
            .body("{\"query\":{}}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 403);
        let text = response.text().await.unwrap();
        assert!(text.contains("is not the SHA-256 of the body"), "{text}");
        assert_eq!(c.server.counts().refused_auth, 3);
    }

    #[tokio::test]
    async fn serverless_refusals() {
        let c = Client::start(0);
        c.create().await;
        let (status, body) = c
            .send(
                "PUT",
                "/plain",
                r#"{"mappings":{"properties":{"v":{"type":"knn_vector","dimension":2}}}}"#,
            )
            .await;
        assert_eq!(status, 400, "an index.knn setting is required: {body}");

        let bulk = "{\"index\":{\"_id\":\"mine\"}}\n{\"v\":[1,0]}\n{\"update\":{\"_id\":\"x\"}}\n{\"doc\":{}}\n{\"index\":{}}\n{\"v\":[1,0,0]}\n";
        let (status, body) = c.send("POST", "/idx/_bulk", bulk).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["errors"], true);
        let items = body["items"].as_array().unwrap();
        assert_eq!(items[0]["index"]["status"], 400);
        assert_eq!(
            items[0]["index"]["error"]["reason"],
            "Document ID is not supported in create/index operation request"
        );
        assert_eq!(items[1]["update"]["status"], 400);
        assert_eq!(items[2]["index"]["status"], 400);
        assert!(items[2]["index"]["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("Expected: 2, Given: 3"));

        for (method, target, body) in [
            (
                "POST",
                "/idx/_bulk?refresh=true",
                "{\"index\":{}}\n{\"v\":[1,0]}\n",
            ),
            ("PUT", "/idx/_doc/mine", "{\"v\":[1,0]}"),
            ("POST", "/idx/_update/mine", "{\"doc\":{}}"),
            (
                "POST",
                "/idx/_delete_by_query",
                "{\"query\":{\"match_all\":{}}}",
            ),
            (
                "POST",
                "/idx/_update_by_query",
                "{\"query\":{\"match_all\":{}}}",
            ),
            ("POST", "/idx/_refresh", ""),
        ] {
            let (status, body) = c.send(method, target, body).await;
            assert_eq!(status, 400, "{method} {target}: {body}");
            assert_eq!(body["error"]["type"], "illegal_argument_exception");
        }
        let (status, _) = c
            .send("POST", "/missing/_bulk", "{\"index\":{}}\n{\"v\":[1,0]}\n")
            .await;
        assert_eq!(status, 200);
        assert_eq!(c.count().await, 0, "nothing was written");
        let (status, _) = c
            .send("POST", "/idx/_bulk", "{\"index\":{}}\n{\"v\":[1,0]}")
            .await;
        assert_eq!(status, 400, "a bulk body must end with a newline");
    }

    #[tokio::test]
    async fn writes_show_after_the_delay_and_deletes_linger() {
        let c = Client::start(400);
        c.create().await;
        let bulk = "{\"index\":{}}\n{\"v\":[1,0],\"tag\":\"a\"}\n{\"index\":{}}\n{\"v\":[0,1],\"tag\":\"b\"}\n";
        let (_, body) = c.send("POST", "/idx/_bulk", bulk).await;
        let items = body["items"].as_array().unwrap();
        assert!(items.iter().all(|i| i["index"]["status"] == 201), "{body}");
        let id = items[0]["index"]["_id"].as_str().unwrap().to_owned();
        assert_eq!(id.len(), 20);
        assert_eq!(c.count().await, 0, "not visible yet");
        let (status, doc) = c.send("GET", &format!("/idx/_doc/{id}"), "").await;
        assert_eq!(status, 200, "a get by id is real time");
        assert!(doc["_source"].get(VISIBLE_AT).is_none(), "{doc}");
        tokio::time::sleep(Duration::from_millis(450)).await;
        assert_eq!(c.count().await, 2);

        // kNN with a filter, scored in the innerproduct space: 1 + x·y.
        let knn = json!({"size": 2, "query": {"knn": {"v": {"vector": [1.0, 0.0], "k": 2,
            "filter": {"term": {"tag": "a"}}}}}});
        let (status, body) = c.send("POST", "/idx/_search", &knn.to_string()).await;
        assert_eq!(status, 200, "{body}");
        let hits = body["hits"]["hits"].as_array().unwrap();
        assert_eq!(hits.len(), 1, "{body}");
        assert!(
            (hits[0]["_score"].as_f64().unwrap() - 2.0).abs() < 1e-9,
            "{body}"
        );
        assert!(hits[0]["_source"].get(VISIBLE_AT).is_none(), "{body}");
        let bad = json!({"query": {"knn": {"v": {"vector": [1.0], "k": 2}}}});
        let (status, body) = c.send("POST", "/idx/_search", &bad.to_string()).await;
        assert_eq!(status, 400, "{body}");

        let (_, body) = c
            .send(
                "POST",
                "/idx/_bulk",
                &format!(
                    "{{\"delete\":{{\"_id\":\"{id}\"}}}}\n{{\"delete\":{{\"_id\":\"nope\"}}}}\n"
                ),
            )
            .await;
        assert_eq!(body["items"][0]["delete"]["status"], 200, "{body}");
        assert_eq!(body["items"][1]["delete"]["status"], 404, "{body}");
        assert_eq!(body["errors"], false, "a delete of nothing is not an error");
        let (status, _) = c.send("GET", &format!("/idx/_doc/{id}"), "").await;
        assert_eq!(status, 404, "gone for a get at once");
        assert_eq!(c.count().await, 2, "still counted until the delay passes");
        tokio::time::sleep(Duration::from_millis(450)).await;
        assert_eq!(c.count().await, 1);
    }

    #[tokio::test]
    async fn faults_are_injected_and_counted() {
        let c = Client::start(0);
        c.create().await;
        c.server.fail_next_requests(2, 429);
        assert_eq!(c.send("POST", "/idx/_count", "{}").await.0, 429);
        assert_eq!(c.send("POST", "/idx/_count", "{}").await.0, 429);
        assert_eq!(c.send("POST", "/idx/_count", "{}").await.0, 200);
        c.server.fail_next_bulk_items(1, 429);
        let (_, body) = c
            .send(
                "POST",
                "/idx/_bulk",
                "{\"index\":{}}\n{\"v\":[1,0]}\n{\"index\":{}}\n{\"v\":[0,1]}\n",
            )
            .await;
        assert_eq!(body["items"][0]["index"]["status"], 429, "{body}");
        assert_eq!(body["items"][1]["index"]["status"], 201, "{body}");
        assert_eq!(c.count().await, 1);
        let counts = c.server.counts();
        assert_eq!(
            (counts.injected, counts.injected_items, counts.bulk),
            (2, 1, 1),
            "{counts:?}"
        );

        c.server.pause();
        let fresh = http_client();
        let err = fresh
            .get(format!("{}/idx/_mapping", c.server.endpoint()))
            .send()
            .await;
        assert!(err.is_err(), "new connections are dropped while paused");
        c.server.resume();
        assert_eq!(c.count().await, 1);
    }
}
