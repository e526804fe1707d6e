//! The dataplane's protective limits: what one client may cost the process
//! before it is refused, throttled or closed, whether it authenticated or not.
//! Here, in the crate both processes share, so the dataplane's flags and the
//! controlplane's (which passes them on and shows them as `mgw_limit`) have
//! one set of defaults.
//!
//! Each knob is a `dataplane` flag (and `MGW_*` variable, and a key of the
//! controlplane's config file, which passes it on). What a limit refuses is
//! counted: per shard in `mgw_limit_hits_total{limit}` (connections), per
//! session in `stats.drops` (packets: `oversize`, `rate_limited`, `overload`).
//!
//! | limit | default | why that number |
//! |---|---|---|
//! | `rtp::MAX_PACKET` | 1500 B | an Ethernet MTU; send slots and caches are sized on it |
//! | RTMP connections | 4096 | each costs ≥ 16 KiB of buffers plus its queue |
//! | RTMP connections per IP not playing | 1024 | what one address may hold before it is authorized (handshake, commands, an HTTP-FLV request head) or while it publishes: a slow-handshake attack holds at most 1024 × ~24 KiB (a quarter of the total), and its silent connections give their places to new ones after 2 s; a flash crowd behind one NAT address has hundreds in set-up at once (1000 joins in 2 s with set-ups of 0.2-0.5 s measured ~250 on loopback; a mobile link's round trips make each longer). Players count only in the total |
//! | RTMP set-up timeout | 10 s | `connect` + `publish`/`play` takes < 1 s on a mobile link |
//! | RTMP idle timeout | 10 s | a live pusher sends audio every 20-40 ms; a player sends acks |
//! | RTMP message before set-up | 64 KiB (fixed) | commands only (AMF0 ≤ 8 KiB); no media before `publish` |
//! | RTMP message of a publisher | 4 MiB | a keyframe of a 20 Mbit/s stream |
//! | RTMP messages in progress | 8 MiB in all | 2 such keyframes in flight at once |
//! | RTMP unread output | 1 MiB | twice what a player may fall behind (512 KiB) before skipping |
//! | NACK answers per player | 400/s, burst 400 | a 4 Mbit/s stream at 100 % loss |
//! | transcoder queue | 2048 jobs | ~2 s of audio for 50 rooms on one shard |
//! | DTLS queue | 4096 datagrams | a thousand handshakes' flights at once |
//! | B-frame re-encodes per shard | 2 | one costs 17 % of a core at 640x360, 34 % at 1280x720 (30 fps, `cargo bench --bench video`): two stay under a core; only with the `reencode` build feature |
//! | VP8/VP9/AV1 transcodes per shard | 2 | to H264 for RTMP players; they share the shard's one re-encode thread with the B-frame re-encodes (a VP8 640x360 frame decoded and encoded costs about what an H264 one does); only with the `reencode` build feature |

use std::time::Duration;

/// The knobs, as set by flags.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub rtmp_max_conns: u32,
    /// RTMP and HTTP-FLV connections one client IP may hold that do not
    /// play: in set-up, or publishing. A player leaves this count when its
    /// `play` (or HTTP-FLV request) is accepted.
    pub rtmp_max_nonplaying_per_ip: u32,
    pub rtmp_setup_timeout: Duration,
    pub rtmp_idle_timeout: Duration,
    /// Retransmissions (and NACKs passed on to the publisher) per second
    /// one WebRTC player may cause; also the burst.
    pub nack_per_s: u32,
    pub transcode_queue: usize,
    /// Longest RTMP message a publisher may send.
    pub rtmp_max_message: usize,
    /// Most bytes of RTMP messages in progress on one connection.
    pub rtmp_max_pending: usize,
    /// Most bytes queued for one RTMP connection that it has not read.
    pub rtmp_max_unread: usize,
    /// DTLS datagrams waiting for a shard's DTLS thread.
    pub dtls_queue: usize,
    /// RTMP publishers with B-frames one shard re-encodes for WebRTC
    /// players (0: none; the others' WebRTC players cannot play them).
    pub bframe_reencodes: u32,
    /// WebRTC and RTP publishers in VP8, VP9 or AV1 one shard transcodes to
    /// H264 for RTMP and HTTP-FLV players (0: none; the others' RTMP
    /// players get no picture).
    pub video_transcodes: u32,
}

/// The defaults (see the table above for why each number).
pub const DEFAULT: Limits = Limits {
    rtmp_max_conns: 4096,
    rtmp_max_nonplaying_per_ip: 1024,
    rtmp_setup_timeout: Duration::from_secs(10),
    rtmp_idle_timeout: Duration::from_secs(10),
    nack_per_s: 400,
    transcode_queue: 2048,
    rtmp_max_message: 4 << 20,
    rtmp_max_pending: 8 << 20,
    rtmp_max_unread: 1 << 20,
    dtls_queue: 4096,
    bframe_reencodes: 2,
    video_transcodes: 2,
};

impl Default for Limits {
    fn default() -> Self {
        DEFAULT
    }
}

/// The flag `--rtmp-max-nonplaying-per-ip` had before players stopped
/// counting per address; still read, with a line in the log.
pub const DEPRECATED_PER_IP_FLAG: &str = "--rtmp-max-conns-per-ip";

/// The per-IP limit from the new flag, else the deprecated one, else the
/// default; with the deprecation line to log when the old one was used.
pub fn nonplaying_per_ip(new: Option<u32>, old: Option<u32>) -> (u32, Option<String>) {
    let note = old.map(|_| {
        format!(
            "{DEPRECATED_PER_IP_FLAG} (MGW_RTMP_MAX_CONNS_PER_IP) is deprecated: players no longer \
             count per address; use --rtmp-max-nonplaying-per-ip (MGW_RTMP_MAX_NONPLAYING_PER_IP){}",
            if new.is_some() { "; ignored, the new flag is set" } else { "; its value is used for it" }
        )
    });
    (
        new.or(old).unwrap_or(DEFAULT.rtmp_max_nonplaying_per_ip),
        note,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_old_per_ip_flag_still_works_and_says_so() {
        assert_eq!(nonplaying_per_ip(None, None), (1024, None));
        let (v, note) = nonplaying_per_ip(None, Some(5));
        assert_eq!(v, 5);
        assert!(note.unwrap().contains("deprecated"));
        let (v, note) = nonplaying_per_ip(Some(7), Some(5));
        assert_eq!(v, 7, "the new flag wins");
        assert!(note.unwrap().contains("ignored"));
    }
}
