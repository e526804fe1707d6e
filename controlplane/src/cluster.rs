//! The pool of nodes (issue 27, its first part): with `--cluster
//! redis://HOST:PORT[/DB]`, this node (a controlplane and its dataplane)
//! says every [`HEARTBEAT`] that it is up, with its addresses and load, in
//! a record that expires after [`TTL`]; `GET /v1/cluster` lists the
//! records there are. A node whose heartbeat stops (killed, cut off) is
//! out of the pool when its record expires: no one has to remove it, and
//! no home-made consensus decides it.
//!
//! ```text
//! every HEARTBEAT: Node { id, state, addresses, load } ─▶ Store::put(node, TTL)
//!                  each room here ─▶ Store::lease(rooms, id, TTL): its home, this node
//!                  unless another node's lease on it is live (re-homed when that expires)
//! GET /v1/cluster:  Store::nodes() ─▶ the live records, sorted by id; Store::leases() ─▶ homes
//! ```
//!
//! The store is behind [`Store`], two calls, so another one (etcd leases)
//! could take Redis's place. Redis through the `redis` crate (the
//! maintained client; its `ConnectionManager` reconnects by itself, so a
//! node rejoins when Redis returns). Only the controlplane talks to it:
//! the dataplane stays free of any runtime.
//!
//! While the store is unreachable the node serves what it has; the
//! heartbeat says so in the log once, and again when it is back, when it
//! claims the pool's secrets again (a Redis that restarted empty has
//! forgotten them). A node id is one node's: a second process that starts
//! with an id whose record another keeps renewing is refused
//! ([`check_node_id`]); a record left by a killed process of the same id
//! is waited out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

/// How often a node renews its record.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a record outlives its last renewal: a node whose heartbeat
/// stopped is out of the pool within this (three heartbeats missed).
pub const TTL: Duration = Duration::from_secs(3);
/// Longest a store call may take before it counts as unreachable.
const CALL_TIMEOUT: Duration = Duration::from_millis(800);

/// What a node says of itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    /// Which process says so (random per start): tells a second node
    /// started with the same id from this one.
    #[serde(default)]
    pub instance: String,
    /// `up`, or `draining` (`POST /v1/cluster/drain`: no new sessions).
    pub state: String,
    /// Where its API, RTMP and HTTP-FLV listen, its media address and UDP range.
    pub http: String,
    pub rtmp: String,
    pub http_flv: String,
    pub public_ip: String,
    pub udp_ports: [u16; 2],
    pub load: Load,
    /// When it last said so (ms since the Unix epoch, its own clock).
    pub at_ms: u64,
}

/// A node's load, as its last heartbeat said.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Load {
    pub rooms: usize,
    /// Live UDP sessions (WebRTC, RTP) and RTMP/HTTP-FLV clients.
    pub sessions: usize,
    /// Of them, publishers (WHIP, RTP ingests, RTMP pushes).
    pub publishers: usize,
    pub shards: usize,
    /// The dataplane process's CPU (cores: 1.0 is one core busy) and the
    /// UDP datagrams its shards sent per second, over the last heartbeat.
    pub cpu: f64,
    pub packets_per_s: f64,
}

/// Turns cumulative counters into rates between two heartbeats.
#[derive(Debug, Default)]
pub struct Rates {
    last: Option<(std::time::Instant, u64, u64)>,
}

impl Rates {
    /// (cores, packets/s) since the last call, from the dataplane's CPU
    /// time (µs) and datagrams sent, both cumulative; zeros the first time
    /// and after a dataplane restart (a counter went back).
    pub fn update(&mut self, now: std::time::Instant, cpu_us: u64, datagrams: u64) -> (f64, f64) {
        let rates = match self.last {
            Some((then, c, d)) if cpu_us >= c && datagrams >= d && now > then => {
                let s = (now - then).as_secs_f64();
                ((cpu_us - c) as f64 / 1e6 / s, (datagrams - d) as f64 / s)
            }
            _ => (0.0, 0.0),
        };
        self.last = Some((now, cpu_us, datagrams));
        rates
    }
}

/// A process's CPU time (user + system, µs) from `/proc/PID/stat`.
pub fn process_cpu_us(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), from the third.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut f = rest.split(' ');
    let utime: u64 = f.nth(11)?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    // SAFETY: sysconf with a valid name only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some((utime + stime) * 1_000_000 / hz)
}

/// Where the pool is kept.
pub trait Store: Send + Sync {
    /// Writes `node`'s record, to expire after `ttl` unless written again.
    fn put<'a>(&'a self, node: &'a Node, ttl: Duration) -> BoxFuture<'a, Result<(), String>>;
    /// Every record not yet expired.
    fn nodes(&self) -> BoxFuture<'_, Result<Vec<Node>, String>>;
    /// Sets `key` to `value` unless it is set; the value it holds after.
    fn claim<'a>(&'a self, key: &'a str, value: &'a str) -> BoxFuture<'a, Result<String, String>>;
    /// For each of `names`, a lease held by `holder` for `ttl`: taken if
    /// free (or expired), renewed if `holder` has it; who holds each after.
    fn lease<'a>(
        &'a self,
        names: &'a [String],
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<String>, String>>;
    /// Every lease not yet expired: (name, holder), sorted by name.
    fn leases(&self) -> BoxFuture<'_, Result<Vec<(String, String)>, String>>;
    /// Connects anew after a call failed (the heartbeat's, once a second
    /// while the store does not answer); nothing for a store that needs not.
    fn reconnect(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// Takes or renews one lease per key in one round trip: `SET NX PX`, else
/// `PEXPIRE` if the holder is us; returns the holders.
const LEASE_SCRIPT: &str = r"
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('SET', key, ARGV[1], 'NX', 'PX', ARGV[2]) then
    out[i] = ARGV[1]
  else
    local holder = redis.call('GET', key)
    if holder == ARGV[1] then
      redis.call('PEXPIRE', key, ARGV[2])
    end
    out[i] = holder or ARGV[1]
  end
end
return out
";

/// Keys of room leases (a room's home) in Redis.
const ROOM_PREFIX: &str = "mgw:room:";

/// Keys of node records in Redis.
const PREFIX: &str = "mgw:node:";

/// The pool in Redis: a key per node (`mgw:node:ID`, JSON) set with an
/// expiry (`SET ... PX`), read back by `SCAN` and `MGET`.
///
/// The `ConnectionManager` reconnects by itself after a lost connection,
/// but measured against a Redis stopped for a few seconds and started
/// again, it did not within 15 s (each call timed out): so a failed
/// heartbeat also makes a new one ([`Store::reconnect`]), its attempts
/// bounded by [`CALL_TIMEOUT`].
pub struct RedisStore {
    client: redis::Client,
    conn: std::sync::Mutex<redis::aio::ConnectionManager>,
}

impl RedisStore {
    /// Connects to `url` (`redis://HOST:PORT[/DB]`, `rediss://` for TLS).
    pub async fn connect(url: &str) -> Result<RedisStore, String> {
        if url.starts_with("redis+sentinel://") {
            return Err("--cluster: Sentinel URLs (redis+sentinel://) are not supported yet; give the master's redis://HOST:PORT".into());
        }
        let client = redis::Client::open(url).map_err(|e| format!("--cluster {url}: {e}"))?;
        let conn = tokio::time::timeout(Duration::from_secs(5), RedisStore::manager(&client))
            .await
            .map_err(|_| format!("--cluster {url}: no answer within 5 s"))?
            .map_err(|e| format!("--cluster {url}: {e}"))?;
        Ok(RedisStore {
            client,
            conn: std::sync::Mutex::new(conn),
        })
    }

    /// A connection whose calls and connection attempts give up within
    /// [`CALL_TIMEOUT`], retried twice.
    async fn manager(client: &redis::Client) -> redis::RedisResult<redis::aio::ConnectionManager> {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(CALL_TIMEOUT)
            .set_response_timeout(CALL_TIMEOUT)
            .set_number_of_retries(2)
            .set_max_delay(200);
        client.get_connection_manager_with_config(config).await
    }

    /// The connection (a handle: clones share it).
    fn conn(&self) -> redis::aio::ConnectionManager {
        self.conn.lock().expect("redis connection lock").clone()
    }
}

impl Store for RedisStore {
    fn put<'a>(&'a self, node: &'a Node, ttl: Duration) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let json = serde_json::to_string(node).map_err(|e| e.to_string())?;
            let mut c = self.conn();
            let mut set = redis::cmd("SET");
            set.arg(format!("{PREFIX}{}", node.id))
                .arg(json)
                .arg("PX")
                .arg(ttl.as_millis() as u64);
            timed(set.query_async::<()>(&mut c)).await
        })
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<Node>, String>> {
        Box::pin(async move {
            let values = scan_values(&mut self.conn(), PREFIX).await?;
            // A record that expired between SCAN and MGET is None; one that
            // does not parse is another program's key: both left out.
            let mut nodes: Vec<Node> = values
                .into_iter()
                .filter_map(|(_, v)| serde_json::from_str(&v?).ok())
                .collect();
            nodes.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(nodes)
        })
    }

    fn lease<'a>(
        &'a self,
        names: &'a [String],
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Vec<String>, String>> {
        Box::pin(async move {
            if names.is_empty() {
                return Ok(Vec::new());
            }
            let mut c = self.conn();
            let mut script = redis::cmd("EVAL");
            script.arg(LEASE_SCRIPT).arg(names.len());
            for n in names {
                script.arg(format!("{ROOM_PREFIX}{n}"));
            }
            script.arg(holder).arg(ttl.as_millis() as u64);
            timed(script.query_async::<Vec<String>>(&mut c)).await
        })
    }

    fn leases(&self) -> BoxFuture<'_, Result<Vec<(String, String)>, String>> {
        Box::pin(async move {
            let holders = scan_values(&mut self.conn(), ROOM_PREFIX).await?;
            let mut out: Vec<(String, String)> = holders
                .into_iter()
                .filter_map(|(k, h)| Some((k.strip_prefix(ROOM_PREFIX)?.to_string(), h?)))
                .collect();
            out.sort();
            Ok(out)
        })
    }

    fn reconnect(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Ok(Ok(conn)) =
                tokio::time::timeout(CALL_TIMEOUT, RedisStore::manager(&self.client)).await
            {
                *self.conn.lock().expect("redis connection lock") = conn;
            }
        })
    }

    fn claim<'a>(&'a self, key: &'a str, value: &'a str) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let mut c = self.conn();
            let key = RedisStore::claim_key(key);
            let mut set = redis::cmd("SET");
            set.arg(&key).arg(value).arg("NX");
            timed(set.query_async::<Option<String>>(&mut c)).await?;
            let mut get = redis::cmd("GET");
            get.arg(&key);
            let held = timed(get.query_async::<Option<String>>(&mut c)).await?;
            held.ok_or_else(|| format!("{key} vanished"))
        })
    }
}

/// What the pool keeps of a node's secrets to check that every node has
/// the same: an HMAC of a fixed text under each (never the secret). The
/// admin key and room tokens then work on every node.
pub fn secrets_fingerprint(admin_key: &str, token_secret: &str) -> String {
    let mac = |secret: &str| {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        let tag = ring::hmac::sign(&key, b"mediagw pool: same secrets on every node");
        tag.as_ref()[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    format!("admin {} token {}", mac(admin_key), mac(token_secret))
}

/// Joins the pool: this node's secrets must be the pool's (the first
/// node's to join). `Err` says what differs.
pub async fn check_secrets(store: &dyn Store, mine: &str) -> Result<(), String> {
    let held = store.claim("secrets", mine).await?;
    if held == mine {
        return Ok(());
    }
    let differs = |what: &str| {
        let part = |s: &str| {
            s.split(' ')
                .skip_while(|w| *w != what)
                .nth(1)
                .map(str::to_string)
        };
        part(&held) != part(mine)
    };
    let which: Vec<&str> = [("admin", "--admin-key"), ("token", "--token-secret")]
        .into_iter()
        .filter(|(w, _)| differs(w))
        .map(|(_, flag)| flag)
        .collect();
    Err(format!(
        "refused by the pool: this node's {} differs from the pool's (its first node's): the admin key and room tokens must work on every node; start it with the pool's",
        which.join(" and ")
    ))
}

/// Joins the pool as `id`, this process being `instance`: `Err` if another
/// live node has the id. A record of the id from another process is
/// waited on for [`TTL`] and a heartbeat (a killed node's expires; a live
/// one's is renewed, with a newer time).
pub async fn check_node_id(store: &dyn Store, id: &str, instance: &str) -> Result<(), String> {
    let other = |nodes: Vec<Node>| {
        nodes
            .into_iter()
            .find(|n| n.id == id && n.instance != instance)
    };
    let Some(first) = other(store.nodes().await?) else {
        return Ok(());
    };
    tokio::time::sleep(TTL + HEARTBEAT).await;
    match other(store.nodes().await?) {
        Some(n) if n.at_ms != first.at_ms => Err(format!(
            "refused by the pool: --node-id {id} is a live node's (its API at {}): give this node another --node-id",
            n.http
        )),
        _ => Ok(()),
    }
}

/// A random [`Node::instance`] for this process.
pub fn new_instance() -> String {
    let mut b = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .expect("the system's random source");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl RedisStore {
    fn claim_key(key: &str) -> String {
        format!("mgw:pool:{key}")
    }
}

/// Every key under `prefix` (`SCAN`, a thousand at a time).
async fn scan(c: &mut redis::aio::ConnectionManager, prefix: &str) -> Result<Vec<String>, String> {
    let mut keys: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000);
        let (next, batch) = timed(scan.query_async::<(u64, Vec<String>)>(c)).await?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

/// Every key under `prefix` with its value (`SCAN`, then one `MGET`;
/// `None` for a key that expired in between).
async fn scan_values(
    c: &mut redis::aio::ConnectionManager,
    prefix: &str,
) -> Result<Vec<(String, Option<String>)>, String> {
    let keys = scan(c, prefix).await?;
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut get = redis::cmd("MGET");
    get.arg(&keys);
    let values = timed(get.query_async::<Vec<Option<String>>>(c)).await?;
    Ok(keys.into_iter().zip(values).collect())
}

/// A store call, bounded by [`CALL_TIMEOUT`].
async fn timed<T>(
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {CALL_TIMEOUT:?}")),
    }
}

/// This node's place in the pool.
pub struct Pool {
    pub id: String,
    /// This process's [`Node::instance`].
    pub instance: String,
    /// Its secrets' [`secrets_fingerprint`], claimed again when the store
    /// returns.
    secrets: String,
    pub store: Box<dyn Store>,
    /// The load's rates between heartbeats.
    pub rates: std::sync::Mutex<Rates>,
    /// Whether the last heartbeat reached the store.
    reachable: AtomicBool,
}

impl Pool {
    pub fn new(id: String, instance: String, secrets: String, store: Box<dyn Store>) -> Pool {
        Pool {
            id,
            instance,
            secrets,
            store,
            rates: Default::default(),
            reachable: AtomicBool::new(true),
        }
    }

    /// One heartbeat: `node`'s record renewed. Logs when the store stops
    /// answering, and when it answers again.
    pub async fn beat(&self, node: &Node, rooms: &[String]) {
        let put = async {
            self.store.put(node, TTL).await?;
            // Each room here has a home: this node, unless another holds it.
            self.store.lease(rooms, &node.id, TTL).await.map(|_| ())
        };
        match put.await {
            Ok(()) => {
                if !self.reachable.swap(true, Ordering::SeqCst) {
                    info!(node = %self.id, "the pool's store answers again: this node is back in the pool");
                    // A store that restarted empty: the pool's secrets are
                    // this node's again (or another's that came back first).
                    if let Err(e) = check_secrets(&*self.store, &self.secrets).await {
                        error!(node = %self.id, "{e}");
                    }
                }
            }
            Err(e) => {
                if self.reachable.swap(false, Ordering::SeqCst) {
                    warn!(node = %self.id, "the pool's store is unreachable ({e}): this node keeps serving its rooms, and leaves the pool until it answers");
                }
                self.store.reconnect().await;
            }
        }
    }
}

/// The node id when `--node-id` is not given: the host name.
pub fn default_node_id() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into our buffer.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if r == 0 && !name.is_empty() => name.to_string(),
        _ => "node".to_string(),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Renews `node()`'s record, and the leases of the rooms it names, every
/// [`HEARTBEAT`], for the process's life.
pub fn spawn_heartbeat(pool: Arc<Pool>, node: impl Fn() -> (Node, Vec<String>) + Send + 'static) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (me, rooms) = node();
            pool.beat(&me, &rooms).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A store that fails while `down`, and keeps what it was given.
    #[derive(Default)]
    struct Flaky {
        down: AtomicBool,
        put: Mutex<Vec<Node>>,
        held: Mutex<Option<String>>,
    }

    impl Store for Arc<Flaky> {
        fn put<'a>(&'a self, node: &'a Node, _: Duration) -> BoxFuture<'a, Result<(), String>> {
            Box::pin(async move {
                if self.down.load(Ordering::SeqCst) {
                    return Err("connection refused".into());
                }
                self.put.lock().unwrap().push(node.clone());
                Ok(())
            })
        }
        fn nodes(&self) -> BoxFuture<'_, Result<Vec<Node>, String>> {
            Box::pin(async move { Ok(self.put.lock().unwrap().clone()) })
        }
        fn lease<'a>(
            &'a self,
            names: &'a [String],
            holder: &'a str,
            _: Duration,
        ) -> BoxFuture<'a, Result<Vec<String>, String>> {
            Box::pin(async move { Ok(names.iter().map(|_| holder.to_string()).collect()) })
        }
        fn leases(&self) -> BoxFuture<'_, Result<Vec<(String, String)>, String>> {
            Box::pin(async move { Ok(Vec::new()) })
        }
        fn claim<'a>(
            &'a self,
            _: &'a str,
            value: &'a str,
        ) -> BoxFuture<'a, Result<String, String>> {
            Box::pin(async move {
                let mut held = self.held.lock().unwrap();
                Ok(held.get_or_insert_with(|| value.to_string()).clone())
            })
        }
    }

    /// The first node's secrets are the pool's: the same are let in, and
    /// a node with another token secret is told which flag differs.
    #[tokio::test]
    async fn a_node_with_other_secrets_is_refused_naming_them() {
        let store = Arc::new(Flaky::default());
        let first = secrets_fingerprint("admin-key-0123456789", "token-secret-0123456789");
        assert!(
            !first.contains("admin-key-0123456789"),
            "never the secret itself"
        );
        check_secrets(&store, &first).await.unwrap();
        check_secrets(&store, &first).await.unwrap();
        let other = secrets_fingerprint("admin-key-0123456789", "another-token-secret-01");
        let why = check_secrets(&store, &other).await.unwrap_err();
        assert!(
            why.contains("--token-secret") && !why.contains("--admin-key"),
            "{why}"
        );
    }

    fn node(id: &str) -> Node {
        Node {
            id: id.into(),
            state: "up".into(),
            http: "127.0.0.1:8080".into(),
            rtmp: "127.0.0.1:1935".into(),
            http_flv: "127.0.0.1:8088".into(),
            public_ip: "127.0.0.1".into(),
            udp_ports: [40000, 40999],
            load: Load::default(),
            at_ms: 1,
            instance: "i1".into(),
        }
    }

    /// A second process with a live node's id is refused, naming it; one
    /// whose namesake's record has stopped being renewed (a killed node's)
    /// joins; the same process again is no clash.
    #[tokio::test(start_paused = true)]
    async fn a_node_id_of_a_live_node_is_refused() {
        let store = Arc::new(Flaky::default());
        assert!(
            check_node_id(&store, "a", "i2").await.is_ok(),
            "an empty pool"
        );
        store.put.lock().unwrap().push(node("a"));
        assert!(check_node_id(&store, "a", "i1").await.is_ok(), "itself");
        assert!(
            check_node_id(&store, "a", "i2").await.is_ok(),
            "a record not renewed"
        );
        // A live namesake renews its record meanwhile.
        let renewing = {
            let store = store.clone();
            tokio::spawn(async move {
                tokio::time::sleep(HEARTBEAT).await;
                store.put.lock().unwrap()[0].at_ms = 2;
            })
        };
        let why = check_node_id(&store, "a", "i2").await.unwrap_err();
        renewing.await.unwrap();
        assert!(
            why.contains("--node-id a") && why.contains("127.0.0.1:8080"),
            "{why}"
        );
    }

    /// The store comes back (a Redis restarted empty): the node claims the
    /// pool's secrets again.
    #[tokio::test]
    async fn the_secrets_are_claimed_again_when_the_store_returns() {
        let store = Arc::new(Flaky::default());
        let pool = Pool::new(
            "a".into(),
            "i1".into(),
            "fingerprint".into(),
            Box::new(store.clone()),
        );
        store.down.store(true, Ordering::SeqCst);
        pool.beat(&node("a"), &[]).await;
        assert_eq!(*store.held.lock().unwrap(), None);
        store.down.store(false, Ordering::SeqCst);
        pool.beat(&node("a"), &[]).await;
        assert_eq!(store.held.lock().unwrap().as_deref(), Some("fingerprint"));
    }

    /// A heartbeat while the store is down is lost, said once, and the
    /// node is back with the first one that reaches it.
    #[tokio::test]
    async fn a_heartbeat_that_fails_is_said_once_and_the_node_comes_back() {
        let store = Arc::new(Flaky::default());
        let pool = Pool::new("a".into(), "i1".into(), "s".into(), Box::new(store.clone()));
        pool.beat(&node("a"), &[]).await;
        store.down.store(true, Ordering::SeqCst);
        pool.beat(&node("a"), &[]).await;
        pool.beat(&node("a"), &[]).await;
        assert!(!pool.reachable.load(Ordering::SeqCst));
        store.down.store(false, Ordering::SeqCst);
        pool.beat(&node("a"), &[]).await;
        assert!(pool.reachable.load(Ordering::SeqCst));
        assert_eq!(store.put.lock().unwrap().len(), 2);
    }

    /// Rates from cumulative counters: per second over the interval, zero
    /// the first time and when a counter goes back (a new dataplane).
    #[test]
    fn rates_between_heartbeats() {
        let t0 = std::time::Instant::now();
        let mut r = Rates::default();
        assert_eq!(r.update(t0, 1_000_000, 100), (0.0, 0.0));
        let (cpu, pps) = r.update(t0 + Duration::from_secs(2), 2_000_000, 100_100);
        assert!(
            (cpu - 0.5).abs() < 1e-9 && (pps - 50_000.0).abs() < 1e-6,
            "{cpu} {pps}"
        );
        assert_eq!(r.update(t0 + Duration::from_secs(3), 10, 5), (0.0, 0.0));
        // Our own CPU time, as /proc says it, against the kernel's clock for
        // it, after 50 ms of work: the same within a couple of clock ticks.
        let cpu_clock = || {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: clock_gettime writes one timespec we own.
            unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
            ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
        };
        let start = cpu_clock();
        let mut x = 0u64;
        while cpu_clock() < start + 50_000 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let (me, kernel) = (process_cpu_us(std::process::id()).unwrap(), cpu_clock());
        assert!(
            me + 30_000 >= kernel && me <= kernel + 30_000,
            "{me} µs, the kernel says {kernel}"
        );
        assert_eq!(process_cpu_us(u32::MAX), None);
    }

    /// A record is the JSON `GET /v1/cluster` shows.
    #[test]
    fn a_record_round_trips_through_json() {
        let n = node("b");
        let json = serde_json::to_value(&n).unwrap();
        assert_eq!(json["id"], "b");
        assert_eq!(json["udp_ports"], serde_json::json!([40000, 40999]));
        assert_eq!(serde_json::from_value::<Node>(json).unwrap(), n);
        assert!(!default_node_id().is_empty());
    }
}
