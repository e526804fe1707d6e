//! The shared file: header, per-shard heartbeats, per-shard ring pairs.
//!
//! ```text
//! offset 0      Header (one page): magic, version, shard count, epochs, controlplane heartbeat
//! page 1 ..     per shard: ShardBlock { heartbeat and doorbell line, command ring, event ring }
//! ```
//!
//! A shard sleeps in io_uring until its next deadline, I/O, or its
//! doorbell: a futex word in its block that whoever gives it work (the
//! controlplane after a command, the shard's DTLS and codec threads, other
//! shards) bumps and wakes ([`Doorbell`]). Shared memory, so the futex is
//! the process-shared kind.
//!
//! Whoever creates the file writes every field and publishes `magic` last
//! (Release); an opener waits until it reads the magic (Acquire).

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use memmap2::MmapMut;

use crate::spsc::{self, Consumer, Producer, RingHeader};

/// "MGWRING1" as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"MGWRING1");
/// Bump when the layout or message encoding changes incompatibly.
pub const LAYOUT_VERSION: u32 = 5;
/// Slots per ring. A power of two.
pub const SLOTS: u64 = 4096;
/// Bytes per slot: one message.
pub const SLOT_SIZE: usize = 512;
const PAGE: usize = 4096;
const CACHE_LINE: usize = 64;
const MAX_SHARDS: u32 = 256;

#[repr(C)]
struct Header {
    magic: AtomicU64,
    version: AtomicU32,
    shards: AtomicU32,
    /// Incremented by every dataplane process at start: a change tells the
    /// controlplane its sessions are gone.
    dataplane_epoch: AtomicU64,
    dataplane_pid: AtomicU64,
    /// Incremented by the controlplane while it runs.
    control_heartbeat: AtomicU64,
    /// SHA-256 of the dataplane's DTLS certificate (the SDP `a=fingerprint`),
    /// written before the epoch is published.
    dtls_fingerprint: [AtomicU64; 4],
    /// Set by the controlplane (`POST /v1/cluster/drain`): the dataplane
    /// takes no new RTMP or HTTP-FLV client.
    draining: AtomicU32,
}

/// Per-shard block: heartbeat on its own line, then the two rings.
#[repr(C)]
struct ShardHead {
    /// Incremented by the shard every loop turn.
    heartbeat: AtomicU64,
    /// Bumped (and futex-woken) by whoever queues work for the shard.
    doorbell: AtomicU32,
}

fn ring_bytes() -> usize {
    spsc::ring_bytes(SLOTS, SLOT_SIZE)
}

fn shard_block_bytes() -> usize {
    // heartbeat line padded to a page, then two rings, each page aligned.
    let r = ring_bytes().div_ceil(PAGE) * PAGE;
    PAGE + 2 * r
}

fn total_bytes(shards: u32) -> usize {
    PAGE + shards as usize * shard_block_bytes()
}

#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    #[error("shared memory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("shared memory {0}: not initialised (no magic) after waiting")]
    NotInitialised(PathBuf),
    #[error("shared memory {path}: layout version {found}, this build speaks {LAYOUT_VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error("shared memory {path}: file is {len} bytes, header says {shards} shards need {need}")]
    Size {
        path: PathBuf,
        len: usize,
        shards: u32,
        need: usize,
    },
    #[error("shard count {0} out of range 1..={MAX_SHARDS}")]
    Shards(u32),
}

/// A mapped region. Cheap to clone; producers and consumers keep it alive.
#[derive(Clone)]
pub struct Region {
    inner: Arc<Mapped>,
}

struct Mapped {
    map: MmapMut,
    path: PathBuf,
}

// The mapping is plain shared memory accessed only through atomics and through
// the SPSC protocol, whose single producer / single consumer is enforced by
// construction (one handle of each kind per process and ring).
unsafe impl Send for Mapped {}
unsafe impl Sync for Mapped {}

impl Region {
    /// Creates (or truncates and re-initialises) the file for `shards` shards.
    pub fn create(path: impl AsRef<Path>, shards: u32) -> Result<Region, RegionError> {
        let path = path.as_ref().to_path_buf();
        if shards == 0 || shards > MAX_SHARDS {
            return Err(RegionError::Shards(shards));
        }
        let io = |source| RegionError::Io {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io)?;
        file.set_len(total_bytes(shards) as u64).map_err(io)?;
        // SAFETY: the file is ours and sized above; concurrent access by the
        // peer process goes through atomics only.
        let map = unsafe { MmapMut::map_mut(&file) }.map_err(io)?;
        let region = Region {
            inner: Arc::new(Mapped { map, path }),
        };
        let h = region.header();
        h.version.store(LAYOUT_VERSION, Ordering::Relaxed);
        h.shards.store(shards, Ordering::Relaxed);
        h.dataplane_epoch.store(0, Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Release);
        Ok(region)
    }

    /// Opens an existing region, waiting up to `wait` for its creator to publish the magic.
    pub fn open(path: impl AsRef<Path>, wait: Duration) -> Result<Region, RegionError> {
        let path = path.as_ref().to_path_buf();
        let deadline = Instant::now() + wait;
        loop {
            match Self::try_open(&path) {
                Ok(r) => return Ok(r),
                Err(e @ (RegionError::Version { .. } | RegionError::Shards(_))) => return Err(e),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    fn try_open(path: &Path) -> Result<Region, RegionError> {
        let io = |source| RegionError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io)?;
        let len = file.metadata().map_err(io)?.len() as usize;
        if len < PAGE {
            return Err(RegionError::NotInitialised(path.to_path_buf()));
        }
        // SAFETY: as in `create`; all fields are read through atomics and bounds
        // are checked against `len` below before any ring is touched.
        let map = unsafe { MmapMut::map_mut(&file) }.map_err(io)?;
        let region = Region {
            inner: Arc::new(Mapped {
                map,
                path: path.to_path_buf(),
            }),
        };
        let h = region.header();
        if h.magic.load(Ordering::Acquire) != MAGIC {
            return Err(RegionError::NotInitialised(path.to_path_buf()));
        }
        let version = h.version.load(Ordering::Relaxed);
        if version != LAYOUT_VERSION {
            return Err(RegionError::Version {
                path: path.to_path_buf(),
                found: version,
            });
        }
        let shards = h.shards.load(Ordering::Relaxed);
        if shards == 0 || shards > MAX_SHARDS {
            return Err(RegionError::Shards(shards));
        }
        let need = total_bytes(shards);
        if len < need {
            return Err(RegionError::Size {
                path: path.to_path_buf(),
                len,
                shards,
                need,
            });
        }
        Ok(region)
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn base(&self) -> *mut u8 {
        self.inner.map.as_ptr() as *mut u8
    }

    fn header(&self) -> &Header {
        // SAFETY: offset 0 of a mapping of at least one page; Header is all atomics.
        unsafe { &*(self.base() as *const Header) }
    }

    pub fn shards(&self) -> u32 {
        self.header().shards.load(Ordering::Relaxed)
    }

    fn shard_base(&self, shard: u32) -> *mut u8 {
        assert!(shard < self.shards(), "shard {shard} out of range");
        // SAFETY: in bounds: the size check at open/create covers every shard block.
        unsafe { self.base().add(PAGE + shard as usize * shard_block_bytes()) }
    }

    fn ring(&self, shard: u32, which: usize) -> (*const RingHeader, *mut u8) {
        let r = ring_bytes().div_ceil(PAGE) * PAGE;
        // SAFETY: in bounds of the shard block (see shard_block_bytes).
        unsafe {
            let ring = self.shard_base(shard).add(PAGE + which * r);
            (ring as *const RingHeader, ring.add(2 * CACHE_LINE))
        }
    }

    /// Controlplane side: the command ring's producer. One per process.
    /// Each publication rings the shard's [`Doorbell`].
    pub fn command_producer(&self, shard: u32) -> Producer {
        let (h, slots) = self.ring(shard, 0);
        Producer::new(self.clone(), h, slots, Some(self.doorbell(shard)))
    }

    /// Dataplane side: the command ring's consumer.
    pub fn command_consumer(&self, shard: u32) -> Consumer {
        let (h, slots) = self.ring(shard, 0);
        Consumer::new(self.clone(), h, slots)
    }

    /// Dataplane side: the event ring's producer.
    pub fn event_producer(&self, shard: u32) -> Producer {
        let (h, slots) = self.ring(shard, 1);
        Producer::new(self.clone(), h, slots, None)
    }

    /// Controlplane side: the event ring's consumer.
    pub fn event_consumer(&self, shard: u32) -> Consumer {
        let (h, slots) = self.ring(shard, 1);
        Consumer::new(self.clone(), h, slots)
    }

    fn shard_head(&self, shard: u32) -> &ShardHead {
        // SAFETY: start of the shard block, page aligned, all atomics.
        unsafe { &*(self.shard_base(shard) as *const ShardHead) }
    }

    /// Shard: one more loop turn.
    pub fn beat_shard(&self, shard: u32) {
        self.shard_head(shard)
            .heartbeat
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn shard_heartbeat(&self, shard: u32) -> u64 {
        self.shard_head(shard).heartbeat.load(Ordering::Relaxed)
    }

    /// The shard's doorbell, for whoever gives it work.
    pub fn doorbell(&self, shard: u32) -> Doorbell {
        Doorbell {
            region: self.clone(),
            shard,
        }
    }

    pub fn beat_control(&self) {
        self.header()
            .control_heartbeat
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn control_heartbeat(&self) -> u64 {
        self.header().control_heartbeat.load(Ordering::Relaxed)
    }

    /// Dataplane start: publish the DTLS certificate's SHA-256 fingerprint.
    /// Call before [`Self::start_dataplane_epoch`], whose Release publishes it.
    pub fn set_dtls_fingerprint(&self, fingerprint: &[u8; 32]) {
        for (i, word) in self.header().dtls_fingerprint.iter().enumerate() {
            let b: [u8; 8] = fingerprint[i * 8..i * 8 + 8].try_into().expect("8 bytes");
            word.store(u64::from_le_bytes(b), Ordering::Relaxed);
        }
    }

    /// The fingerprint of the dataplane whose epoch was read (Acquire) before.
    pub fn dtls_fingerprint(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, word) in self.header().dtls_fingerprint.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
        }
        out
    }

    /// Dataplane start: announce a new epoch and our pid, and drop commands
    /// addressed to a previous dataplane. Returns the new epoch.
    pub fn start_dataplane_epoch(&self, pid: u32) -> u64 {
        for shard in 0..self.shards() {
            self.command_consumer(shard).discard_all();
        }
        self.header()
            .dataplane_pid
            .store(pid as u64, Ordering::Relaxed);
        self.header().dataplane_epoch.fetch_add(1, Ordering::AcqRel) + 1
    }

    pub fn dataplane_epoch(&self) -> u64 {
        self.header().dataplane_epoch.load(Ordering::Acquire)
    }

    pub fn dataplane_pid(&self) -> u32 {
        self.header().dataplane_pid.load(Ordering::Relaxed) as u32
    }

    /// The node drains (the controlplane's word): no new RTMP or HTTP-FLV
    /// clients. Read once per shard turn.
    pub fn set_draining(&self, on: bool) {
        self.header().draining.store(on as u32, Ordering::Relaxed);
    }

    pub fn draining(&self) -> bool {
        self.header().draining.load(Ordering::Relaxed) != 0
    }
}

/// Wakes a sleeping shard: [`Self::ring`] after queueing work for it (a
/// command, a DTLS record, a codec result, a handed-over connection).
#[derive(Clone)]
pub struct Doorbell {
    region: Region,
    shard: u32,
}

impl Doorbell {
    /// The futex word: the shard reads it, then looks for work, then sleeps
    /// while it still holds what it read (`IORING_OP_FUTEX_WAIT`), so a
    /// ring between its look and its sleep is never lost.
    pub fn word(&self) -> &AtomicU32 {
        &self.region.shard_head(self.shard).doorbell
    }

    /// Call after the work is queued (the Release orders it before the bump).
    pub fn ring(&self) {
        let word = self.word();
        word.fetch_add(1, Ordering::Release);
        // SAFETY: FUTEX_WAKE on an aligned u32 inside our live mapping; it
        // reads nothing else. Process-shared (no FUTEX_PRIVATE_FLAG): the
        // controlplane rings from another process. A failure (none is
        // expected) leaves the shard to wake at its next deadline.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAKE,
                i32::MAX,
                std::ptr::null::<libc::timespec>(),
                std::ptr::null::<u32>(),
                0u32,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("gw-ring-test-{}-{name}", std::process::id()))
    }

    #[test]
    fn open_sees_what_create_wrote() {
        let p = tmp("open");
        let a = Region::create(&p, 3).unwrap();
        let b = Region::open(&p, Duration::from_millis(10)).unwrap();
        assert_eq!(b.shards(), 3);
        a.beat_shard(2);
        a.beat_shard(2);
        assert_eq!(b.shard_heartbeat(2), 2);
        assert_eq!(b.shard_heartbeat(1), 0);
        assert_eq!(b.start_dataplane_epoch(42), 1);
        assert_eq!(a.dataplane_epoch(), 1);
        assert_eq!(a.dataplane_pid(), 42);
        std::fs::remove_file(p).unwrap();
    }

    /// A ring from one mapping wakes a futex wait on the word seen through
    /// another (as the controlplane wakes a shard of the dataplane).
    #[test]
    fn a_ring_wakes_a_waiter_on_another_mapping() {
        let p = tmp("bell");
        let a = Region::create(&p, 2).unwrap();
        let b = Region::open(&p, Duration::from_millis(10)).unwrap();
        let seen = b.doorbell(1).word().load(Ordering::Acquire);
        let waiter = std::thread::spawn(move || {
            let bell = b.doorbell(1);
            // Long enough never to end on a busy machine unless nobody woke it.
            let limit = libc::timespec {
                tv_sec: 60,
                tv_nsec: 0,
            };
            // FUTEX_WAIT returns at once if the word moved already, so the
            // ring cannot be missed however the threads are scheduled.
            let mut timed_out = false;
            while bell.word().load(Ordering::Acquire) == seen {
                // SAFETY: a futex wait on an aligned word of the mapping.
                let r = unsafe {
                    libc::syscall(
                        libc::SYS_futex,
                        bell.word().as_ptr(),
                        libc::FUTEX_WAIT,
                        seen,
                        &limit as *const libc::timespec,
                    )
                };
                timed_out |= r != 0
                    && std::io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT);
            }
            (bell.word().load(Ordering::Acquire), timed_out)
        });
        a.doorbell(1).ring();
        assert_eq!(
            waiter.join().unwrap(),
            (seen + 1, false),
            "woken by the ring"
        );
        assert_eq!(a.doorbell(0).word().load(Ordering::Acquire), 0);
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn open_rejects_missing_and_foreign_files() {
        let p = tmp("foreign");
        assert!(Region::open(&p, Duration::ZERO).is_err());
        std::fs::write(&p, vec![7u8; 8192]).unwrap();
        assert!(matches!(
            Region::open(&p, Duration::ZERO),
            Err(RegionError::NotInitialised(_))
        ));
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn create_rejects_zero_shards() {
        assert!(matches!(
            Region::create(tmp("zero"), 0),
            Err(RegionError::Shards(0))
        ));
    }
}
