//! The HTTP API: routing, authentication, quotas and the handlers. Every answer that is not a
//! result is an [`ApiError`] with a stable code; a run's result is the library's
//! [`ExecutionResult`], byte for byte the JSON `vana-sandbox exec --json` prints.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL};
use http::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use vana_sandbox_core::{
    Engine, EngineError, ExecutionRequest, ExecutionResult, LayerName, OutputChunk, OutputChunks,
    OutputSink, ProcessIo, Runtime, Session, SessionOptions,
};
use vana_sandbox_monitor::metrics::Metrics;

use crate::body::{error, json, read_limited, sse_event, with_type, Body};
use crate::config::{parse_sha256, ServerSettings};
use crate::error::ApiError;
use crate::quota::{self, RunGuard};
use crate::sessions::Registry;
use crate::tenants::{bearer, Tenant, Tenants};

/// A policy's required layers and runtime: `/readyz` holds them against the backend.
#[derive(Debug, Clone)]
pub(crate) struct Requirement {
    pub(crate) label: String,
    pub(crate) layers: Vec<LayerName>,
    pub(crate) runtime: Option<Runtime>,
}

/// Everything the handlers share.
pub(crate) struct State {
    pub(crate) engine: Engine,
    pub(crate) settings: ServerSettings,
    pub(crate) tenants: Tenants,
    pub(crate) sessions: Registry,
    pub(crate) metrics: Option<Metrics>,
    pub(crate) requirements: Vec<Requirement>,
    pub(crate) metrics_token: Option<[u8; 32]>,
    /// Set when shutdown begins: new work is refused (503) and `/readyz` says no.
    pub(crate) draining: AtomicBool,
    /// Fired when the shutdown grace ends: running work is dropped (its sandboxes killed).
    pub(crate) cancel: CancellationToken,
    /// Streaming runs (they outlive their handler).
    pub(crate) tasks: TaskTracker,
    /// The last test run's outcome (`/readyz`).
    pub(crate) probe: Mutex<Probe>,
}

/// What the last test run said about the backend.
#[derive(Debug, Clone)]
pub(crate) enum Probe {
    /// No test run has finished yet.
    Pending,
    /// The last one succeeded.
    Passed,
    /// The last one failed: why.
    Failed(String),
    /// Test runs are off.
    Off,
}

/// A trivial program in a language the engine has (Bash, else Python, else none).
fn probe_request(engine: &Engine, n: u64) -> Option<ExecutionRequest> {
    let has = |name: &str| engine.languages().iter().any(|l| l.name() == name);
    let (language, code) = if has("bash") {
        ("bash", "exit 0")
    } else if has("python") {
        ("python", "pass")
    } else {
        return None;
    };
    Some(ExecutionRequest {
        id: Some(format!("readyz-{n}")),
        ..ExecutionRequest::new(language, code)
    })
}

/// Runs a trivial program every `interval` (the first at once) under the server's policy and
/// records whether it succeeded: a host where sandboxes cannot be made (a read-only cgroup
/// tree, a missing privilege) is then not ready, whatever the layer probe said. A full queue
/// leaves the last outcome as it was.
pub(crate) async fn probe_loop(state: Arc<State>, interval: Duration) {
    let set = |p: Probe| *state.probe.lock().unwrap_or_else(|e| e.into_inner()) = p;
    for n in 1u64.. {
        if state.draining.load(Ordering::Acquire) {
            return;
        }
        let Some(request) = probe_request(&state.engine, n) else {
            set(Probe::Off);
            return;
        };
        match state.engine.execute(request).await {
            Ok(r) if r.status == vana_sandbox_core::Status::Success => set(Probe::Passed),
            Ok(r) => set(Probe::Failed(format!(
                "a test run ended `{}`: {}",
                r.status,
                r.error.unwrap_or_default()
            ))),
            Err(EngineError::QueueFull { .. }) => {}
            Err(e) => set(Probe::Failed(format!("a test run failed: {e}"))),
        }
        tokio::time::sleep(interval).await;
    }
}

/// Where a request went, for metrics: the route's template and the tenant once known.
struct Ctx {
    route: &'static str,
    tenant: Option<Arc<Tenant>>,
    /// A stream records its own metrics when it ends.
    streaming: bool,
}

/// Answers one request.
pub(crate) async fn handle<B>(state: Arc<State>, req: Request<B>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let begun = Instant::now();
    let mut ctx = Ctx {
        route: "other",
        tenant: None,
        streaming: false,
    };
    let response = match dispatch(&state, req, &mut ctx, begun).await {
        Ok(r) => r,
        Err(e) => {
            if let (ApiError::Quota { quota, .. }, Some(t)) = (&e, &ctx.tenant) {
                if let Some(m) = &state.metrics {
                    m.quota_rejection(&t.name, quota);
                }
            }
            if e.status().is_server_error() {
                tracing::warn!(route = ctx.route, code = e.code(), "{e}");
            }
            error(&e)
        }
    };
    if !ctx.streaming {
        record(
            &state,
            ctx.route,
            response.status(),
            ctx.tenant.as_deref(),
            begun,
        );
    }
    response
}

fn record(state: &State, route: &str, status: StatusCode, tenant: Option<&Tenant>, begun: Instant) {
    if let Some(m) = &state.metrics {
        m.http_request(
            route,
            status.as_u16(),
            tenant.map(|t| t.name.as_str()),
            begun.elapsed().as_secs_f64(),
        );
    }
}

/// The query's `key`, percent-decoded.
fn query(req_query: Option<&str>, key: &str) -> Result<Option<String>, ApiError> {
    for pair in req_query.unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == key {
            return percent_decode(v).map(Some);
        }
    }
    Ok(None)
}

fn flag(req_query: Option<&str>, key: &str) -> Result<bool, ApiError> {
    match query(req_query, key)?.as_deref() {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(other) => Err(ApiError::BadRequest(format!(
            "`{key}` must be true or false (got `{other}`)"
        ))),
    }
}

/// Decodes `%XX` escapes (and `+` as a space in queries is not used: paths and values are
/// taken literally otherwise). Invalid escapes, invalid UTF-8 and NUL are refused.
pub(crate) fn percent_decode(text: &str) -> Result<String, ApiError> {
    let bad = || ApiError::BadRequest(format!("invalid percent-encoding in `{text}`"));
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = text.get(i + 1..i + 3).ok_or_else(bad)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    let s = String::from_utf8(out).map_err(|_| bad())?;
    if s.contains('\0') {
        return Err(bad());
    }
    Ok(s)
}

/// The route of a request: its template and the session id and file path in it.
enum Route<'a> {
    Health,
    Ready,
    Metrics,
    Executions,
    Sessions,
    Session(&'a str),
    Run(&'a str),
    Kill(&'a str),
    Files(&'a str),
    File(&'a str, &'a str),
    Archive(&'a str),
    Unknown,
}

impl Route<'_> {
    fn parse(path: &str) -> Route<'_> {
        let Some(rest) = path.strip_prefix('/') else {
            return Route::Unknown;
        };
        let mut parts = rest.splitn(5, '/');
        let seg: [Option<&str>; 5] = std::array::from_fn(|_| parts.next());
        match seg {
            [Some("healthz"), None, ..] => Route::Health,
            [Some("readyz"), None, ..] => Route::Ready,
            [Some("metrics"), None, ..] => Route::Metrics,
            [Some("v1"), Some("executions"), None, ..] => Route::Executions,
            [Some("v1"), Some("sessions"), None, ..] => Route::Sessions,
            [Some("v1"), Some("sessions"), Some(id), None, _] if !id.is_empty() => {
                Route::Session(id)
            }
            [Some("v1"), Some("sessions"), Some(id), Some(op), None] if !id.is_empty() => {
                match op {
                    "run" => Route::Run(id),
                    "kill" => Route::Kill(id),
                    "files" => Route::Files(id),
                    "archive" => Route::Archive(id),
                    _ => Route::Unknown,
                }
            }
            [Some("v1"), Some("sessions"), Some(id), Some("files"), Some(file)]
                if !id.is_empty() && !file.is_empty() =>
            {
                Route::File(id, file)
            }
            _ => Route::Unknown,
        }
    }

    fn template(&self) -> &'static str {
        match self {
            Route::Health => "/healthz",
            Route::Ready => "/readyz",
            Route::Metrics => "/metrics",
            Route::Executions => "/v1/executions",
            Route::Sessions => "/v1/sessions",
            Route::Session(_) => "/v1/sessions/{id}",
            Route::Run(_) => "/v1/sessions/{id}/run",
            Route::Kill(_) => "/v1/sessions/{id}/kill",
            Route::Files(_) => "/v1/sessions/{id}/files",
            Route::File(..) => "/v1/sessions/{id}/files/{path}",
            Route::Archive(_) => "/v1/sessions/{id}/archive",
            Route::Unknown => "other",
        }
    }
}

async fn dispatch<B>(
    state: &Arc<State>,
    req: Request<B>,
    ctx: &mut Ctx,
    begun: Instant,
) -> Result<Response<Body>, ApiError>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let path = req.uri().path().to_string();
    let q = req.uri().query().map(str::to_string);
    let q = q.as_deref();
    let route = Route::parse(&path);
    ctx.route = route.template();
    let method = req.method().clone();
    match route {
        Route::Health => {
            only(&method, &[Method::GET, Method::HEAD])?;
            return Ok(with_type(
                StatusCode::OK,
                "text/plain",
                "ok\n".to_string().into(),
            ));
        }
        Route::Ready => {
            only(&method, &[Method::GET, Method::HEAD])?;
            return Ok(ready(state));
        }
        Route::Metrics => {
            only(&method, &[Method::GET])?;
            return metrics(state, &req);
        }
        Route::Unknown if !path.starts_with("/v1/") => return Err(ApiError::NotFound),
        _ => {}
    }
    // Everything under /v1 belongs to a tenant.
    let tenant = state.tenants.authenticate(req.headers())?;
    ctx.tenant = Some(tenant.clone());
    let stream = flag(q, "stream")?;
    match route {
        Route::Executions => {
            only(&method, &[Method::POST])?;
            refuse_when_draining(state)?;
            let request = read_request(state, req).await?;
            let guard = quota::admit_run(&tenant, Instant::now(), retry(state))?;
            if stream {
                ctx.streaming = true;
                let engine = state.engine.clone();
                let name = tenant.name.clone();
                return stream_run(state, tenant, guard, ctx.route, begun, move |sink| {
                    Box::pin(async move {
                        let io = ProcessIo {
                            sink: Some(sink),
                            ..ProcessIo::default()
                        };
                        engine.execute_as_with_io(&name, request, io).await
                    })
                })
                .await;
            }
            let run = state.engine.execute_as(&tenant.name, request);
            let result = until_cancelled(state, run).await?;
            finish_run(state, &tenant, &result, guard);
            Ok(json(StatusCode::OK, &result))
        }
        Route::Sessions if method == Method::POST => {
            refuse_when_draining(state)?;
            open_session(state, &tenant, req).await
        }
        Route::Sessions => {
            only(&method, &[Method::GET, Method::POST])?;
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "sessions": state.sessions.ids(&tenant) }),
            ))
        }
        Route::Session(id) => {
            only(&method, &[Method::GET, Method::DELETE])?;
            if method == Method::GET {
                let s = session(state, &tenant, id)?;
                return Ok(json(StatusCode::OK, &serde_json::json!({ "id": s.id() })));
            }
            let s = state
                .sessions
                .remove(&tenant, id)
                .ok_or(ApiError::NotFound)?;
            match s.close().await {
                Ok(()) | Err(EngineError::SessionClosed) => Ok(no_content()),
                Err(e) => Err(ApiError::from_engine(e, retry(state))),
            }
        }
        Route::Run(id) => {
            only(&method, &[Method::POST])?;
            refuse_when_draining(state)?;
            let s = session(state, &tenant, id)?;
            let request = read_request(state, req).await?;
            let guard = quota::admit_run(&tenant, Instant::now(), retry(state))?;
            if stream {
                ctx.streaming = true;
                return stream_run(state, tenant, guard, ctx.route, begun, move |sink| {
                    Box::pin(async move { s.run(request, Some(sink)).await })
                })
                .await;
            }
            let result = until_cancelled(state, s.run(request, None)).await?;
            finish_run(state, &tenant, &result, guard);
            Ok(json(StatusCode::OK, &result))
        }
        Route::Kill(id) => {
            only(&method, &[Method::POST])?;
            session(state, &tenant, id)?.kill();
            Ok(no_content())
        }
        Route::Files(id) => {
            only(&method, &[Method::GET])?;
            let s = session(state, &tenant, id)?;
            let dir = query(q, "dir")?.unwrap_or_default();
            let list = s.files().list(&dir).await.map_err(ApiError::from_backend)?;
            Ok(json(StatusCode::OK, &serde_json::json!({ "files": list })))
        }
        Route::File(id, raw) => {
            only(&method, &[Method::GET, Method::PUT, Method::DELETE])?;
            let s = session(state, &tenant, id)?;
            let path = percent_decode(raw)?;
            let files = s.files();
            if method == Method::GET {
                let data = files.read(&path).await.map_err(ApiError::from_backend)?;
                Ok(with_type(
                    StatusCode::OK,
                    "application/octet-stream",
                    data.into(),
                ))
            } else if method == Method::PUT {
                refuse_when_draining(state)?;
                let data = read_upload(state, req, "file").await?;
                files
                    .write(&path, data.to_vec())
                    .await
                    .map_err(ApiError::from_backend)?;
                Ok(no_content())
            } else {
                files.remove(&path).await.map_err(ApiError::from_backend)?;
                Ok(no_content())
            }
        }
        Route::Archive(id) => {
            only(&method, &[Method::GET, Method::PUT])?;
            let s = session(state, &tenant, id)?;
            if method == Method::GET {
                let dir = query(q, "dir")?.unwrap_or_default();
                let tar = s
                    .files()
                    .download(&dir)
                    .await
                    .map_err(ApiError::from_backend)?;
                return Ok(with_type(StatusCode::OK, "application/x-tar", tar.into()));
            }
            refuse_when_draining(state)?;
            let data = read_upload(state, req, "archive").await?;
            let n = s
                .files()
                .upload(&data)
                .await
                .map_err(ApiError::from_backend)?;
            Ok(json(StatusCode::OK, &serde_json::json!({ "files": n })))
        }
        Route::Health | Route::Ready | Route::Metrics | Route::Unknown => Err(ApiError::NotFound),
    }
}

fn only(method: &Method, allowed: &[Method]) -> Result<(), ApiError> {
    if allowed.contains(method) {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed)
    }
}

fn retry(state: &State) -> Duration {
    Duration::from_secs(state.settings.retry_after_secs)
}

fn no_content() -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

fn refuse_when_draining(state: &State) -> Result<(), ApiError> {
    if state.draining.load(Ordering::Acquire) {
        Err(ApiError::ShuttingDown)
    } else {
        Ok(())
    }
}

/// `tenant`'s session `id`; another tenant's, a closed one and an unknown one alike are 404.
fn session(state: &State, tenant: &Arc<Tenant>, id: &str) -> Result<Session, ApiError> {
    state.sessions.get(tenant, id).ok_or(ApiError::NotFound)
}

/// Runs `work` unless the shutdown grace ends first (then it is dropped, which stops its
/// sandbox, and the caller gets 503).
async fn until_cancelled<T>(
    state: &State,
    work: impl Future<Output = Result<T, EngineError>>,
) -> Result<T, ApiError> {
    tokio::select! {
        r = work => r.map_err(|e| ApiError::from_engine(e, retry(state))),
        _ = state.cancel.cancelled() => Err(ApiError::ShuttingDown),
    }
}

/// Counts a finished run's CPU in its tenant's hour.
fn finish_run(state: &State, tenant: &Tenant, result: &ExecutionResult, guard: RunGuard) {
    drop(guard);
    let cpu = result.resource_usage.cpu_time
        + result
            .compile
            .as_ref()
            .map_or(0.0, |c| c.resource_usage.cpu_time);
    let now = Instant::now();
    tenant.quota.record_cpu(cpu, now);
    if let Some(m) = &state.metrics {
        m.tenant_cpu(&tenant.name, tenant.quota.cpu_last_hour(now));
    }
}

/// Reads a request's JSON body within the server's limits.
async fn read_json<T: for<'de> Deserialize<'de>, B>(
    state: &State,
    req: Request<B>,
    empty_ok: bool,
) -> Result<Option<T>, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (parts, body) = req.into_parts();
    let data = read_limited(
        &parts.headers,
        body,
        state.settings.max_body_bytes,
        "request body",
        state.settings.body_timeout(),
    )
    .await?;
    if empty_ok && data.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&data)
        .map(Some)
        .map_err(|e| ApiError::BadRequest(format!("malformed request JSON: {e}")))
}

/// Sizes of code and files against the server's limits (413).
fn check_sizes(
    settings: &ServerSettings,
    code: &str,
    files: &[vana_sandbox_core::FileSpec],
) -> Result<(), ApiError> {
    if code.len() as u64 > settings.max_code_bytes {
        return Err(ApiError::TooLarge {
            what: "code",
            limit: settings.max_code_bytes,
        });
    }
    let total: u64 = files
        .iter()
        .map(|f| {
            let text = f.content.as_ref().map_or(0, String::len);
            // Base64 decodes to three bytes per four characters.
            let b64 = f.content_base64.as_ref().map_or(0, |b| b.len() / 4 * 3);
            (text + b64) as u64
        })
        .sum();
    if total > settings.max_files_bytes {
        return Err(ApiError::TooLarge {
            what: "files",
            limit: settings.max_files_bytes,
        });
    }
    Ok(())
}

async fn read_request<B>(state: &State, req: Request<B>) -> Result<ExecutionRequest, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let r: ExecutionRequest = read_json(state, req, false)
        .await?
        .ok_or_else(|| ApiError::BadRequest("empty body".into()))?;
    check_sizes(&state.settings, &r.code, &r.files)?;
    Ok(r)
}

/// The body of a file or archive upload, cut at the largest file the settings allow.
async fn read_upload<B>(
    state: &State,
    req: Request<B>,
    what: &'static str,
) -> Result<Bytes, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (parts, body) = req.into_parts();
    read_limited(
        &parts.headers,
        body,
        state.settings.max_file_bytes,
        what,
        state.settings.body_timeout(),
    )
    .await
}

/// A new session id: 128 random bits.
fn session_id() -> Result<String, ApiError> {
    crate::tenants::random_bytes::<16>()
        .map(|b| format!("s-{}", crate::config::hex(&b)))
        .map_err(|e| ApiError::Sandbox(format!("no randomness for a session id: {e}")))
}

async fn open_session<B>(
    state: &State,
    tenant: &Arc<Tenant>,
    req: Request<B>,
) -> Result<Response<Body>, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let mut options: SessionOptions = read_json(state, req, true).await?.unwrap_or_default();
    if options.id.is_some() {
        return Err(ApiError::BadRequest(
            "`id`: the server chooses session ids".into(),
        ));
    }
    check_sizes(&state.settings, "", &options.files)?;
    // Sessions the engine closed by itself give their places back first.
    state.sessions.sweep();
    let guard = quota::admit_session(tenant, retry(state))?;
    options.id = Some(session_id()?);
    let s = until_cancelled(state, state.engine.session_as(&tenant.name, options)).await?;
    let id = s.id().to_string();
    state.sessions.insert(tenant.clone(), s, guard);
    Ok(json(StatusCode::CREATED, &serde_json::json!({ "id": id })))
}

type RunFuture = Pin<Box<dyn Future<Output = Result<ExecutionResult, EngineError>> + Send>>;

fn chunk_event(chunk: &OutputChunk) -> Bytes {
    sse_event("chunk", chunk)
}

/// A run as server-sent events: `chunk` events (`{"stream": "stdout", "text": …}`) as output
/// comes, then one `result` event (the result JSON) or one `error` event (an error body).
///
/// The run is polled once before the answer starts: a refusal at admission (a full queue)
/// is then still an HTTP status (429). A cell that waits behind another cell of its session
/// is admitted later; a refusal then arrives as an `error` event.
async fn stream_run(
    state: &Arc<State>,
    tenant: Arc<Tenant>,
    guard: RunGuard,
    route: &'static str,
    begun: Instant,
    start: impl FnOnce(OutputSink) -> RunFuture,
) -> Result<Response<Body>, ApiError> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let chunkers = Arc::new(Mutex::new(OutputChunks::default()));
    let sink: OutputSink = {
        let tx = tx.clone();
        let chunkers = chunkers.clone();
        Box::new(move |kind, data| {
            let chunk = chunkers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(kind, data);
            if let Some(chunk) = chunk {
                let _ = tx.send(chunk_event(&chunk));
            }
        })
    };
    let mut run = start(sink);
    let first = std::future::poll_fn(|cx| Poll::Ready(run.as_mut().poll(cx))).await;
    let first = match first {
        Poll::Ready(Err(e)) => {
            let e = ApiError::from_engine(e, retry(state));
            record(state, route, e.status(), Some(&tenant), begun);
            return Err(e);
        }
        Poll::Ready(Ok(result)) => Some(result),
        Poll::Pending => None,
    };
    let st = state.clone();
    state.tasks.spawn(async move {
        let outcome = match first {
            Some(r) => Some(Ok(r)),
            None => tokio::select! {
                r = run.as_mut() => Some(r),
                // The client went away: dropping the run stops its sandbox.
                _ = tx.closed() => None,
                _ = st.cancel.cancelled() => Some(Err(EngineError::ShuttingDown)),
            },
        };
        drop(run);
        match outcome {
            Some(Ok(result)) => {
                finish_run(&st, &tenant, &result, guard);
                let tails = chunkers.lock().unwrap_or_else(|p| p.into_inner()).finish();
                for chunk in &tails {
                    let _ = tx.send(chunk_event(chunk));
                }
                let _ = tx.send(sse_event("result", &result));
            }
            Some(Err(e)) => {
                drop(guard);
                let e = ApiError::from_engine(e, retry(&st));
                let _ = tx.send(sse_event("error", &e.body()));
            }
            None => drop(guard),
        }
        record(&st, route, StatusCode::OK, Some(&tenant), begun);
    });
    let mut r = with_type(StatusCode::OK, "text/event-stream", Body::Stream(rx));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(r)
}

/// `/readyz`: ready unless shutting down, and only while every policy's required layers (and
/// runtime) hold on the backend and the last test run succeeded.
fn ready(state: &State) -> Response<Body> {
    let mut reasons = Vec::new();
    if state.draining.load(Ordering::Acquire) {
        reasons.push("shutting down".to_string());
    }
    let caps = state.engine.executor().capabilities();
    for r in &state.requirements {
        if let Err(e) = caps.check(&r.layers, r.runtime) {
            reasons.push(format!("{}: {e}", r.label));
        }
    }
    match &*state.probe.lock().unwrap_or_else(|e| e.into_inner()) {
        Probe::Pending => reasons.push("the first test run has not finished".into()),
        Probe::Failed(why) => reasons.push(why.clone()),
        Probe::Passed | Probe::Off => {}
    }
    let ok = reasons.is_empty();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(
        status,
        &serde_json::json!({
            "ready": ok,
            "reasons": reasons,
            "backend": state.engine.executor().kind().as_str(),
            "running": state.engine.running(),
            "queued": state.engine.queued(),
        }),
    )
}

/// `/metrics`: the Prometheus text of the engine's and the server's series.
fn metrics<B>(state: &State, req: &Request<B>) -> Result<Response<Body>, ApiError> {
    if let Some(want) = &state.metrics_token {
        let got = bearer(req.headers()).ok_or(ApiError::MetricsToken)?;
        let digest: [u8; 32] = sha2::Digest::finalize(sha2::Digest::chain_update(
            <sha2::Sha256 as sha2::Digest>::new(),
            got.as_bytes(),
        ))
        .into();
        if &digest != want {
            return Err(ApiError::MetricsToken);
        }
    }
    let m = state.metrics.as_ref().ok_or(ApiError::NotFound)?;
    let now = Instant::now();
    for t in state.tenants.all() {
        m.tenant_cpu(&t.name, t.quota.cpu_last_hour(now));
    }
    let text = m.render_prometheus().ok_or(ApiError::NotFound)?;
    Ok(with_type(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        text.into(),
    ))
}

/// The metrics token's hash from the settings.
pub(crate) fn metrics_token(settings: &ServerSettings) -> Result<Option<[u8; 32]>, ApiError> {
    settings
        .metrics_token_sha256
        .as_deref()
        .map(parse_sha256)
        .transpose()
        .map_err(ApiError::BadRequest)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert!(matches!(Route::parse("/v1/executions"), Route::Executions));
        assert!(matches!(Route::parse("/v1/sessions"), Route::Sessions));
        assert!(matches!(
            Route::parse("/v1/sessions/s-1"),
            Route::Session("s-1")
        ));
        assert!(matches!(
            Route::parse("/v1/sessions/s-1/run"),
            Route::Run("s-1")
        ));
        assert!(matches!(
            Route::parse("/v1/sessions/s-1/files/a/b%20c.txt"),
            Route::File("s-1", "a/b%20c.txt")
        ));
        assert!(matches!(
            Route::parse("/v1/sessions/s-1/files"),
            Route::Files("s-1")
        ));
        assert!(matches!(Route::parse("/v1/sessions//run"), Route::Unknown));
        assert!(matches!(
            Route::parse("/v1/sessions/s-1/nope"),
            Route::Unknown
        ));
        assert!(matches!(Route::parse("/v1/executions/x"), Route::Unknown));
        assert!(matches!(Route::parse("/metrics"), Route::Metrics));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("a%20b/c.txt").ok().as_deref(),
            Some("a b/c.txt")
        );
        assert_eq!(percent_decode("%2e%2e/x").ok().as_deref(), Some("../x"));
        for bad in ["%", "%4", "%zz", "%00", "%ff"] {
            assert!(percent_decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn queries() {
        assert_eq!(flag(Some("stream=true"), "stream").ok(), Some(true));
        assert_eq!(flag(Some("a=1&stream"), "stream").ok(), Some(true));
        assert_eq!(flag(None, "stream").ok(), Some(false));
        assert!(flag(Some("stream=maybe"), "stream").is_err());
        assert_eq!(
            query(Some("dir=out%2Fcharts"), "dir")
                .ok()
                .flatten()
                .as_deref(),
            Some("out/charts")
        );
    }
}
