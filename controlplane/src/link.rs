//! The controlplane's end of the shared-memory rings.
//!
//! Requests: [`Link::request`] registers a waiter keyed by the command's
//! [`Request`] (its kind and the room or session it names), pushes the
//! command to the shard's ring and awaits the shard's `Done`.
//! Everything else the dataplane says (counters, resync, ended sessions) goes
//! through the event pump, a thread that also beats our heartbeat, watches the
//! shards' heartbeats and notices a new dataplane epoch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gateway_ring::msg::{Command, Event, Outcome, Request, RoomSpec};
use gateway_ring::{Producer, Region};
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::error::ApiError;
use crate::state::{Ended, Role, State};

/// How long a request waits for the shard's answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// A shard whose heartbeat has not moved for this long is reported dead.
pub const HEARTBEAT_DEAD: Duration = Duration::from_millis(1000);

#[derive(Clone, Copy, Debug)]
pub struct ShardHealth {
    pub heartbeat: u64,
    pub changed_at: Instant,
}

impl ShardHealth {
    pub fn alive(&self, now: Instant) -> bool {
        self.heartbeat > 0 && now.saturating_duration_since(self.changed_at) < HEARTBEAT_DEAD
    }
}

/// Who waits for which shard's answer to which request: by shard too, as
/// one room is made (or deleted) on several shards.
type Waiters = HashMap<(u32, Request), oneshot::Sender<Outcome>>;

pub struct Link {
    pub region: Region,
    producers: Mutex<Vec<Producer>>,
    waiters: Mutex<Waiters>,
    pub health: Mutex<Vec<ShardHealth>>,
    /// The dataplane epoch our state belongs to.
    pub epoch: AtomicU64,
    /// Shards that have not yet finished a resync.
    resync_pending: AtomicU64,
    /// The epoch of a dataplane the supervisor saw exit: not ready until a
    /// new one has started (its last heartbeats still look fresh for a
    /// moment, and a command pushed meanwhile would be discarded by the
    /// next dataplane, costing the request its whole timeout).
    exited_epoch: AtomicU64,
}

impl Link {
    /// Commands waiting in each shard's ring (a backlog means a stuck shard).
    pub fn command_depths(&self) -> Vec<u64> {
        self.producers
            .lock()
            .expect("producers lock")
            .iter()
            .map(Producer::depth)
            .collect()
    }

    pub fn new(region: Region) -> Link {
        let n = region.shards();
        let now = Instant::now();
        Link {
            producers: Mutex::new((0..n).map(|i| region.command_producer(i)).collect()),
            waiters: Mutex::new(HashMap::new()),
            health: Mutex::new(vec![
                ShardHealth {
                    heartbeat: 0,
                    changed_at: now
                };
                n as usize
            ]),
            epoch: AtomicU64::new(region.dataplane_epoch()),
            resync_pending: AtomicU64::new(0),
            exited_epoch: AtomicU64::new(0),
            region,
        }
    }

    pub fn shards(&self) -> u32 {
        self.region.shards()
    }

    /// Pushes a command without waiting for its answer.
    pub fn send(&self, shard: u32, cmd: &Command) -> Result<(), ApiError> {
        let mut p = self.producers.lock().expect("producer lock");
        p[shard as usize].push(cmd).map_err(|_| {
            ApiError::unavailable(format!(
                "dataplane shard {shard} is not reading commands (ring full)"
            ))
        })
    }

    /// Sends a command and waits for the shard's outcome (every command
    /// but `Resync`, which [`Self::start_resync`] sends).
    pub async fn request(&self, shard: u32, cmd: Command) -> Result<Outcome, ApiError> {
        let Some(key) = cmd.request() else {
            return Err(ApiError::unavailable(
                "internal error: the dataplane answers this command with no outcome",
            ));
        };
        let key = (shard, key);
        let (tx, rx) = oneshot::channel();
        {
            let mut waiters = self.waiters.lock().expect("waiter lock");
            if waiters.contains_key(&key) {
                // Its answer could not be told from the one awaited.
                return Err(ApiError::new(
                    axum::http::StatusCode::CONFLICT,
                    "the same request to the dataplane is already under way; try again",
                ));
            }
            waiters.insert(key, tx);
        }
        if let Err(e) = self.send(shard, &cmd) {
            self.waiters.lock().expect("waiter lock").remove(&key);
            return Err(e);
        }
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(outcome)) => Ok(outcome),
            _ => {
                self.waiters.lock().expect("waiter lock").remove(&key);
                Err(ApiError::unavailable(format!(
                    "dataplane shard {shard} did not answer within {} s (see /healthz)",
                    REQUEST_TIMEOUT.as_secs()
                )))
            }
        }
    }

    fn answer(&self, shard: u32, request: Request, outcome: Outcome) {
        if let Some(tx) = self
            .waiters
            .lock()
            .expect("waiter lock")
            .remove(&(shard, request))
        {
            let _ = tx.send(outcome);
        }
    }

    pub fn all_alive(&self) -> bool {
        let now = Instant::now();
        self.health
            .lock()
            .expect("health lock")
            .iter()
            .all(|h| h.alive(now))
    }

    /// Every shard beats and our state belongs to the running dataplane
    /// (the pump has adopted its epoch and re-created the rooms in it).
    pub fn ready(&self) -> bool {
        let running = self.region.dataplane_epoch();
        self.all_alive()
            && self.epoch.load(Ordering::SeqCst) == running
            && self.exited_epoch.load(Ordering::SeqCst) != running
    }

    /// The supervisor saw the dataplane process exit (spawn mode).
    pub fn dataplane_exited(&self) {
        self.exited_epoch
            .store(self.region.dataplane_epoch(), Ordering::SeqCst);
    }

    /// `Ok` when commands can be sent now; a 503 that says why otherwise.
    pub fn check_ready(&self) -> Result<(), ApiError> {
        if self.ready() {
            Ok(())
        } else {
            Err(ApiError::unavailable(
                "the dataplane is not running or is restarting; retry shortly (see /healthz)",
            ))
        }
    }

    /// Asks every shard for its rooms and sessions; the pump applies the answers.
    pub fn start_resync(&self) -> Result<(), ApiError> {
        self.resync_pending
            .store(self.shards() as u64, Ordering::SeqCst);
        for shard in 0..self.shards() {
            self.send(shard, &Command::Resync)?;
        }
        Ok(())
    }

    pub fn resync_done(&self) -> bool {
        self.resync_pending.load(Ordering::SeqCst) == 0
    }
}

/// Runs the event pump until the process exits.
pub fn spawn_pump(link: Arc<Link>, state: Arc<Mutex<State>>) {
    std::thread::Builder::new()
        .name("event-pump".into())
        .spawn(move || pump(&link, &state))
        .expect("spawning a thread at start-up");
}

fn pump(link: &Link, state: &Mutex<State>) {
    let mut consumers: Vec<_> = (0..link.shards())
        .map(|i| link.region.event_consumer(i))
        .collect();
    let mut next_check = Instant::now();
    loop {
        link.region.beat_control();
        let mut idle = true;
        for (shard, c) in consumers.iter_mut().enumerate() {
            for _ in 0..4096 {
                match c.pop::<Event>() {
                    None => break,
                    Some(Ok(e)) => {
                        idle = false;
                        handle_event(link, state, shard as u32, e);
                    }
                    Some(Err(e)) => warn!(shard, "undecodable event dropped: {e}"),
                }
            }
        }
        let now = Instant::now();
        if now >= next_check {
            next_check = now + Duration::from_millis(100);
            check_health(link, state, now);
        }
        if idle {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Records a session the dataplane reported, once.
fn adopt(state: &Mutex<State>, shard: u32, role: Role) {
    let mut st = state.lock().expect("state lock");
    if !st.sessions.contains_key(&role.session_id()) {
        st.add_session(shard, role);
    }
}

fn handle_event(link: &Link, state: &Mutex<State>, shard: u32, e: Event) {
    match e {
        Event::Done { request, outcome } => link.answer(shard, request, outcome),
        Event::Stats(s) => state.lock().expect("state lock").update_stats(s),
        Event::Room(spec) => {
            // A shard reports its rooms: its own, and the replicas it holds
            // for its players of rooms other shards own.
            let mut st = state.lock().expect("state lock");
            let owner = gateway_ring::msg::room_shard(&spec.name, st.ports.len() as u32);
            if !st.rooms.contains_key(&spec.name) {
                st.add_room(&spec, owner);
            }
            if shard != owner {
                if let Some(r) = st.rooms.get_mut(&spec.name) {
                    r.replicas |= 1 << shard;
                }
            }
        }
        // Sessions the dataplane reports (resync, RTMP clients it accepted).
        Event::Ingest(spec) => adopt(state, shard, Role::Ingest(spec)),
        Event::Egress(spec) => adopt(state, shard, Role::Egress(spec)),
        Event::Webrtc(spec) => adopt(state, shard, Role::Webrtc(spec)),
        Event::Rtmp(spec) => {
            // An RTMP player on a shard other than its room's owner plays a
            // replica there: the room's deletion must reach that shard too.
            let mut st = state.lock().expect("state lock");
            let name = st.room_names.get(&spec.room).cloned();
            if let Some(r) = name.and_then(|n| st.rooms.get_mut(&n)) {
                if r.shard != shard {
                    r.replicas |= 1 << shard;
                }
            }
            drop(st);
            adopt(state, shard, Role::Rtmp(spec))
        }
        Event::Shard(s) => state
            .lock()
            .expect("state lock")
            .shard_report(s, std::time::Instant::now()),
        Event::ResyncDone { epoch } => {
            if epoch == link.epoch.load(Ordering::SeqCst) {
                let _ = link
                    .resync_pending
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            }
        }
        Event::Line {
            session,
            line,
            participant,
        } => state
            .lock()
            .expect("state lock")
            .line_changed(session, line, participant),
        Event::Speaker { room, participant } => state
            .lock()
            .expect("state lock")
            .active_speaker(room, participant),
        Event::MediaWarning { session, what } => state
            .lock()
            .expect("state lock")
            .media_warning(session, what),
        Event::SessionEnded { session, reason } => {
            let why = Ended::ByDataplane(reason);
            info!(%session, "{}", why.text());
            state.lock().expect("state lock").end_session(session, why);
        }
    }
}

fn check_health(link: &Link, state: &Mutex<State>, now: Instant) {
    {
        let mut h = link.health.lock().expect("health lock");
        for (i, sh) in h.iter_mut().enumerate() {
            let beat = link.region.shard_heartbeat(i as u32);
            if beat != sh.heartbeat {
                sh.heartbeat = beat;
                sh.changed_at = now;
            }
        }
    }
    let epoch = link.region.dataplane_epoch();
    let known = link.epoch.swap(epoch, Ordering::SeqCst);
    if epoch != known {
        // A new dataplane process: whatever it had before is gone. Its rooms
        // are ours to give back (rooms outlive the media sessions in them).
        let mut st = state.lock().expect("state lock");
        let ended = st.end_all(Ended::DataplaneRestarted);
        info!(
            epoch,
            ended,
            rooms = st.rooms.len(),
            "new dataplane epoch: sessions ended, rooms re-created"
        );
        for r in st.rooms.values_mut() {
            // Made again on the owner; a player's shard makes it again
            // with its next player.
            r.replicas = 0;
            let cmd = Command::CreateRoom(RoomSpec {
                room: r.id,
                name: r.name.clone(),
            });
            if let Err(e) = link.send(r.shard, &cmd) {
                warn!(room = %r.name, "re-creating room failed: {}", e.message);
            }
        }
    }
}
