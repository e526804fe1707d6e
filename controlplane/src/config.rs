//! Command-line flags; each is also an environment variable.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(
    version,
    about = "Media gateway controlplane: HTTP API, rooms, ports, dataplane supervision"
)]
pub struct Config {
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
    /// Pass --no-pin to the spawned dataplane (shared CI machines).
    #[arg(long, env = "MGW_NO_PIN")]
    pub no_pin: bool,
}

impl Config {
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
