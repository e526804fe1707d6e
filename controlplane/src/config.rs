//! Configuration: flags, environment variables (`MGW_*`) and a TOML file,
//! in that order of precedence, over the defaults.
//!
//! The file (`--config FILE` or `MGW_CONFIG`) uses the flags' names with
//! `_` for `-`, e.g. `udp_ports = "40000-40999"`, `auto_room = false`,
//! `egress_allow = ["127.0.0.0/8", "10.0.0.0/8"]`. Each key becomes the
//! default of its `MGW_*` variable, so a value set in the environment or on
//! the command line still wins. Unknown keys are an error, not a silent no-op.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;
use gateway_ring::limits::DEFAULT;
use gateway_ring::msg::Codec;

#[derive(Parser, Debug, Clone)]
#[command(
    version,
    about = "Media gateway controlplane: HTTP API, rooms, ports, dataplane supervision"
)]
pub struct Config {
    /// TOML file with settings (flag names with `_`); flags and `MGW_*` win.
    #[arg(long, env = "MGW_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address of the HTTP API.
    #[arg(long, env = "MGW_HTTP", default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,
    /// Dataplane shards (one per core). Default: available cores.
    #[arg(long, env = "MGW_SHARDS")]
    pub shards: Option<u32>,
    /// UDP media port range, split evenly between shards.
    #[arg(long, env = "MGW_UDP_PORTS", default_value = "40000-40999", value_parser = parse_range)]
    pub udp_ports: (u16, u16),
    /// Address given to clients in answers and SDPs.
    #[arg(long, env = "MGW_PUBLIC_IP", default_value = "127.0.0.1")]
    pub public_ip: Ipv4Addr,
    /// Address the dataplane's media sockets bind.
    #[arg(long, env = "MGW_BIND_IP", default_value = "127.0.0.1")]
    pub bind_ip: Ipv4Addr,
    /// Shared-memory file name under /dev/shm (or an absolute path).
    #[arg(long, env = "MGW_SHM_NAME", default_value = "mediagw")]
    pub shm_name: String,
    /// Attach to a dataplane started separately instead of spawning one.
    #[arg(long, env = "MGW_ATTACH")]
    pub attach: bool,
    /// Dataplane executable (spawn mode). Default: `dataplane` next to this binary.
    #[arg(long, env = "MGW_DATAPLANE_BIN")]
    pub dataplane_bin: Option<PathBuf>,
    /// Networks RTP egress may send to (comma-separated CIDRs), so the API
    /// cannot aim traffic at third parties.
    #[arg(long, env = "MGW_EGRESS_ALLOW", default_value = "127.0.0.0/8", value_delimiter = ',', value_parser = parse_cidr)]
    pub egress_allow: Vec<(Ipv4Addr, u8)>,
    /// Publishing (WHIP or RTMP) to a room that does not exist creates it
    /// (`false`: WHIP gets 404, RTMP an onStatus error).
    #[arg(long, env = "MGW_AUTO_ROOM", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_room: bool,
    /// RTMP listen address of the dataplane (`rtmp://ADDR/live/ROOM`), or `off`.
    #[arg(long, env = "MGW_RTMP", default_value = "127.0.0.1:1935")]
    pub rtmp: String,
    /// HTTP-FLV listen address of the dataplane (`http://ADDR/live/ROOM.flv`), or `off`.
    #[arg(long, env = "MGW_HTTP_FLV", default_value = "127.0.0.1:8088")]
    pub http_flv: String,
    /// Video codecs WHIP and WHEP lines take, in the order of preference
    /// (comma-separated: H264, VP8, VP9, AV1). A line gets the first of
    /// these that its offer holds; H264 first keeps the bridge to RTMP a
    /// copy where the browser can send it.
    #[arg(long, env = "MGW_VIDEO_CODECS", default_value = "H264,VP8,VP9,AV1", value_delimiter = ',', value_parser = parse_video_codec)]
    pub video_codecs: Vec<Codec>,
    /// Join a pool of nodes kept in Redis (`redis://HOST:PORT[/DB]`): this
    /// node's addresses and load, renewed every second, listed by
    /// `GET /v1/cluster` on every node; unset: a node alone.
    #[arg(long, env = "MGW_CLUSTER")]
    pub cluster: Option<String>,
    /// This node's name in the pool (default: the host name).
    #[arg(long, env = "MGW_NODE_ID")]
    pub node_id: Option<String>,
    /// Keep each stream's latest GOP so a new RTMP player gets a picture at once.
    #[arg(long, env = "MGW_GOP_CACHE", default_value_t = true, action = clap::ArgAction::Set)]
    pub gop_cache: bool,
    /// Admin key for `/v1/*` (`Authorization: Bearer KEY`). Default: a
    /// development key generated and printed at start. Prefer the
    /// environment variable: flags show in `ps`.
    #[arg(long, env = "MGW_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// HS256 secret for room tokens; when set, WHIP and WHEP need one.
    #[arg(long, env = "MGW_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,
    /// Refuse to start without --admin-key and --token-secret.
    #[arg(long, env = "MGW_PRODUCTION")]
    pub production: bool,
    /// POST every room event here (JSON), signed with --webhook-secret.
    #[arg(long, env = "MGW_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// HMAC-SHA256 key for `X-Mgw-Signature` (default: the admin key).
    #[arg(long, env = "MGW_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// New sessions (WHIP, WHEP, RTP ingest/egress) per second per client IP.
    #[arg(long, env = "MGW_SESSION_RATE", default_value_t = 20.0)]
    pub session_rate: f64,
    /// How many new sessions a client may open at once before the rate applies.
    #[arg(long, env = "MGW_SESSION_BURST", default_value_t = 40)]
    pub session_burst: u32,
    /// New WHEP players per second per client IP (an audience behind one
    /// address joins together; see `ratelimit.rs`).
    #[arg(long, env = "MGW_PLAYER_SESSION_RATE", default_value_t = 100.0)]
    pub player_session_rate: f64,
    /// How many WHEP players a client may open at once before the rate applies.
    #[arg(long, env = "MGW_PLAYER_SESSION_BURST", default_value_t = 300)]
    pub player_session_burst: u32,
    /// Pass --no-pin to the spawned dataplane (shared CI machines).
    #[arg(long, env = "MGW_NO_PIN")]
    pub no_pin: bool,
    /// Most RTMP connections the dataplane holds; more are refused at accept.
    #[arg(long, env = "MGW_RTMP_MAX_CONNS", default_value_t = DEFAULT.rtmp_max_conns)]
    pub rtmp_max_conns: u32,
    /// Most RTMP and HTTP-FLV connections from one client IP that do not
    /// play (in set-up, or publishing); players count only in the total
    /// [default: 1024].
    #[arg(long, env = "MGW_RTMP_MAX_NONPLAYING_PER_IP")]
    pub rtmp_max_nonplaying_per_ip: Option<u32>,
    /// Deprecated name of --rtmp-max-nonplaying-per-ip.
    #[arg(long, env = "MGW_RTMP_MAX_CONNS_PER_IP", hide = true)]
    pub rtmp_max_conns_per_ip: Option<u32>,
    /// Seconds an RTMP connection has to finish `connect` + `publish`/`play`.
    #[arg(long, env = "MGW_RTMP_SETUP_TIMEOUT", default_value_t = DEFAULT.rtmp_setup_timeout.as_secs_f64())]
    pub rtmp_setup_timeout: f64,
    /// Seconds an RTMP publisher may send nothing before it is closed.
    #[arg(long, env = "MGW_RTMP_IDLE_TIMEOUT", default_value_t = DEFAULT.rtmp_idle_timeout.as_secs_f64())]
    pub rtmp_idle_timeout: f64,
    /// Retransmissions per second one WebRTC player's NACKs may cause.
    #[arg(long, env = "MGW_NACK_BUDGET", default_value_t = DEFAULT.nack_per_s)]
    pub nack_budget: u32,
    /// Audio jobs waiting for a shard's transcoder thread; more are dropped.
    #[arg(long, env = "MGW_TRANSCODE_QUEUE", default_value_t = DEFAULT.transcode_queue)]
    pub transcode_queue: usize,
    /// Longest RTMP message (bytes) a publisher may send.
    #[arg(long, env = "MGW_RTMP_MAX_MESSAGE", default_value_t = DEFAULT.rtmp_max_message)]
    pub rtmp_max_message: usize,
    /// Most bytes of RTMP messages in progress on one connection.
    #[arg(long, env = "MGW_RTMP_MAX_PENDING", default_value_t = DEFAULT.rtmp_max_pending)]
    pub rtmp_max_pending: usize,
    /// Most bytes queued for one RTMP connection that it has not read.
    #[arg(long, env = "MGW_RTMP_MAX_UNREAD", default_value_t = DEFAULT.rtmp_max_unread)]
    pub rtmp_max_unread: usize,
    /// DTLS datagrams waiting for a shard's DTLS thread; more are dropped.
    #[arg(long, env = "MGW_DTLS_QUEUE", default_value_t = DEFAULT.dtls_queue)]
    pub dtls_queue: usize,
    /// RTMP publishers with B-frames each shard re-encodes for WebRTC
    /// players (browsers cannot play B-frames); needs a dataplane built
    /// with the `reencode` feature; 0: none.
    #[arg(long, env = "MGW_BFRAME_REENCODES", default_value_t = DEFAULT.bframe_reencodes)]
    pub bframe_reencodes: u32,
    /// WebRTC and RTP publishers in VP8, VP9 or AV1 each shard transcodes
    /// to H264 for RTMP and HTTP-FLV players; needs a dataplane built with
    /// the `reencode` feature; 0: none (their RTMP players get no picture).
    #[arg(long, env = "MGW_VIDEO_TRANSCODES", default_value_t = DEFAULT.video_transcodes)]
    pub video_transcodes: u32,
}

impl Config {
    /// `--rtmp-max-nonplaying-per-ip`, or the deprecated flag's value, and
    /// the line to log when the deprecated one was used.
    pub fn nonplaying_per_ip(&self) -> (u32, Option<String>) {
        gateway_ring::limits::nonplaying_per_ip(
            self.rtmp_max_nonplaying_per_ip,
            self.rtmp_max_conns_per_ip,
        )
    }

    /// The dataplane's protective limits as `(flag, value)`: passed to a
    /// spawned dataplane and shown in `/metrics` as `mgw_limit`. An attached
    /// dataplane must be started with the same flags.
    pub fn dataplane_limits(&self) -> [(&'static str, f64); 12] {
        [
            ("rtmp-max-conns", self.rtmp_max_conns as f64),
            (
                "rtmp-max-nonplaying-per-ip",
                self.nonplaying_per_ip().0 as f64,
            ),
            ("rtmp-setup-timeout", self.rtmp_setup_timeout),
            ("rtmp-idle-timeout", self.rtmp_idle_timeout),
            ("nack-budget", self.nack_budget as f64),
            ("transcode-queue", self.transcode_queue as f64),
            ("rtmp-max-message", self.rtmp_max_message as f64),
            ("rtmp-max-pending", self.rtmp_max_pending as f64),
            ("rtmp-max-unread", self.rtmp_max_unread as f64),
            ("dtls-queue", self.dtls_queue as f64),
            ("bframe-reencodes", self.bframe_reencodes as f64),
            ("video-transcodes", self.video_transcodes as f64),
        ]
    }
}

/// Every key the file may set, with its environment variable.
const FILE_KEYS: &[&str] = &[
    "http",
    "shards",
    "udp_ports",
    "public_ip",
    "bind_ip",
    "shm_name",
    "attach",
    "dataplane_bin",
    "egress_allow",
    "video_codecs",
    "cluster",
    "node_id",
    "auto_room",
    "rtmp",
    "gop_cache",
    "admin_key",
    "token_secret",
    "production",
    "webhook_url",
    "webhook_secret",
    "session_rate",
    "session_burst",
    "player_session_rate",
    "player_session_burst",
    "no_pin",
    "rtmp_max_conns",
    "rtmp_max_nonplaying_per_ip",
    "rtmp_max_conns_per_ip",
    "rtmp_setup_timeout",
    "rtmp_idle_timeout",
    "nack_budget",
    "transcode_queue",
    "rtmp_max_message",
    "rtmp_max_pending",
    "rtmp_max_unread",
    "dtls_queue",
    "bframe_reencodes",
    "video_transcodes",
];

/// The `--config`/`MGW_CONFIG` file named in `args` or the environment.
fn config_path(args: &[String]) -> Option<String> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--config" {
            return it.next().cloned();
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(v.to_string());
        }
    }
    std::env::var("MGW_CONFIG").ok()
}

/// `(MGW_KEY, value)` for every setting in TOML `text`.
pub fn file_settings(text: &str) -> Result<Vec<(String, String)>, String> {
    let table: toml::Table = text.parse().map_err(|e| format!("{e}"))?;
    let mut out = Vec::new();
    for (k, v) in table {
        if !FILE_KEYS.contains(&k.as_str()) {
            return Err(format!(
                "unknown setting {k:?} (known: {})",
                FILE_KEYS.join(", ")
            ));
        }
        let value = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(a) => a
                .iter()
                .map(|x| match x {
                    toml::Value::String(s) => Ok(s.clone()),
                    other => Err(format!("{k}: list items must be strings, got {other}")),
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            other => return Err(format!("{k}: unsupported value {other}")),
        };
        out.push((format!("MGW_{}", k.to_ascii_uppercase()), value));
    }
    Ok(out)
}

impl Config {
    /// Flags, then environment, then the config file, then defaults.
    pub fn load() -> Result<Config, String> {
        let args: Vec<String> = std::env::args().collect();
        if let Some(path) = config_path(&args) {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
            for (key, value) in file_settings(&text).map_err(|e| format!("{path}: {e}"))? {
                // The environment and flags win over the file. Single-threaded
                // here: nothing else reads the environment yet.
                if std::env::var_os(&key).is_none() {
                    // SAFETY: called once at start-up before any thread exists.
                    unsafe { std::env::set_var(&key, value) };
                }
            }
        }
        // Help, version and flag errors print and exit as clap does.
        Ok(Config::try_parse_from(args).unwrap_or_else(|e| e.exit()))
    }

    pub fn shm_path(&self) -> PathBuf {
        if self.shm_name.starts_with('/') {
            PathBuf::from(&self.shm_name)
        } else {
            PathBuf::from("/dev/shm").join(&self.shm_name)
        }
    }

    pub fn egress_allowed(&self, ip: Ipv4Addr) -> bool {
        self.egress_allow.iter().any(|&(net, bits)| {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits as u32)
            };
            u32::from(ip) & mask == u32::from(net) & mask
        })
    }
}

fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or("expected LOW-HIGH, e.g. 40000-40999")?;
    let lo: u16 = a.trim().parse().map_err(|e| format!("{a}: {e}"))?;
    let hi: u16 = b.trim().parse().map_err(|e| format!("{b}: {e}"))?;
    if lo == 0 || lo > hi {
        return Err("range must be LOW-HIGH with 0 < LOW <= HIGH".into());
    }
    Ok((lo, hi))
}

fn parse_video_codec(s: &str) -> Result<Codec, String> {
    Codec::video(s.trim()).ok_or_else(|| {
        let known: Vec<&str> = Codec::VIDEO.iter().map(|c| c.name()).collect();
        format!("{s:?} is no video codec of ours ({})", known.join(", "))
    })
}

fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (ip, bits) = s.split_once('/').unwrap_or((s, "32"));
    let ip: Ipv4Addr = ip.trim().parse().map_err(|e| format!("{ip}: {e}"))?;
    let bits: u8 = bits.trim().parse().map_err(|e| format!("{bits}: {e}"))?;
    if bits > 32 {
        return Err(format!("prefix length {bits} > 32"));
    }
    Ok((ip, bits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_files_become_defaults_and_reject_unknown_keys() {
        let s = file_settings(
            "udp_ports = \"50000-50099\"\nauto_room = false\nsession_burst = 5\negress_allow = [\"127.0.0.0/8\", \"10.0.0.0/8\"]\n",
        )
        .unwrap();
        assert!(s.contains(&("MGW_UDP_PORTS".into(), "50000-50099".into())));
        assert!(s.contains(&("MGW_AUTO_ROOM".into(), "false".into())));
        assert!(s.contains(&("MGW_SESSION_BURST".into(), "5".into())));
        assert!(s.contains(&("MGW_EGRESS_ALLOW".into(), "127.0.0.0/8,10.0.0.0/8".into())));
        assert!(file_settings("udp_portz = 1")
            .unwrap_err()
            .contains("unknown setting"));
        assert!(file_settings("http = [").is_err());
        assert_eq!(
            config_path(&["cp".into(), "--config".into(), "a.toml".into()]),
            Some("a.toml".into())
        );
    }

    /// `--video-codecs`: H264 first by default; any order the operator
    /// gives; a codec we do not have is refused at start, naming ours.
    #[test]
    fn video_codecs_parse_in_the_operators_order() {
        assert_eq!(Config::parse_from(["cp"]).video_codecs, Codec::VIDEO);
        let c = Config::parse_from(["cp", "--video-codecs", "vp8,H264"]);
        assert_eq!(c.video_codecs, [Codec::Vp8, Codec::H264]);
        let err = Config::try_parse_from(["cp", "--video-codecs", "H265"]).unwrap_err();
        assert!(err.to_string().contains("H264, VP8, VP9, AV1"), "{err}");
        assert!(Config::try_parse_from(["cp", "--video-codecs", "opus"]).is_err());
    }

    #[test]
    fn ranges_and_cidrs_parse() {
        assert_eq!(parse_range("40000-40999"), Ok((40000, 40999)));
        assert!(parse_range("5-1").is_err());
        assert!(parse_range("x").is_err());
        let c = Config::parse_from(["cp", "--egress-allow", "127.0.0.0/8,10.1.2.3"]);
        assert!(c.egress_allowed("127.9.9.9".parse().unwrap()));
        assert!(c.egress_allowed("10.1.2.3".parse().unwrap()));
        assert!(!c.egress_allowed("10.1.2.4".parse().unwrap()));
        assert!(!Config::parse_from(["cp"]).egress_allowed("8.8.8.8".parse().unwrap()));
    }
}
