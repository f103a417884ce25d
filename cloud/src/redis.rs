//! [`Coordination`] on Redis (ElastiCache, cluster mode disabled), through `fred`.
//!
//! Every operation is one Lua script, so each check-and-set is atomic on the server and costs
//! one round trip. Keys live in four namespaces under the deployment's prefix:
//! `{prefix}lease:{key}` (holds the holder's token, expires with the lease),
//! `{prefix}fence:{key}` (the last token handed out for the key), `{prefix}marker:{key}` and
//! `{prefix}counter:{key}`.
//!
//! # Failure behaviour
//! - The client reconnects on its own (exponential backoff up to 2 s, forever), so a restarted
//!   or failed-over Redis is picked up without restarting the worker; scripts evicted by the
//!   restart are loaded again on the first `NOSCRIPT`.
//! - Each command times out after 2 s, so a dead Redis answers [`CoordError::Unavailable`]
//!   quickly instead of hanging a worker. Commands are written once, never replayed after a
//!   dropped connection: a replayed acquire or add could apply twice, and an honest
//!   `Unavailable` lets the caller decide.
//! - Authentication, permission, TLS and configuration errors, and scripts the server refuses,
//!   are [`CoordError::Misconfigured`].
//!
//! # Fencing across a Redis restart
//! A Redis without persistence (or a failover to a replica that had not yet received the last
//! writes) forgets the fence counters. Tokens are therefore `max(last + 1, server time in µs)`:
//! between two acquires of one key at least a round trip passes, so a token is never ahead of
//! the server clock by more than a few units, and after a restart the clock has moved past
//! every token handed out before. This holds as long as the server clock does not step back
//! further than the restart took (NTP slews, it does not jump, on ElastiCache). The fence key
//! is kept an hour after each acquire to cover smaller steps and same-microsecond acquires,
//! then dropped so fence keys do not accumulate. A restart still loses the leases themselves:
//! their holders see `holds == false` and stop, and the next holder's token is larger.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use callpipe_common::coord::{CoordError, Coordination, Lease};
use fred::prelude::{
    Builder, ClientLike, Config, Error as FredError, ErrorKind as FredErrorKind, ReconnectPolicy,
    ServerConfig, TlsConfig, TlsConnector, Value,
};
use fred::types::config::UnresponsiveConfig;
use fred::types::scripts::Script;

/// How long one command may take before the store counts as unavailable.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a TCP connect plus TLS handshake (and AUTH) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection with a reply outstanding this long is torn down and reconnected (a peer that
/// vanished without a reset, e.g. a failed-over node).
const UNRESPONSIVE_AFTER: Duration = Duration::from_secs(4);
/// Reconnect backoff: first retry after this many ms, doubling up to the maximum.
const RECONNECT_MIN_MS: u32 = 100;
const RECONNECT_MAX_MS: u32 = 2_000;
/// How long a fence key outlives its last acquire (see the module docs).
const FENCE_RETENTION: Duration = Duration::from_secs(3600);
/// Redis rejects expiries past about 2^63 ms from now; nothing here needs more than a century.
const MAX_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// KEYS: lease, fence. ARGV: lease ttl (ms), fence retention (ms). Returns the token or nil.
const ACQUIRE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
if redis.replicate_commands then redis.replicate_commands() end
local now = redis.call('TIME')
local floor = tonumber(now[1]) * 1000000 + tonumber(now[2])
local token = tonumber(redis.call('GET', KEYS[2]) or '0') + 1
if token < floor then token = floor end
local text = string.format('%d', token)
redis.call('SET', KEYS[2], text, 'PX', ARGV[2])
redis.call('SET', KEYS[1], text, 'PX', ARGV[1])
return token
"#;

/// KEYS: lease. ARGV: token, ttl (ms). Returns 1 if the lease was held and extended.
const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// KEYS: lease. ARGV: token. Deletes the lease only if it still carries the token.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#;

/// KEYS: lease. ARGV: token.
const HOLDS: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
return 0
"#;

/// KEYS: marker. ARGV: ttl (ms).
const SET_MARKER: &str = r#"
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return 1
"#;

/// KEYS: marker.
const HAS_MARKER: &str = r#"
return redis.call('EXISTS', KEYS[1])
"#;

/// KEYS: counter. ARGV: by, ttl (ms, 0 for none). The ttl is set only by the add that creates
/// the counter, so a fixed window stays fixed.
const ADD: &str = r#"
local created = redis.call('EXISTS', KEYS[1]) == 0
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if created and tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return value
"#;

/// The server's clock in ms, for the admission-set scripts (members are scored by expiry).
const NOW_MS: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"#;

/// KEYS: set. ARGV: limit, ttl (ms), members... Returns how many of the members (a prefix)
/// are in the set afterwards. Expired members are dropped first; the set key itself lives as
/// long as its longest-lived member.
const ADMIT: &str = r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local n = redis.call('ZCARD', KEYS[1])
local limit = tonumber(ARGV[1])
local expiry = now + tonumber(ARGV[2])
local taken = 0
for i = 3, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], expiry, ARGV[i])
  elseif n < limit then
    redis.call('ZADD', KEYS[1], expiry, ARGV[i])
    n = n + 1
  else
    break
  end
  taken = taken + 1
end
if taken > 0 and redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return taken
"#;

/// KEYS: set. ARGV: member. Returns 1 if a live member was removed.
const RETIRE: &str = r#"
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
if tonumber(s) > now then return 1 end
return 0
"#;

/// KEYS: set. ARGV: members... Returns 1 or 0 per member: in the set and live.
const ADMITTED: &str = r#"
local out = {}
for i = 1, #ARGV do
  local s = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if s and tonumber(s) > now then out[i] = 1 else out[i] = 0 end
end
return out
"#;

/// KEYS: set. Live members.
const OCCUPANCY: &str = r#"
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
"#;

/// Where the Redis is and how to reach it. The caller reads `password` (the AUTH token) from
/// Secrets Manager; nothing here logs it.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://host:port` or `rediss://host:port` (TLS), for local use. Wins over `endpoint`,
    /// `port` and `tls` when given; a password in the URL wins over `password`.
    pub url: Option<String>,
    /// Host name of the primary (ElastiCache: the primary endpoint address).
    pub endpoint: String,
    pub port: u16,
    /// TLS with the system's root certificates (ElastiCache in-transit encryption).
    pub tls: bool,
    /// The AUTH token, if the server requires one.
    pub password: Option<String>,
    /// Prepended to every key, so deployments can share a Redis: `"callpipe:"`.
    pub key_prefix: String,
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            url: None,
            endpoint: "localhost".to_owned(),
            port: 6379,
            tls: false,
            password: None,
            key_prefix: "callpipe:".to_owned(),
        }
    }
}

/// Shows everything but secrets: the password, and credentials inside the URL.
impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("endpoint", &self.endpoint)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

/// `scheme://user:secret@host...` → `scheme://<redacted>@host...`.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}<redacted>{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// The scripts, hashed once; `EVALSHA` sends the hash, and the body only after a `NOSCRIPT`.
struct Scripts {
    acquire: Script,
    renew: Script,
    release: Script,
    holds: Script,
    set_marker: Script,
    has_marker: Script,
    add: Script,
    admit: Script,
    retire: Script,
    admitted: Script,
    occupancy: Script,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            acquire: Script::from_lua(ACQUIRE),
            renew: Script::from_lua(RENEW),
            release: Script::from_lua(RELEASE),
            holds: Script::from_lua(HOLDS),
            set_marker: Script::from_lua(SET_MARKER),
            has_marker: Script::from_lua(HAS_MARKER),
            add: Script::from_lua(ADD),
            admit: Script::from_lua(format!("{NOW_MS}{ADMIT}")),
            retire: Script::from_lua(format!("{NOW_MS}{RETIRE}")),
            admitted: Script::from_lua(format!("{NOW_MS}{ADMITTED}")),
            occupancy: Script::from_lua(format!("{NOW_MS}{OCCUPANCY}")),
        }
    }

    fn all(&self) -> [&Script; 11] {
        [
            &self.admit,
            &self.retire,
            &self.admitted,
            &self.occupancy,
            &self.acquire,
            &self.renew,
            &self.release,
            &self.holds,
            &self.set_marker,
            &self.has_marker,
            &self.add,
        ]
    }
}

/// Leases, markers and counters in Redis. See the module docs for the failure behaviour and
/// the fencing guarantee across restarts.
pub struct RedisCoordination {
    client: fred::clients::Client,
    /// The task that drives the connection; aborted on drop, since its reconnect loop would
    /// otherwise outlive every handle.
    connection: fred::types::ConnectHandle,
    scripts: Scripts,
    prefix: String,
    /// `redis://host:port`, without credentials.
    name: String,
}

impl fmt::Debug for RedisCoordination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCoordination")
            .field("name", &self.name)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisCoordination {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl RedisCoordination {
    /// Connects, authenticates and loads the scripts, so a wrong endpoint, password or TLS
    /// setting fails here, at start-up, rather than on the first lease.
    pub async fn connect(settings: RedisSettings) -> Result<Self, CoordError> {
        let (config, name) = client_config(&settings)?;
        let misconfigured = |reason: String| CoordError::Misconfigured {
            store: name.clone(),
            reason,
        };

        let mut builder = Builder::from_config(config);
        builder
            .set_policy(ReconnectPolicy::new_exponential(
                0,
                RECONNECT_MIN_MS,
                RECONNECT_MAX_MS,
                2,
            ))
            .with_performance_config(|p| p.default_command_timeout = COMMAND_TIMEOUT)
            .with_connection_config(|c| {
                c.connection_timeout = CONNECT_TIMEOUT;
                c.internal_command_timeout = CONNECT_TIMEOUT;
                c.max_command_attempts = 1;
                c.unresponsive = UnresponsiveConfig {
                    max_timeout: Some(UNRESPONSIVE_AFTER),
                    interval: Duration::from_secs(1),
                };
            });
        let client = builder
            .build()
            .map_err(|e| misconfigured(e.details().to_owned()))?;

        // `init` waits for the first connection (fail-fast: no reconnect loop yet), bounded
        // in case a handshake stalls past the connect timeout.
        let connection = match tokio::time::timeout(CONNECT_TIMEOUT * 2, client.init()).await {
            Ok(Ok(task)) => task,
            Ok(Err(e)) => return Err(map_error(&name, &e)),
            Err(_) => {
                return Err(CoordError::Unavailable {
                    store: name,
                    reason: format!("no connection within {:?}", CONNECT_TIMEOUT * 2),
                })
            }
        };
        let this = RedisCoordination {
            client,
            connection,
            scripts: Scripts::new(),
            prefix: settings.key_prefix,
            name,
        };
        // PING surfaces a missing password (the server accepts the connection, then answers
        // NOAUTH); loading the scripts surfaces a server that refuses scripting.
        this.client
            .ping::<Value>(None)
            .await
            .map_err(|e| this.error(&e))?;
        for script in this.scripts.all() {
            script
                .load(&this.client)
                .await
                .map_err(|e| this.error(&e))?;
        }
        tracing::debug!(store = %this.name, prefix = %this.prefix, "connected to redis");
        Ok(this)
    }

    fn key(&self, namespace: &str, key: &str) -> String {
        format!("{}{namespace}:{key}", self.prefix)
    }

    fn error(&self, error: &FredError) -> CoordError {
        map_error(&self.name, error)
    }

    async fn eval<R: fred::types::FromValue>(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<R, CoordError> {
        script
            .evalsha_with_reload(&self.client, keys, args)
            .await
            .map_err(|e| self.error(&e))
    }

    async fn check_lease(&self, script: &Script, lease: &Lease) -> Result<bool, CoordError> {
        let held: i64 = self
            .eval(
                script,
                vec![self.key("lease", &lease.key)],
                vec![token_arg(lease.token), millis(lease.ttl).into()],
            )
            .await?;
        Ok(held == 1)
    }
}

/// The fred configuration and the store's display name from the settings.
fn client_config(settings: &RedisSettings) -> Result<(Config, String), CoordError> {
    let misconfigured = |store: String, reason: String| CoordError::Misconfigured { store, reason };
    let mut config = match &settings.url {
        Some(url) => Config::from_url(url)
            .map_err(|e| misconfigured(redact_url(url), format!("bad url: {}", e.details())))?,
        None => {
            let tls = if settings.tls {
                crate::tls::install_default_provider();
                let connector = TlsConnector::default_rustls().map_err(|e| {
                    misconfigured(
                        format!("rediss://{}:{}", settings.endpoint, settings.port),
                        format!("tls setup: {}", e.details()),
                    )
                })?;
                Some(TlsConfig::from(connector))
            } else {
                None
            };
            Config {
                server: ServerConfig::new_centralized(settings.endpoint.clone(), settings.port),
                tls,
                ..Config::default()
            }
        }
    };
    if config.password.is_none() {
        config.password.clone_from(&settings.password);
    }
    let scheme = if config.tls.is_some() {
        "rediss"
    } else {
        "redis"
    };
    let name = match config.server.hosts().first() {
        Some(server) => format!("{scheme}://{}:{}", server.host, server.port),
        None => format!("{scheme}://?"),
    };
    if !config.server.is_centralized() {
        return Err(misconfigured(
            name,
            "only a single primary is supported (no cluster, sentinel or socket URLs)".to_owned(),
        ));
    }
    Ok((config, name))
}

/// Whose fault a fred error is: the network's (retry later) or this worker's configuration.
fn map_error(store: &str, error: &FredError) -> CoordError {
    let reason = error.details().to_owned();
    let unavailable = || CoordError::Unavailable {
        store: store.to_owned(),
        reason: format!("{}: {reason}", error.kind().to_str()),
    };
    let misconfigured = || CoordError::Misconfigured {
        store: store.to_owned(),
        reason: format!("{}: {reason}", error.kind().to_str()),
    };
    match error.kind() {
        FredErrorKind::IO
        | FredErrorKind::Timeout
        | FredErrorKind::Canceled
        | FredErrorKind::Backpressure
        | FredErrorKind::Cluster
        | FredErrorKind::Routing
        | FredErrorKind::Sentinel => unavailable(),
        FredErrorKind::Auth | FredErrorKind::Config | FredErrorKind::Url | FredErrorKind::Tls => {
            misconfigured()
        }
        _ => {
            // A server's error reply starts with its code; the client's own errors do not.
            let code = reason.split_whitespace().next().unwrap_or("");
            match code {
                "LOADING" | "BUSY" | "TRYAGAIN" | "READONLY" | "MASTERDOWN" | "CLUSTERDOWN"
                | "OOM" | "NOREPLICAS" => unavailable(),
                "ERR" if reason.contains("max number of clients") => unavailable(),
                _ if is_error_code(code) => misconfigured(),
                // A reply we cannot read is our bug or the wrong server, not a passing fault.
                _ if matches!(
                    error.kind(),
                    FredErrorKind::Parse | FredErrorKind::Protocol | FredErrorKind::NotFound
                ) =>
                {
                    misconfigured()
                }
                _ => unavailable(),
            }
        }
    }
}

/// Redis error codes are one upper-case word: `ERR`, `NOSCRIPT`, `NOPERM`, `WRONGTYPE`.
fn is_error_code(word: &str) -> bool {
    word.len() >= 2 && word.bytes().all(|b| b.is_ascii_uppercase())
}

/// A ttl in whole milliseconds, rounded up (never shorter than asked) and at least 1, since
/// Redis refuses an expiry of 0.
fn millis(ttl: Duration) -> i64 {
    let ms = ttl
        .as_nanos()
        .div_ceil(1_000_000)
        .clamp(1, MAX_TTL_MS as u128);
    ms as i64
}

/// Tokens travel as decimal strings, the form the acquire script stores them in.
fn token_arg(token: u64) -> Value {
    Value::from(token.to_string())
}

#[async_trait]
impl Coordination for RedisCoordination {
    fn name(&self) -> &str {
        &self.name
    }

    async fn acquire(&self, key: &str, ttl: Duration) -> Result<Option<Lease>, CoordError> {
        let token: Option<i64> = self
            .eval(
                &self.scripts.acquire,
                vec![self.key("lease", key), self.key("fence", key)],
                vec![millis(ttl).into(), millis(ttl.max(FENCE_RETENTION)).into()],
            )
            .await?;
        token
            .map(|token| {
                let token = u64::try_from(token).map_err(|_| CoordError::Misconfigured {
                    store: self.name.clone(),
                    reason: format!("acquire returned a negative token {token}"),
                })?;
                Ok(Lease {
                    key: key.to_owned(),
                    token,
                    ttl,
                })
            })
            .transpose()
    }

    async fn renew(&self, lease: &Lease) -> Result<bool, CoordError> {
        self.check_lease(&self.scripts.renew, lease).await
    }

    async fn release(&self, lease: &Lease) -> Result<(), CoordError> {
        self.check_lease(&self.scripts.release, lease).await?;
        Ok(())
    }

    async fn holds(&self, lease: &Lease) -> Result<bool, CoordError> {
        self.check_lease(&self.scripts.holds, lease).await
    }

    async fn set_marker(&self, key: &str, ttl: Duration) -> Result<(), CoordError> {
        let _: i64 = self
            .eval(
                &self.scripts.set_marker,
                vec![self.key("marker", key)],
                vec![millis(ttl).into()],
            )
            .await?;
        Ok(())
    }

    async fn has_marker(&self, key: &str) -> Result<bool, CoordError> {
        let exists: i64 = self
            .eval(
                &self.scripts.has_marker,
                vec![self.key("marker", key)],
                vec![],
            )
            .await?;
        Ok(exists == 1)
    }

    async fn add(&self, key: &str, by: i64, ttl: Duration) -> Result<i64, CoordError> {
        let ttl_ms = if ttl.is_zero() { 0 } else { millis(ttl) };
        self.eval(
            &self.scripts.add,
            vec![self.key("counter", key)],
            vec![by.into(), ttl_ms.into()],
        )
        .await
    }

    async fn admit(
        &self,
        key: &str,
        members: &[String],
        limit: u64,
        ttl: Duration,
    ) -> Result<usize, CoordError> {
        if members.is_empty() {
            return Ok(0);
        }
        let mut args: Vec<Value> = Vec::with_capacity(members.len() + 2);
        args.push(limit.min(i64::MAX as u64).to_string().into());
        args.push(millis(ttl).into());
        args.extend(members.iter().map(|m| Value::from(m.as_str())));
        let taken: i64 = self
            .eval(&self.scripts.admit, vec![self.key("set", key)], args)
            .await?;
        Ok(usize::try_from(taken).unwrap_or(0))
    }

    async fn retire(&self, key: &str, member: &str) -> Result<bool, CoordError> {
        let removed: i64 = self
            .eval(
                &self.scripts.retire,
                vec![self.key("set", key)],
                vec![member.into()],
            )
            .await?;
        Ok(removed == 1)
    }

    async fn admitted(&self, key: &str, members: &[String]) -> Result<Vec<bool>, CoordError> {
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let flags: Vec<i64> = self
            .eval(
                &self.scripts.admitted,
                vec![self.key("set", key)],
                members.iter().map(|m| Value::from(m.as_str())).collect(),
            )
            .await?;
        Ok(flags.into_iter().map(|f| f == 1).collect())
    }

    async fn occupancy(&self, key: &str) -> Result<u64, CoordError> {
        let n: i64 = self
            .eval(&self.scripts.occupancy, vec![self.key("set", key)], vec![])
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_round_up_to_whole_milliseconds() {
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(millis(Duration::from_micros(1)), 1);
        assert_eq!(millis(Duration::from_micros(1500)), 2);
        assert_eq!(millis(Duration::from_millis(300)), 300);
        assert_eq!(millis(Duration::MAX), MAX_TTL_MS as i64);
    }

    #[test]
    fn secrets_stay_out_of_debug_output_and_names() {
        let settings = RedisSettings {
            url: Some("redis://user:hunter2@cache.internal:6380".to_owned()),
            password: Some("s3cret-token".to_owned()),
            ..RedisSettings::default()
        };
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret-token"),
            "{shown}"
        );
        assert!(shown.contains("cache.internal:6380"), "{shown}");
        let (config, name) = client_config(&settings).unwrap();
        assert_eq!(name, "redis://cache.internal:6380");
        assert_eq!(
            config.password.as_deref(),
            Some("hunter2"),
            "the URL's password wins"
        );
    }

    #[test]
    fn endpoint_settings_make_a_tls_config_with_the_password() {
        let settings = RedisSettings {
            endpoint: "primary.example.cache.amazonaws.com".to_owned(),
            port: 6379,
            tls: true,
            password: Some("token".to_owned()),
            ..RedisSettings::default()
        };
        let (config, name) = client_config(&settings).unwrap();
        assert_eq!(name, "rediss://primary.example.cache.amazonaws.com:6379");
        assert!(config.tls.is_some());
        assert_eq!(config.password.as_deref(), Some("token"));
    }

    #[test]
    fn errors_are_classed_by_whose_fault_they_are() {
        let class = |kind, details: &str| match map_error(
            "redis://h:1",
            &FredError::new(kind, details.to_owned()),
        ) {
            CoordError::Unavailable { .. } => "unavailable",
            CoordError::Misconfigured { .. } => "misconfigured",
        };
        assert_eq!(class(FredErrorKind::IO, "connection reset"), "unavailable");
        assert_eq!(
            class(FredErrorKind::Timeout, "Request timed out."),
            "unavailable"
        );
        assert_eq!(
            class(FredErrorKind::Auth, "WRONGPASS invalid password"),
            "misconfigured"
        );
        assert_eq!(
            class(FredErrorKind::Unknown, "NOPERM no permission"),
            "misconfigured"
        );
        assert_eq!(
            class(FredErrorKind::Unknown, "NOSCRIPT No matching script"),
            "misconfigured"
        );
        assert_eq!(
            class(FredErrorKind::Unknown, "LOADING Redis is loading"),
            "unavailable"
        );
        assert_eq!(
            class(FredErrorKind::Unknown, "READONLY You can't write"),
            "unavailable"
        );
        assert_eq!(
            class(FredErrorKind::Unknown, "ERR max number of clients reached"),
            "unavailable"
        );
        assert_eq!(
            class(FredErrorKind::Unknown, "ERR Error running script"),
            "misconfigured"
        );
        assert_eq!(
            class(FredErrorKind::Unknown, "Client is not initialized."),
            "unavailable"
        );
        assert_eq!(
            class(FredErrorKind::Parse, "Could not convert to number."),
            "misconfigured"
        );
    }

    #[test]
    fn cluster_urls_are_refused() {
        let settings = RedisSettings {
            url: Some("redis-cluster://a:7000?node=b:7001".to_owned()),
            ..RedisSettings::default()
        };
        assert!(matches!(
            client_config(&settings),
            Err(CoordError::Misconfigured { .. })
        ));
    }
}
